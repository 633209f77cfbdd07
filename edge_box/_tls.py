"""The box's TLS identity: a self-signed certificate made at enrolment.

Devices do not check it against any CA or host name: central tells them its SHA-256
fingerprint (`edge_sdk.certificate_fingerprint`) and they trust that certificate alone,
whatever address mDNS gave. So it names the box (CN and a DNS SAN ``<box_id>``, plus
any `hosts` given) and lasts about ten years: a new certificate means a new pin at
central.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CERTIFICATE_DAYS", "make_certificate"]

CERTIFICATE_DAYS = 3653
"""How long a box's certificate is valid (about ten years)."""


def make_certificate(box_id: str, *, hosts: Sequence[str] = ()) -> tuple[str, str]:
    """A new self-signed ECDSA P-256 certificate for the box.

    Args:
        box_id: The box's id, its common name and first DNS name.
        hosts: More names or IP addresses for the subject alternative names.

    Returns:
        (certificate PEM, unencrypted PKCS#8 private key PEM). Keep the key with the
        box's other secrets.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, box_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Coherency edge box"),
        ]
    )
    alternatives: list[x509.GeneralName] = [x509.DNSName(box_id)]
    for host in hosts:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternatives.append(x509.DNSName(host))
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # a device's clock may lag a little
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return certificate_pem, key_pem
