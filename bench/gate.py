"""Gate benchmark: verdict latency for one proposal with the configured ensemble and horizon.

Runs the real gate (``gateway.govern.gate.evaluate``: policy, data, the twin's ensemble
simulation of the ramp, fidelity, interlocks, risk) on a stream of random, mostly valid
setpoint proposals against the reference plant's live values at steady state, with the
configured ensemble (32 parameter samples) and horizon (600 s). Reports p50/p99 latency
and proposals per second on one core.

Baseline, in the same run: the gate's simulation step done the way a user would without
our kernel, one proposal's ensemble through scipy ``solve_ivp`` (RK45, member by member;
the solver from ``bench/twin.py``).

The last line: ``bench gate: p50_ms=... p99_ms=... per_s=...``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np

from bench.twin import solve_ivp_envelope
from gateway.config.load import parse_config
from gateway.govern.gate import Decision, PlantView, evaluate, settings_for
from gateway.govern.proposal import Proposal
from gateway.govern.twin_view import view_from_start
from gateway.plantsim.plant import Plant
from gateway.signals import Quality, SignalValue
from gateway.twin.build import build_twin
from gateway.twin.skid import steady_state
from gateway.twin.whatif import nominal_start

CONFIG = Path(__file__).resolve().parents[1] / "config" / "skid.toml"
NOW = 1_800_000_000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proposals", type=int, default=200)
    parser.add_argument("--baseline-members", type=int, default=4)
    args = parser.parse_args()

    text = CONFIG.read_text(encoding="utf-8").replace('autonomy = "L0"', 'autonomy = "L3"')
    cfg = parse_config(text, str(CONFIG))
    assert cfg.twin is not None
    model, simulator = build_twin(cfg.twin, signals=cfg.signal)
    simulator.warm_up()
    plant = Plant(seed=1)
    for k in range(60):
        plant.step(1.0)
        plant.write("heartbeat", k + 1)
    table = {
        n: SignalValue(n, r.value, "", NOW, NOW, NOW, Quality.GOOD) for n, r in plant.read().items()
    }
    start = nominal_start(model)
    twin = view_from_start(
        cfg, model, simulator, start, fidelity=0.95, tracking=True, rng=np.random.default_rng(0)
    )
    view = PlantView(NOW, table, "L3", {}, twin)
    settings = settings_for(cfg)
    pick = random.Random(0)
    moves = {"level_sp": 0.3, "temp_sp": 5.0, "valve_cmd": 10.0}
    latencies, decisions = [], {d: 0 for d in Decision}
    started = time.perf_counter()
    for i in range(args.proposals):
        tag = pick.choice(list(moves))
        value = round(table[tag].value + pick.uniform(-1, 1) * moves[tag], 3)
        proposal = Proposal.create(
            id=f"b-{i}",
            proposer="system:bench",
            targets={tag: value},
            rationale="bench",
            created_at=NOW,
            expires_in_s=600,
        )
        t0 = time.perf_counter()
        verdict = evaluate(cfg, settings, proposal, view)
        latencies.append(time.perf_counter() - t0)
        decisions[verdict.decision] += 1
    total = time.perf_counter() - started
    lat_ms = sorted(1000 * x for x in latencies)
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[min(len(lat_ms) - 1, round(0.99 * (len(lat_ms) - 1)))]
    per_s = args.proposals / total
    print(
        f"gate: {args.proposals} proposals, ensemble {cfg.twin.ensemble} x "
        f"{cfg.twin.horizon_s:g} s; " + ", ".join(f"{d}={n}" for d, n in decisions.items())
    )
    print(f"gate latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {per_s:.1f} proposals/s")

    # Baseline: the same ensemble's simulation through solve_ivp, timed on a few members
    # and scaled to the ensemble (every member costs about the same).
    u0 = model.input_vector()
    u1 = model.input_vector({"level_sp": 1.7})
    rows = np.stack([u0, u1])
    params = model.sample_parameters(args.baseline_members, np.random.default_rng(1))
    t0 = time.perf_counter()
    for m in range(args.baseline_members):
        solve_ivp_envelope(steady_state(), rows, params[m], 0.5, cfg.twin.horizon_s, 1e-6)
    per_member = (time.perf_counter() - t0) / args.baseline_members
    baseline_ms = 1000 * per_member * cfg.twin.ensemble
    print(
        f"baseline: the simulation step alone through solve_ivp (RK45) would take "
        f"{baseline_ms:.0f} ms per proposal ({args.baseline_members} members timed, scaled to "
        f"{cfg.twin.ensemble}); gate_vs_solve_ivp={baseline_ms / p50:.0f}x faster"
    )
    print(f"bench gate: p50_ms={p50:.1f} p99_ms={p99:.1f} per_s={per_s:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
