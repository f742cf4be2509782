"""Envelope-crossing forecasts: per-member first crossing, the earliest and (lower) median
over the ensemble, diverged members counted as crossing, already-outside bounds, messages,
and a real skid run whose level setpoint step heads past a high limit."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from gateway.twin.forecast import Crossing, forecast_crossings, format_duration
from gateway.twin.integrate import Envelope, Simulator, Trajectories
from gateway.twin.model import TwinModel
from gateway.twin.skid import steady_state

NAMES = ("tank_level", "tank_temp")
UNITS = {"tank_level": "m", "tank_temp": "degC"}


def make_traj(outputs: npt.ArrayLike, dt: float = 1.0) -> Trajectories:
    """Trajectories ``[K, M, n, 2]`` built by hand, with a consistent envelope."""
    y = np.array(outputs, dtype=np.float64)
    k, m, n, n_out = y.shape
    with np.errstate(invalid="ignore"):
        low_high = np.stack([y.min(axis=2), y.max(axis=2)], axis=-1)
    envelope = Envelope(
        output_names=NAMES[:n_out],
        dt_s=dt,
        n_steps=n - 1,
        low_high=low_high,
        first_exit_step=np.full((k, m, n_out), -1, dtype=np.int64),
        bounds=np.tile([-np.inf, np.inf], (n_out, 1)),
        final_states=np.zeros((k, m, 0)),
    )
    return Trajectories(NAMES[:n_out], np.arange(n, dtype=np.float64) * dt, y, envelope)


def ramps(starts: list[float], slopes: list[float], n: int = 101) -> Trajectories:
    """One member per (start, slope): tank_level = start + slope·t, tank_temp constant 45."""
    t = np.arange(n, dtype=np.float64)
    level = np.array([s + r * t for s, r in zip(starts, slopes, strict=True)])
    temp = np.full_like(level, 45.0)
    return make_traj(np.stack([level, temp], axis=-1)[None])


def test_earliest_and_median_over_all_members() -> None:
    """Members rising at different rates cross at different times: earliest is the first
    member's, the median counts every member (never-crossing ones as infinitely late)."""
    # Crossing 2.41 from 1.5: first record with t > 0.91/slope -> 11, 19, 31, never, never.
    traj = ramps([1.5] * 5, [0.09, 0.05, 0.03, 0.0, -0.01])
    (c,) = forecast_crossings(traj, {"tank_level": (None, 2.41)}, UNITS)
    assert (c.output, c.side, c.limit, c.unit) == ("tank_level", "high", 2.41, "m")
    assert c.earliest_s == 11.0
    assert c.members_crossing == 3
    assert c.members == 5
    assert c.median_s == 31.0
    assert c.diverged == 0
    assert c.message() == "tank_level reaches 2.41 m in 11 s (3/5 members)"


def test_value_at_the_limit_is_not_a_crossing() -> None:
    """Crossing means strictly beyond the limit."""
    traj = ramps([1.0], [0.0])
    assert forecast_crossings(traj, {"tank_level": (1.0, 1.0)}, UNITS) == []


@pytest.mark.parametrize(
    ("slopes", "median"),
    [
        ([0.1, 0.1, 0.0, 0.0, 0.0], None),  # 2 of 5: fewer than half
        ([0.1, 0.05, 0.0, 0.0], 19.0),  # 2 of 4: exactly half, the lower median
        ([0.1, 0.05, 0.03, 0.0], 19.0),
    ],
)
def test_median_is_none_when_fewer_than_half_cross(
    slopes: list[float], median: float | None
) -> None:
    """The median is over all members, so it is None when fewer than half cross and an
    actual member's time otherwise."""
    traj = ramps([1.5] * len(slopes), slopes)
    (c,) = forecast_crossings(traj, {"tank_level": (None, 2.41)}, UNITS)
    assert c.median_s == median


def test_falling_bound() -> None:
    """A low limit is crossed when the value goes below it; the message says "falls to"."""
    t = np.arange(200, dtype=np.float64)
    temp = 45.0 - 0.5 * t
    y = np.stack([np.full_like(t, 1.5), temp], axis=-1)[None, None]
    (c,) = forecast_crossings(make_traj(y), {"tank_temp": (20.0, 80.0)}, UNITS)
    assert (c.side, c.earliest_s) == ("low", 51.0)
    assert c.message() == "tank_temp falls to 20 degC in 51 s (1/1 members)"


def test_diverged_member_counts_as_crossing_when_it_goes_nan() -> None:
    """A member whose outputs turn NaN crosses every bound at that record (conservative),
    and the crossing says how many members diverged."""
    y = np.full((1, 3, 100, 2), 1.5)
    y[:, :, :, 1] = 45.0
    y[0, 2, 40:, :] = np.nan
    crossings = forecast_crossings(
        make_traj(y), {"tank_level": (1.0, 2.0), "tank_temp": (None, 90.0)}, UNITS
    )
    assert [(c.output, c.side) for c in crossings] == [
        ("tank_level", "high"),
        ("tank_level", "low"),
        ("tank_temp", "high"),
    ]
    for c in crossings:
        assert (c.earliest_s, c.members_crossing, c.diverged, c.median_s) == (40.0, 1, 1, None)
    assert crossings[0].message() == "tank_level reaches 2 m in 40 s (1/3 members, 1 diverged)"


def test_already_outside_is_reported_at_zero_or_skipped() -> None:
    """A bound already crossed at t = 0 has earliest_s 0 and says so; "skip" leaves it out
    only when every member starts outside (a partial disagreement is still reported)."""
    all_out = ramps([2.5, 2.6], [0.0, 0.0])
    (c,) = forecast_crossings(all_out, {"tank_level": (None, 2.4)}, UNITS)
    assert c.earliest_s == 0.0
    assert c.already_outside
    assert c.message() == "tank_level is already above 2.4 m (2/2 members)"
    assert (
        forecast_crossings(all_out, {"tank_level": (None, 2.4)}, UNITS, already_outside="skip")
        == []
    )

    some_out = ramps([2.5, 2.0], [0.0, 0.0])
    (c,) = forecast_crossings(some_out, {"tank_level": (None, 2.4)}, UNITS, already_outside="skip")
    assert (c.earliest_s, c.members_crossing) == (0.0, 1)


def test_results_are_sorted_by_earliest_crossing() -> None:
    """The most urgent crossing comes first."""
    t = np.arange(100, dtype=np.float64)
    y = np.stack([1.5 + 0.01 * t, 45.0 + 1.0 * t], axis=-1)[None, None]
    crossings = forecast_crossings(
        make_traj(y), {"tank_level": (None, 2.0), "tank_temp": (None, 60.0)}, UNITS
    )
    assert [(c.output, c.earliest_s) for c in crossings] == [
        ("tank_temp", 16.0),
        ("tank_level", 51.0),
    ]


def test_schedules_and_parameter_samples_are_all_members() -> None:
    """With K schedules × M samples, every one of the K·M runs is a member."""
    y = np.full((2, 3, 10, 2), 1.5)
    y[1, 2, 5:, 0] = 3.0
    (c,) = forecast_crossings(make_traj(y), {"tank_level": (None, 2.4)}, UNITS)
    assert (c.members, c.members_crossing, c.earliest_s) == (6, 1, 5.0)


def test_missing_unit_prints_bare_and_to_record_is_plain() -> None:
    """An output without a unit prints its limit bare; to_record() has plain types."""
    traj = ramps([1.5], [0.1])
    (c,) = forecast_crossings(traj, {"tank_level": (None, 2.4)}, {})
    assert c.message() == "tank_level reaches 2.4 in 10 s (1/1 members)"
    assert c.to_record()["earliest_s"] == 10.0


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"no_such_output": (None, 1.0)}, "unknown output"),
        ({"tank_level": (3.0, 2.0)}, "low <= high"),
        ({"tank_level": (None, math.nan)}, "finite"),
        ({"tank_level": (-math.inf, None)}, "finite"),
    ],
)
def test_invalid_limits_are_refused(
    limits: dict[str, tuple[float | None, float | None]], message: str
) -> None:
    """An unknown output or an inconsistent limit is a configuration error, not ignored."""
    with pytest.raises(ValueError, match=message):
        forecast_crossings(ramps([1.5], [0.0]), limits, UNITS)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (0.4, "0 s"),
        (45.0, "45 s"),
        (59.6, "1 min 00 s"),
        (190.0, "3 min 10 s"),
        (3599.4, "59 min 59 s"),
        (3600.0, "1 h 00 min"),
        (3720.0, "1 h 02 min"),
        (3749.0, "1 h 02 min"),
        (3750.0, "1 h 03 min"),
        (90_000.0, "25 h 00 min"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Seconds below a minute, minutes and seconds below an hour, hours and minutes above."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan])
def test_format_duration_refuses_nonsense(seconds: float) -> None:
    """A negative or non-finite duration is a bug upstream, not something to print."""
    with pytest.raises(ValueError, match="duration"):
        format_duration(seconds)


# ---------------------------------------------------------------------------------------
# A real ensemble run of the skid


def simulate(
    sim: Simulator, model: TwinModel, inputs: dict[str, float], rng: np.random.Generator
) -> Trajectories:
    u = model.input_vector(inputs)
    params = model.sample_parameters(8, rng)
    return sim.simulate(steady_state(), u[None, None, :], params, record_every=2)


def test_level_setpoint_step_towards_a_high_limit_is_forecast(
    skid: TwinModel, skid_sim: Simulator, rng: np.random.Generator
) -> None:
    """From the nominal steady state (1.5 m), a level setpoint of 2.45 m drives the tank
    past a 2.4 m high limit: the pump's spare head fills the 0.9 m at ~2.3 mm/s, so every
    member crosses after roughly six to seven minutes. At the nominal setpoint, nothing is
    forecast."""
    limits: dict[str, tuple[float | None, float | None]] = {
        "tank_level": (0.3, 2.4),
        "tank_temp": (20.0, 70.0),
    }
    units = {o.name: o.unit for o in skid.outputs}

    stepped = simulate(skid_sim, skid, {"level_sp": 2.45}, rng)
    (c,) = forecast_crossings(stepped, limits, units)
    assert (c.output, c.side, c.members, c.members_crossing, c.diverged) == (
        "tank_level",
        "high",
        8,
        8,
        0,
    )
    assert 300.0 < c.earliest_s < 480.0
    assert c.median_s is not None
    assert c.earliest_s <= c.median_s < 500.0
    assert c.message().startswith("tank_level reaches 2.4 m in ")

    nominal = simulate(skid_sim, skid, {}, rng)
    assert forecast_crossings(nominal, limits, units) == []


def test_crossing_is_frozen() -> None:
    """Crossings are values: they cannot be changed after the fact."""
    c = Crossing("x", "high", 1.0, "m", 5.0, None, 1, 2)
    with pytest.raises(AttributeError):
        c.earliest_s = 0.0  # type: ignore[misc]
