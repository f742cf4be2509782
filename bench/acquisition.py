"""Acquisition benchmark: the gateway's readers against a naive one-request-per-tag client.

What is measured, and against what (DESIGN.md, "Performance doctrine"):

* A scaled plant runs in a **separate process** (so its CPU is not charged to the gateway):
  an asyncua server with ``--tags`` Double variables and a pymodbus server with ``--tags``
  uint16 holding registers, all on 127.0.0.1. Every value changes once a second, staggered
  over the second in 50 groups so that the latency figures do not depend on how the
  readers' cycles happen to line up with the changes. A value is a change counter ``k``.
* **ours**: the real ``OpcUaReader`` (subscription mode, as in config/skid.toml; polling
  mode as an extra, informational row) and the real ``ModbusReader`` (reads batched by
  ``plan_reads``, at most 125 registers per request), each feeding the real
  ``Acquisition`` sink, 1 s interval.
* **naive** (the named baseline, measured in the same run against the same servers): one
  request per tag per cycle, awaited one after the other, paced at 1 s and never catching up
  on an overrun; OPC UA ``Node.read_data_value()`` per node (the request ``read_value()``
  sends; the DataValue keeps the source timestamp the latency needs), Modbus
  ``read_holding_registers(address, count=1)`` per register. Its samples are converted by
  the gateway's own pure functions and go into the same ``Acquisition`` sink, so the only
  difference between the two is how the values are requested.

Each variant runs alone, in turn, in this process: warm-up until every tag has arrived once,
then ``--seconds`` of measurement with ``time.process_time()`` (this process's CPU: the
client stacks, the readers, the live table, the bookkeeping below). A *value* is a change
seen for the first time in the live table (a repeated read of an unchanged counter is
counted as delivered but is not a value); *missed* counts changes a reader never saw.
Latency is the time from the server's change to the moment the sample is in the live table:
for OPC UA against the SourceTimestamp the server wrote with the change, for Modbus against
the change time the server process records for each counter value in shared memory. Both
processes use the same wall clock.

Run: ``.venv/bin/python bench/acquisition.py --seconds 10`` (``make bench`` runs it with the
defaults). The last line is the summary the issue asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing as mp
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any, Literal, Protocol, cast

import numpy as np
from asyncua import Client, Server, ua
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from gateway.acquire import Acquisition
from gateway.config import GatewayConfig, parse_config
from gateway.config.schema import ModbusSource, OpcUaSource, Signal
from gateway.io.modbus_plan import plan_reads
from gateway.io.modbus_reader import ModbusReader, decode_block, make_client
from gateway.io.opcua_reader import OpcUaReader, to_raw_sample
from gateway.io.ports import LinkState, SampleSink
from gateway.logs import configure_logging
from gateway.signals import PlantTextValue, RawSample

NAMESPACE = "urn:edgetwin:bench"
OPCUA = "ua"
MODBUS = "mb"
#: Change groups per second: tag i changes at second k + (i % SLICES) / SLICES.
SLICES = 50
#: Rounds of change times kept in shared memory (a Modbus counter is looked up modulo this).
RING = 256
#: Upper bounds so that the benchmark always stops by itself.
SERVER_START_TIMEOUT_S = 90.0
WARMUP_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------ the plant process


def serve(
    opcua_port: int,
    modbus_port: int,
    tags: int,
    change_log: SynchronizedArray[float],
    ready: Any,
    stop: Any,
) -> None:
    """Entry point of the server process: serve and change values until ``stop`` is set."""
    configure_logging(level="warning", stream=sys.stderr)
    asyncio.run(_serve(opcua_port, modbus_port, tags, change_log, ready, stop))


async def _serve(
    opcua_port: int,
    modbus_port: int,
    tags: int,
    change_log: SynchronizedArray[float],
    ready: Any,
    stop: Any,
) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{opcua_port}/bench/")
    server.disable_clock()
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    idx = await server.register_namespace(NAMESPACE)
    folder = await server.nodes.objects.add_folder(
        ua.NodeId(ua.String("Bench"), ua.Int16(idx)), "Bench"
    )
    nodeids = []
    for i in range(tags):
        var = await folder.add_variable(
            ua.NodeId(ua.String(f"Bench.T{i:04d}"), ua.Int16(idx)),
            f"T{i:04d}",
            0.0,
            ua.VariantType.Double,
        )
        nodeids.append(var.nodeid)

    image = [0] * tags  # the holding registers' current values

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # pymodbus calls this before answering: copy the current image into the reply.
        if values is not None:
            return ExcCodes.ILLEGAL_ADDRESS  # the bench plant is read-only
        first = address - start_address
        registers[first : first + count] = image[address : address + count]
        return None

    device = SimDevice(
        1,
        simdata=[SimData(0, count=tags, values=0, datatype=SimType.REGISTERS)],
        action=action,
    )
    modbus = ModbusTcpServer([device], address=("127.0.0.1", modbus_port))
    await modbus.serve_forever(background=True)
    await server.start()
    ready.set()
    parent = os.getppid()
    try:
        await _change_forever(server, nodeids, image, change_log, stop, parent)
    finally:
        await modbus.shutdown()  # type: ignore[no-untyped-call]
        await server.stop()


async def _change_forever(
    server: Server,
    nodeids: Sequence[ua.NodeId],
    image: list[int],
    change_log: SynchronizedArray[float],
    stop: Any,
    parent: int,
) -> None:
    """Change every tag once a second, group by group, and record when each change happened."""
    tags = len(nodeids)
    start = time.time()
    k = 0
    while not stop.is_set() and os.getppid() == parent:
        k += 1
        for j in range(SLICES):
            delay = start + (k - 1) + j / SLICES - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            # Registers and change time are set with no await in between: no request can be
            # answered with the new counter before its change time is in the log.
            counter = k & 0xFFFF
            for i in range(j, tags, SLICES):
                image[i] = counter
            change_log[(k % RING) * SLICES + j] = now
            stamp = cast(ua.DateTime, datetime.fromtimestamp(now, UTC))
            value = ua.Variant(float(k), ua.VariantType.Double)
            for i in range(j, tags, SLICES):
                await server.write_attribute_value(
                    nodeids[i], ua.DataValue(value, SourceTimestamp=stamp, ServerTimestamp=stamp)
                )


def _process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of another process, from /proc; None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------ configuration


def bench_config(opcua_port: int, modbus_port: int, tags: int) -> GatewayConfig:
    """The scaled plant's address map as a gateway config, parsed the way users' files are."""
    lines = [
        f"[source.{OPCUA}]",
        'protocol = "opcua"',
        f'endpoint = "opc.tcp://127.0.0.1:{opcua_port}/bench/"',
        f'namespace_uri = "{NAMESPACE}"',
        'mode = "subscription"',
        "poll_interval_s = 1.0",
        "timeout_s = 4.0",
        f"[source.{OPCUA}.security]",
        'policy = "None"',
        'mode = "None"',
        f"[source.{MODBUS}]",
        'protocol = "modbus"',
        'transport = "tcp"',
        'host = "127.0.0.1"',
        f"port = {modbus_port}",
        "unit = 1",
        "poll_interval_s = 1.0",
        "timeout_s = 1.0",
    ]
    for i in range(tags):
        lines += [
            f"[signal.{OPCUA}_{i:04d}]",
            f'source = "{OPCUA}"',
            f'address = "s=Bench.T{i:04d}"',
            'type = "float64"',
            'unit = "1"',
            "range = [0.0, 1e9]",
            "max_age_s = 5.0",
            f"[signal.{MODBUS}_{i:04d}]",
            f'source = "{MODBUS}"',
            f'address = "hr:{i}"',
            'type = "uint16"',
            'unit = "1"',
            "range = [0.0, 65535.0]",
            "max_age_s = 5.0",
        ]
    return parse_config("\n".join(lines), "bench")


def signals_of(cfg: GatewayConfig, source: str) -> dict[str, Signal]:
    return {n: s for n, s in cfg.signal.items() if s.source == source}


# ------------------------------------------------------------------------ the measuring sink

ChangeTime = Callable[[str, int, RawSample], float]


class Probe:
    """The readers' sink: passes every batch to the real ``Acquisition``, then keeps score.

    Its bookkeeping runs inside the measured CPU time, the same few operations per sample
    for every variant.
    """

    def __init__(self, acq: Acquisition, change_time: ChangeTime) -> None:
        self._acq = acq
        self._change_time = change_time
        self._last: dict[str, int] = {}
        self.disconnects = 0
        self.reset()

    def reset(self) -> None:
        self.delivered = 0
        self.values = 0
        self.missed = 0
        self.latencies: list[float] = []

    @property
    def seen(self) -> int:
        """How many tags have delivered at least one change so far."""
        return len(self._last)

    def samples(self, source: str, batch: Sequence[tuple[str, RawSample]]) -> None:
        self._acq.samples(source, batch)
        now = time.time()  # the batch is in the live table from here on
        self.delivered += len(batch)
        for name, raw in batch:
            if raw.value is None:
                continue
            k = int(raw.value)
            last = self._last.get(name, 0)
            if k <= last:
                continue  # read again before it changed: delivered, but not news
            if last:
                self.missed += k - last - 1
            self._last[name] = k
            self.values += 1
            changed = self._change_time(name, k, raw)
            if changed > 0.0:
                self.latencies.append(now - changed)

    def texts(self, source: str, batch: Sequence[PlantTextValue]) -> None:
        # The OPC UA reader reads every node's display name on connect (plant text).
        self._acq.texts(source, batch)

    def link(self, source: str, state: LinkState, detail: str | None) -> None:
        if state is LinkState.DISCONNECTED:
            self.disconnects += 1
        self._acq.link(source, state, detail)


# ------------------------------------------------------------------------ the naive baseline


def _pace(next_at: float, period: float) -> tuple[float, float]:
    """The next cycle's start and how long to sleep until it; an overrun is not caught up."""
    next_at += period
    now = time.monotonic()
    if next_at < now:
        next_at = now
    return next_at, next_at - now


class NaiveOpcUa:
    """One Read request per node per cycle, awaited in turn."""

    def __init__(
        self, name: str, cfg: OpcUaSource, signals: Mapping[str, Signal], sink: SampleSink
    ) -> None:
        self.name, self._cfg, self._signals, self._sink = name, cfg, dict(signals), sink
        self.cycles = 0

    async def run(self) -> None:
        client = Client(self._cfg.endpoint, timeout=self._cfg.timeout_s)
        client.session_timeout = 60_000  # ms, as the reader asks
        async with client:
            ns = await client.get_namespace_index(self._cfg.namespace_uri)
            nodes = [
                (n, client.get_node(f"ns={ns};{s.address}"), s) for n, s in self._signals.items()
            ]
            self._sink.link(self.name, LinkState.CONNECTED, None)
            next_at = time.monotonic()
            while True:
                for name, node, spec in nodes:
                    dv = await node.read_data_value()
                    self._sink.samples(self.name, [(name, to_raw_sample(dv, spec, time.time()))])
                self.cycles += 1
                next_at, delay = _pace(next_at, self._cfg.poll_interval_s)
                await asyncio.sleep(delay)


class NaiveModbus:
    """One ``read_holding_registers(address, count=1)`` per register per cycle, in turn."""

    def __init__(
        self, name: str, cfg: ModbusSource, signals: Mapping[str, Signal], sink: SampleSink
    ) -> None:
        self.name, self._cfg, self._signals, self._sink = name, cfg, dict(signals), sink
        # plan_reads of a single signal is a one-register block: the decode path stays ours.
        self.blocks = [plan_reads({n: s}, cfg.unit)[0] for n, s in self._signals.items()]
        self.cycles = 0

    async def run(self) -> None:
        client = make_client(self._cfg)  # the gateway's client settings (timeout, no retries)
        try:
            if not await client.connect():
                raise ConnectionError(f"cannot connect to {self._cfg.host}:{self._cfg.port}")
            self._sink.link(self.name, LinkState.CONNECTED, None)
            next_at = time.monotonic()
            while True:
                for block in self.blocks:
                    rr = await client.read_holding_registers(
                        block.start, count=1, device_id=block.unit
                    )
                    if rr.isError():
                        raise ConnectionError(f"modbus exception reading hr:{block.start}")
                    self._sink.samples(
                        self.name, decode_block(block, rr.registers, self._signals, time.time())
                    )
                self.cycles += 1
                next_at, delay = _pace(next_at, self._cfg.poll_interval_s)
                await asyncio.sleep(delay)
        finally:
            client.close()


# ------------------------------------------------------------------------ variants and runs


class Runner(Protocol):
    cycles: int

    async def run(self) -> None: ...


@dataclass(frozen=True)
class Variant:
    label: str
    kind: Literal["ours", "naive", "info"]
    protocol: Literal["opcua", "modbus"]
    build: Callable[[SampleSink], Runner]
    #: Requests one cycle of this variant sends (a description, not a measurement).
    requests: Callable[[Runner], str]
    #: Whether ``cycles`` counts read cycles (polling) rather than keep-alive probes.
    polled: bool


@dataclass(frozen=True)
class Result:
    variant: Variant
    values: int
    delivered: int
    missed: int
    cpu_s: float
    wall_s: float
    latencies_ms: np.ndarray[Any, np.dtype[np.float64]]
    cycles: int
    requests: str
    tags: int
    server_cpu_s: float | None
    disconnects: int

    @property
    def values_per_cpu_s(self) -> float:
        return self.values / self.cpu_s if self.cpu_s > 0 else math.inf

    @property
    def cpu_s_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.values if self.values else math.inf

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else math.nan

    @property
    def cycle_s(self) -> float:
        """Achieved cycle time of a polled variant (NaN for a subscription)."""
        return self.wall_s / self.cycles if self.variant.polled and self.cycles else math.nan

    @property
    def refresh_s(self) -> float:
        """Mean time between two new values of one tag (1.0 when every change arrives)."""
        return self.wall_s * self.tags / self.values if self.values else math.inf


def variants(cfg: GatewayConfig) -> list[Variant]:
    ua_cfg, mb_cfg = cfg.source[OPCUA], cfg.source[MODBUS]
    assert isinstance(ua_cfg, OpcUaSource)
    assert isinstance(mb_cfg, ModbusSource)
    ua_sig, mb_sig = signals_of(cfg, OPCUA), signals_of(cfg, MODBUS)
    polling = ua_cfg.model_copy(update={"mode": "polling"})

    def blocks(r: Runner) -> str:
        assert isinstance(r, ModbusReader | NaiveModbus)
        return f"{len(r.blocks)} reads"

    return [
        Variant(
            "ours opcua subscription",
            "ours",
            "opcua",
            lambda sink: OpcUaReader(OPCUA, ua_cfg, ua_sig, sink),
            lambda _: "1 publish+1 probe",
            polled=False,
        ),
        Variant(
            "ours modbus batched",
            "ours",
            "modbus",
            lambda sink: ModbusReader(MODBUS, mb_cfg, mb_sig, sink),
            blocks,
            polled=True,
        ),
        Variant(
            "ours opcua polling",
            "info",
            "opcua",
            lambda sink: OpcUaReader(OPCUA, polling, ua_sig, sink),
            lambda _: "1 read",
            polled=True,
        ),
        Variant(
            "naive opcua per-node",
            "naive",
            "opcua",
            lambda sink: NaiveOpcUa(OPCUA, ua_cfg, ua_sig, sink),
            lambda _: f"{len(ua_sig)} reads",
            polled=True,
        ),
        Variant(
            "naive modbus per-register",
            "naive",
            "modbus",
            lambda sink: NaiveModbus(MODBUS, mb_cfg, mb_sig, sink),
            blocks,
            polled=True,
        ),
    ]


async def measure(
    variant: Variant,
    cfg: GatewayConfig,
    change_time: ChangeTime,
    *,
    tags: int,
    seconds: float,
    warmup_s: float,
    server_pid: int,
) -> Result:
    """Run one variant alone: warm up until every tag has arrived, then measure ``seconds``."""
    probe = Probe(Acquisition(cfg), change_time)
    runner = variant.build(probe)
    task = asyncio.create_task(runner.run(), name=f"bench:{variant.label}")
    try:
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while probe.seen < tags:
            if task.done():
                task.result()  # raises the reader's error
                raise RuntimeError(f"{variant.label}: stopped during warm-up")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{variant.label}: only {probe.seen} of {tags} tags arrived "
                    f"within {WARMUP_TIMEOUT_S:g} s"
                )
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup_s)
        probe.reset()
        disconnects, cycles = probe.disconnects, runner.cycles
        server0 = _process_cpu_s(server_pid)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        server1 = _process_cpu_s(server_pid)
        if task.done():
            task.result()
            raise RuntimeError(f"{variant.label}: stopped while being measured")
        return Result(
            variant=variant,
            values=probe.values,
            delivered=probe.delivered,
            missed=probe.missed,
            cpu_s=cpu,
            wall_s=wall,
            latencies_ms=np.asarray(probe.latencies, dtype=np.float64) * 1000.0,
            cycles=runner.cycles - cycles,
            requests=variant.requests(runner),
            tags=tags,
            server_cpu_s=None if server0 is None or server1 is None else server1 - server0,
            disconnects=probe.disconnects - disconnects,
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------------ report


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if not math.isfinite(x) else f"{x:,.{digits}f}"


def report(results: Sequence[Result]) -> None:
    header = (
        f"{'variant':<26} {'values':>7} {'deliv.':>7} {'missed':>6} {'CPU s':>6} "
        f"{'values/CPU s':>12} {'CPU s/1k':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'requests/cycle':>18} {'cycle s':>7} {'refresh s':>9} {'server CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        server = "-" if r.server_cpu_s is None else f"{100 * r.server_cpu_s / r.wall_s:.0f} %"
        print(
            f"{r.variant.label:<26} {r.values:>7} {r.delivered:>7} {r.missed:>6} "
            f"{r.cpu_s:>6.2f} {_fmt(r.values_per_cpu_s, 0):>12} {_fmt(r.cpu_s_per_1000, 3):>8} "
            f"{_fmt(r.latency_ms(50)):>7} {_fmt(r.latency_ms(99)):>7} "
            f"{r.requests:>18} {_fmt(r.cycle_s, 2):>7} "
            f"{_fmt(r.refresh_s, 2):>9} {server:>10}"
        )
        if r.disconnects:
            print(f"  warning: {r.variant.label} lost its connection {r.disconnects}x")


def combined(results: Sequence[Result], kind: str) -> tuple[float, float]:
    """Values per CPU second of both protocols together, and the worse of their p99s."""
    picked = [r for r in results if r.variant.kind == kind]
    values = sum(r.values for r in picked)
    cpu = sum(r.cpu_s for r in picked)
    p99 = max(r.latency_ms(99) for r in picked)
    return (values / cpu if cpu > 0 else math.inf), p99


# ------------------------------------------------------------------------ main


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run(args: argparse.Namespace) -> int:
    tags: int = args.tags
    ports = _free_port(), _free_port()
    cfg = bench_config(*ports, tags)
    ctx = mp.get_context("spawn")
    change_log = ctx.Array("d", RING * SLICES, lock=False)
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(
        target=serve,
        args=(*ports, tags, change_log, ready, stop),
        name="bench-plant",
        daemon=True,
    )
    started = time.perf_counter()
    server.start()
    assert server.pid is not None
    try:
        if not await asyncio.to_thread(ready.wait, SERVER_START_TIMEOUT_S):
            print(f"bench acquisition: plant did not start in {SERVER_START_TIMEOUT_S:g} s")
            return 1
        print(
            f"plant: {tags} OPC UA Double nodes + {tags} Modbus holding registers, each "
            f"changing once a second (pid {server.pid}, up in "
            f"{time.perf_counter() - started:.1f} s); {args.seconds:g} s per variant after "
            f"warm-up; this process's CPU only; {os.cpu_count()} CPUs"
        )
        index = {name: int(name.rsplit("_", 1)[1]) for name in cfg.signal}

        def opcua_changed(name: str, k: int, raw: RawSample) -> float:
            return raw.source_ts  # the server wrote the change time as SourceTimestamp

        def modbus_changed(name: str, k: int, raw: RawSample) -> float:
            return float(change_log[(k % RING) * SLICES + index[name] % SLICES])

        results = []
        for v in variants(cfg):
            if not server.is_alive():
                print("bench acquisition: the plant process died")
                return 1
            result = await measure(
                v,
                cfg,
                opcua_changed if v.protocol == "opcua" else modbus_changed,
                tags=tags,
                seconds=args.seconds,
                warmup_s=args.warmup,
                server_pid=server.pid,
            )
            results.append(result)
        print()
        report(results)
        ours, ours_p99 = combined(results, "ours")
        naive, naive_p99 = combined(results, "naive")
        print()
        print(
            f"ours (opcua subscription + modbus batched): {ours:,.0f} values/CPU s, "
            f"p99 {ours_p99:.0f} ms; naive: {naive:,.0f} values/CPU s, p99 {naive_p99:.0f} ms"
        )
        print(
            f"bench acquisition: values_per_cpu_s={ours:.0f} p99_latency_ms={ours_p99:.0f} "
            f"speedup_vs_naive={ours / naive:.1f}"
        )
        return 0
    finally:
        stop.set()
        await asyncio.to_thread(server.join, 10.0)
        if server.is_alive():
            server.terminate()
            server.join(5.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured wall s per variant")
    parser.add_argument("--warmup", type=float, default=2.0, help="s after every tag arrived")
    parser.add_argument("--tags", type=int, default=2000, help="OPC UA nodes = Modbus registers")
    args = parser.parse_args()
    if not 1 <= args.tags <= 9999:
        parser.error("--tags must be 1..9999")
    configure_logging(level="warning", stream=sys.stderr)
    # Stopping a variant cancels its read in flight; asyncua then warns that the late answer
    # has no waiting request. That is the teardown, not a fault worth a line per variant.
    logging.getLogger("asyncua.client.ua_client.UASocketProtocol").setLevel(logging.ERROR)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
