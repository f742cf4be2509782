"""OPC UA reader: one supervised asyncua client per source, subscription or polling.

Why our own supervisor instead of asyncua's ``auto_reconnect``: after a failure we trust
nothing about the old client (STYLE.md §5); a **fresh** ``Client`` is built, security is
applied again, the namespace index is looked up again (a restarted server may renumber it)
and the subscription is created again. A periodic probe read of the server state with a
timeout catches silent drops (a peer that stops answering without closing the socket),
which a closed-socket check alone never sees.

Freshness: subscriptions ask for ``StatusValueTimestamp`` notifications, so a value whose
source timestamp advances is re-delivered even when it is numerically unchanged, while a
frozen sensor (timestamp not advancing) stops being delivered and turns stale at its max
age. Polling applies the same rule by dropping samples whose source timestamp did not move.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from asyncua import Client, Node, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config.schema import OpcUaSecurity, OpcUaSource, Signal
from gateway.errors import SourceError
from gateway.io.ports import LinkState, SampleSink
from gateway.signals import Quality, RawSample

log = structlog.get_logger("gateway.io.opcua")

#: Failures that mean "this session is no longer trustworthy": drop it and reconnect.
SESSION_FAILURES = (OSError, TimeoutError, ConnectionError, ua.UaError, SourceError)

_SERVER_STATE = ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerStatus_State))


def _quality(status: ua.StatusCode) -> tuple[Quality, str | None]:
    if status.is_good():
        return Quality.GOOD, None
    name = status.name
    if status.is_uncertain():
        return Quality.UNCERTAIN, name
    return Quality.BAD, name


def _timestamp(dv: ua.DataValue, received: float) -> float:
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    return ts.timestamp() if ts is not None else received


def to_raw_sample(dv: ua.DataValue, spec: Signal, received: float) -> RawSample:
    """A DataValue as a raw sample in engineering units (pure; no judgement of range)."""
    quality, reason = _quality(dv.StatusCode or ua.StatusCode(ua.UInt32(ua.StatusCodes.Good)))
    value: float | None
    raw = dv.Value.Value if dv.Value is not None else None
    if isinstance(raw, bool | int | float):
        value = float(raw) * spec.scale + spec.offset
    else:
        value = None
        if quality is Quality.GOOD:
            quality, reason = Quality.BAD, f"not a number: {type(raw).__name__}"
    return RawSample(
        value=value,
        source_ts=_timestamp(dv, received),
        received_ts=received,
        status=quality,
        reason=reason,
    )


async def apply_security(client: Client, security: OpcUaSecurity) -> None:
    """Configure channel security and user identity on a fresh client, before connect.

    The client announces the ApplicationUri written in its own certificate (servers refuse
    a session whose URI and certificate disagree). With a pinned ``server_certificate`` the
    endpoint list is fetched first, over an unsecured discovery channel, and the certificate
    the server presents for the configured policy and mode must be the pinned one.

    That comparison is for a clear refusal, not the protection itself: an unsecured answer
    can lie, but the channel is then opened with the *pinned* public key, which only the
    real server can use, and asyncua compares the certificate again at CreateSession.
    Without the comparison a wrong pin shows up as a timeout (the server cannot decrypt).

    Raises:
        SourceError: A certificate file cannot be parsed or names no application URI, the
            server offers no endpoint with the configured policy and mode, or its
            certificate is not the pinned one.
        OSError: A certificate, key or password file cannot be read.
    """
    if security.policy == "None":
        return
    assert security.certificate is not None
    assert security.private_key is not None
    if security.username is not None and security.mode != "SignAndEncrypt":
        # Config validation refuses this already; a password must never travel unencrypted.
        raise SourceError(f"refusing to send a password over a {security.mode!r} channel")
    policy = getattr(security_policies, f"SecurityPolicy{security.policy}")
    mode = getattr(ua.MessageSecurityMode, security.mode)
    own = await _load_certificate(security.certificate, "certificate")
    uri = certificate_uri(own)
    if uri is None:
        raise SourceError(
            f"security.certificate {security.certificate}: no SubjectAltName URI; OPC UA needs "
            "the client's application URI there"
        )
    client.application_uri = uri
    if security.server_certificate is not None:
        pinned = await _load_certificate(security.server_certificate, "server_certificate")
        await _check_pinned(client, policy.URI, mode, pinned, security.server_certificate)
    # server_certificate None reaches here only with trust_on_first_use explicitly set:
    # asyncua then takes the certificate the server presents in its endpoint list.
    await client.set_security(
        policy,
        certificate=security.certificate,
        private_key=security.private_key,
        server_certificate=security.server_certificate,
        mode=mode,
    )
    if security.username is not None and security.password_file is not None:
        client.set_user(security.username)
        password = await asyncio.to_thread(Path(security.password_file).read_text, "utf-8")
        client.set_password(password.strip())


def certificate_uri(certificate: x509.Certificate) -> str | None:
    """The first SubjectAltName URI of a certificate: an OPC UA application's identity."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def sha256_fingerprint(certificate: x509.Certificate) -> str:
    """``AB:CD:...``, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


async def _load_certificate(path: str, key: str) -> x509.Certificate:
    try:
        cert: x509.Certificate = await uacrypto.load_certificate(path)
    except ValueError as err:
        raise SourceError(f"security.{key} {path}: not a DER or PEM certificate ({err})") from err
    return cert


def _first_certificate(der: bytes | None) -> x509.Certificate:
    """The leading certificate of a DER blob that may carry the issuer chain after it."""
    if not der:
        raise SourceError("server presents no certificate on its secure endpoint")
    # Outer SEQUENCE: tag, then a short or long form length (X.690 8.1.3).
    size = der[1] if len(der) > 1 else 0
    header = 2
    if size & 0x80:
        header += size & 0x7F
        size = int.from_bytes(der[2:header], "big")
    try:
        return x509.load_der_x509_certificate(der[: header + size])
    except ValueError as err:
        raise SourceError(f"server presents an unreadable certificate ({err})") from err


def _endpoint_kind(policy_uri: str, mode: ua.MessageSecurityMode) -> str:
    return f"{policy_uri.rsplit('#', 1)[-1]}/{mode.name.rstrip('_')}"


async def _check_pinned(
    client: Client,
    policy_uri: str,
    mode: ua.MessageSecurityMode,
    pinned: x509.Certificate,
    pinned_path: str,
) -> None:
    """Refuse a server whose endpoint for ``policy_uri``/``mode`` shows another certificate."""
    endpoints = await client.connect_and_get_server_endpoints()
    matching = [
        ep for ep in endpoints if ep.SecurityPolicyUri == policy_uri and ep.SecurityMode == mode
    ]
    if not matching:
        offered = ", ".join(
            sorted({_endpoint_kind(ep.SecurityPolicyUri, ep.SecurityMode) for ep in endpoints})
        )
        raise SourceError(
            f"server offers no endpoint {_endpoint_kind(policy_uri, mode)} (policy/mode); "
            f"it offers {offered or 'none'}"
        )
    presented = _first_certificate(matching[0].ServerCertificate)
    if presented.public_bytes(Encoding.DER) != pinned.public_bytes(Encoding.DER):
        raise SourceError(
            f"server certificate does not match the pinned certificate {pinned_path} "
            f"(server presents sha256 {sha256_fingerprint(presented)}, "
            f"pinned sha256 {sha256_fingerprint(pinned)})"
        )


@dataclass(frozen=True)
class OpcUaSession:
    """A connected client and the namespace index resolved for this session."""

    client: Client
    namespace_index: int

    def node(self, address: str) -> Node:
        return self.client.get_node(f"ns={self.namespace_index};{address}")


class _Notifications:
    """asyncua subscription handler: forwards data changes, flags subscription trouble."""

    def __init__(self, reader: OpcUaReader, names: Mapping[ua.NodeId, str]) -> None:
        self._reader = reader
        self._names = names
        self.lost: asyncio.Event = asyncio.Event()
        self.detail = ""

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        name = self._names.get(node.nodeid)
        if name is not None:
            self._reader.deliver(name, data.monitored_item.Value)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        code = status.Status
        if not code.is_good():
            self.detail = f"subscription status {code.name}"
            self.lost.set()


class OpcUaReader:
    """Reads one OPC UA source forever and pushes samples into a sink."""

    def __init__(
        self,
        name: str,
        config: OpcUaSource,
        signals: Mapping[str, Signal],
        sink: SampleSink,
        *,
        clock: Callable[[], float] = time.time,
        initial_backoff_s: float = 0.25,
    ) -> None:
        self.name = name
        self._cfg = config
        self._signals = dict(signals)
        self._sink = sink
        self._clock = clock
        self._initial_backoff_s = initial_backoff_s
        self._last_source_ts: dict[str, float] = {}
        self.state = LinkState.DISCONNECTED
        self.last_error: str | None = None
        self.connects = 0
        #: Loop iterations (connect attempts, probes, polls): proof of life for the watchdog.
        self.cycles = 0
        #: The live session while connected, for the write path in ``opcua_writer``.
        self.session: OpcUaSession | None = None

    # -- supervision ---------------------------------------------------------------------
    async def run(self) -> None:
        delay = self._initial_backoff_s
        while True:
            self.cycles += 1
            self._transition(LinkState.CONNECTING, None)
            client = Client(self._cfg.endpoint, timeout=self._cfg.timeout_s)
            client.session_timeout = 60_000  # ms; a dead gateway's session should not linger
            connects_before = self.connects
            try:
                await self._session(client)
            except SESSION_FAILURES as err:
                detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                self._transition(LinkState.DISCONNECTED, detail)
            finally:
                self.session = None
                await self._discard(client)
            if self.connects > connects_before:
                delay = self._initial_backoff_s  # it worked once: start backing off afresh
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._cfg.reconnect_max_s)

    def _transition(self, state: LinkState, detail: str | None) -> None:
        if state is self.state and detail == self.last_error:
            return
        if state is LinkState.DISCONNECTED:
            self.last_error = detail
        self.state = state
        self._sink.link(self.name, state, detail)

    async def _discard(self, client: Client) -> None:
        # The old client is not trusted after a failure; close it without waiting long.
        try:
            await asyncio.wait_for(client.disconnect(), timeout=1.0)
        except (*SESSION_FAILURES, RuntimeError, AttributeError):
            client.disconnect_socket()

    # -- one session ---------------------------------------------------------------------
    async def _session(self, client: Client) -> None:
        await apply_security(client, self._cfg.security)
        await asyncio.wait_for(client.connect(), timeout=self._cfg.timeout_s * 2)
        ns = await client.get_namespace_index(self._cfg.namespace_uri)
        nodes = {name: client.get_node(f"ns={ns};{s.address}") for name, s in self._signals.items()}
        self.session = OpcUaSession(client, ns)
        self.connects += 1
        self._last_source_ts.clear()
        if self._cfg.mode == "subscription":
            await self._subscribe_loop(client, nodes)
        else:
            await self._poll_loop(client, nodes)

    async def _subscribe_loop(self, client: Client, nodes: Mapping[str, Node]) -> None:
        handler = _Notifications(self, {node.nodeid: name for name, node in nodes.items()})
        period_ms = self._cfg.poll_interval_s * 1000
        sub = await client.create_subscription(period_ms, handler)
        trigger = ua.DataChangeFilter()
        trigger.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
        requests = []
        for i, node in enumerate(nodes.values(), start=1):
            item = ua.MonitoredItemCreateRequest()
            item.ItemToMonitor = ua.ReadValueId(
                NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value
            )
            item.MonitoringMode = ua.MonitoringMode.Reporting
            item.RequestedParameters = ua.MonitoringParameters(
                ClientHandle=i, SamplingInterval=period_ms, QueueSize=1, DiscardOldest=True
            )
            item.RequestedParameters.Filter = trigger
            requests.append(item)
        results = await sub.create_monitored_items(requests)
        for name, result in zip(nodes, results, strict=True):
            if isinstance(result, ua.StatusCode):
                # A node the server does not have: report it bad, keep the others.
                now = self._clock()
                self._sink.samples(
                    self.name,
                    [(name, RawSample(None, now, now, Quality.BAD, f"subscribe: {result.name}"))],
                )
        self._transition(LinkState.CONNECTED, None)
        while not handler.lost.is_set():
            self.cycles += 1
            await self._probe(client)
            try:
                await asyncio.wait_for(handler.lost.wait(), timeout=self._cfg.poll_interval_s)
            except TimeoutError:
                continue
        raise SourceError(handler.detail or "subscription lost")

    async def _probe(self, client: Client) -> None:
        """Read the server state with a timeout: the only way to see a silent drop."""
        try:
            await asyncio.wait_for(
                client.get_node(_SERVER_STATE).read_value(), timeout=self._cfg.timeout_s
            )
        except TimeoutError as err:
            raise SourceError(f"server did not answer within {self._cfg.timeout_s:g} s") from err

    async def _poll_loop(self, client: Client, nodes: Mapping[str, Node]) -> None:
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.NodesToRead = [
            ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value)
            for node in nodes.values()
        ]
        self._transition(LinkState.CONNECTED, None)
        next_at = time.monotonic()
        while True:
            try:
                values = await asyncio.wait_for(
                    client.uaclient.read(params), timeout=self._cfg.timeout_s
                )
            except TimeoutError as err:
                raise SourceError(f"read did not answer within {self._cfg.timeout_s:g} s") from err
            self.cycles += 1
            for name, dv in zip(nodes, values, strict=True):
                self.deliver(name, dv)
            next_at += self._cfg.poll_interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def deliver(self, name: str, dv: ua.DataValue) -> None:
        """Turn one DataValue into a sample, dropping repeats whose timestamp did not move."""
        received = self._clock()
        sample = to_raw_sample(dv, self._signals[name], received)
        last = self._last_source_ts.get(name)
        if last is not None and sample.source_ts <= last and sample.status is Quality.GOOD:
            return  # not news: the source did not vouch for it again
        if math.isfinite(sample.source_ts):
            self._last_source_ts[name] = sample.source_ts
        self._sink.samples(self.name, [(name, sample)])
