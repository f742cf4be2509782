"""The language model, supervised: llama.cpp runs in a child process the daemon can kill.

Why a process and not a thread: llama.cpp is C++ that can abort, segfault or exhaust
memory on an odd model or input, and a generation cannot be interrupted once started. In
a thread, either would take the daemon (and with it the PLC reads, the heartbeat and the
audit trail) down or hold it hostage. In a child (:mod:`gateway.agent.worker`), a crash
costs one request, a timeout is enforced by SIGKILL, and the event loop only ever awaits
pipes.

Failure kinds (:class:`LlmError`.kind), all of which mean *no proposal*:

* ``timeout``: no answer in time; the child was killed, the next call starts a new one;
* ``crashed``: the child died (or broke the protocol) during a request or while idle;
* ``failed``: the child is fine but could not do this request, or could not load the model;
* ``unavailable``: closed, or refusing to restart for a while after repeated crashes,
  so a model that dies on load does not turn into a fork loop.

One request at a time: the model is one big piece of memory and two CPU cores, and
requests queue on a lock in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import structlog

import gateway
from gateway.errors import GatewayError

__all__ = ["Completion", "LlmError", "LlmErrorKind", "LlmWorker"]

log = structlog.get_logger("gateway.agent.llm")

LlmErrorKind = Literal["timeout", "crashed", "failed", "unavailable"]

#: Replies carry the generated text; a long answer with escapes can pass asyncio's
#: default 64 KiB line limit.
_LINE_LIMIT: Final = 16 * 1024 * 1024
#: stderr lines kept for error messages and the status page (llama.cpp's last words).
_STDERR_LINES: Final = 200
_STDERR_LINE_CHARS: Final = 1000
#: How many of those an error message quotes.
_STDERR_IN_ERROR: Final = 8
#: The directory holding the ``gateway`` package: the child must run this very code,
#: wherever the daemon was started from and however it was installed.
_PACKAGE_ROOT: Final = str(Path(gateway.__file__).resolve().parent.parent)
#: After SIGTERM, how long a child gets before SIGKILL.
_TERM_GRACE_S: Final = 2.0
#: After the child closed its stdout, how long to wait for its exit status.
_EXIT_WAIT_S: Final = 5.0


@dataclass(frozen=True)
class Completion:
    """One answer from the model.

    ``prompt_s`` is the time llama.cpp spent evaluating the prompt tokens that were not
    already in its KV cache (``cached_tokens`` of ``prompt_tokens`` were reused from the
    previous request's common prefix); ``gen_s`` is the rest of the request's time in the
    worker (generation, grammar-constrained sampling, detokenising). Pipe and JSON time
    is in neither.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt_s: float
    gen_s: float
    cached_tokens: int = 0


class LlmError(GatewayError):
    """The model gave no usable answer; ``kind`` says why (see the module docstring)."""

    def __init__(self, kind: LlmErrorKind, message: str) -> None:
        self.kind: LlmErrorKind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


def _exit_description(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


class LlmWorker:
    """A llama.cpp child process, started on demand and replaced when it dies.

    Args:
        model_path: The GGUF file (see :func:`gateway.agent.locate.resolve_model`).
        context_tokens: llama.cpp's context size (prompt + answer), in tokens.
        threads: Threads for evaluation; ``None`` lets llama-cpp-python choose (half the
            CPUs). On a 2-core box the daemon keeps one core for itself.
        seed: The child's default sampling seed. A call without ``seed`` uses
            ``seed + n`` for its n-th request, so a retry of the same prompt is not bound
            to repeat the same answer, yet a run is reproducible.
        load_timeout_s: How long the child may take to load the model and say ready.
        python: The interpreter for the child (the daemon's own by default).
        max_consecutive_crashes: Crashes and failed starts in a row after which starting
            is refused for ``crash_backoff_s``.
        crash_backoff_s: The refusal period.
        clock: Monotonic seconds; injectable so the back-off is testable without sleeping.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int,
        threads: int | None = None,
        seed: int = 0,
        load_timeout_s: float = 120.0,
        python: str = sys.executable,
        max_consecutive_crashes: int = 3,
        crash_backoff_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if context_tokens <= 0:
            raise ValueError("context_tokens must be positive")
        if threads is not None and threads <= 0:
            raise ValueError("threads must be positive")
        self.model_path = Path(model_path)
        self.context_tokens = context_tokens
        self.threads = threads
        self.seed = seed
        self.load_timeout_s = load_timeout_s
        self.python = python
        self.max_consecutive_crashes = max_consecutive_crashes
        self.crash_backoff_s = crash_backoff_s
        self._clock = clock

        self.restarts = 0
        """Children started after the first one (after a crash, timeout or cancellation)."""
        self._starts = 0
        self._requests = 0
        self._consecutive_crashes = 0
        self._backoff_until: float | None = None
        self._last_error: str | None = None
        self._ready: dict[str, Any] = {}
        self._closed = False
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tasks: dict[int, asyncio.Task[None]] = {}
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._reapers: set[asyncio.Task[None]] = set()

    # -- public ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running child's pid, or None."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None
        return proc.pid

    async def start(self) -> None:
        """Start the child and wait until the model is loaded (no-op if running).

        Raises:
            LlmError: ``failed`` (cannot load the model), ``crashed`` (died while
                loading), ``timeout`` (not ready in ``load_timeout_s``) or ``unavailable``.
        """
        async with self._lock:
            await self._ensure_started()

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        json_schema: Mapping[str, Any],
        max_tokens: int,
        temperature: float,
        timeout_s: float,
        seed: int | None = None,
    ) -> Completion:
        """Generate one reply constrained to ``json_schema``; starts the child if needed.

        ``timeout_s`` bounds the request once a child is ready (queueing behind another
        request and loading the model are not counted: loading has ``load_timeout_s``).
        The text follows the grammar llama.cpp derives from the schema; it is still the
        caller's job to parse and check it (see ``gateway.agent.schema``).

        Raises:
            LlmError: see the module docstring for the kinds.
        """
        async with self._lock:
            await self._ensure_started()
            proc = self._proc
            assert proc is not None
            assert proc.stdin is not None
            assert proc.stdout is not None
            self._requests += 1
            request_id = self._requests
            request = {
                "id": request_id,
                "messages": [dict(m) for m in messages],
                "json_schema": json_schema,
                "max_tokens": int(max_tokens),
                "temperature": float(temperature),
                "seed": self.seed + request_id if seed is None else int(seed),
            }
            line = (json.dumps(request, ensure_ascii=True) + "\n").encode("ascii")
            started = self._clock()
            try:
                async with asyncio.timeout(timeout_s):
                    proc.stdin.write(line)
                    await proc.stdin.drain()
                    raw = await proc.stdout.readline()
            except TimeoutError:
                await self._kill(proc)
                message = (
                    f"no answer within {timeout_s:g} s; the model process was killed "
                    "(a generation cannot be interrupted) and will be restarted on the next call"
                )
                self._last_error = f"timeout: {message}"
                log.warning("llm_timeout", timeout_s=timeout_s, pid=proc.pid)
                raise LlmError("timeout", message) from None
            except (ConnectionError, OSError):
                raw = b""  # the child is gone: the write hit a closed pipe
            except ValueError:  # a reply line over _LINE_LIMIT: the stream is unusable
                self._kill_nowait(proc)
                message = f"the model process sent a reply line over {_LINE_LIMIT} bytes"
                self._note_failure(message)
                raise LlmError("crashed", message) from None
            except BaseException:
                # Cancelled mid-request: the answer would arrive for nobody and desync
                # the next request, so the child goes. Killing is synchronous; reaping
                # is not, and a cancelled task must not await.
                self._kill_nowait(proc)
                raise
            if not raw:
                raise await self._crashed(proc, "during a request")
            reply = self._parse_reply(proc, raw, request_id)
            if "error" in reply:
                self._consecutive_crashes = 0
                self._last_error = f"failed: {reply['error']}"
                raise LlmError("failed", str(reply["error"]))
            try:
                completion = Completion(
                    text=str(reply["text"]),
                    finish_reason=str(reply["finish_reason"]),
                    prompt_tokens=int(reply["prompt_tokens"]),
                    completion_tokens=int(reply["completion_tokens"]),
                    prompt_s=float(reply["prompt_s"]),
                    gen_s=float(reply["gen_s"]),
                    cached_tokens=int(reply.get("cached_tokens", 0)),
                )
            except (KeyError, TypeError, ValueError) as err:
                self._kill_nowait(proc)
                message = f"the model process sent a malformed reply ({err!r})"
                self._note_failure(message)
                raise LlmError("crashed", message) from None
            self._consecutive_crashes = 0
            log.debug(
                "llm_completed",
                request_id=request_id,
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                prompt_s=round(completion.prompt_s, 3),
                gen_s=round(completion.gen_s, 3),
                wall_s=round(self._clock() - started, 3),
            )
            return completion

    async def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL); idempotent, and final for this object.

        Does not wait for a request in progress: that request fails with
        ``unavailable``.
        """
        self._closed = True
        proc = self._proc
        if proc is not None:
            await self._stop(proc)
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        """Nothing is started here (the first ``complete`` or an explicit ``start`` does
        that, with its own error handling); leaving the block always closes."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary for the status page."""
        if self._closed:
            state = "closed"
        elif self.pid is not None:
            state = "running"
        elif self._backoff_until is not None and self._clock() < self._backoff_until:
            state = "backoff"
        else:
            state = "stopped"
        return {
            "state": state,
            "pid": self.pid,
            "model": str(self.model_path),
            "context_tokens": self.context_tokens,
            "threads": self._ready.get("n_threads", self.threads),
            "load_s": self._ready.get("load_s"),
            "requests": self._requests,
            "restarts": self.restarts,
            "consecutive_crashes": self._consecutive_crashes,
            "last_error": self._last_error,
            "stderr_tail": list(self._stderr)[-_STDERR_IN_ERROR:],
        }

    # -- the child ------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        """Have a ready child (the lock is held)."""
        if self._closed:
            raise LlmError("unavailable", "the model worker is closed")
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                return
            # Died while idle (OOM killer, a signal): note it, then start afresh.
            err = await self._crashed(proc, "while idle")
            log.warning("llm_worker_died_idle", error=err.message)
        now = self._clock()
        if self._backoff_until is not None and now < self._backoff_until:
            raise LlmError(
                "unavailable",
                f"not restarting the model process for {self._backoff_until - now:.1f} s "
                f"after {self._consecutive_crashes} consecutive failures; "
                f"last: {self._last_error}",
            )
        await self._spawn()

    async def _spawn(self) -> None:
        cmd = [
            self.python,
            "-m",
            "gateway.agent.worker",
            "--model",
            str(self.model_path),
            "--context-tokens",
            str(self.context_tokens),
            "--seed",
            str(self.seed),
        ]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        env = dict(os.environ)
        # On an abort, ggml runs gdb on itself for a backtrace: seconds of delay before
        # the crash is seen, and a ptrace a hardened service may not allow. The C++
        # exception text, which says what went wrong, is printed either way.
        env.setdefault("GGML_NO_BACKTRACE", "1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._stderr.clear()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                limit=_LINE_LIMIT,
            )
        except OSError as err:
            self._note_failure(f"cannot start {self.python}: {err}")
            raise LlmError("failed", f"cannot start the model process: {err}") from None
        if self._closed:  # close() ran while the process was being created
            await self._kill(proc)
            raise LlmError("unavailable", "the model worker was closed")
        self._proc = proc
        if self._starts > 0:
            self.restarts += 1
        self._starts += 1
        self._stderr_tasks[proc.pid] = asyncio.create_task(
            self._drain_stderr(proc), name=f"llm-worker-stderr-{proc.pid}"
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(self.load_timeout_s):
                raw = await proc.stdout.readline()
        except TimeoutError:
            await self._kill(proc)
            message = f"the model did not load within {self.load_timeout_s:g} s"
            self._note_failure(message)
            raise LlmError("timeout", message) from None
        except BaseException:
            self._kill_nowait(proc)
            raise
        if not raw:
            raise await self._crashed(proc, "while loading the model")
        ready = self._parse_line(proc, raw)
        if ready.get("ready") is not True:
            error = str(ready.get("error", "no reason given"))
            await self._reap(proc)
            detail = self._stderr_summary()
            where = "" if str(self.model_path) in error else f" {self.model_path}"
            message = f"cannot load the model{where}: {error}" + (
                f"; llama.cpp said: {detail}" if detail else ""
            )
            self._note_failure(message)
            raise LlmError("failed", message)
        self._ready = ready
        log.info(
            "llm_worker_ready",
            pid=proc.pid,
            model=str(self.model_path),
            n_ctx=ready.get("n_ctx"),
            load_s=round(float(ready.get("load_s", 0.0)), 3),
            restarts=self.restarts,
        )

    def _parse_line(self, proc: asyncio.subprocess.Process, raw: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self._kill_nowait(proc)
            message = f"the model process broke the protocol: {raw[:200]!r}"
            self._note_failure(message)
            raise LlmError("crashed", message)
        return obj

    def _parse_reply(
        self, proc: asyncio.subprocess.Process, raw: bytes, request_id: int
    ) -> dict[str, Any]:
        reply = self._parse_line(proc, raw)
        if reply.get("id") != request_id:
            self._kill_nowait(proc)
            message = f"the model process answered request {reply.get('id')!r}, not {request_id}"
            self._note_failure(message)
            raise LlmError("crashed", message)
        return reply

    async def _crashed(self, proc: asyncio.subprocess.Process, when: str) -> LlmError:
        """The error for a child that closed its stdout: reaped, described, counted."""
        code = await self._reap(proc)
        if self._closed:
            return LlmError("unavailable", "the model worker was closed")
        detail = self._stderr_summary()
        message = f"the model process {_exit_description(code)} {when}" + (
            f"; its last words: {detail}" if detail else ""
        )
        self._note_failure(message)
        log.warning("llm_worker_crashed", pid=proc.pid, returncode=code, when=when)
        return LlmError("crashed", message)

    def _note_failure(self, message: str) -> None:
        self._last_error = message
        self._consecutive_crashes += 1
        if self._consecutive_crashes >= self.max_consecutive_crashes:
            self._backoff_until = self._clock() + self.crash_backoff_s
            log.error(
                "llm_worker_backoff",
                consecutive_crashes=self._consecutive_crashes,
                backoff_s=self.crash_backoff_s,
                error=message,
            )

    def _stderr_summary(self) -> str:
        return " | ".join(line for line in list(self._stderr)[-_STDERR_IN_ERROR:] if line)

    async def _reap(self, proc: asyncio.subprocess.Process) -> int | None:
        """Wait for the child's exit and its last stderr; kill it if it lingers."""
        try:
            async with asyncio.timeout(_EXIT_WAIT_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await self._finish_stderr(proc)
        if self._proc is proc:
            self._proc = None
        return proc.returncode

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if self._proc is proc:
            self._proc = None  # even if this task is cancelled while reaping
        await self._reap(proc)

    def _kill_nowait(self, proc: asyncio.subprocess.Process) -> None:
        """Kill now and reap in the background (for paths that must not await)."""
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if self._proc is proc:
            self._proc = None
        task = asyncio.get_running_loop().create_task(
            self._reap_quietly(proc), name=f"llm-worker-reap-{proc.pid}"
        )
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _reap_quietly(self, proc: asyncio.subprocess.Process) -> None:
        await self._reap(proc)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(_TERM_GRACE_S):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await self._reap(proc)
        log.info("llm_worker_stopped", pid=proc.pid, returncode=proc.returncode)

    async def _finish_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Let the drain read to EOF (the child is dead, so EOF is near), then drop it."""
        task = self._stderr_tasks.get(proc.pid)
        if task is None:
            return
        try:
            async with asyncio.timeout(1.0):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()  # a grandchild may hold the pipe open; stop reading it
        if self._stderr_tasks.get(proc.pid) is task:
            del self._stderr_tasks[proc.pid]

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Keep the child's stderr flowing into a bounded ring buffer.

        A pipe nobody reads fills at 64 KiB and then blocks the writer: llama.cpp would
        hang mid-log. Lines are cut at ``_STDERR_LINE_CHARS`` so one endless line cannot
        grow memory either.
        """
        stream = proc.stderr
        assert stream is not None
        partial = b""
        while chunk := await stream.read(65536):
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                self._stderr.append(line[:_STDERR_LINE_CHARS].decode("utf-8", "replace"))
            if len(partial) > _STDERR_LINE_CHARS:
                self._stderr.append(partial[:_STDERR_LINE_CHARS].decode("utf-8", "replace"))
                partial = b""
        if partial:
            self._stderr.append(partial[:_STDERR_LINE_CHARS].decode("utf-8", "replace"))
