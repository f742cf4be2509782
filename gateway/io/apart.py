"""Awaiting a protocol library's call so that our own cancellation is never lost.

Two ways a task can fail to stop when cancelled, both met in this code base:

- before Python 3.12, ``asyncio.wait_for`` returns the result and *swallows* a
  cancellation that arrives as the awaited call completes (CPython gh-86296);
- a library that catches ``CancelledError`` inside its own call (asyncua's close path;
  pymodbus' connect, which answers a cancellation with ``False``) swallows it when the
  call runs in *our* task, as it does under ``asyncio.timeout``.

A reader that ignores its cancellation keeps the daemon from stopping: ``edgetwin run``
then hangs on SIGTERM until systemd kills it, without its final flush and audit record.
:func:`call_apart` runs the call in a task of its own and waits with ``asyncio.wait``,
which never catches a cancellation: whatever the library does with the inner task's
cancellation, ours propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

#: Tasks cancelled on our way out that have not finished yet: kept referenced so the
#: event loop does not collect them mid-flight (they end on their own, or at loop close).
_ABANDONED: set[asyncio.Task[Any]] = set()


async def call_apart(call: Awaitable[T], timeout_s: float, what: str) -> T:
    """Await ``call`` in a task of its own, within ``timeout_s``.

    Raises:
        TimeoutError: The call did not finish in time (it is cancelled).
        asyncio.CancelledError: We were cancelled (the call is cancelled too).
        Exception: Whatever the call raised.
    """
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    finally:
        if not task.done():  # timed out, or we are being cancelled ourselves
            task.cancel()
            _ABANDONED.add(task)
            task.add_done_callback(_ABANDONED.discard)
    if not done:
        raise TimeoutError(f"{what} did not finish within {timeout_s:g} s")
    return task.result()
