"""Soak: the gateway daemon against the simulated plant for minutes; is memory flat?

Runs the real daemon (both readers, live table, historian, audit, heartbeat) and the plant
in one process at plant speed x4 with the scripted demo faults, samples this process's
resident memory every few seconds, and compares the second half of the run with the
first: a leak shows as a steady climb, a healthy daemon as a plateau after warm-up. The
baseline is the same process's RSS after warm-up.

    .venv/bin/python bench/soak_memory.py --minutes 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from gateway.daemon import Daemon
from gateway.demo import SCENARIO
from gateway.logs import configure_logging
from gateway.plantsim.runner import PlantRuntime
from tests.support import free_port, skid_config


def rss_mib() -> float:
    """Current resident set size, from /proc (ru_maxrss is only the peak)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def soak(minutes: float, every_s: float) -> None:
    ports = free_port(), free_port()
    cfg = skid_config(*ports)
    speed = 4.0
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        async with PlantRuntime(
            cfg, opcua_port=ports[0], modbus_port=ports[1], speed=speed, watchdog_s=10 * speed
        ) as rt:
            daemon = Daemon(cfg, state)
            task = asyncio.create_task(daemon.run())
            pending = list(SCENARIO)
            samples: list[tuple[float, float]] = []
            started = time.monotonic()
            cpu0 = time.process_time()
            while (elapsed := time.monotonic() - started) < minutes * 60:
                while pending and rt.plant.time >= pending[0].at_s:
                    step = pending.pop(0)
                    if step.fault is None:
                        rt.clear_faults()
                    else:
                        rt.inject_fault(step.fault, step.severity)
                samples.append((elapsed, rss_mib()))
                await asyncio.sleep(every_s)
            cpu = time.process_time() - cpu0
            received = daemon.acquisition.samples_received
            dropped = daemon.acquisition.samples_dropped
            pending_history = daemon.acquisition.pending
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        db_mib = (state / "history.db").stat().st_size / 2**20
    half = len(samples) // 2
    first = statistics.median(m for _, m in samples[max(1, half // 2) : half])
    second = statistics.median(m for _, m in samples[half:])
    xs = [t for t, _ in samples[half:]]
    ys = [m for _, m in samples[half:]]
    slope = statistics.linear_regression(xs, ys).slope * 3600 if len(xs) > 1 else 0.0
    print(
        f"soak: {minutes:g} min wall, plant x{speed:g}, {received} samples read, "
        f"{dropped} dropped, {pending_history} unflushed at stop, historian {db_mib:.1f} MiB, "
        f"process CPU {cpu:.1f} s ({100 * cpu / (minutes * 60):.0f} % of one core)"
    )
    print(
        f"rss MiB: start {samples[0][1]:.1f}, first-half median {first:.1f}, "
        f"second-half median {second:.1f}, peak {max(m for _, m in samples):.1f}"
    )
    print(
        f"bench soak_memory: rss_growth_mib={second - first:.2f} "
        f"second_half_slope_mib_per_h={slope:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    args = parser.parse_args()
    configure_logging(level="error")
    asyncio.run(soak(args.minutes, args.every))


if __name__ == "__main__":
    main()
