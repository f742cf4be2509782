"""OPC UA application instance certificates generated at test time (never checked in).

A checked-in key pair would expire one day and fail the suite for no reason, and it would
teach that private keys belong in the repository. :func:`make_pair` writes a self-signed
RSA-2048 certificate (DER, what asyncua and most PLCs exchange) and its PKCS#8 PEM key.

What OPC UA needs in the certificate (Part 6, 6.2.2), and asyncua checks:

* the SubjectAltName URI equals the ApplicationUri the application announces (asyncua's
  ``CertificateValidator`` refuses the session with ``BadCertificateUriInvalid``
  otherwise); DNS ``localhost`` and IP ``127.0.0.1`` name the host in tests, and the
  machine's hostname, which asyncua looks for (it only warns when it is missing);
* KeyUsage digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment (the
  validator's ``KEY_USAGE`` option wants all four); keyCertSign too, as OPC UA Part 6 asks
  of a self-signed certificate;
* ExtendedKeyUsage serverAuth for a server, clientAuth for a client.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: ApplicationUri of the simulated plant's server and of the gateway's client in tests.
SERVER_URI = "urn:edgetwin:test:plant-server"
CLIENT_URI = "urn:edgetwin:test:gateway-client"


@dataclass(frozen=True)
class CertPair:
    """A certificate (DER) and its private key (PEM) on disk, and the URI it vouches for."""

    certificate: Path
    private_key: Path
    application_uri: str


def make_pair(
    directory: Path,
    name: str,
    application_uri: str,
    role: Literal["server", "client"],
    *,
    valid_days: int = 2,
) -> CertPair:
    """Write ``<name>.der`` and ``<name>.key.pem`` into ``directory`` and describe them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"edgetwin test {name}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgetwin tests"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little slack backwards: a validator on a clock a few seconds behind still agrees.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(application_uri),
                    *(x509.DNSName(h) for h in dict.fromkeys(("localhost", socket.gethostname()))),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.der"
    key_path = directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return CertPair(cert_path, key_path, application_uri)
