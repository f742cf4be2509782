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

A reader must stop when cancelled, so two ways of losing a cancellation are avoided.
Reads are timed with ``asyncio.timeout``, not ``asyncio.wait_for``: before Python 3.12
``wait_for`` returns the result and *swallows* a cancellation that arrives as the read
completes (CPython gh-86296; loopback reads every fraction of a second hit that window
within a few test runs). And connect/disconnect run in a task of their own
(:func:`gateway.io.apart.call_apart`): asyncua's close path (``Client._cancel_task``, reached
from ``disconnect`` and from a failed ``connect``) catches ``CancelledError`` and would
swallow the reader's own.

Plant text (``[text.*]`` strings and the DisplayNames of the signal nodes) is read by a
second task of the same session, so a slow or huge string never delays a numeric sample.
Its reads follow the session rules (a timeout or a transport error drops the session);
a missing node or a value that is not a string makes only that text bad.
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

from gateway.config.schema import OpcUaSecurity, OpcUaSource, PlantText, Signal
from gateway.errors import SourceError
from gateway.io.apart import call_apart
from gateway.io.ports import LinkState, SampleSink
from gateway.signals import (
    DISPLAY_NAME_MAX_CHARS,
    PlantTextValue,
    Quality,
    RawSample,
    display_name_key,
    judge_text,
)

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


def to_plant_text(name: str, dv: ua.DataValue, max_chars: int, received: float) -> PlantTextValue:
    """A String node's DataValue as plant text (pure; never raises, whatever the plant sent).

    A String variant holding null is the empty string (OPC UA's null String); any other
    type (a number, an array, a LocalizedText) is not text and comes out bad.
    """
    quality, reason = _quality(dv.StatusCode or ua.StatusCode(ua.UInt32(ua.StatusCodes.Good)))
    variant = dv.Value
    raw: object = variant.Value if variant is not None else None
    if raw is None and variant is not None and variant.VariantType == ua.VariantType.String:
        raw = ""
    return judge_text(name, raw, _timestamp(dv, received), max_chars, status=quality, reason=reason)


def to_display_name(signal: str, dv: ua.DataValue, received: float) -> PlantTextValue:
    """A node's DisplayName attribute as plant text keyed ``display_name.<signal>`` (pure)."""
    quality, reason = _quality(dv.StatusCode or ua.StatusCode(ua.UInt32(ua.StatusCodes.Good)))
    raw: object = dv.Value.Value if dv.Value is not None else None
    if isinstance(raw, ua.LocalizedText):
        raw = raw.Text or ""
    return judge_text(
        display_name_key(signal),
        raw,
        _timestamp(dv, received),
        DISPLAY_NAME_MAX_CHARS,
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
    """Reads one OPC UA source forever and pushes samples (and plant text) into a sink.

    ``texts`` are the ``[text.*]`` entries of this source. None turns plant-text acquisition
    off altogether (no text reads, no DisplayName reads), for callers whose sink takes
    numbers only; an empty mapping still reads the signal nodes' DisplayNames on each
    connect.
    """

    def __init__(
        self,
        name: str,
        config: OpcUaSource,
        signals: Mapping[str, Signal],
        sink: SampleSink,
        *,
        clock: Callable[[], float] = time.time,
        initial_backoff_s: float = 0.25,
        texts: Mapping[str, PlantText] | None = None,
    ) -> None:
        self.name = name
        self._cfg = config
        self._signals = dict(signals)
        self._texts = dict(texts) if texts is not None else None
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
        # Set when the current session reports connected; the text task waits for it.
        self._session_up = asyncio.Event()
        # connect/disconnect calls abandoned after a timeout, kept until they finish.

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
        if state is LinkState.CONNECTED:
            self._session_up.set()
        else:
            self._session_up.clear()
        self.state = state
        self._sink.link(self.name, state, detail)

    async def _discard(self, client: Client) -> None:
        # The old client is not trusted after a failure; close it without waiting long.
        try:
            await call_apart(client.disconnect(), 1.0, "close")
        except (*SESSION_FAILURES, RuntimeError, AttributeError):
            client.disconnect_socket()

    # -- one session ---------------------------------------------------------------------
    async def _session(self, client: Client) -> None:
        await apply_security(client, self._cfg.security)
        await call_apart(client.connect(), self._cfg.timeout_s * 2, "connect")
        ns = await client.get_namespace_index(self._cfg.namespace_uri)
        nodes = {name: client.get_node(f"ns={ns};{s.address}") for name, s in self._signals.items()}
        self.session = OpcUaSession(client, ns)
        self.connects += 1
        self._last_source_ts.clear()
        numbers = (
            self._subscribe_loop(client, nodes)
            if self._cfg.mode == "subscription"
            else self._poll_loop(client, nodes)
        )
        if self._texts is None:
            await numbers
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(numbers, name=f"source:{self.name}:signals")
                tg.create_task(
                    self._plant_text(client, ns, nodes), name=f"source:{self.name}:texts"
                )
        except ExceptionGroup as group:
            # Either task failing ends the session; run() judges the first failure as it
            # judges a single one (a session failure reconnects, anything else is a bug).
            raise group.exceptions[0] from None

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
                async with asyncio.timeout(self._cfg.poll_interval_s):
                    await handler.lost.wait()
            except TimeoutError:
                continue
        raise SourceError(handler.detail or "subscription lost")

    async def _probe(self, client: Client) -> None:
        """Read the server state with a timeout: the only way to see a silent drop."""
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                await client.get_node(_SERVER_STATE).read_value()
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
                async with asyncio.timeout(self._cfg.timeout_s):
                    values = await client.uaclient.read(params)
            except TimeoutError as err:
                raise SourceError(f"read did not answer within {self._cfg.timeout_s:g} s") from err
            self.cycles += 1
            for name, dv in zip(nodes, values, strict=True):
                self.deliver(name, dv)
            next_at += self._cfg.poll_interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # -- plant text ----------------------------------------------------------------------
    async def _plant_text(self, client: Client, ns: int, nodes: Mapping[str, Node]) -> None:
        """The session's text task: DisplayNames once, then each text at its own interval.

        Session failures propagate (they mean the numbers' session is gone too). Anything
        else is caught here, at the task's boundary: the content is untrusted and the
        numbers must keep flowing, so a surprise costs the texts (reported bad until the
        next connect), never the session.
        """
        try:
            # Only once the numbers' path says connected: nothing from a session shows up as
            # good before the link does, and the text reads never delay the subscription.
            await self._session_up.wait()
            await self._read_display_names(client, nodes)
            await self._poll_texts(client, ns)
        except SESSION_FAILURES:
            raise
        except Exception as err:
            log.error("plant_text_failed", source=self.name, error=f"{type(err).__name__}: {err}")
            now = self._clock()
            reason = f"text acquisition failed: {type(err).__name__}"
            keys = [display_name_key(s) for s in self._signals]
            keys += list(self._texts or {})
            self._sink.texts(
                self.name,
                [PlantTextValue(key, "", now, Quality.BAD, False, reason) for key in keys],
            )

    async def _read_display_names(self, client: Client, nodes: Mapping[str, Node]) -> None:
        """Read every signal node's DisplayName: text a PLC engineer wrote, read on each
        connect because a restarted or reprogrammed PLC may have renamed its nodes."""
        if not nodes:
            return
        values = await self._read_attribute(
            client, [node.nodeid for node in nodes.values()], ua.AttributeIds.DisplayName
        )
        received = self._clock()
        self._sink.texts(
            self.name,
            [to_display_name(name, dv, received) for name, dv in zip(nodes, values, strict=True)],
        )

    async def _poll_texts(self, client: Client, ns: int) -> None:
        texts = self._texts or {}
        nodeids: dict[str, ua.NodeId] = {}
        unreadable: list[PlantTextValue] = []
        for name, spec in texts.items():
            try:
                nodeids[name] = ua.NodeId.from_string(f"ns={ns};{spec.node}")
            except (ValueError, ua.UaError) as err:
                # Config validation refuses such ids; a reader built without it must still
                # keep its other texts and its numbers.
                now = self._clock()
                reason = f"node {spec.node!r} is not a NodeId: {err}"
                unreadable.append(PlantTextValue(name, "", now, Quality.BAD, False, reason))
        if unreadable:
            self._sink.texts(self.name, unreadable)
        if not nodeids:
            return
        due = dict.fromkeys(nodeids, time.monotonic())
        while True:
            started = time.monotonic()
            ready = [name for name, at in due.items() if at <= started]
            values = await self._read_attribute(
                client, [nodeids[n] for n in ready], ua.AttributeIds.Value
            )
            received = self._clock()
            self._sink.texts(
                self.name,
                [
                    to_plant_text(name, dv, texts[name].max_chars, received)
                    for name, dv in zip(ready, values, strict=True)
                ],
            )
            for name in ready:
                due[name] = started + texts[name].poll_interval_s
            await asyncio.sleep(max(0.0, min(due.values()) - time.monotonic()))

    async def _read_attribute(
        self, client: Client, nodeids: list[ua.NodeId], attribute: ua.AttributeIds
    ) -> list[ua.DataValue]:
        """One plain batched Read under the source's timeout, as the numbers' polling does."""
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attribute) for n in nodeids]
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                values: list[ua.DataValue] = await client.uaclient.read(params)
        except TimeoutError as err:
            raise SourceError(f"text read did not answer within {self._cfg.timeout_s:g} s") from err
        if len(values) != len(nodeids):
            raise SourceError(f"server answered {len(values)} of {len(nodeids)} reads")
        return values

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
