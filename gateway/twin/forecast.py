"""Forecast when each safety-envelope bound will be crossed, from an ensemble simulation.

The twin simulates the plant forward from its current state under the current setpoints,
once per parameter sample. For each bounded output and side this module reads, per member,
the first recorded time at which the output is beyond the limit, and summarises the
ensemble:

* ``earliest_s``, the earliest member's time: the figure to act on, because the ensemble
  spans what the plant may be doing and the operator needs the worst plausible case;
* ``median_s``, the (lower) median over *all* members, counting members that never cross
  as crossing at infinity, so it is None when fewer than half cross: a median over the
  crossing members only would present a minority's time as the typical one;
* how many members cross, so a reader can tell a certainty from a tail risk.

A member that diverged (its outputs turned NaN) counts as crossing every bound of every
output at the record where it went NaN. That is conservative on purpose: a state the model
cannot integrate is no evidence that the plant stays inside its envelope. The diverged
count is reported with the crossing so it is not mistaken for a physical forecast.

Crossings are checked at the recorded times only, so a crossing is reported up to one
record interval late, and a brief excursion between two records can be missed: record
every step when that matters.

Pure numpy on the ``Trajectories``; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from gateway.twin.integrate import Trajectories

Side = Literal["low", "high"]


def format_duration(seconds: float) -> str:
    """A duration for an operator: ``"45 s"``, ``"3 min 10 s"``, ``"1 h 02 min"``.

    Rounded to the second below an hour and to the minute above, since a forecast is
    not more precise than that.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"a duration must be finite and >= 0 s, got {seconds!r}")
    total = math.floor(seconds + 0.5)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod((total + 30) // 60, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Crossing:
    """The ensemble's forecast that one output crosses one of its envelope limits.

    Attributes:
        output: Output name.
        side: "high" (rises above ``limit``) or "low" (falls below it).
        limit: The envelope limit, in output units.
        unit: The output's unit (for messages; may be empty).
        earliest_s: Earliest crossing among members, s from the start of the simulation;
            0 when a member is already outside at the start.
        median_s: Lower median crossing time over all members (never-crossing members
            count as infinitely late); None when fewer than half of them cross.
        members_crossing: Members that cross (including diverged ones).
        members: Members simulated.
        diverged: Members counted as crossing because their simulation diverged.
    """

    output: str
    side: Side
    limit: float
    unit: str
    earliest_s: float
    median_s: float | None
    members_crossing: int
    members: int
    diverged: int = 0

    @property
    def already_outside(self) -> bool:
        """Some member is outside the limit at the start of the simulation."""
        return self.earliest_s <= 0.0

    def message(self) -> str:
        """One line for an operator, e.g. ``"tank_level reaches 2.4 m in 3 min 10 s
        (12/32 members)"`` or ``"tank_temp falls to 20 degC in 45 s (32/32 members)"``."""
        value = f"{self.limit:g} {self.unit}".rstrip()
        share = f"{self.members_crossing}/{self.members} members"
        if self.diverged:
            share += f", {self.diverged} diverged"
        if self.already_outside:
            where = "above" if self.side == "high" else "below"
            return f"{self.output} is already {where} {value} ({share})"
        verb = "reaches" if self.side == "high" else "falls to"
        return f"{self.output} {verb} {value} in {format_duration(self.earliest_s)} ({share})"

    def to_record(self) -> dict[str, object]:
        """A JSON-ready dict (for the audit trail)."""
        return {
            "output": self.output,
            "side": self.side,
            "limit": self.limit,
            "unit": self.unit,
            "earliest_s": self.earliest_s,
            "median_s": self.median_s,
            "members_crossing": self.members_crossing,
            "members": self.members,
            "diverged": self.diverged,
        }


def forecast_crossings(
    traj: Trajectories,
    limits: Mapping[str, tuple[float | None, float | None]],
    units: Mapping[str, str],
    *,
    already_outside: Literal["report", "skip"] = "report",
) -> list[Crossing]:
    """Every envelope bound that some member of ``traj`` crosses, earliest first.

    Args:
        traj: Simulated trajectories (every schedule and parameter sample is a member).
        limits: Output name -> (low, high) envelope limits; None where there is no bound.
        units: Output name -> unit, for messages (an output missing here prints bare).
        already_outside: What to do with a bound that *every* member is already outside
            at t = 0: "report" it (``earliest_s`` 0), or "skip" it because the plant's own
            limit alarm, not a forecast, speaks for it. A bound that only some members
            start outside is always reported: the members disagree about now, and the
            conservative reading is that the plant may be outside already.

    Returns:
        One ``Crossing`` per (output, side) that at least one member crosses, sorted by
        ``earliest_s`` (then output and side, for a stable order).

    Raises:
        ValueError: A limit names an unknown output, is not finite, or has low > high; or
            the trajectories' shapes disagree.
    """
    if already_outside not in ("report", "skip"):
        raise ValueError(f'already_outside must be "report" or "skip", got {already_outside!r}')
    outputs = np.asarray(traj.outputs)
    times = np.asarray(traj.times_s, dtype=np.float64)
    n_out = len(traj.output_names)
    if outputs.ndim != 4 or outputs.shape[2] != times.shape[0] or outputs.shape[3] != n_out:
        raise ValueError(
            f"trajectories must have outputs [K, M, {times.shape[0]}, {n_out}], got {outputs.shape}"
        )
    if times.shape[0] < 1:
        raise ValueError("trajectories hold no records")
    members = outputs.shape[0] * outputs.shape[1]
    flat = outputs.reshape(members, times.shape[0], n_out)

    crossings: list[Crossing] = []
    for name, (low, high) in limits.items():
        if name not in traj.output_names:
            raise ValueError(
                f"limit for unknown output {name!r} (outputs: {', '.join(traj.output_names)})"
            )
        for bound in (low, high):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"limits of {name!r} must be finite or None, got {bound!r}")
        if low is not None and high is not None and low > high:
            raise ValueError(f"limits of {name!r} must have low <= high, got ({low}, {high})")
        y = flat[:, :, traj.output_names.index(name)]
        nan = np.isnan(y)
        sides: tuple[tuple[Side, float | None], ...] = (("low", low), ("high", high))
        for side, bound in sides:
            if bound is None:
                continue
            beyond = y < bound if side == "low" else y > bound
            crossing = _summarise(
                name, side, float(bound), units.get(name, ""), beyond | nan, nan, times
            )
            if crossing is None:
                continue
            if already_outside == "skip" and bool(beyond[:, 0].all()):
                continue
            crossings.append(crossing)
    crossings.sort(key=lambda c: (c.earliest_s, c.output, c.side))
    return crossings


def _summarise(
    name: str,
    side: Side,
    limit: float,
    unit: str,
    outside: npt.NDArray[np.bool_],
    nan: npt.NDArray[np.bool_],
    times: npt.NDArray[np.float64],
) -> Crossing | None:
    """One bound's crossing from ``outside[member, record]`` (None if no member crosses)."""
    crosses = outside.any(axis=1)
    n_crossing = int(crosses.sum())
    if n_crossing == 0:
        return None
    first = outside.argmax(axis=1)
    at = np.where(crosses, times[first], np.inf)
    # A member diverged for this bound when it went NaN before (or without) being outside.
    diverged = int((crosses & nan[np.arange(nan.shape[0]), first]).sum())
    ordered = np.sort(at)
    lower_median = float(ordered[(ordered.shape[0] - 1) // 2])
    return Crossing(
        output=name,
        side=side,
        limit=limit,
        unit=unit,
        earliest_s=float(ordered[0]),
        median_s=lower_median if math.isfinite(lower_median) else None,
        members_crossing=n_crossing,
        members=int(outside.shape[0]),
        diverged=diverged,
    )
