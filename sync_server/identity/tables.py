"""Identity tables: organisations, clinics, staff users, devices, enrolment and refresh
tokens, the nonces of signed device assertions already seen, and throttling counters.

Secrets are stored only as hashes (Argon2id for passwords, SHA-256 for tokens), except
TOTP secrets, which the server must read back: those are sealed (AES-256-GCM,
`sync_server.identity.sealing`), as are token signing keys kept in the database.
Clinic names and usernames are unique per organisation.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = [
    "Clinic",
    "Device",
    "EnrolmentToken",
    "Organisation",
    "RefreshToken",
    "SigningKeyRow",
    "Throttle",
    "UsedNonce",
    "User",
]


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Clinic(Base):
    __tablename__ = "clinics"
    __table_args__ = (UniqueConstraint("organisation_id", "name", name="uq_clinics_org_name"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The clinic's change feed: the last sequence number given to a document write.
    # Taken with a row lock inside the writing transaction, so numbers commit in order.
    feed_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # IANA time zone its schedules and slots are in (a slot across a daylight-saving
    # change is right because times are computed in this zone, stored in UTC).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """A staff account: clinician, staff or admin."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("organisation_id", "username", name="uq_users_org_username"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    # None for an organisation-wide account (admins); else the clinic it works in.
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"), index=True)
    username: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20))
    # The TOTP secret, sealed (`sealing.SecretBox`, bound to the user's id).
    totp_secret: Mapped[str | None] = mapped_column(String(200))
    # The last TOTP time step accepted, so one code cannot be used twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Device(Base):
    """An enrolled device: its id (also its Automerge actor) and Ed25519 public key.

    `kind` is ``device`` (a tablet: it authors records) or ``edge`` (a clinic's edge
    box: it relays its clinic's devices and authors nothing; its certificate is in
    `sync_server.edge`'s ``edge_boxes``).
    """

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="device", server_default="device")
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_with: Mapped[str | None] = mapped_column(Id)  # the enrolment token's id
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EnrolmentToken(Base):
    """A one-time, expiring token that lets one device (or, of kind ``edge``, one edge
    box) enrol into one clinic."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="device", server_default="device")
    created_by: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    device_id: Mapped[str | None] = mapped_column(Id)


class RefreshToken(Base):
    """One refresh token of a rotation chain (`family_id`).

    Using a token marks it used and issues its successor; presenting a used token
    again is reuse, and revokes every token of its family.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(Id, index=True)
    subject_kind: Mapped[str] = mapped_column(String(10))  # "device" or "user"
    subject_id: Mapped[str] = mapped_column(Id, index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The session's last activity (a staff request or refresh), for idle expiry; kept
    # on the family's live token (None before it was tracked: its issue time counts).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsedNonce(Base):
    """A device-assertion nonce already seen (replay protection until it expires)."""

    __tablename__ = "used_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(Id)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Throttle(Base):
    """One throttling counter (`sync_server.identity.throttling`), shared by every worker.

    `key` names what is counted (``login:rate:client:203.0.113.7``,
    ``login:fail:account:user:<id>``, ...). A rate counter counts requests until
    `expires_at` (its window's end); a failure counter counts failures, is forgotten at
    `expires_at`, and holds its subject back until `blocked_until`. Rows are updated
    only by conditional upserts, and pruned once expired.
    """

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SigningKeyRow(Base):
    """One of the deployment's token signing keys (`sync_server.identity.keyring`).

    At most one is ``active`` (a partial unique index): it signs every instance's
    tokens. A rotated key is ``retiring``: it still verifies until `verify_until`, then
    it is ``retired``. `endorsement` is the previous key's signature of
    `edge_sdk.token_key_statement` of this key (None for the first key), which devices
    check before pinning it. `source` says where the private key lives: ``file``,
    ``secret`` (a setting) or ``database`` (`sealed_private_key`, sealed with the
    server's secret key).
    """

    __tablename__ = "signing_keys"
    __table_args__ = (
        UniqueConstraint("public_key", name="uq_signing_keys_public_key"),
        Index(
            "uq_signing_keys_one_active",
            "state",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    state: Mapped[str] = mapped_column(String(10))
    verify_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    endorsement: Mapped[bytes | None] = mapped_column(LargeBinary(64))
    source: Mapped[str] = mapped_column(String(10))
    sealed_private_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
