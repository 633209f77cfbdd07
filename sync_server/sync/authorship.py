"""Who may author a clinic's records, as the server knows it: the clinic's enrolled,
unrevoked devices (the `devices` table, kind ``device``: edge boxes relay records but
author none) and the server itself.

`ClinicDirectory` is the `crdt.KeyDirectory` pushes are checked against: every new
change of a pushed document must be signed by an enrolled device of the record's
clinic, whichever device pushed it. `ServerSigner` signs the documents the server
writes itself (decisions) with its artifact key, under `crdt.server_device_id` of that
key, which every enrolled replica pinned. `clinic_directory` is what devices fetch to check the
changes they pull.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import server_device_id
from sync_server.identity.tables import Device
from sync_server.models.signing import ArtifactKey

__all__ = ["ClinicDirectory", "ServerSigner", "clinic_directory", "revoked_devices"]

_AUTHOR_KIND = "device"  # edge boxes (kind "edge") author no records


class ClinicDirectory:
    """Enrolled, unrevoked devices of a clinic and their keys, read in `session`."""

    def __init__(self, session: Session, *, server_key: bytes) -> None:
        self._session = session
        self._server_key = server_key
        self._server_id = server_device_id(server_key)
        self._known: dict[tuple[str, str], bytes | None] = {}

    def device_key(self, device_id: str, clinic_id: str, declared: bytes | None) -> bytes | None:
        """The key of `device_id` if it may author `clinic_id`'s records (what a device
        declares in a document is ignored: the server enrolled it)."""
        if device_id == self._server_id:
            return self._server_key
        if (clinic_id, device_id) not in self._known:
            self._known[(clinic_id, device_id)] = self._session.execute(
                select(Device.public_key).where(
                    Device.id == device_id,
                    Device.clinic_id == clinic_id,
                    Device.kind == _AUTHOR_KIND,
                    Device.revoked_at.is_(None),
                )
            ).scalar_one_or_none()
        key = self._known[(clinic_id, device_id)]
        return None if key is None else bytes(key)


@dataclass(frozen=True, slots=True)
class ServerSigner:
    """The server as the author of the documents it writes (a `crdt.Signer`)."""

    key: ArtifactKey

    @property
    def device_id(self) -> str:
        """The server's actor: `crdt.server_device_id` of its artifact key."""
        return server_device_id(self.key.public_key_bytes)

    @property
    def public_key(self) -> bytes:
        """The artifact key replicas pinned at enrolment."""
        return self.key.public_key_bytes

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of a document's heads by the artifact key."""
        return self.key.sign_document(data)


def clinic_directory(*, session: Session, clinic_id: str) -> dict[str, bytes]:
    """The clinic's enrolled, unrevoked devices (not its edge boxes): device id to
    public key."""
    rows = session.execute(
        select(Device.id, Device.public_key).where(
            Device.clinic_id == clinic_id,
            Device.kind == _AUTHOR_KIND,
            Device.revoked_at.is_(None),
        )
    ).all()
    return {str(device_id): bytes(key) for device_id, key in rows}


def revoked_devices(*, session: Session, clinic_id: str) -> list[str]:
    """The ids of the clinic's revoked devices and edge boxes, sorted: an edge box
    refuses them even while it cannot reach the server."""
    rows = session.scalars(
        select(Device.id)
        .where(Device.clinic_id == clinic_id, Device.revoked_at.is_not(None))
        .order_by(Device.id)
    ).all()
    return [str(device_id) for device_id in rows]
