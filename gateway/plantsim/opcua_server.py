"""The simulated PLC's OPC UA server (asyncua), serving the skid at config's addresses.

Address space (namespace = the config source's ``namespace_uri``)::

    Objects/
      Skid/                       one variable per signal of the OPC UA source, NodeId and
        <signal>                  data type from config; DisplayName the signal's name or
          EURange, EngineeringUnits   the one given in ``display_names``; Description, and
                                  the standard properties (AnalogItemType for floats)
        OperatorNote              read-only String, plant-provided free text
        AlarmMessage              read-only String, the PLC's alarm banner ("" when calm)
      Simulation/                 scenario control for tests and the CLI (not PLC data)
        InjectFault(name: String, severity: Double)
        ClearFaults()
        SetRemote(enabled: Boolean)
        RestartPlc()
        SetOperatorNote(text: String)
        SetAlarmMessage(text: String)

The strings (OperatorNote, AlarmMessage, DisplayNames) are what a real plant lets people
write, so tests put hostile text there: the gateway must carry it as data, never obey it.

Values carry the PLC's quality (a failed sensor publishes ``BadSensorFailure``) and a
source timestamp: the simulated instant the runtime maps to wall-clock time.

How client writes are judged (asyncua 2.1): the server's ``AttributeService`` is replaced
by :class:`_PlantAttributeService`, which answers every Value write to a node in the plant
namespace itself (the PLC judges it through :meth:`WriteSink.submit`) and hands the rest
to asyncua. Per-node status codes go back in the WriteResponse, so one refused item does
not fail the others. The alternatives were weighed and rejected: an attribute value
setter (``set_attribute_value_setter``) can only refuse by raising, which turns into a
ServiceFault for the whole request, and it also fires for the server's own publishing
writes; a ``PreWrite`` server callback is a notification and cannot refuse.

Secured mode (a certificate is given): only secure endpoints are offered, the server's
ApplicationUri is the one in its certificate, and a client gets a session only over a
channel signed with a certificate that passes :meth:`PlantOpcUaServer.check_client_certificate`
(and, with ``trusted_certificates``, is one of them). Offering only secure endpoints is not
enough with asyncua 2.1: its server still opens a SecurityPolicy None channel to anyone (the
discovery services need one) and activates a session on it, so a client that skips the
endpoint check would read everything. :class:`_SecureChannelUsers` closes that door at
ActivateSession, where asyncua hands over the channel's client certificate.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, cast
from urllib.parse import urlparse

from asyncua import Node, Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AddressSpace, AttributeService
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config.addresses import DataType
from gateway.config.schema import GatewayConfig, OpcUaSource, Signal
from gateway.errors import ConfigError
from gateway.io.opcua_reader import certificate_uri
from gateway.logs import get_logger
from gateway.plantsim.faults import FAULTS
from gateway.plantsim.plant import Reading, WriteOutcome
from gateway.plantsim.points import POINTS
from gateway.plantsim.writelog import WriteAttempt, WriteSink

log = get_logger(__name__)

#: OPC UA built-in data type of each config data type.
VARIANT_TYPES: Final[dict[DataType, ua.VariantType]] = {
    "float64": ua.VariantType.Double,
    "float32": ua.VariantType.Float,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "bool": ua.VariantType.Boolean,
}

_INT_BOUNDS: Final[dict[DataType, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}

#: Status code a client's write gets for each refusal reason of the PLC (plc.WriteOutcome).
WRITE_REFUSAL_STATUS: Final[Mapping[str, int]] = {
    "unknown point": ua.StatusCodes.BadNotWritable,
    "read-only": ua.StatusCodes.BadNotWritable,
    "not finite": ua.StatusCodes.BadOutOfRange,
    "out of range": ua.StatusCodes.BadOutOfRange,
    "not an integer": ua.StatusCodes.BadOutOfRange,
    "local mode": ua.StatusCodes.BadUserAccessDenied,
}
_REFUSED_OTHERWISE: Final = ua.StatusCodes.BadRequestNotAllowed

#: Status code published for a reading the PLC marks bad, by its reason.
READING_STATUS: Final[Mapping[str, int]] = {"sensor failure": ua.StatusCodes.BadSensorFailure}
_BAD_OTHERWISE: Final = ua.StatusCodes.BadSensorFailure

#: UNECE Rec. 20 common codes of the units the skid uses (OPC UA Part 8 EUInformation).
_UNECE_NAMESPACE: Final = "http://www.opcfoundation.org/UA/units/un/cefact"
_UNECE_CODES: Final[Mapping[str, str]] = {
    "m": "MTR",
    "degC": "CEL",
    "rpm": "RPM",
    "m3/h": "MQH",
    "bar": "BAR",
    "%": "P1",
    "kW": "KWT",
    "A": "AMP",
    "mm/s": "C16",
}

#: Endpoints a secured plant offers unless told otherwise: the policies asyncua supports that
#: are not deprecated, each in Sign and SignAndEncrypt mode; never SecurityPolicy None.
SECURE_POLICIES: Final = (
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
)

SKID_ID: Final = "Skid"
OPERATOR_NOTE_ID: Final = "Skid.OperatorNote"
ALARM_MESSAGE_ID: Final = "Skid.AlarmMessage"
SIMULATION_ID: Final = "Simulation"
METHODS: Final = (
    "InjectFault",
    "ClearFaults",
    "SetRemote",
    "RestartPlc",
    "SetOperatorNote",
    "SetAlarmMessage",
)

#: Re-stamp an unchanged value at least this often (wall seconds), so a polling client's
#: source timestamps keep moving while a setpoint or status holds still.
REFRESH_S: Final = 1.0
CLOCK_S: Final = 1.0
"""How often ServerStatus.CurrentTime is updated, wall seconds."""


class SimulationControl(Protocol):
    """What the ``Simulation`` methods drive; :class:`runner.PlantRuntime` implements it."""

    def inject_fault(self, name: str, severity: float) -> None:
        """Raise ValueError for an unknown fault or a severity outside [0, 1]."""

    def clear_faults(self) -> None: ...

    def set_remote(self, enabled: bool) -> None: ...

    def restart_plc(self) -> None: ...

    async def set_alarm_message(self, text: str) -> None:
        """Overwrite the PLC's alarm text (it is the PLC's state; this server serves it)."""


_Method = Callable[..., Awaitable[ua.CallMethodResult]]


@dataclass(frozen=True)
class _SignalNode:
    name: str
    point: str
    address: str
    type: DataType
    vtype: ua.VariantType
    nodeid: ua.NodeId


def _nodeid(identifier: str | int, namespace: int = 0) -> ua.NodeId:
    # asyncua annotates with its own int/str subclasses; convert in one place.
    ident = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(ident, ua.Int16(namespace))


def _status(code: int = ua.StatusCodes.Good) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _ua_time(instant: datetime) -> ua.DateTime:
    return cast(ua.DateTime, instant)


def unece_unit_id(code: str) -> int:
    """The EUInformation.UnitId of a UNECE common code (OPC UA Part 8, 5.6.3)."""
    unit_id = 0
    for char in code:
        unit_id = (unit_id << 8) | ord(char)
    return unit_id


def eu_information(unit: str) -> ua.EUInformation:
    """EngineeringUnits for a config unit string (UnitId -1 when no UNECE code is known)."""
    code = _UNECE_CODES.get(unit)
    return ua.EUInformation(
        NamespaceUri=_UNECE_NAMESPACE,
        UnitId=unece_unit_id(code) if code else -1,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


def opcua_source(cfg: GatewayConfig, source: str | None = None) -> tuple[str, OpcUaSource]:
    """The OPC UA source the plant serves: ``source`` or the config's only one."""
    found = [(n, s) for n, s in cfg.source.items() if isinstance(s, OpcUaSource)]
    if source is not None:
        found = [(n, s) for n, s in found if n == source]
    if len(found) != 1:
        names = ", ".join(n for n, _ in found) or "none"
        raise ConfigError(
            [f"source: the plant serves exactly one OPC UA source; found {names} (pass source=)"]
        )
    return found[0]


def _variant(reading: Reading, node: _SignalNode) -> tuple[ua.Variant, int]:
    """The value a reading publishes as on ``node``, and its status code."""
    if not reading.good:
        status = READING_STATUS.get(reading.reason or "", _BAD_OTHERWISE)
        return ua.Variant(None, ua.VariantType.Null), status
    value = reading.value
    if node.vtype in (ua.VariantType.Double, ua.VariantType.Float):
        return ua.Variant(float(value), node.vtype), ua.StatusCodes.Good
    if node.vtype == ua.VariantType.Boolean:
        return ua.Variant(value != 0.0, node.vtype), ua.StatusCodes.Good
    low, high = _INT_BOUNDS[node.type]
    if not (math.isfinite(value) and low <= round(value) <= high):
        return ua.Variant(None, ua.VariantType.Null), ua.StatusCodes.BadOutOfRange
    return ua.Variant(round(value), node.vtype), ua.StatusCodes.Good


class _PlantAttributeService(AttributeService):
    """asyncua's attribute service with the plant namespace's writes judged by the PLC."""

    def __init__(self, aspace: AddressSpace, owner: PlantOpcUaServer) -> None:
        super().__init__(aspace)
        self._owner = owner

    async def write(
        self, params: ua.WriteParameters, user: User | None = None
    ) -> list[ua.StatusCode]:
        user = user if user is not None else User(role=UserRole.Admin)
        results: list[ua.StatusCode] = []
        for item in params.NodesToWrite:
            if item.NodeId.NamespaceIndex == self._owner.namespace_index:
                results.append(await self._owner.judge_write(item))
            else:
                single = ua.WriteParameters(NodesToWrite=[item])
                results.extend(await super().write(single, user))
        return results


class _SecureChannelUsers(UserManager):
    """Admits a session only over a channel signed with an acceptable client certificate.

    asyncua passes the secure channel's client certificate (DER) as ``certificate``; it is
    None on a SecurityPolicy None channel. X509 user tokens, which would replace it, are not
    offered by the secured plant.
    """

    def __init__(self, trusted: frozenset[bytes] | None) -> None:
        self._trusted = trusted

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if not isinstance(certificate, bytes) or not certificate:
            log.warning("plant_opcua_session_refused", reason="channel without security")
            return None
        if self._trusted is not None and certificate not in self._trusted:
            log.warning("plant_opcua_session_refused", reason="channel certificate not trusted")
            return None
        return User(role=UserRole.User, name=username)


class PlantOpcUaServer:
    """One asyncua server for the plant; :meth:`start`/:meth:`stop` can repeat (restarts).

    Args:
        cfg: The config; its OPC UA source gives the endpoint path, the namespace URI and
            the signals to serve.
        host: Listen address (loopback in tests and the demo).
        port: Listen port.
        sink: Where client writes go (the PLC's judgement and the write log).
        simulation: What the ``Simulation`` methods drive.
        source: Name of the OPC UA source to serve when the config has several.
        certificate: Server certificate (DER/PEM); with ``private_key`` the server is
            secured (see the module docstring). Its SubjectAltName URI becomes the server's
            ApplicationUri. Without it only SecurityPolicy None is offered, so asyncua does
            not warn about secure endpoints it cannot serve.
        private_key: The certificate's private key.
        security_policies: Endpoints to offer when a certificate is given (default:
            :data:`SECURE_POLICIES`). Listing ``NoSecurity`` here also admits sessions on
            unsecured channels.
        trusted_certificates: Client certificates (DER/PEM files) a secured server accepts;
            None accepts any client certificate that passes the checks of
            :meth:`check_client_certificate` (a simulator convenience, not a trust model).
        display_names: Plant point name -> DisplayName of its node, in place of the
            signal's name: what a PLC engineer typed, served verbatim (any text at all).

    Raises:
        ConfigError: No single OPC UA source, a signal whose plant point does not exist,
            or a signal address that collides with the plant's own nodes.
        ValueError: A ``display_names`` key that is not a point served over OPC UA.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        host: str,
        port: int,
        sink: WriteSink,
        simulation: SimulationControl,
        source: str | None = None,
        certificate: Path | None = None,
        private_key: Path | None = None,
        security_policies: Sequence[ua.SecurityPolicyType] | None = None,
        trusted_certificates: Sequence[Path] | None = None,
        display_names: Mapping[str, str] | None = None,
    ) -> None:
        self.source_name, self.source = opcua_source(cfg, source)
        self.endpoint = f"opc.tcp://{host}:{port}{urlparse(self.source.endpoint).path or '/'}"
        self._signals = {
            name: sig for name, sig in cfg.signal.items() if sig.source == self.source_name
        }
        self._check_signals()
        served = sorted(sig.point or name for name, sig in self._signals.items())
        unknown = sorted(set(display_names or {}) - set(served))
        if unknown:
            raise ValueError(
                f"display_names: {', '.join(unknown)} not served over OPC UA; "
                f"served points: {', '.join(served)}"
            )
        self._display_names = dict(display_names or {})
        self._sink = sink
        self._simulation = simulation
        self._certificate = certificate
        self._private_key = private_key
        if (certificate is None) != (private_key is None):
            raise ValueError("certificate and private_key go together")
        if trusted_certificates is not None and certificate is None:
            raise ValueError("trusted_certificates needs a server certificate")
        self._policies = list(security_policies or SECURE_POLICIES)
        # An empty list trusts nobody; only None means "any well-formed client certificate".
        self._trusted_paths = (
            list(trusted_certificates) if trusted_certificates is not None else None
        )
        self._trusted: frozenset[bytes] | None = None
        self._client_checks = CertificateValidator(
            CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        )
        self._server: Server | None = None
        self.namespace_index = -1
        self._nodes: dict[str, _SignalNode] = {}
        self._by_nodeid: dict[ua.NodeId, _SignalNode] = {}
        self._operator_note_id: ua.NodeId | None = None
        self.operator_note = ""
        self._alarm_message_id: ua.NodeId | None = None
        self.alarm_message = ""
        # Last published (value, good, reason) and wall time per signal, to skip unchanged.
        self._published: dict[str, tuple[float, bool, str | None, float | None]] = {}
        self._published_at: dict[str, float] = {}
        self._last: tuple[Mapping[str, Reading], datetime] | None = None
        self._clock_at = 0.0

    def _check_signals(self) -> None:
        problems = []
        reserved = {
            f"s={SKID_ID}",
            f"s={OPERATOR_NOTE_ID}",
            f"s={ALARM_MESSAGE_ID}",
            f"s={SIMULATION_ID}",
        }
        reserved |= {f"s={SIMULATION_ID}.{m}" for m in METHODS}
        for name, sig in self._signals.items():
            point = sig.point or name
            if point not in POINTS:
                problems.append(
                    f"signal.{name}: the plant has no point {point!r}; set 'point' to one of "
                    f"{', '.join(POINTS)}"
                )
            if sig.address in reserved:
                problems.append(
                    f"signal.{name}.address: {sig.address!r} is one of the plant's own nodes"
                )
        if problems:
            raise ConfigError(problems)

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Build a fresh address space, publish the last known values, and listen."""
        if self._server is not None:
            raise RuntimeError("the OPC UA server is already running")
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edgetwin simulated skid PLC")
        # asyncua's own clock task sleeps a whole second and makes every stop wait for it;
        # publish() keeps ServerStatus.CurrentTime instead.
        server.disable_clock()
        if self._certificate is not None and self._private_key is not None:
            await self._secure(server, self._certificate, self._private_key)
        else:
            # Only what can be served without a certificate, so asyncua has nothing to warn
            # about (secure endpoints, user tokens that would travel in plaintext).
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        self.namespace_index = await server.register_namespace(self.source.namespace_uri)
        await self._build(server)
        server.iserver.attribute_service = _PlantAttributeService(server.iserver.aspace, self)
        self._server = server
        self._published.clear()
        self._published_at.clear()
        self._clock_at = 0.0
        if self._last is not None:
            await self.publish(*self._last)
        await self._write_string(self._operator_note_id, self.operator_note)
        await self._write_string(self._alarm_message_id, self.alarm_message)
        try:
            await server.start()
        except BaseException:
            self._server = None
            with suppress(Exception):  # a half-started server must not keep the port
                await server.stop()
            raise
        log.info("plant_opcua_listening", endpoint=self.endpoint)

    async def _secure(self, server: Server, certificate: Path, private_key: Path) -> None:
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(private_key))
        uri = certificate_uri(server.iserver.certificate)
        if uri is not None:
            # Clients check the certificate's URI against the ApplicationUri we announce.
            await server.set_application_uri(uri)
        if self._trusted_paths is not None:
            loaded: list[x509.Certificate] = [
                await uacrypto.load_certificate(p) for p in self._trusted_paths
            ]
            self._trusted = frozenset(c.public_bytes(Encoding.DER) for c in loaded)
        server.set_security_policy(self._policies)
        server.set_certificate_validator(self.check_client_certificate)
        # X509 user tokens would stand in for the channel certificate _SecureChannelUsers
        # judges; the gateway does not use them.
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
        if ua.SecurityPolicyType.NoSecurity not in self._policies:
            server.iserver.set_user_manager(_SecureChannelUsers(self._trusted))

    async def check_client_certificate(
        self, certificate: x509.Certificate, client: ua.ApplicationDescription
    ) -> None:
        """Refuse a client certificate at CreateSession, with the status code the client sees.

        Checked: validity period, the SubjectAltName URI equals the client's ApplicationUri,
        the key usages OPC UA needs, extended key usage clientAuth, and, with
        ``trusted_certificates``, that it is one of them.

        Raises:
            ServiceError: ``BadCertificate...`` naming the first failed check.
        """
        try:
            await self._client_checks.validate(certificate, client)
            der = certificate.public_bytes(Encoding.DER)
            if self._trusted is not None and der not in self._trusted:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        except ServiceError as err:
            log.warning(
                "plant_opcua_certificate_refused",
                status=ua.StatusCode(ua.UInt32(err.code)).name,
                subject=certificate.subject.rfc4514_string(),
                application_uri=client.ApplicationUri,
            )
            raise

    async def stop(self) -> None:
        """Stop listening and drop every session (clients see the connection close)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
            log.info("plant_opcua_stopped", endpoint=self.endpoint)

    # ------------------------------------------------------------------ address space

    async def _build(self, server: Server) -> None:
        idx = self.namespace_index
        objects = server.nodes.objects
        skid = await objects.add_object(_nodeid(SKID_ID, idx), ua.QualifiedName(SKID_ID, idx))
        self._nodes.clear()
        self._by_nodeid.clear()
        for name, sig in self._signals.items():
            node = await self._add_signal(server, skid, name, sig)
            self._nodes[name] = node
            self._by_nodeid[node.nodeid] = node
        for name, sig in self._signals.items():
            var = server.get_node(self._nodes[name].nodeid)
            await var.add_property(
                ua.NodeId(NamespaceIndex=ua.Int16(idx)),
                ua.QualifiedName("EURange", 0),
                ua.Range(Low=sig.range[0], High=sig.range[1]),
                ua.VariantType.ExtensionObject,
                datatype=_nodeid(ua.ObjectIds.Range),
            )
            await var.add_property(
                ua.NodeId(NamespaceIndex=ua.Int16(idx)),
                ua.QualifiedName("EngineeringUnits", 0),
                eu_information(sig.unit),
                ua.VariantType.ExtensionObject,
                datatype=_nodeid(ua.ObjectIds.EUInformation),
            )
        self._operator_note_id = await self._add_string(
            skid, OPERATOR_NOTE_ID, self.operator_note, "Free text from the plant's operators."
        )
        self._alarm_message_id = await self._add_string(
            skid,
            ALARM_MESSAGE_ID,
            self.alarm_message,
            "The PLC's alarm banner: its active trips, empty when none.",
        )
        await self._build_simulation(objects)

    async def _add_string(self, skid: Node, identifier: str, text: str, about: str) -> ua.NodeId:
        """A read-only String variable (clients' writes are refused by judge_write)."""
        idx = self.namespace_index
        var = await skid.add_variable(
            _nodeid(identifier, idx),
            ua.QualifiedName(identifier.rsplit(".", 1)[-1], idx),
            ua.Variant(text, ua.VariantType.String),
        )
        await var.write_attribute(
            ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(about)))
        )
        nodeid: ua.NodeId = var.nodeid
        return nodeid

    async def _add_signal(self, server: Server, skid: Node, name: str, sig: Signal) -> _SignalNode:
        idx = self.namespace_index
        point = sig.point or name
        spec = POINTS[point]
        vtype = VARIANT_TYPES[sig.type]
        nodeid = ua.NodeId.from_string(f"ns={idx};{sig.address}")
        access = ua.AccessLevel.CurrentRead.mask
        if spec.writable:
            access |= ua.AccessLevel.CurrentWrite.mask
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(self._display_names.get(point, name))
        attrs.Description = ua.LocalizedText(sig.description or spec.description)
        attrs.DataType = _nodeid(vtype.value)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.Value = ua.Variant(False if vtype == ua.VariantType.Boolean else 0, vtype)
        attrs.AccessLevel = access
        attrs.UserAccessLevel = access
        attrs.Historizing = False
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = ua.QualifiedName(name, idx)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = skid.nodeid
        item.ReferenceTypeId = _nodeid(ua.ObjectIds.HasComponent)
        analog = sig.type in ("float32", "float64")
        item.TypeDefinition = _nodeid(
            ua.ObjectIds.AnalogItemType if analog else ua.ObjectIds.BaseDataVariableType
        )
        item.NodeAttributes = attrs
        (result,) = await server.iserver.isession.add_nodes([item])
        result.StatusCode.check()
        return _SignalNode(name, point, sig.address, sig.type, vtype, result.AddedNodeId)

    async def _build_simulation(self, objects: Node) -> None:
        idx = self.namespace_index
        sim = await objects.add_object(
            _nodeid(SIMULATION_ID, idx), ua.QualifiedName(SIMULATION_ID, idx)
        )

        def arg(name: str, vtype: ua.VariantType, text: str) -> ua.Argument:
            return ua.Argument(
                Name=name,
                DataType=_nodeid(vtype.value),
                ValueRank=-1,
                Description=ua.LocalizedText(text),
            )

        faults = ", ".join(FAULTS)
        specs: tuple[tuple[str, _Method, list[ua.Argument]], ...] = (
            (
                "InjectFault",
                self._m_inject_fault,
                [
                    arg("name", ua.VariantType.String, f"one of: {faults}"),
                    arg("severity", ua.VariantType.Double, "0..1; 0 removes the fault"),
                ],
            ),
            ("ClearFaults", self._m_clear_faults, []),
            (
                "SetRemote",
                self._m_set_remote,
                [arg("enabled", ua.VariantType.Boolean, "the operator's remote-enable switch")],
            ),
            ("RestartPlc", self._m_restart_plc, []),
            (
                "SetOperatorNote",
                self._m_set_operator_note,
                [arg("text", ua.VariantType.String, "new text of Skid.OperatorNote")],
            ),
            (
                "SetAlarmMessage",
                self._m_set_alarm_message,
                [arg("text", ua.VariantType.String, "new text of Skid.AlarmMessage")],
            ),
        )
        for method, func, inputs in specs:
            await sim.add_method(
                _nodeid(f"{SIMULATION_ID}.{method}", idx),
                ua.QualifiedName(method, idx),
                func,
                inputs,
                [],
            )

    # ------------------------------------------------------------------ publishing

    async def publish(
        self,
        readings: Mapping[str, Reading],
        instant: datetime,
        *,
        force: bool = False,
        stamp: Callable[[float], datetime] | None = None,
    ) -> None:
        """Publish the readings of every served point that changed (or is due a refresh).

        ``instant`` is the simulated time of the readings, as wall-clock time; it becomes
        each value's SourceTimestamp. ``force`` publishes every point. While the server is
        stopped the readings are kept and published when it starts again.
        """
        self._last = (readings, instant)
        server = self._server
        if server is None:
            return
        now = datetime.now(UTC)
        wall = now.timestamp()
        if wall - self._clock_at >= CLOCK_S:
            await self._write_current_time(server, now)
            self._clock_at = wall
        for name, node in self._nodes.items():
            reading = readings.get(node.point)
            if reading is None:
                continue
            key = (reading.value, reading.good, reading.reason, reading.sampled_at)
            if (
                not force
                and self._published.get(name) == key
                and wall - self._published_at[name] < REFRESH_S
            ):
                continue
            variant, status = _variant(reading, node)
            await server.write_attribute_value(
                node.nodeid,
                ua.DataValue(
                    variant,
                    StatusCode=_status(status),
                    # A reading's own sample time (a frozen transmitter's stays old).
                    SourceTimestamp=_ua_time(
                        stamp(reading.sampled_at)
                        if stamp is not None and reading.sampled_at is not None
                        else instant
                    ),
                    ServerTimestamp=_ua_time(now),
                ),
            )
            self._published[name] = key
            self._published_at[name] = wall

    @staticmethod
    async def _write_current_time(server: Server, now: datetime) -> None:
        status_id = _nodeid(ua.ObjectIds.Server_ServerStatus)
        status = server.read_attribute_value(status_id).Value
        if status is not None and isinstance(status.Value, ua.ServerStatusDataType):
            updated = replace(status.Value, CurrentTime=now)
            await server.write_attribute_value(status_id, ua.DataValue(ua.Variant(updated)))
        await server.write_attribute_value(
            _nodeid(ua.ObjectIds.Server_ServerStatus_CurrentTime),
            ua.DataValue(ua.Variant(now, ua.VariantType.DateTime)),
        )

    async def set_operator_note(self, text: str) -> None:
        """Replace the text of ``Skid.OperatorNote``."""
        self.operator_note = text
        await self._write_string(self._operator_note_id, text)

    async def set_alarm_message(self, text: str) -> None:
        """Serve ``text`` as ``Skid.AlarmMessage``; the runtime calls this on every scan,
        so an unchanged text is not written again (its source timestamp says when the PLC
        last changed it)."""
        if text == self.alarm_message:
            return
        self.alarm_message = text
        await self._write_string(self._alarm_message_id, text)

    async def _write_string(self, nodeid: ua.NodeId | None, text: str) -> None:
        if self._server is not None and nodeid is not None:
            now = _ua_time(datetime.now(UTC))
            await self._server.write_attribute_value(
                nodeid,
                ua.DataValue(
                    ua.Variant(text, ua.VariantType.String),
                    SourceTimestamp=now,
                    ServerTimestamp=now,
                ),
            )

    # ------------------------------------------------------------------ client writes

    async def judge_write(self, item: ua.WriteValue) -> ua.StatusCode:
        """The status code of one client write to a node of the plant namespace."""
        node = self._by_nodeid.get(item.NodeId)
        address = item.NodeId.to_string().split(";", 1)[-1]
        variant = item.Value.Value if item.Value is not None else None
        shown = _shown(variant)
        if item.AttributeId != ua.AttributeIds.Value:
            # Names, descriptions and access levels are the PLC program's, not a client's.
            return _status(ua.StatusCodes.BadNotWritable)
        if node is None:
            self._sink.refuse(WriteAttempt("opcua", None, address, shown), "not a plant point")
            return _status(ua.StatusCodes.BadNotWritable)
        attempt = WriteAttempt("opcua", node.point, node.address, shown)
        if item.IndexRange:
            self._sink.refuse(attempt, "index range on a scalar")
            return _status(ua.StatusCodes.BadIndexRangeInvalid)
        if variant is None or variant.VariantType != node.vtype or variant.is_array:
            got = variant.VariantType.name if variant is not None else "nothing"
            self._sink.refuse(attempt, f"type mismatch: expected {node.vtype.name}, got {got}")
            return _status(ua.StatusCodes.BadTypeMismatch)
        outcome: WriteOutcome = await self._sink.submit(attempt)
        if outcome.accepted:
            return _status(ua.StatusCodes.Good)
        return _status(WRITE_REFUSAL_STATUS.get(outcome.reason, _REFUSED_OTHERWISE))

    # ------------------------------------------------------------------ methods

    async def _m_inject_fault(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        checked = _check_args("InjectFault", args, (ua.VariantType.String, ua.VariantType.Double))
        if isinstance(checked, ua.CallMethodResult):
            return checked
        name, severity = str(checked[0]), float(checked[1])
        if name not in FAULTS:
            log.warning(
                "plant_method_refused",
                method="InjectFault",
                reason=f"unknown fault {name!r}; known: {', '.join(FAULTS)}",
            )
            return _bad(ua.StatusCodes.BadInvalidArgument, 2, bad_arg=0)
        if not (math.isfinite(severity) and 0.0 <= severity <= 1.0):
            log.warning(
                "plant_method_refused",
                method="InjectFault",
                reason=f"severity {severity!r} outside [0, 1]",
            )
            return _bad(ua.StatusCodes.BadOutOfRange, 2, bad_arg=1)
        try:
            self._simulation.inject_fault(name, severity)
        except ValueError as err:
            log.warning("plant_method_refused", method="InjectFault", reason=str(err))
            return _bad(ua.StatusCodes.BadInvalidArgument, 2)
        log.info("plant_fault_injected", fault=name, severity=severity)
        return ua.CallMethodResult()

    async def _m_clear_faults(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        checked = _check_args("ClearFaults", args, ())
        if isinstance(checked, ua.CallMethodResult):
            return checked
        self._simulation.clear_faults()
        log.info("plant_faults_cleared")
        return ua.CallMethodResult()

    async def _m_set_remote(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        checked = _check_args("SetRemote", args, (ua.VariantType.Boolean,))
        if isinstance(checked, ua.CallMethodResult):
            return checked
        self._simulation.set_remote(bool(checked[0]))
        return ua.CallMethodResult(InputArgumentResults=[ua.StatusCode()])

    async def _m_restart_plc(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        checked = _check_args("RestartPlc", args, ())
        if isinstance(checked, ua.CallMethodResult):
            return checked
        self._simulation.restart_plc()
        return ua.CallMethodResult()

    async def _m_set_operator_note(
        self, parent: ua.NodeId, *args: ua.Variant
    ) -> ua.CallMethodResult:
        checked = _check_args("SetOperatorNote", args, (ua.VariantType.String,))
        if isinstance(checked, ua.CallMethodResult):
            return checked
        await self.set_operator_note(str(checked[0] or ""))
        return ua.CallMethodResult(InputArgumentResults=[ua.StatusCode()])

    async def _m_set_alarm_message(
        self, parent: ua.NodeId, *args: ua.Variant
    ) -> ua.CallMethodResult:
        checked = _check_args("SetAlarmMessage", args, (ua.VariantType.String,))
        if isinstance(checked, ua.CallMethodResult):
            return checked
        await self._simulation.set_alarm_message(str(checked[0] or ""))
        return ua.CallMethodResult(InputArgumentResults=[ua.StatusCode()])


def _shown(variant: ua.Variant | None) -> float | str:
    """A written value as the write log shows it: a number when it is one."""
    if variant is None:
        return "null"
    value = variant.Value
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return repr(value)[:200]


def _bad(status: int, n_args: int, *, bad_arg: int | None = None) -> ua.CallMethodResult:
    results = [ua.StatusCode() for _ in range(n_args)]
    if bad_arg is not None:
        results[bad_arg] = _status(status)
    return ua.CallMethodResult(StatusCode=_status(status), InputArgumentResults=results)


def _check_args(
    method: str, args: Sequence[ua.Variant], expected: Sequence[ua.VariantType]
) -> list[Any] | ua.CallMethodResult:
    """The arguments' values, or the Bad result a malformed call gets."""
    if len(args) < len(expected):
        log.warning("plant_method_refused", method=method, reason="argument(s) missing")
        return ua.CallMethodResult(StatusCode=_status(ua.StatusCodes.BadArgumentsMissing))
    if len(args) > len(expected):
        log.warning("plant_method_refused", method=method, reason="too many arguments")
        return ua.CallMethodResult(StatusCode=_status(ua.StatusCodes.BadTooManyArguments))
    results = [
        _status(
            ua.StatusCodes.Good
            if a.VariantType == t and not a.is_array
            else ua.StatusCodes.BadTypeMismatch
        )
        for a, t in zip(args, expected, strict=True)
    ]
    if any(not r.is_good() for r in results):
        log.warning(
            "plant_method_refused",
            method=method,
            reason=f"argument types {[a.VariantType.name for a in args]}, "
            f"expected {[t.name for t in expected]}",
        )
        return ua.CallMethodResult(
            StatusCode=_status(ua.StatusCodes.BadTypeMismatch),
            InputArgumentResults=results,
        )
    return [a.Value for a in args]
