"""Checks that relate one table of the config to another.

Each returns ``(key_path, message)`` pairs instead of raising, so a field engineer sees
every contradiction in one run of ``edgetwin check-config`` rather than one per run.
Nothing here adjusts a value: a contradiction refuses the whole file.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterator
from urllib.parse import urlsplit

from gateway.config.addresses import (
    REGISTER_COUNT,
    ModbusAddress,
    parse_modbus_address,
    validate_opcua_address,
)
from gateway.config.schema import GatewayConfig, ModbusSource, OpcUaSource, Signal

Problem = tuple[str, str]


def crosscheck(cfg: GatewayConfig) -> list[Problem]:
    """Return every cross-table contradiction in ``cfg`` (empty when it is consistent)."""
    return [
        *_check_signals(cfg),
        *_check_writables(cfg),
        *_check_interlocks(cfg),
        *_check_envelope(cfg),
        *_check_heartbeat(cfg),
        *_check_risk(cfg),
        *_check_twin(cfg),
        *_check_detect(cfg),
        *_check_api(cfg),
        *_check_govern(cfg),
        *_check_texts(cfg),
    ]


def _names(names: object) -> str:
    listed = sorted(names) if isinstance(names, dict | set | list) else []
    return ", ".join(listed) if listed else "(none declared)"


def _check_signals(cfg: GatewayConfig) -> Iterator[Problem]:
    # (source, unit, table) -> [(first_register, last_register, bit, signal name)]
    spans: dict[tuple[str, int, str], list[tuple[int, int, int | None, str]]] = defaultdict(list)
    opcua_nodes: dict[tuple[str, str], str] = {}
    points: dict[tuple[str, str], str] = {}
    for name, sig in cfg.signal.items():
        key = f"signal.{name}"
        source = cfg.source.get(sig.source)
        if source is None:
            yield f"{key}.source", f"unknown source {sig.source!r}; declared: {_names(cfg.source)}"
            continue
        point = sig.point or name
        if (sig.source, point) in points:
            yield (
                f"{key}.point",
                f"plant point {point!r} is already read by signal "
                f"{points[(sig.source, point)]!r} on source {sig.source!r}",
            )
        points[(sig.source, point)] = name
        if isinstance(source, OpcUaSource):
            yield from _check_opcua_signal(key, name, sig, opcua_nodes)
        else:
            yield from _check_modbus_signal(key, name, sig, source, spans)


def _check_opcua_signal(
    key: str, name: str, sig: Signal, nodes: dict[tuple[str, str], str]
) -> Iterator[Problem]:
    try:
        validate_opcua_address(sig.address)
    except ValueError as err:
        yield f"{key}.address", str(err)
        return
    for field in ("bit", "unit_id"):
        if getattr(sig, field) is not None:
            yield f"{key}.{field}", f"'{field}' applies to Modbus sources only; remove it"
    other = nodes.get((sig.source, sig.address))
    if other is not None:
        yield f"{key}.address", f"node {sig.address!r} is already read by signal {other!r}"
    nodes[(sig.source, sig.address)] = name


def _check_modbus_signal(
    key: str,
    name: str,
    sig: Signal,
    source: ModbusSource,
    spans: dict[tuple[str, int, str], list[tuple[int, int, int | None, str]]],
) -> Iterator[Problem]:
    try:
        address = parse_modbus_address(sig.address)
    except ValueError as err:
        yield f"{key}.address", str(err)
        return
    if address.is_bit_table and sig.type != "bool":
        yield f"{key}.type", f"{address} is a bit table; its type must be 'bool', not {sig.type!r}"
        return
    if not address.is_bit_table and sig.type == "bool" and sig.bit is None:
        yield f"{key}.bit", f"a bool in register {address} needs 'bit' (0..15)"
        return
    if sig.bit is not None and (address.is_bit_table or sig.type not in ("bool", "uint16")):
        yield (
            f"{key}.bit",
            "'bit' selects one bit of a 16-bit register; use it with type 'bool' or 'uint16' "
            "in an hr/ir table",
        )
        return
    count = 1 if address.is_bit_table else REGISTER_COUNT[sig.type]
    last = address.offset + count - 1
    if last > 65535:
        yield f"{key}.address", f"{sig.type} at {address} runs past register 65535"
        return
    unit = sig.unit_id if sig.unit_id is not None else source.unit
    taken = spans[(sig.source, unit, address.table)]
    for first, end, bit, other in taken:
        overlaps = first <= last and address.offset <= end
        distinct_bits = bit is not None and sig.bit is not None and bit != sig.bit
        if overlaps and not distinct_bits:
            yield (
                f"{key}.address",
                f"{sig.type} at {address} (unit {unit}) overlaps signal {other!r} "
                f"({address.table}:{first}..{end})",
            )
            break
    taken.append((address.offset, last, sig.bit, name))


def _writable_address_problem(cfg: GatewayConfig, sig: Signal) -> str | None:
    """Why a signal's address cannot take a write, or None if it can."""
    source = cfg.source.get(sig.source)
    if isinstance(source, ModbusSource):
        try:
            address: ModbusAddress = parse_modbus_address(sig.address)
        except ValueError:
            return None  # reported with the signal
        if not address.is_writable_table:
            return f"its address {address} is read-only in Modbus (use hr: or co:)"
    return None


def _check_writables(cfg: GatewayConfig) -> Iterator[Problem]:
    for tag, w in cfg.writable.items():
        key = f"writable.{tag}"
        sig = cfg.signal.get(w.signal)
        if sig is None:
            yield f"{key}.signal", f"unknown signal {w.signal!r}; declared: {_names(cfg.signal)}"
            continue
        low, high = w.limits
        if low < sig.range[0] or high > sig.range[1]:
            yield (
                f"{key}.limits",
                f"limits [{low}, {high}] lie outside signal {w.signal!r} range "
                f"[{sig.range[0]}, {sig.range[1]}]; narrow the limits",
            )
        if w.max_step > high - low:
            yield (
                f"{key}.max_step",
                f"max_step {w.max_step} is wider than the limits [{low}, {high}]; "
                "it would not limit anything",
            )
        problem = _writable_address_problem(cfg, sig)
        if problem is not None:
            yield f"{key}.signal", f"signal {w.signal!r} cannot be written: {problem}"
        if cfg.heartbeat is not None and cfg.heartbeat.signal == w.signal:
            yield f"{key}.signal", "the heartbeat signal cannot also be a writable setpoint"


def _check_interlocks(cfg: GatewayConfig) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, lock in enumerate(cfg.interlock):
        key = f"interlock[{i}]"
        if lock.name in seen:
            yield f"{key}.name", f"interlock name {lock.name!r} is used twice"
        seen.add(lock.name)
        sig = cfg.signal.get(lock.signal)
        if sig is None:
            yield f"{key}.signal", f"unknown signal {lock.signal!r}; declared: {_names(cfg.signal)}"
        elif not sig.range[0] < lock.threshold < sig.range[1]:
            yield (
                f"{key}.threshold",
                f"threshold {lock.threshold} is outside signal {lock.signal!r} range "
                f"[{sig.range[0]}, {sig.range[1]}], so the interlock could never change state",
            )
        for j, forbid in enumerate(lock.forbid):
            if forbid.tag not in cfg.writable:
                yield (
                    f"{key}.forbid[{j}].tag",
                    f"unknown writable tag {forbid.tag!r}; declared: {_names(cfg.writable)}",
                )
        if lock.bypass is not None and lock.bypass not in cfg.signal:
            yield (
                f"{key}.bypass",
                f"unknown signal {lock.bypass!r}; declared: {_names(cfg.signal)}",
            )


def _check_envelope(cfg: GatewayConfig) -> Iterator[Problem]:
    for name, bound in cfg.envelope.items():
        sig = cfg.signal.get(name)
        if sig is None:
            yield f"envelope.{name}", f"unknown signal {name!r}; declared: {_names(cfg.signal)}"
        elif bound.high <= sig.range[0] or bound.low >= sig.range[1]:
            yield (
                f"envelope.{name}",
                f"[{bound.low}, {bound.high}] does not overlap the signal's range "
                f"[{sig.range[0]}, {sig.range[1]}]",
            )


def _check_heartbeat(cfg: GatewayConfig) -> Iterator[Problem]:
    if cfg.heartbeat is None:
        return
    sig = cfg.signal.get(cfg.heartbeat.signal)
    if sig is None:
        yield (
            "heartbeat.signal",
            f"unknown signal {cfg.heartbeat.signal!r}; declared: {_names(cfg.signal)}",
        )
        return
    problem = _writable_address_problem(cfg, sig)
    if problem is not None:
        yield "heartbeat.signal", f"signal {cfg.heartbeat.signal!r} cannot be written: {problem}"
    if sig.type in ("float32", "float64", "bool"):
        yield "heartbeat.signal", "the heartbeat is a counter; its type must be an integer type"


def _check_risk(cfg: GatewayConfig) -> Iterator[Problem]:
    both = sorted(set(cfg.risk.auto_execute) & set(cfg.risk.two_approvers))
    if both:
        yield (
            "risk.auto_execute",
            f"risk class(es) {', '.join(both)} cannot both auto-execute and need two approvers",
        )


def _check_twin(cfg: GatewayConfig) -> Iterator[Problem]:
    """Wiring only; whether the model declares these names is checked when it is built."""
    if cfg.twin is None:
        return
    for table in ("inputs", "outputs"):
        for name, signal in getattr(cfg.twin, table).items():
            if signal not in cfg.signal:
                yield (
                    f"twin.{table}.{name}",
                    f"unknown signal {signal!r}; declared: {_names(cfg.signal)}",
                )
    if cfg.twin.horizon_s < cfg.twin.dt_s:
        yield "twin.horizon_s", f"horizon {cfg.twin.horizon_s:g} s is shorter than dt_s"


def _check_govern(cfg: GatewayConfig) -> Iterator[Problem]:
    remote = cfg.govern.remote_signal
    if remote is not None and remote not in cfg.signal:
        yield (
            "govern.remote_signal",
            f"unknown signal {remote!r}; declared: {_names(cfg.signal)}",
        )


def _check_detect(cfg: GatewayConfig) -> Iterator[Problem]:
    """Wiring only; which roles the model reads is known once its metadata is read
    (``edgetwin check-config`` and the detect service check that)."""
    if cfg.detect is None:
        return
    for role, signal in cfg.detect.signals.items():
        if signal not in cfg.signal:
            yield (
                f"detect.signals.{role}",
                f"unknown signal {signal!r}; declared: {_names(cfg.signal)}",
            )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _source_port(source: OpcUaSource | ModbusSource) -> tuple[str | None, int | None]:
    if isinstance(source, ModbusSource):
        return source.host, source.port if source.transport == "tcp" else None
    try:
        split = urlsplit(source.endpoint)
        return split.hostname, split.port or 4840
    except ValueError:
        return None, None


def _check_api(cfg: GatewayConfig) -> Iterator[Problem]:
    """The API listens on 127.0.0.1:port; a source served on that same loopback port (the
    simulated plant, a local PLC runtime) means one of the two cannot start."""
    if cfg.api is None or not cfg.api.enabled:
        return
    for name, source in cfg.source.items():
        host, port = _source_port(source)
        if port == cfg.api.port and _is_loopback(host):
            yield (
                "api.port",
                f"port {cfg.api.port} is already used by source {name!r} on {host}; "
                "choose another port for the API",
            )


def _check_texts(cfg: GatewayConfig) -> Iterator[Problem]:
    """Plant text is read over OPC UA only: a Modbus register holds no string the gateway
    could trust to be one, so a text on a Modbus source is refused rather than guessed."""
    opcua = sorted(n for n, s in cfg.source.items() if isinstance(s, OpcUaSource))
    fix = f"use an OPC UA source: {', '.join(opcua)}" if opcua else "declare an OPC UA source"
    for name, text in cfg.text.items():
        key = f"text.{name}"
        source = cfg.source.get(text.source)
        if source is None:
            yield f"{key}.source", f"unknown source {text.source!r}; {fix}"
            continue
        if not isinstance(source, OpcUaSource):
            yield (
                f"{key}.source",
                f"source {text.source!r} is {source.protocol}; plant text is read over "
                f"OPC UA only; {fix}",
            )
            continue
        try:
            validate_opcua_address(text.node)
        except ValueError as err:
            yield f"{key}.node", str(err)
