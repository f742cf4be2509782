"""The supervised model process, against real llama-cpp-python and a real (tiny) GGUF.

The tiny model has random weights, so it is a fuzzer for the grammar path: whatever the
grammar allows, some seed produces. The failure tests kill the real child process (the
production code has no test hooks), so they exercise what the daemon will see when the
OOM killer or a llama.cpp abort strikes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.agent.llm import Completion, LlmError, LlmWorker
from tests.support import eventually

TAGS = ("level_sp", "temp_sp")
#: Printable ASCII *without* ``"`` and ``\``. llama.cpp's schema converter copies a
#: pattern's characters into the JSON string raw, unescaped: with the obvious ``[ -~]``
#: a ``"`` ends the string early and a ``\`` starts an invalid escape (about 3 in 4
#: tiny-model outputs are then not JSON). gateway.agent.schema uses this class.
DIAGNOSIS_PATTERN = r"^[ !#-\[\]-~]{0,80}$"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "diagnosis": {"type": "string", "pattern": DIAGNOSIS_PATTERN},
        "setpoints": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {"tag": {"enum": list(TAGS)}, "value": {"type": "number"}},
                "required": ["tag", "value"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["diagnosis", "setpoints"],
    "additionalProperties": False,
}
#: A string of at least this many characters: the grammar cannot end before
#: ``max_tokens`` (each byte is one token here), so the generation is long for sure.
ENDLESS: dict[str, Any] = {"type": "string", "minLength": 10_000}
#: Room for a generation of seconds (the tiny model makes ~1000 tokens/s on one core), so
#: a kill 0.2 s in lands mid-generation even on a much faster machine. llama-cpp-python
#: trims max_tokens to what the context has left after the prompt.
CONTEXT = 4096
LONG = 4000
MESSAGES = [
    {"role": "system", "content": "You diagnose a pump-tank-heater skid. Answer in JSON."},
    {"role": "user", "content": "Tank level is 0.3 m below its setpoint and falling."},
]


def check_reply(text: str) -> dict[str, Any]:
    """Parse ``text`` and check it against SCHEMA (the validator the grammar must satisfy)."""
    doc = json.loads(text)
    assert isinstance(doc, dict)
    assert set(doc) == {"diagnosis", "setpoints"}
    assert isinstance(doc["diagnosis"], str)
    assert re.fullmatch(DIAGNOSIS_PATTERN, doc["diagnosis"])
    assert isinstance(doc["setpoints"], list)
    assert len(doc["setpoints"]) <= 2
    for item in doc["setpoints"]:
        assert isinstance(item, dict)
        assert set(item) == {"tag", "value"}
        assert item["tag"] in TAGS
        # Any JSON number is schema-valid, including 1e99999 (which Python reads as
        # inf): the grammar does not bound exponents; gateway.agent.schema refuses them.
        assert isinstance(item["value"], int | float)
        assert not isinstance(item["value"], bool)
    return doc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def worker(tiny_gguf: Path) -> AsyncIterator[LlmWorker]:
    w = LlmWorker(tiny_gguf, context_tokens=CONTEXT, threads=1, seed=0, load_timeout_s=60)
    try:
        yield w
    finally:
        await w.close()


async def ask(w: LlmWorker, **overrides: Any) -> Completion:
    kwargs: dict[str, Any] = {
        "json_schema": SCHEMA,
        "max_tokens": 600,
        "temperature": 0.8,
        "timeout_s": 60.0,
        "seed": 0,
    }
    kwargs.update(overrides)
    return await w.complete(MESSAGES, **kwargs)


async def test_grammar_output_is_valid_json_for_the_schema_for_every_seed(
    worker: LlmWorker,
) -> None:
    """Grammar-constrained output parses and satisfies the schema (20 seeds of a fuzzer)."""
    texts = []
    for seed in range(20):
        result = await ask(worker, seed=seed)
        assert result.finish_reason == "stop", result
        check_reply(result.text)
        assert result.prompt_tokens > 0
        assert result.completion_tokens > 0
        assert result.prompt_s >= 0.0
        assert result.gen_s >= 0.0
        texts.append(result.text)
    assert len(set(texts)) > 10, "seeds should give different answers"
    assert worker.restarts == 0


async def test_same_seed_same_answer(worker: LlmWorker) -> None:
    """A request is reproducible from its seed, even after other requests ran."""
    first = await ask(worker, seed=7)
    await ask(worker, seed=8)
    again = await ask(worker, seed=7)
    assert again.text == first.text


async def test_calls_without_a_seed_differ(worker: LlmWorker) -> None:
    """Without an explicit seed each call gets its own, so a retry is not a replay."""
    texts = {(await ask(worker, seed=None)).text for _ in range(4)}
    assert len(texts) > 1


async def test_a_long_generation_stops_at_max_tokens(worker: LlmWorker) -> None:
    """``finish_reason`` says "length" when the grammar wanted more than max_tokens."""
    result = await ask(worker, json_schema=ENDLESS, max_tokens=50)
    assert result.finish_reason == "length"
    assert result.completion_tokens == 50


async def test_timeout_kills_the_child_and_the_next_call_starts_a_new_one(
    worker: LlmWorker,
) -> None:
    """A request past its timeout ends the child (SIGKILL), raises timeout, then recovers."""
    await worker.start()
    pid = worker.pid
    assert pid is not None
    with pytest.raises(LlmError) as caught:
        await ask(worker, json_schema=ENDLESS, max_tokens=LONG, timeout_s=0.05)
    assert caught.value.kind == "timeout"
    assert worker.pid is None
    assert not alive(pid)
    check_reply((await ask(worker)).text)
    assert worker.pid not in (None, pid)
    assert worker.restarts == 1


async def test_a_child_killed_while_idle_is_replaced(worker: LlmWorker) -> None:
    """SIGKILL between calls: the next call restarts, or says crashed and the one after works."""
    await ask(worker)
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    kinds = []
    for _ in range(2):
        try:
            check_reply((await ask(worker)).text)
            break
        except LlmError as err:
            kinds.append(err.kind)
    assert kinds in ([], ["crashed"])
    assert worker.pid not in (None, pid)
    assert worker.restarts == 1


async def test_a_child_that_dies_mid_request_raises_crashed(worker: LlmWorker) -> None:
    """The child killed during a generation: crashed, naming the signal; then recovery."""
    await worker.start()
    pid = worker.pid
    assert pid is not None
    request = asyncio.create_task(ask(worker, json_schema=ENDLESS, max_tokens=LONG, timeout_s=60.0))
    await asyncio.sleep(0.2)  # the request is on its way or running; either way it dies
    assert not request.done()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(LlmError) as caught:
        await request
    assert caught.value.kind == "crashed"
    assert "SIGKILL" in caught.value.message
    check_reply((await ask(worker)).text)


async def test_an_abort_inside_llama_cpp_is_a_crash_not_the_daemons_end(
    aborting_gguf: Path,
) -> None:
    """A model that makes llama.cpp abort costs the request; the reason reaches the error."""
    w = LlmWorker(aborting_gguf, context_tokens=512, threads=1)
    try:
        for _ in range(2):  # and again: each call gets a fresh child
            with pytest.raises(LlmError) as caught:
                await ask(w)
            assert caught.value.kind == "crashed"
            assert "SIGABRT" in caught.value.message
            assert "grammar" in caught.value.message  # llama.cpp's own last words
        assert w.restarts == 1
    finally:
        await w.close()


async def test_cancelling_a_request_kills_the_child(worker: LlmWorker) -> None:
    """A cancelled caller must not leave an answer in the pipe for the next request."""
    await worker.start()
    pid = worker.pid
    assert pid is not None
    request = asyncio.create_task(ask(worker, json_schema=ENDLESS, max_tokens=LONG))
    await asyncio.sleep(0.2)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await eventually(lambda: not alive(pid), timeout_s=10, what="the child to be reaped")
    result = await ask(worker)
    check_reply(result.text)
    assert worker.pid not in (None, pid)


async def test_the_event_loop_keeps_running_during_a_generation(worker: LlmWorker) -> None:
    """Generation happens in the child: the daemon's loop keeps serving other tasks."""
    await worker.start()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        result = await ask(worker, json_schema=ENDLESS, max_tokens=900)
    finally:
        done.set()
        await task
    assert result.finish_reason == "length"
    assert ticks >= 3  # a blocking call would have let the ticker run at most once


async def test_an_error_reply_is_failed_and_the_child_stays(worker: LlmWorker) -> None:
    """A request the child cannot serve (a schema the converter refuses) fails alone."""
    await ask(worker)
    pid = worker.pid
    bad_schema = {"type": "string", "pattern": "no anchors"}
    with pytest.raises(LlmError) as caught:
        await ask(worker, json_schema=bad_schema)
    assert caught.value.kind == "failed"
    assert "Pattern must start with" in caught.value.message
    assert worker.pid == pid
    check_reply((await ask(worker)).text)


async def test_a_prompt_longer_than_the_context_is_failed(worker: LlmWorker) -> None:
    """Overflowing the context is the request's fault, not the process's."""
    long = [{"role": "user", "content": "x" * 5000}]
    with pytest.raises(LlmError) as caught:
        await worker.complete(
            long, json_schema=SCHEMA, max_tokens=10, temperature=0.8, timeout_s=60.0
        )
    assert caught.value.kind == "failed"
    assert "context window" in caught.value.message
    check_reply((await ask(worker)).text)


async def test_a_missing_model_file_is_a_clear_error_at_start(tmp_path: Path) -> None:
    """The error names the path, so the field engineer knows what to fix."""
    missing = tmp_path / "nope.gguf"
    w = LlmWorker(missing, context_tokens=256)
    with pytest.raises(LlmError) as caught:
        await w.start()
    await w.close()
    assert caught.value.kind == "failed"
    assert str(missing) in caught.value.message
    assert "does not exist" in caught.value.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not a model\n" * 50, "not a GGUF file"),
        # GGUF magic, then a version number no llama.cpp knows: llama.cpp refuses it.
        (b"GGUF" + (1172541301).to_bytes(4, "little") + bytes(100), "failed to read header"),
        # GGUF v3, no tensors and no metadata: llama.cpp finds no architecture.
        (b"GGUF" + (3).to_bytes(4, "little") + bytes(16), "unknown model architecture"),
    ],
    ids=["not-gguf", "bad-version", "empty-gguf"],
)
async def test_a_file_that_is_not_a_usable_gguf_fails_cleanly(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """Garbage is refused with the reason (ours or llama.cpp's), and the child exits."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    w = LlmWorker(path, context_tokens=256)
    try:
        with pytest.raises(LlmError) as caught:
            await w.start()
        assert caught.value.kind == "failed"
        assert str(path) in caught.value.message
        assert expected in caught.value.message
        assert w.pid is None
    finally:
        await w.close()


async def test_repeated_start_failures_back_off(tmp_path: Path) -> None:
    """After N failures in a row the worker refuses to start until the back-off passes."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"not a model")
    now = [1000.0]
    w = LlmWorker(
        path,
        context_tokens=256,
        max_consecutive_crashes=2,
        crash_backoff_s=30.0,
        clock=lambda: now[0],
    )
    try:
        for _ in range(2):
            with pytest.raises(LlmError) as caught:
                await w.start()
            assert caught.value.kind == "failed"
        with pytest.raises(LlmError) as caught:
            await w.start()
        assert caught.value.kind == "unavailable"
        assert "not a GGUF file" in caught.value.message
        assert w.info()["state"] == "backoff"
        assert w.restarts == 1  # the refused attempt started nothing
        now[0] += 31.0
        with pytest.raises(LlmError) as caught:
            await w.start()
        assert caught.value.kind == "failed"
        assert w.restarts == 2
    finally:
        await w.close()


async def test_close_is_idempotent_and_final(worker: LlmWorker) -> None:
    """close() ends the child, can be repeated, and later calls are refused."""
    await ask(worker)
    pid = worker.pid
    assert pid is not None
    await worker.close()
    assert not alive(pid)
    assert worker.pid is None
    await worker.close()
    assert worker.info()["state"] == "closed"
    with pytest.raises(LlmError) as caught:
        await ask(worker)
    assert caught.value.kind == "unavailable"


async def test_close_during_a_request_ends_it_as_unavailable(worker: LlmWorker) -> None:
    """Shutting the daemon down does not wait for a long generation to finish."""
    await worker.start()
    request = asyncio.create_task(ask(worker, json_schema=ENDLESS, max_tokens=LONG))
    await asyncio.sleep(0.2)
    await worker.close()
    with pytest.raises(LlmError) as caught:
        await request
    assert caught.value.kind == "unavailable"


async def test_info_reports_the_running_child(worker: LlmWorker, tiny_gguf: Path) -> None:
    """The status page sees the pid, the model, the counters and nothing non-JSON."""
    assert worker.info()["state"] == "stopped"
    await ask(worker)
    info = worker.info()
    assert info["state"] == "running"
    assert info["pid"] == worker.pid
    assert info["model"] == str(tiny_gguf)
    assert info["requests"] == 1
    assert info["threads"] == 1
    assert math.isfinite(info["load_s"])
    json.dumps(info)


async def test_properties_come_in_the_schema_order(worker: LlmWorker) -> None:
    """The grammar keeps the schema's property order (the prompt relies on it)."""
    for order in (["diagnosis", "setpoints"], ["setpoints", "diagnosis"]):
        schema = dict(SCHEMA, properties={k: SCHEMA["properties"][k] for k in order})
        doc = check_reply((await ask(worker, json_schema=schema)).text)
        assert list(doc) == order


async def test_an_interpreter_that_cannot_start_is_failed(tiny_gguf: Path, tmp_path: Path) -> None:
    """A broken deployment (wrong interpreter path) is an error, not a hang."""
    w = LlmWorker(tiny_gguf, context_tokens=256, python=str(tmp_path / "no-python"))
    with pytest.raises(LlmError) as caught:
        await w.start()
    await w.close()
    assert caught.value.kind == "failed"
    assert "no-python" in caught.value.message


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until its new parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


DAEMON = """
import asyncio, sys
from pathlib import Path
from gateway.agent.llm import LlmWorker

async def main() -> None:
    worker = LlmWorker(Path(sys.argv[1]), context_tokens=8192, threads=1)
    await worker.start()
    endless = {"type": "string", "minLength": 10000}
    msgs = [{"role": "user", "content": "go"}]
    busy = asyncio.create_task(
        worker.complete(msgs, json_schema=endless, max_tokens=8000, temperature=0.8, timeout_s=600)
    )
    await asyncio.sleep(0.3)
    print("PID", worker.pid, flush=True)
    await busy

asyncio.run(main())
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
async def test_the_model_process_does_not_outlive_a_killed_daemon(tiny_gguf: Path) -> None:
    """SIGKILL on the daemon mid-generation still ends the model process at once.

    An idle worker would exit on stdin EOF anyway; a busy one would finish its
    generation first (here ~8000 tokens, tens of seconds) without PR_SET_PDEATHSIG.
    """
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DAEMON, str(tiny_gguf), stdout=asyncio.subprocess.PIPE
    )
    assert daemon.stdout is not None
    try:
        line = b""
        while not line.startswith(b"PID "):  # structlog's lines come first
            line = await asyncio.wait_for(daemon.stdout.readline(), 60)
            assert line, "the daemon script exited"
        child = int(line.split()[1])
        assert running(child)
    finally:
        daemon.kill()
        await daemon.wait()
    try:
        await eventually(lambda: not running(child), timeout_s=5, what="the orphan to die")
    finally:
        if running(child):  # the test failed: do not leave it generating
            os.kill(child, signal.SIGKILL)


async def test_the_context_manager_closes_what_was_started(tiny_gguf: Path) -> None:
    """Entering starts nothing (start errors stay with start()); leaving ends the child."""
    async with LlmWorker(tiny_gguf, context_tokens=256, threads=1) as w:
        assert w.pid is None
        await w.start()
        pid = w.pid
        assert pid is not None
    assert not alive(pid)
    assert w.info()["state"] == "closed"
