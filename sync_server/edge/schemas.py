"""Bodies about edge boxes: a box as devices are told of it, and a new certificate."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sync_server.edge.certificates import MAX_CERTIFICATE_SIZE

__all__ = ["CertificateReplace", "EdgeBoxPublic"]


class EdgeBoxPublic(BaseModel):
    """An enrolled edge box of the clinic: devices trust a box on the clinic LAN only
    if its TLS certificate's SHA-256 fingerprint is this one."""

    model_config = ConfigDict(from_attributes=True)

    box_id: str
    name: str
    fingerprint: str = Field(description="Lowercase hex SHA-256 of the certificate's DER.")
    certificate: str = Field(description="The box's self-signed X.509 certificate, PEM.")


class CertificateReplace(BaseModel):
    """An edge box's new TLS certificate."""

    certificate: str = Field(
        min_length=1,
        # Bounded here only against abuse; over 8 KiB answers 400 bad_certificate.
        max_length=16 * MAX_CERTIFICATE_SIZE,
        description="The box's new self-signed X.509 certificate, PEM (at most 8 KiB, valid now).",
    )
