"""Drive a running simulated plant over OPC UA (the CLI's ``inject-fault`` and tests).

Each helper opens its own short session, calls one method of the plant's ``Simulation``
object and closes the session; the plant's namespace index is looked up from its
namespace URI each time, as a client must. A refusal by the plant raises ValueError with
a message naming what was wrong; an unreachable plant raises
:class:`gateway.errors.SourceError`.
"""

from __future__ import annotations

from typing import Final

from asyncua import Client, ua

from gateway.errors import SourceError
from gateway.plantsim.faults import FAULTS
from gateway.plantsim.opcua_server import SIMULATION_ID

PLANT_NAMESPACE: Final = "urn:edgetwin:plantsim"
"""The namespace URI of config/skid.toml's OPC UA source."""

DEFAULT_TIMEOUT_S: Final = 5.0
SESSION_TIMEOUT_MS: Final = 60_000


async def call_simulation(
    endpoint: str,
    method: str,
    *args: ua.Variant,
    namespace_uri: str = PLANT_NAMESPACE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Call ``Simulation.<method>`` on the plant at ``endpoint``.

    Raises:
        SourceError: The plant cannot be reached or does not serve ``namespace_uri``.
        ua.UaStatusCodeError: The plant answered the call with a Bad status.
    """
    client = Client(endpoint, timeout=timeout_s)
    client.session_timeout = SESSION_TIMEOUT_MS  # within the server's limit: no warning
    try:
        await client.connect()
    except (OSError, TimeoutError, ua.UaError) as err:
        raise SourceError(f"cannot reach the plant at {endpoint}: {err}") from err
    try:
        try:
            idx = await client.get_namespace_index(namespace_uri)
        except ValueError as err:
            raise SourceError(f"{endpoint} does not serve namespace {namespace_uri!r}") from err
        sim = client.get_node(ua.NodeId(ua.String(SIMULATION_ID), ua.Int16(idx)))
        await sim.call_method(ua.QualifiedName(method, idx), *args)
    finally:
        await client.disconnect()


async def inject_fault(
    endpoint: str, name: str, severity: float, *, namespace_uri: str = PLANT_NAMESPACE
) -> None:
    """Inject fault ``name`` at ``severity`` (0..1; 0 removes it).

    Raises:
        ValueError: The plant refused: unknown fault name or severity outside [0, 1].
        SourceError: The plant cannot be reached.
    """
    try:
        await call_simulation(
            endpoint,
            "InjectFault",
            ua.Variant(name, ua.VariantType.String),
            ua.Variant(float(severity), ua.VariantType.Double),
            namespace_uri=namespace_uri,
        )
    except ua.UaStatusCodeError as err:
        if err.code == ua.StatusCodes.BadOutOfRange:
            raise ValueError(f"severity {severity!r} is outside [0, 1]") from err
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}") from err
        raise ValueError(f"the plant refused fault {name!r}: {err}") from err


async def clear_faults(endpoint: str, *, namespace_uri: str = PLANT_NAMESPACE) -> None:
    """Clear every fault of the plant (process and protocol layer)."""
    await call_simulation(endpoint, "ClearFaults", namespace_uri=namespace_uri)


async def set_remote(endpoint: str, enabled: bool, *, namespace_uri: str = PLANT_NAMESPACE) -> None:
    """Operate the operator's remote-enable switch of the plant."""
    await call_simulation(
        endpoint,
        "SetRemote",
        ua.Variant(bool(enabled), ua.VariantType.Boolean),
        namespace_uri=namespace_uri,
    )


async def restart_plc(endpoint: str, *, namespace_uri: str = PLANT_NAMESPACE) -> None:
    """Restart the plant's PLC program (its servers stay up)."""
    await call_simulation(endpoint, "RestartPlc", namespace_uri=namespace_uri)


async def set_operator_note(
    endpoint: str, text: str, *, namespace_uri: str = PLANT_NAMESPACE
) -> None:
    """Replace the plant-provided free text ``Skid.OperatorNote``."""
    await call_simulation(
        endpoint,
        "SetOperatorNote",
        ua.Variant(text, ua.VariantType.String),
        namespace_uri=namespace_uri,
    )


async def set_alarm_message(
    endpoint: str, text: str, *, namespace_uri: str = PLANT_NAMESPACE
) -> None:
    """Overwrite the PLC's alarm banner ``Skid.AlarmMessage``; the PLC writes its own text
    again the next time its trips change."""
    await call_simulation(
        endpoint,
        "SetAlarmMessage",
        ua.Variant(text, ua.VariantType.String),
        namespace_uri=namespace_uri,
    )
