"""Edge boxes' TLS certificates: checked, stored, replaced, and listed for the clinic.

A box makes a self-signed X.509 certificate and hands it over at enrolment (and again
when it makes a new one, `replace_certificate`). Central is the source of the
fingerprint devices pin: `clinic_edge_boxes` is what the enrolment answer and the sync
directory carry. A certificate is accepted if it parses as PEM, is at most
`MAX_CERTIFICATE_SIZE` bytes and is valid now; it is stored re-encoded (one PEM block,
whatever else the text carried).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, EdgeCertificateReplaced
from sync_server.audit.services import record_event
from sync_server.db import utcnow
from sync_server.edge.tables import EdgeBox
from sync_server.errors import Forbidden, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Device

__all__ = [
    "EDGE_KIND",
    "MAX_CERTIFICATE_SIZE",
    "BoxCertificate",
    "EdgeBoxEntry",
    "check_certificate",
    "clinic_edge_boxes",
    "register_edge_box",
    "replace_certificate",
]

EDGE_KIND = "edge"
"""The kind (``devices.kind``, ``enrolment_tokens.kind``) and role of an edge box."""

MAX_CERTIFICATE_SIZE = 8 * 1024
"""The largest certificate (PEM text, bytes) a box may register."""


@dataclass(frozen=True, slots=True)
class BoxCertificate:
    """A checked certificate: its PEM (re-encoded) and fingerprint."""

    pem: str
    fingerprint: str  # lowercase hex SHA-256 of the DER


@dataclass(frozen=True, slots=True)
class EdgeBoxEntry:
    """One enrolled, unrevoked edge box of a clinic, as devices are told of it."""

    box_id: str
    name: str
    fingerprint: str
    certificate: str


def check_certificate(pem: str) -> BoxCertificate:
    """Check a box's certificate: PEM, at most 8 KiB, valid now.

    Raises:
        Invalid: ``bad_certificate``, saying what is wrong.
    """
    data = pem.encode("utf-8", errors="replace")
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise Invalid(
            f"a box certificate is at most {MAX_CERTIFICATE_SIZE} bytes of PEM",
            code="bad_certificate",
        )
    try:
        certificate = x509.load_pem_x509_certificate(data)
        der = certificate.public_bytes(Encoding.DER)
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    except ValueError as exc:
        raise Invalid(
            f"the certificate is not a PEM X.509 certificate: {exc}", code="bad_certificate"
        ) from None
    now = utcnow()
    if not not_before <= now <= not_after:
        raise Invalid(
            f"the certificate is valid from {not_before.isoformat()} to "
            f"{not_after.isoformat()}, not now",
            code="bad_certificate",
        )
    return BoxCertificate(
        pem=certificate.public_bytes(Encoding.PEM).decode("ascii"),
        fingerprint=hashlib.sha256(der).hexdigest(),
    )


def register_edge_box(*, session: Session, device: Device, certificate: BoxCertificate) -> EdgeBox:
    """Store the certificate of a box being enrolled (its ``devices`` row, of kind
    ``edge``, is in `session` already)."""
    row = EdgeBox(
        device_id=device.id,
        clinic_id=device.clinic_id,
        certificate=certificate.pem,
        fingerprint=certificate.fingerprint,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def replace_certificate(*, session: Session, principal: Principal, pem: str) -> EdgeBoxEntry:
    """Replace the calling box's certificate with `pem` (checked as at enrolment).

    Raises:
        Forbidden: ``edge_only``: the caller is not an edge box.
        Invalid: ``bad_certificate``.
        NotFound: ``edge_box_not_found``: the box has no certificate row.
    """
    if principal.kind != "device" or principal.role != EDGE_KIND:
        raise Forbidden("this route is for edge boxes", code="edge_only")
    checked = check_certificate(pem)
    row = session.get(EdgeBox, principal.id)
    device = session.get(Device, principal.id)
    if row is None or device is None:
        raise NotFound("no such edge box", code="edge_box_not_found")
    row.certificate = checked.pem
    row.fingerprint = checked.fingerprint
    record_event(
        session=session,
        event=EdgeCertificateReplaced(
            actor=Actor.of(principal),
            clinic_id=row.clinic_id,
            box_id=row.device_id,
            fingerprint=checked.fingerprint,
        ),
    )
    session.flush()
    return EdgeBoxEntry(row.device_id, device.name, row.fingerprint, row.certificate)


def clinic_edge_boxes(*, session: Session, clinic_id: str) -> list[EdgeBoxEntry]:
    """The clinic's enrolled, unrevoked edge boxes with their certificates, by box id."""
    rows = session.execute(
        select(EdgeBox.device_id, Device.name, EdgeBox.fingerprint, EdgeBox.certificate)
        .join(Device, Device.id == EdgeBox.device_id)
        .where(
            EdgeBox.clinic_id == clinic_id,
            Device.kind == EDGE_KIND,
            Device.revoked_at.is_(None),
        )
        .order_by(EdgeBox.device_id)
    ).all()
    return [EdgeBoxEntry(str(b), str(n), str(f), str(c)) for b, n, f, c in rows]
