"""The language-model process: llama.cpp in a child, speaking JSON lines.

Run as ``python -m gateway.agent.worker --model PATH --context-tokens N [--threads T]
--seed S``; the supervisor (:mod:`gateway.agent.llm`) starts it. llama.cpp is C++ that
can abort, segfault or run out of memory on an odd model or input, and a generation
cannot be interrupted once started; in a child, any of that costs one request, never
the daemon, and a request that runs too long is ended by killing the process.

Protocol (one JSON object per line, UTF-8, ASCII-escaped):

* on start, to stdout: ``{"ready": true, "model", "n_ctx", "n_threads", "load_s", "pid"}``,
  or ``{"ready": false, "error"}`` and exit status 1 when the model cannot be loaded;
* then per stdin line ``{"id", "messages", "json_schema", "max_tokens", "temperature",
  "seed"}``, one stdout line ``{"id", "text", "finish_reason", "prompt_tokens",
  "completion_tokens", "cached_tokens", "prompt_s", "gen_s"}`` or ``{"id", "error"}``;
* EOF on stdin: exit 0.

Only this module writes to the protocol stream. llama.cpp and ggml print to file
descriptor 1 from C, where Python cannot intercept them, so the first thing the process
does is move fd 1 onto stderr and keep a private duplicate of the original stdout for
the protocol. stderr is free-form diagnostics, which the supervisor keeps the tail of.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final

from gateway.agent.locate import check_gguf
from gateway.errors import GatewayError

#: Schemas seen by this process, by their JSON text; a handful in practice (the agent's
#: reply schema with and without the simulate action). Bounded anyway.
_GRAMMAR_CACHE_MAX: Final = 32

#: The log callback handed to llama.cpp; referenced for the life of the process, because
#: llama.cpp keeps calling it (freeing the model logs) and a collected ctypes callback
#: is a dangling function pointer: a segfault at exit.
_log_callback: object = None

#: ggml's log levels (``enum ggml_log_level``): NONE, DEBUG, INFO, WARN, ERROR, CONT.
_GGML_WARN: Final = 3
_GGML_CONT: Final = 5


def _claim_stdout() -> IO[str]:
    """Keep the real stdout for the protocol and point fd 1 (C's stdout) at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    os.set_inheritable(proto_fd, False)
    return os.fdopen(proto_fd, "w", encoding="utf-8", buffering=1)


def _forward_llama_warnings() -> None:
    """Send llama.cpp's warnings and errors to stderr, even with ``verbose=False``.

    llama-cpp-python's own log callback maps ggml levels with an outdated table (real
    errors land on its DEBUG) and, during loading, writes to a ``sys.stderr`` it has
    swapped for /dev/null, so the reason a model fails to load ("unknown architecture",
    "invalid magic", a version mismatch) would be lost. This callback writes to a
    private duplicate of fd 2 that the swapping does not touch.
    """
    global _log_callback
    import llama_cpp

    err_fd = os.dup(2)
    forwarding = [False]

    def write(level: int, text: bytes | None, _user: object) -> None:
        if level != _GGML_CONT:
            forwarding[0] = level >= _GGML_WARN
        if forwarding[0] and text:
            with contextlib.suppress(OSError):
                os.write(err_fd, text)

    _log_callback = llama_cpp.llama_log_callback(write)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process if the daemon dies, so a model never outlives it.

    Best effort: elsewhere (or without libc) the worker still exits on stdin EOF, once
    its current generation ends.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return


class Worker:
    """One loaded model and its grammar cache; serves requests one at a time."""

    def __init__(self, llm: Any, *, default_seed: int) -> None:
        # Imported here, not at the top: only after main() has moved fd 1 out of the way.
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        self._llama_cpp = llama_cpp
        self._llama_grammar = LlamaGrammar
        self._llm = llm
        self._default_seed = default_seed
        self._grammars: dict[str, Any] = {}

    def grammar(self, schema: Mapping[str, Any]) -> Any:
        """The grammar for a JSON schema, converted once per distinct schema.

        Conversion is pure Python and, for patterns with bounded repetition, produces
        large grammars; the agent sends the same one or two schemas every time. The key
        keeps the schema's key order (no ``sort_keys``): the grammar emits properties in
        the order the schema lists them, and that order is part of the prompt's design
        (e.g. a diagnosis before the setpoints it justifies).
        """
        key = json.dumps(schema, separators=(",", ":"))
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._llama_grammar.from_json_schema(key, verbose=False)
            if len(self._grammars) >= _GRAMMAR_CACHE_MAX:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Run one chat completion under the request's JSON-schema grammar.

        ``prompt_s`` is llama.cpp's own prompt-evaluation time (its perf counters), which
        covers only the prompt tokens not already in the KV cache from the previous
        request (``cached_tokens`` is the rest); ``gen_s`` is the remainder of the wall
        time: token generation plus grammar-constrained sampling and detokenisation,
        i.e. what a longer answer costs.
        """
        messages = request["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
        ):
            raise ValueError("messages must be a list of {role, content} objects")
        schema = request["json_schema"]
        if not isinstance(schema, dict):
            raise ValueError("json_schema must be an object")
        grammar = self.grammar(schema)
        seed = request.get("seed")
        ctx = self._llm.ctx
        self._llama_cpp.llama_perf_context_reset(ctx)
        start = time.perf_counter()
        result = self._llm.create_chat_completion(
            messages=messages,
            grammar=grammar,
            max_tokens=int(request["max_tokens"]),
            temperature=float(request["temperature"]),
            seed=int(self._default_seed if seed is None else seed),
            stream=False,
        )
        total_s = time.perf_counter() - start
        perf = self._llama_cpp.llama_perf_context(ctx)
        prompt_s = min(max(float(perf.t_p_eval_ms) / 1000.0, 0.0), total_s)
        choice = result["choices"][0]
        usage = result["usage"]
        prompt_tokens = int(usage["prompt_tokens"])
        return {
            "text": choice["message"]["content"] or "",
            "finish_reason": str(choice["finish_reason"]),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": int(usage["completion_tokens"]),
            "cached_tokens": max(prompt_tokens - int(perf.n_p_eval), 0),
            "prompt_s": prompt_s,
            "gen_s": total_s - prompt_s,
        }


def serve(lines: Iterator[str], reply: Callable[[dict[str, Any]], None], worker: Worker) -> None:
    """Answer each request line until EOF; a Python exception answers that request only."""
    for line in lines:
        if not line.strip():
            continue
        req_id: object = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
            req_id = request.get("id")
            out = worker.complete(request)
        except Exception as err:  # the request's boundary: report, stay up
            reply({"id": req_id, "error": f"{type(err).__name__}: {err}"})
        else:
            reply({"id": req_id, **out})


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.agent.worker", description="edgetwin's llama.cpp worker"
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--context-tokens", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the model, say ready, serve stdin; the exit status says how loading went."""
    # The supervisor owns this process's lifetime: a Ctrl-C in the daemon's terminal
    # reaches the whole process group, and the daemon, not we, decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proto = _claim_stdout()

    def reply(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj, ensure_ascii=True, allow_nan=False) + "\n")
        proto.flush()

    args = _parse_args(argv)
    _die_with_parent()
    start = time.perf_counter()
    try:
        model = check_gguf(args.model)
        _forward_llama_warnings()
        from llama_cpp import Llama

        kwargs: dict[str, Any] = {}
        if args.threads is not None:
            kwargs["n_threads"] = args.threads
            kwargs["n_threads_batch"] = args.threads
        # Each request carries its own seed. (The constructor's would not do for 0:
        # llama-cpp-python reads `seed or LLAMA_DEFAULT_SEED`, and the default means random.)
        llm = Llama(
            model_path=str(model),
            n_ctx=args.context_tokens,
            seed=args.seed,
            verbose=False,
            **kwargs,
        )
    except GatewayError as err:  # our own check: the message is already for people
        reply({"ready": False, "error": str(err)})
        return 1
    except Exception as err:  # the load's boundary: the supervisor gets the reason
        reply({"ready": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    reply(
        {
            "ready": True,
            "model": str(model),
            "n_ctx": int(llm.n_ctx()),
            "n_threads": int(llm.context_params.n_threads),
            "load_s": time.perf_counter() - start,
            "pid": os.getpid(),
        }
    )
    serve(iter(sys.stdin.readline, ""), reply, Worker(llm, default_seed=args.seed))
    llm.close()  # now, while the log callback and the interpreter are whole
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
