"""How a setpoint move is cut into writes that respect the tag's rate limits.

A move larger than one interval's worth of the rate limit is written as a ramp: equal
steps of ``rate × interval`` every ``interval`` seconds, the last one landing exactly on
the target. The first step also respects the time since the tag was last written, so a
proposal right after another cannot double the rate. The plan is data: the gate
simulates exactly this schedule, and the writer executes exactly it (never faster: it
waits at least ``interval`` between writes whatever the event loop's delays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RampStep:
    """Write ``value`` at ``offset_s`` after the ramp starts."""

    offset_s: float
    value: float


def plan_ramp(
    current: float,
    target: float,
    *,
    max_rate_up: float,
    max_rate_down: float,
    interval_s: float,
    since_last_write_s: float | None = None,
) -> tuple[RampStep, ...]:
    """The writes that take a tag from ``current`` to ``target`` within its rate limits.

    Args:
        current: The tag's current value (its read-back), in engineering units.
        target: The absolute target.
        max_rate_up: Units per second, rising (> 0).
        max_rate_down: Units per second, falling (> 0).
        interval_s: Time between writes (> 0).
        since_last_write_s: Seconds since the gateway last wrote this tag (None: not
            recently); the first write waits until a full interval has passed.

    Returns:
        The steps, offsets non-decreasing from the start; empty when ``target == current``.

    Raises:
        ValueError: A non-finite value or a non-positive rate or interval.
    """
    for name, value in (("current", current), ("target", target)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    for name, value in (
        ("max_rate_up", max_rate_up),
        ("max_rate_down", max_rate_down),
        ("interval_s", interval_s),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    delta = target - current
    if delta == 0:
        return ()
    rate = max_rate_up if delta > 0 else max_rate_down
    per_step = rate * interval_s
    n = max(1, math.ceil(abs(delta) / per_step - 1e-12))
    start = 0.0
    if since_last_write_s is not None and since_last_write_s < interval_s:
        start = interval_s - max(0.0, since_last_write_s)
    direction = 1.0 if delta > 0 else -1.0
    steps = []
    for k in range(1, n + 1):
        value = target if k == n else current + direction * per_step * k
        steps.append(RampStep(start + (k - 1) * interval_s, value))
    return tuple(steps)


def ramp_rate_ok(
    previous: float,
    steps: tuple[RampStep, ...],
    *,
    max_rate_up: float,
    max_rate_down: float,
    interval_s: float,
    since_last_write_s: float | None = None,
) -> bool:
    """True if every write changes the value by at most one interval's worth of the rate
    and comes at least one interval after the previous write (the last write first).

    A write is a step: the value jumps. So the allowance per write is ``rate × interval``
    however long ago the previous write was; waiting an hour does not earn a bigger jump.
    The gate checks the plan it is about to approve with this, independently of how the
    plan was made: a bug in :func:`plan_ramp` must not become a fast write.
    """
    last_value = previous
    last_time = -(interval_s if since_last_write_s is None else since_last_write_s)
    for step in steps:
        dt = step.offset_s - last_time
        change = step.value - last_value
        rate = max_rate_up if change > 0 else max_rate_down
        if dt < interval_s - 1e-9:
            return False
        if abs(change) > rate * interval_s * (1 + 1e-9) + 1e-12:
            return False
        last_value, last_time = step.value, step.offset_s
    return True
