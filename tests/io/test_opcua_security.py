"""OPC UA channel security against the simulated plant's secured asyncua server.

Certificates are generated per test session (tests/certs.py). The plant offers only secure
endpoints and trusts exactly the gateway's client certificate; the gateway pins the plant's
server certificate. Each refusal must leave the source without a single good value and
with a reason in ``reader.last_error`` an operator can act on.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua import Client, ua
from cryptography import x509

from gateway.acquire import Acquisition
from gateway.config import GatewayConfig
from gateway.config.schema import OpcUaSource
from gateway.errors import ConfigError
from gateway.io.opcua_reader import OpcUaReader, sha256_fingerprint
from gateway.io.ports import LinkState
from gateway.plantsim.opcua_server import PlantOpcUaServer
from gateway.plantsim.runner import PlantRuntime
from gateway.signals import Quality
from tests.certs import CLIENT_URI, SERVER_URI, CertPair, make_pair
from tests.support import eventually, free_port, skid_config

pytestmark = pytest.mark.slow

OPCUA = "plc"
UNSECURED = 'policy = "None"\nmode = "None"'


@dataclass(frozen=True)
class Pki:
    server: CertPair
    impostor: CertPair
    """Another server certificate for the same application URI (a replaced PLC, an attacker)."""
    client: CertPair
    stranger: CertPair
    """A well-formed client certificate the plant was never told to trust."""


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    return Pki(
        server=make_pair(base / "server", "server", SERVER_URI, "server"),
        impostor=make_pair(base / "impostor", "impostor", SERVER_URI, "server"),
        client=make_pair(base / "client", "client", CLIENT_URI, "client"),
        stranger=make_pair(base / "stranger", "stranger", CLIENT_URI, "client"),
    )


def security(policy: str, mode: str, client: CertPair, *, pinned: Path) -> str:
    """A ``[source.plc.security]`` body (TOML literal strings: paths keep their backslashes)."""
    lines = [
        f'policy = "{policy}"',
        f'mode = "{mode}"',
        f"certificate = '{client.certificate}'",
        f"private_key = '{client.private_key}'",
        f"server_certificate = '{pinned}'",
    ]
    return "\n".join(lines)


def gateway_config(ports: tuple[int, int], secured: str | None) -> GatewayConfig:
    edits = [("timeout_s = 4.0", "timeout_s = 2.0")]
    if secured is not None:
        edits.append((UNSECURED, secured))
    return skid_config(*ports, edits=tuple(edits))


@asynccontextmanager
async def secured_plant(
    cfg: GatewayConfig, ports: tuple[int, int], tmp: Path, pki: Pki
) -> AsyncIterator[PlantRuntime]:
    """The plant with secure endpoints only, trusting the gateway's client certificate."""
    rt = PlantRuntime(
        cfg,
        opcua_port=ports[0],
        modbus_port=ports[1],
        write_log=tmp / "w.jsonl",
        opcua_certificate=pki.server.certificate,
        opcua_private_key=pki.server.private_key,
    )
    # PlantRuntime does not pass a client trust list through yet; serve with one.
    rt.opcua = PlantOpcUaServer(
        cfg,
        host="127.0.0.1",
        port=ports[0],
        sink=rt,
        simulation=rt,
        certificate=pki.server.certificate,
        private_key=pki.server.private_key,
        trusted_certificates=[pki.client.certificate],
    )
    async with rt:
        yield rt


@asynccontextmanager
async def reading(cfg: GatewayConfig) -> AsyncIterator[tuple[OpcUaReader, Acquisition]]:
    """The gateway's OPC UA reader for source ``plc``, feeding a fresh Acquisition."""
    acq = Acquisition(cfg)
    signals = {n: s for n, s in cfg.signal.items() if s.source == OPCUA}
    source = cfg.source[OPCUA]
    assert isinstance(source, OpcUaSource)
    reader = OpcUaReader(OPCUA, source, signals, acq)
    task = asyncio.create_task(reader.run(), name=f"source:{OPCUA}")
    try:
        yield reader, acq
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def opcua_signals(cfg: GatewayConfig) -> list[str]:
    return [n for n, s in cfg.signal.items() if s.source == OPCUA]


def good(acq: Acquisition, names: list[str]) -> list[str]:
    snap = acq.snapshot()
    return [n for n in names if n in snap and snap[n].quality is Quality.GOOD]


async def refused(reader: OpcUaReader, acq: Acquisition, names: list[str]) -> str:
    """Let the reader try at least three times; nothing may connect or turn good."""
    leaks: list[str] = []

    def tried_enough() -> bool:
        leaks.extend(good(acq, names))
        if reader.state is LinkState.CONNECTED:
            leaks.append("link CONNECTED")
        return reader.cycles >= 3 and reader.last_error is not None

    await eventually(tried_enough, timeout_s=10, what="three refused connection attempts")
    assert leaks == []
    assert reader.connects == 0
    assert acq.links[OPCUA].state is not LinkState.CONNECTED
    assert reader.last_error is not None
    return reader.last_error


async def test_secured_channel_reads_every_signal_from_the_plant(tmp_path: Path, pki: Pki) -> None:
    """Basic256Sha256 + SignAndEncrypt with generated certificates and a pinned server
    certificate: every OPC UA signal turns good with the plant's values."""
    ports = free_port(), free_port()
    secured = security(
        "Basic256Sha256", "SignAndEncrypt", pki.client, pinned=pki.server.certificate
    )
    cfg = gateway_config(ports, secured)
    names = opcua_signals(cfg)
    async with secured_plant(cfg, ports, tmp_path, pki) as rt, reading(cfg) as (reader, acq):
        await eventually(lambda: good(acq, names) == names, timeout_s=15, what="all good")
        assert reader.state is LinkState.CONNECTED
        assert reader.session is not None
        channel = reader.session.client.security_policy
        assert channel.URI.endswith("#Basic256Sha256")
        assert channel.Mode is ua.MessageSecurityMode.SignAndEncrypt
        snap = acq.snapshot()
        truth = rt.plant.read()
        for name in names:
            if name == "heartbeat":
                continue  # a counter: it moves between the plant's read and ours
            low, high = cfg.signal[name].range
            # Noise and up to one publishing interval of lag; a wrong node or scale is far off.
            tolerance = 0.02 * (high - low)
            point = cfg.signal[name].point or name
            assert math.isclose(snap[name].value, truth[point].value, abs_tol=tolerance), name
        assert snap["level_sp"].value == pytest.approx(1.5)


async def test_secured_plant_offers_only_secure_endpoints(tmp_path: Path, pki: Pki) -> None:
    """Every endpoint the secured plant lists signs or encrypts, with its own certificate,
    under the ApplicationUri that certificate names."""
    ports = free_port(), free_port()
    cfg = gateway_config(ports, None)
    async with secured_plant(cfg, ports, tmp_path, pki) as rt:
        endpoints = await Client(rt.opcua_endpoint, timeout=2).connect_and_get_server_endpoints()
    assert endpoints
    server_der = pki.server.certificate.read_bytes()
    for ep in endpoints:
        assert not ep.SecurityPolicyUri.endswith("#None"), ep.SecurityPolicyUri
        assert ep.SecurityMode in (
            ua.MessageSecurityMode.Sign,
            ua.MessageSecurityMode.SignAndEncrypt,
        )
        assert ep.ServerCertificate == server_der
        assert ep.Server.ApplicationUri == SERVER_URI


async def test_unsecured_gateway_gets_nothing_from_secured_plant(tmp_path: Path, pki: Pki) -> None:
    """The gateway's config left at policy None finds no matching endpoint: it never
    connects, nothing turns good, and the reason names SecurityPolicy None."""
    ports = free_port(), free_port()
    cfg = gateway_config(ports, None)
    async with secured_plant(cfg, ports, tmp_path, pki), reading(cfg) as (reader, acq):
        reason = await refused(reader, acq, opcua_signals(cfg))
    assert "No matching endpoints" in reason
    assert "SecurityPolicy#None" in reason


async def test_unsecured_channel_skipping_the_endpoint_check_is_refused(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that ignores the endpoint list and activates a session over a SecurityPolicy
    None channel is refused at ActivateSession (asyncua's server alone would serve it)."""

    def any_endpoint(
        endpoints: list[ua.EndpointDescription], mode: ua.MessageSecurityMode, uri: str
    ) -> ua.EndpointDescription:
        return endpoints[0]

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(any_endpoint))
    ports = free_port(), free_port()
    cfg = gateway_config(ports, None)
    async with secured_plant(cfg, ports, tmp_path, pki) as rt:
        client = Client(rt.opcua_endpoint, timeout=2)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await client.connect()


async def test_wrong_pinned_server_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    """A pinned certificate that is not the server's: refused before any session, nothing
    good, and the reason names the pin mismatch with both sha256 fingerprints."""
    ports = free_port(), free_port()
    secured = security(
        "Basic256Sha256", "SignAndEncrypt", pki.client, pinned=pki.impostor.certificate
    )
    cfg = gateway_config(ports, secured)
    async with secured_plant(cfg, ports, tmp_path, pki), reading(cfg) as (reader, acq):
        reason = await refused(reader, acq, opcua_signals(cfg))
    presented = x509.load_der_x509_certificate(pki.server.certificate.read_bytes())
    pinned = x509.load_der_x509_certificate(pki.impostor.certificate.read_bytes())
    assert reason == (
        "SourceError: server certificate does not match the pinned certificate "
        f"{pki.impostor.certificate} (server presents sha256 {sha256_fingerprint(presented)}, "
        f"pinned sha256 {sha256_fingerprint(pinned)})"
    )


async def test_client_certificate_the_plant_does_not_trust_is_refused(
    tmp_path: Path, pki: Pki
) -> None:
    """A well-formed client certificate missing from the plant's trust list gets no session:
    the reason is the server's BadCertificateUntrusted."""
    ports = free_port(), free_port()
    secured = security(
        "Basic256Sha256", "SignAndEncrypt", pki.stranger, pinned=pki.server.certificate
    )
    cfg = gateway_config(ports, secured)
    async with secured_plant(cfg, ports, tmp_path, pki), reading(cfg) as (reader, acq):
        reason = await refused(reader, acq, opcua_signals(cfg))
    assert "BadCertificateUntrusted" in reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            'policy = "Basic256Sha256"\nmode = "Sign"\ncertificate = "c.der"\n'
            'private_key = "k.pem"\nserver_certificate = "s.der"\nusername = "op"\n'
            'password_file = "pw"',
            "a username/password is only sent on a 'SignAndEncrypt' channel; mode is 'Sign'",
            id="username-on-sign-only",
        ),
        pytest.param(
            'policy = "None"\nmode = "None"\nusername = "op"\npassword_file = "pw"',
            "a username/password is only sent on a 'SignAndEncrypt' channel; mode is 'None'",
            id="username-unsecured",
        ),
        pytest.param(
            'policy = "Basic256Sha256"\nmode = "SignAndEncrypt"\ncertificate = "c.der"\n'
            'private_key = "k.pem"',
            "a secured channel needs 'server_certificate' (pinned) or, explicitly, "
            "trust_on_first_use = true",
            id="no-pin-no-tofu",
        ),
        pytest.param(
            'policy = "Basic256Sha256"\nmode = "SignAndEncrypt"\ncertificate = "c.der"\n'
            'private_key = "k.pem"\ntrust_on_first_use = true',
            None,
            id="explicit-tofu-is-allowed",
        ),
    ],
)
def test_config_refuses_unsafe_security(body: str, expected: str | None) -> None:
    """A password on a channel that does not encrypt, and a secure policy with neither a
    pinned server certificate nor an explicit trust_on_first_use, are refused by config."""
    edits = ((UNSECURED, body),)
    if expected is None:
        skid_config(1, 2, edits=edits)
        return
    with pytest.raises(ConfigError) as caught:
        skid_config(1, 2, edits=edits)
    assert caught.value.problems == [f"skid.toml (test): source.plc.security: {expected}"]
