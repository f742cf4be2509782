"""The ``edgetwin`` command line.

Each subcommand imports what it needs when it runs, so ``edgetwin check-config`` on a Pi
does not pay for loading numba or llama.cpp. Exit codes: 0 success, 2 the input was refused
(bad config, broken audit chain), 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, GatewayError

DEFAULT_CONFIG = "config/skid.toml"
EXIT_REFUSED = 2


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the file, then build what the daemon would build from it.

    Loading checks the file alone; the twin's model and the anomaly model declare names of
    their own, which only building them can check. Doing both here means a config that
    passes check-config does not fail at start-up (and an anomaly model nobody built is
    reported here, where the fix is one command, instead of as a disabled detector).
    """
    from gateway.config import load_config
    from gateway.config.summary import summarize

    try:
        cfg = load_config(args.file)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(err.problems)} problem(s); nothing was loaded", file=sys.stderr)
        return EXIT_REFUSED
    problems: list[str] = []
    if cfg.twin is not None:
        from gateway.twin.build import build_twin

        try:
            build_twin(cfg.twin, source=args.file, signals=cfg.signal)
        except ConfigError as err:
            problems.extend(err.problems)
    model_line = None
    if cfg.detect is not None and cfg.detect.enabled:
        from gateway.detect.service import load_model

        model, model_problems = load_model(cfg.detect, set(cfg.signal), source=args.file)
        problems.extend(model_problems)
        if model is not None:
            meta = model.metadata
            w = meta.window
            external = f"; external features: {', '.join(meta.external)}" if meta.external else ""
            model_line = (
                f"{'':<12}model: {len(meta.features)} features, threshold {meta.threshold:g} "
                f"(clear {meta.clear_threshold:g}), {w.length * w.period_s:g} s windows every "
                f"{w.hop * w.period_s:g} s{external}"
            )
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            f"{args.file}: {len(problems)} problem(s) with the twin or the anomaly model it names",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    print(summarize(cfg, args.file))
    if model_line is not None:
        print(model_line)
    return 0


def _load_or_exit(path: str) -> object:
    from gateway.config import load_config

    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from err


def _cmd_plant(args: argparse.Namespace) -> int:
    from gateway.config import GatewayConfig
    from gateway.logs import configure_logging
    from gateway.plantsim.runner import run_plant_forever

    configure_logging(level=args.log_level)
    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    faults = dict(_parse_fault(text) for text in args.fault)
    _run_until_interrupted(
        lambda: run_plant_forever(
            cfg,
            host=args.host,
            opcua_port=args.opcua_port,
            modbus_port=args.modbus_port,
            write_log=Path(args.write_log) if args.write_log else None,
            speed=args.speed,
            seed=args.seed,
            watchdog_s=args.watchdog_s,
            faults=faults,
        )
    )
    return 0


def _parse_fault(text: str) -> tuple[str, float]:
    name, _, severity = text.partition("=")
    try:
        return name, float(severity) if severity else 1.0
    except ValueError:
        raise SystemExit(f"--fault {text!r}: expected NAME or NAME=SEVERITY (0..1)") from None


def _endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return str(args.endpoint)
    from gateway.config import GatewayConfig
    from gateway.config.schema import OpcUaSource

    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    for source in cfg.source.values():
        if isinstance(source, OpcUaSource):
            return source.endpoint
    raise SystemExit(f"{args.config}: no OPC UA source; pass --endpoint")


def _cmd_inject_fault(args: argparse.Namespace) -> int:
    from gateway.plantsim.control import inject_fault

    asyncio.run(inject_fault(_endpoint(args), args.name, args.severity))
    print(f"injected {args.name} at severity {args.severity:g}")
    return 0


def _cmd_clear_faults(args: argparse.Namespace) -> int:
    from gateway.plantsim.control import clear_faults

    asyncio.run(clear_faults(_endpoint(args)))
    print("faults cleared")
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.store.audit import verify_audit_file

    report = verify_audit_file(args.file)
    if report.ok:
        print(f"{args.file}: {report.records} records, chain intact")
        return 0
    print(f"{args.file}: BROKEN at record {report.first_bad_seq}: {report.reason}")
    return EXIT_REFUSED


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import GatewayConfig
    from gateway.daemon import Daemon
    from gateway.logs import configure_logging

    configure_logging(level=args.log_level)
    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    state_dir = Path(args.state_dir or cfg.gateway.state_dir)
    _run_until_interrupted(lambda: Daemon(cfg, state_dir).run())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.config import GatewayConfig
    from gateway.status import render_status

    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    print(render_status(cfg, Path(args.state_dir or cfg.gateway.state_dir)))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from gateway.config import GatewayConfig
    from gateway.twin.build import build_twin
    from gateway.twin.whatif import (
        WhatIfError,
        parse_changes,
        render,
        run_whatif,
        starting_point,
        to_json,
    )

    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    if cfg.twin is None:
        print(f"{args.config}: [twin]: no twin configured; add a [twin] section", file=sys.stderr)
        return 2
    try:
        model, simulator = build_twin(cfg.twin, source=args.config, signals=cfg.signal)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir or cfg.gateway.state_dir)
    try:
        changes = parse_changes(cfg, model, _parse_targets(args.set or []))
        start = starting_point(cfg, model, state_dir)
        answer = run_whatif(
            cfg,
            model,
            simulator,
            start,
            changes,
            horizon_s=args.horizon if args.horizon is not None else cfg.twin.horizon_s,
            members=args.ensemble or cfg.twin.ensemble,
            seed=cfg.twin.seed,
        )
    except (WhatIfError, ValueError) as err:
        print(f"edgetwin simulate: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(model, answer), allow_nan=False))
    else:
        print(render(cfg, model, answer))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.config import GatewayConfig
    from gateway.demo import run_demo
    from gateway.logs import configure_logging

    configure_logging(level=args.log_level)
    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    duration = None if args.duration == 0 else args.duration
    _run_until_interrupted(
        lambda: run_demo(cfg, speed=args.speed, duration_s=duration, config_path=args.config)
    )
    return 0


# -- the local control API's commands ----------------------------------------------------


def _api_exit_code(err: Exception) -> int:
    """2 when the gateway (or this command) refused the request as given (4xx, no token);
    1 when it could not be made or failed on the other side (unreachable, 5xx)."""
    from gateway.api.client import ApiError, ApiUnreachable

    if isinstance(err, ApiUnreachable) or not isinstance(err, ApiError):
        return 1
    if err.status is None or 400 <= err.status < 500:
        return EXIT_REFUSED
    return 1


def _call_api(args: argparse.Namespace, call: Callable[[Any], Any]) -> tuple[int, Any]:
    """Run ``call(client)`` against the API the config names; (exit code, result).

    Any failure is printed to stderr here, so a caller prints only a result.
    """
    from gateway.api.client import ApiClient, ApiError, resolve_token
    from gateway.config import GatewayConfig

    cfg = _load_or_exit(args.config)
    assert isinstance(cfg, GatewayConfig)
    if cfg.api is None or not cfg.api.enabled:
        print(
            f"{args.config}: api: the control API is not enabled; add an [api] section with "
            "tokens_file (and enabled = true), then restart `edgetwin run`",
            file=sys.stderr,
        )
        return EXIT_REFUSED, None
    try:
        client = ApiClient(cfg.api.port, resolve_token(args.token, args.token_file))
        return 0, call(client)
    except ApiError as err:
        print(f"edgetwin {args.command}: {err}", file=sys.stderr)
        return _api_exit_code(err), None


def _parse_targets(texts: Sequence[str]) -> dict[str, float]:
    """``TAG=VALUE`` pairs as absolute targets; ValueError naming the bad one."""
    import math

    targets: dict[str, float] = {}
    for text in texts:
        tag, sep, raw = text.partition("=")
        tag = tag.strip()
        if not sep or not tag:
            raise ValueError(f"--set {text!r}: expected TAG=VALUE, e.g. level_sp=1.8")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--set {text!r}: {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"--set {text!r}: the value must be a finite number")
        if tag in targets:
            raise ValueError(f"--set {text!r}: {tag} is set twice; give each tag once")
        targets[tag] = value
    return targets


def _cmd_propose(args: argparse.Namespace) -> int:
    """Print the gate's answer as one JSON object; exit 0 whatever the verdict, because a
    rejection is an answer, not a failure (a script reads ``decision``)."""
    import json

    try:
        targets = _parse_targets(args.set)
    except ValueError as err:
        print(f"edgetwin propose: {err}", file=sys.stderr)
        return EXIT_REFUSED
    code, result = _call_api(args, lambda c: c.propose(targets, args.reason, args.expires_in))
    if code == 0:
        print(json.dumps(result, allow_nan=False))
    return code


def _proposal_table(proposals: list[dict[str, Any]], status: str | None) -> str:
    if not proposals:
        return f"no {status} proposals" if status else "no proposals"

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    rows = [("ID", "STATUS", "DECISION", "PROPOSER", "TARGETS")]
    for p in proposals:
        # The governance layer nests the proposal's own record ({"proposal": {"id", ...},
        # "verdict": {...}}); a flat document is read the same way.
        inner = p.get("proposal")
        fields = {**inner, **p} if isinstance(inner, dict) else p
        verdict = p.get("verdict")
        decision = p.get("decision") or (
            verdict.get("decision") if isinstance(verdict, dict) else None
        )
        rows.append(
            (
                cell(fields.get("proposal_id", fields.get("id"))),
                cell(p.get("status")),
                cell(decision),
                cell(fields.get("proposer")),
                cell(fields.get("targets")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(f"{c:<{w}}" for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def _cmd_proposals(args: argparse.Namespace) -> int:
    import json

    code, result = _call_api(args, lambda c: c.proposals(args.status))
    if code == 0:
        print(
            json.dumps(result, allow_nan=False)
            if args.json
            else _proposal_table(result, args.status)
        )
    return code


def _print_api_result(args: argparse.Namespace, call: Callable[[Any], Any]) -> int:
    import json

    code, result = _call_api(args, call)
    if code == 0:
        print(json.dumps(result, allow_nan=False))
    return code


def _cmd_approve(args: argparse.Namespace) -> int:
    return _print_api_result(args, lambda c: c.approve(args.id, args.note))


def _cmd_reject(args: argparse.Namespace) -> int:
    return _print_api_result(args, lambda c: c.reject(args.id, args.reason))


def _cmd_resume_autonomy(args: argparse.Namespace) -> int:
    return _print_api_result(args, lambda c: c.resume_autonomy(args.note))


def _cmd_ask(args: argparse.Namespace) -> int:
    """Print the incident id and return: the agent answers minutes later, on its own
    schedule, so waiting here would only tie up the terminal (and time out over ssh)."""
    return _print_api_result(args, lambda c: c.ask_agent(args.note))


def _cmd_token_add(args: argparse.Namespace) -> int:
    """Print the new token on stdout (alone, so it can be piped into a file) and what was
    done on stderr. The token is not stored anywhere; this is the only time it is shown."""
    from gateway.api.auth import TokenFileError, add_token
    from gateway.api.ports import Role
    from gateway.config import GatewayConfig

    path = args.tokens_file
    if path is None:
        cfg = _load_or_exit(args.config)
        assert isinstance(cfg, GatewayConfig)
        if cfg.api is None:
            print(
                f"{args.config}: api: no [api] section to take tokens_file from; pass "
                "--tokens-file PATH",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        path = cfg.api.tokens_file
    try:
        token = add_token(path, args.name, Role(args.role))
    except TokenFileError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_REFUSED
    print(token)
    print(
        f"added {args.role} token {args.name!r} to {path}; only its hash is stored, so copy "
        "the token now (the gateway picks the change up without a restart)",
        file=sys.stderr,
    )
    return 0


def _brief(value: object, width: int = 80) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


def _cmd_audit_show(args: argparse.Namespace) -> int:
    """Every audit record of one proposal, in order: its whole story on one screen."""
    import json
    from datetime import UTC, datetime

    from gateway.errors import StoreError
    from gateway.store.audit import SqliteAuditTrail

    file = Path(args.file)
    # Checked first: opening a missing path would create an empty trail there.
    if not file.is_file():
        raise StoreError(f"audit trail {file}: no such file (pass --file, e.g. STATE_DIR/audit.db)")
    with SqliteAuditTrail(file) as trail:
        records = list(trail.records(proposal_id=args.id))
    if not records:
        print(f"{file}: no audit records for proposal {args.id!r}", file=sys.stderr)
        return 1
    if args.json:
        for r in records:
            print(json.dumps({"seq": r.seq, "ts": r.ts, "kind": r.kind, "payload": r.payload}))
        return 0
    print(f"proposal {args.id}: {len(records)} audit records in {file}")
    for r in records:
        when = datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        fields = "  ".join(f"{k}={_brief(v)}" for k, v in r.payload.items())
        print(f"{r.seq:>6}  {when}  {r.kind:<12}  {fields}")
    return 0


def _add_api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help="its [api] port is used")
    p.add_argument(
        "--token-file", help="file holding just the token (mode 600); default: $EDGETWIN_TOKEN"
    )
    p.add_argument("--token", help="the token itself (visible in `ps`; prefer the other two)")


def _run_until_interrupted(main: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run a coroutine until it ends or SIGINT / SIGTERM cancels it.

    The signal cancels the main task, so every task's ``finally`` (store flush, server
    shutdown) runs before the process exits; this is the process boundary, the one place
    where a cancellation is turned into a normal exit.
    """

    async def _guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await main()
        except asyncio.CancelledError:
            if task.cancelling() == 0:
                raise
            task.uncancel()
            print("\nstopped", file=sys.stderr)

    asyncio.run(_guarded())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetwin", description="An agentic digital twin for industrial edge boxes."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a config file and summarise it")
    p.add_argument("file", help="TOML config file, e.g. config/skid.toml")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("plant", help="run the simulated pump-tank-heater skid (OPC UA + Modbus)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="address map (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--write-log", help="append every write received as JSON lines here")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--watchdog-s", type=float, default=10.0, help="PLC heartbeat watchdog")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[=SEVERITY]",
        help="inject a fault at start (repeatable)",
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_cmd_plant)

    for name, func, text in (
        ("inject-fault", _cmd_inject_fault, "inject a fault into a running simulated plant"),
        ("clear-faults", _cmd_clear_faults, "clear all faults of a running simulated plant"),
    ):
        p = sub.add_parser(name, help=text)
        if name == "inject-fault":
            p.add_argument("name", help="fault name, e.g. bearing_degradation")
            p.add_argument("--severity", type=float, default=1.0, help="0..1")
        p.add_argument("--endpoint", help="plant OPC UA endpoint (default: from --config)")
        p.add_argument("--config", default=DEFAULT_CONFIG)
        p.set_defaults(func=func)

    p = sub.add_parser("audit", help="query or verify the audit trail")
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = audit.add_parser("verify", help="recompute the hash chain; exit 2 at the first break")
    v.add_argument("file", nargs="?", default="state/audit.db")
    v.set_defaults(func=_cmd_audit_verify)
    v = audit.add_parser("show", help="one proposal's whole story, record by record")
    v.add_argument("id", help="the proposal id")
    v.add_argument("--file", default="state/audit.db", help="audit database (default: %(default)s)")
    v.add_argument("--json", action="store_true", help="one JSON object per record")
    v.set_defaults(func=_cmd_audit_show)

    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", help="where the databases live (default: gateway.state_dir)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="signals, ages, qualities and source connection states")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", help="the daemon's state directory (default: from config)")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "simulate", help="what-if: the twin's prediction of a setpoint change (writes nothing)"
    )
    p.add_argument("--config", required=True, help="path to the gateway's TOML config")
    p.add_argument(
        "--set",
        action="append",
        metavar="TAG=VALUE",
        help="a writable tag or twin input and its new value (repeatable); none: hold all",
    )
    p.add_argument("--horizon", type=float, help="seconds to simulate (default: twin.horizon_s)")
    p.add_argument("--ensemble", type=int, help="parameter samples (default: twin.ensemble)")
    p.add_argument("--state-dir", help="the daemon's state directory (default: from config)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("demo", help="run the simulated plant with a scripted fault scenario")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per wall second (the twin and detector assume 1)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=840.0,
        help="stop after N wall seconds and print the summary (0: run until Ctrl-C)",
    )
    p.add_argument("--log-level", default="error")
    p.set_defaults(func=_cmd_demo)
    _add_api_parsers(sub)
    return parser


def _add_api_parsers(sub: Any) -> None:
    """The commands that talk to a running gateway's control API, and ``token add``."""
    p = sub.add_parser(
        "propose", help="submit a proposal to the running gateway; prints its verdict as JSON"
    )
    p.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="TAG=VALUE",
        help="absolute target of a writable tag (repeatable)",
    )
    p.add_argument("--reason", required=True, help="why; shown to approvers, kept in the audit")
    p.add_argument("--expires-in", type=float, metavar="S", help="default: the gateway's")
    _add_api_args(p)
    p.set_defaults(func=_cmd_propose)

    p = sub.add_parser("proposals", help="list the running gateway's proposals")
    p.add_argument("--status", help="only proposals in this status, e.g. pending")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_api_args(p)
    p.set_defaults(func=_cmd_proposals)

    p = sub.add_parser("approve", help="approve a pending proposal (it is re-checked first)")
    p.add_argument("id", help="the proposal id")
    p.add_argument("--note", default="", help="recorded with the approval")
    _add_api_args(p)
    p.set_defaults(func=_cmd_approve)

    p = sub.add_parser("reject", help="reject a pending proposal")
    p.add_argument("id", help="the proposal id")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    _add_api_args(p)
    p.set_defaults(func=_cmd_reject)

    p = sub.add_parser(
        "resume-autonomy", help="re-enable autonomous writes after a read-back/outcome trip"
    )
    p.add_argument("--note", required=True, help="what was checked (recorded)")
    _add_api_args(p)
    p.set_defaults(func=_cmd_resume_autonomy)

    p = sub.add_parser(
        "ask",
        help="ask the running gateway's agent to have a look now; prints the incident id",
        description="Queue an on-demand look by the diagnosing agent and print its incident "
        "id as JSON. The answer arrives later: agent_* records in the audit trail (incident "
        "id in the payload) and, if the agent proposes a change, `edgetwin proposals`.",
    )
    p.add_argument(
        "--note", required=True, help="what to look at and why, e.g. 'the pump sounds odd'"
    )
    _add_api_args(p)
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("token", help="manage the control API's tokens")
    token = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = token.add_parser("add", help="create a token, store its hash, print the token once")
    t.add_argument("--name", required=True, help="who holds it (recorded as the approver)")
    t.add_argument("--role", required=True, choices=("viewer", "operator", "engineer"))
    t.add_argument("--tokens-file", help="default: [api].tokens_file of --config")
    t.add_argument("--config", default=DEFAULT_CONFIG)
    t.set_defaults(func=_cmd_token_add)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GatewayError as err:
        print(f"edgetwin {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
