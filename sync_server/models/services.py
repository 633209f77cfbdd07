"""Publishing wound models: check a model file against its manifest, sign the manifest,
store the file and make it the organisation's active model; and what devices fetch.

Tenancy: models belong to an organisation. Its devices (every clinic) get its active
model; a device of another organisation sees none of them (as if they did not exist).
Clinic-bound admins cannot publish: a model changes every clinic's devices.

The bytes live in the blob backend under the ``models`` namespace, content-addressed
(``models/{sha256}``): they are not a clinic's data, and a clinic id (a UUID) can never
be ``models``. The database says which organisation published which model.

The server signs with its artifact key (`sync_server.models.signing`), never its token
key, and binds each signature to the organisation; it does not vouch for the graph
beyond its size and SHA-256.
Devices verify the signature and the file, and try the graph, before they swap it in.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edge_sdk import ModelError, ModelManifest
from sync_server.audit.events import Actor, ModelChecked, ModelDownloaded, ModelPublished
from sync_server.audit.services import record_event
from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
    storage_unavailable,
)
from sync_server.errors import Conflict, NotFound, Unavailable, Unprocessable
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Organisation
from sync_server.identity.tenancy import require_organisation_wide
from sync_server.models.tables import PublishedModel

__all__ = [
    "MAX_MANIFEST_SIZE",
    "MAX_MODEL_SIZE",
    "MODEL_NAMESPACE",
    "active_model",
    "check_model",
    "current_model",
    "find_model",
    "locate_model_file",
    "may_publish",
    "publish_model",
    "record_model_download",
    "store_model_file",
]

log = logging.getLogger("sync_server.models")

MAX_MODEL_SIZE = 20 * 1024 * 1024
"""The largest model file accepted (the shipped int8 model is under 3 MB)."""
MAX_MANIFEST_SIZE = 64 * 1024
MODEL_NAMESPACE = "models"
"""The blob backend namespace (where a clinic id would be) that holds model files."""


def may_publish(principal: Principal) -> None:
    """Refuse a clinic-bound admin: a model changes every clinic's devices.

    Raises:
        Forbidden: ``organisation_admins_only``.
    """
    require_organisation_wide(
        principal,
        "only organisation-wide admins publish models: a model changes every clinic's devices",
    )


def check_model(manifest_bytes: bytes, model_bytes: bytes) -> ModelManifest:
    """The manifest, once it parses and the model file is exactly the one it describes.

    Raises:
        Unprocessable: ``invalid_manifest`` (the message names the fields) or
            ``model_mismatch`` (the file's size or SHA-256 is not the manifest's).
    """
    try:
        manifest = ModelManifest.from_bytes(manifest_bytes)
    except ModelError as exc:
        raise Unprocessable(str(exc), code="invalid_manifest") from None
    digest = hashlib.sha256(model_bytes).hexdigest()
    if len(model_bytes) != manifest.size or digest != manifest.sha256:
        raise Unprocessable(
            f"the model file has {len(model_bytes)} bytes and SHA-256 {digest}; its manifest "
            f"says {manifest.size} bytes and SHA-256 {manifest.sha256}; nothing was stored",
            code="model_mismatch",
        )
    return manifest


def store_model_file(*, backend: BlobBackend, manifest: ModelManifest, data: bytes) -> None:
    """Put a checked model file in the blob backend (once: it is content-addressed).

    Raises:
        Unavailable: ``storage_unavailable``.
    """
    try:
        if backend.exists(MODEL_NAMESPACE, manifest.sha256):
            return
        upload_id = uuid.uuid4().hex
        handle = backend.start(upload_id)
        try:
            etag = backend.write_part(upload_id, handle, 1, 0, data)
            backend.complete(upload_id, handle, [etag], MODEL_NAMESPACE, manifest.sha256, len(data))
        except BaseException:
            try:
                backend.abort(upload_id, handle)
            except BlobBackendError as exc:
                log.warning("could not discard the partial model upload %s: %s", upload_id, exc)
            raise
    except (BlobBackendError, IntegrityError) as exc:
        raise storage_unavailable(exc, "model storage") from exc


def active_model(*, session: Session, organisation_id: str) -> PublishedModel | None:
    """The organisation's active model, if it published one."""
    return session.scalars(
        select(PublishedModel).where(
            PublishedModel.organisation_id == organisation_id, PublishedModel.active.is_(True)
        )
    ).one_or_none()


def find_model(*, session: Session, organisation_id: str, sha256: str) -> PublishedModel | None:
    """A model the organisation published (active or not), by its file's SHA-256."""
    return session.scalars(
        select(PublishedModel).where(
            PublishedModel.organisation_id == organisation_id, PublishedModel.sha256 == sha256
        )
    ).one_or_none()


def publish_model(
    *,
    session: Session,
    publisher: Principal,
    manifest: ModelManifest,
    signature: bytes,
    request_id: str | None = None,
) -> tuple[PublishedModel, bool]:
    """Make a model its publisher's organisation's active one, recording it if it is new.

    Publishing a model the organisation already published (same file, same manifest)
    makes it active again and adds nothing: that is how an admin rolls back. The
    publication is audited.

    Args:
        session: The transaction.
        publisher: The organisation-wide admin publishing.
        manifest: The checked manifest (`check_model`).
        signature: The artifact key's signature of ``manifest.to_bytes()`` for the
            publisher's organisation (`ArtifactKey.sign_model`).
        request_id: For the audit log.

    Returns:
        The row and whether it was created.

    Raises:
        Forbidden: ``organisation_admins_only``.
        Conflict: The same file was published with another manifest
            (``model_exists``), or the same model id and version with another file
            (``version_exists``).
    """
    may_publish(publisher)
    organisation_id = publisher.organisation_id
    # Publishes of one organisation take turns (PostgreSQL row lock; SQLite's write
    # lock already serialises), so exactly one model ends up active.
    session.execute(
        select(Organisation.id).where(Organisation.id == organisation_id).with_for_update()
    )
    canonical = manifest.to_bytes()
    row = find_model(session=session, organisation_id=organisation_id, sha256=manifest.sha256)
    if row is not None and bytes(row.manifest) != canonical:
        raise Conflict(
            f"this model file was already published as {row.model_id} {row.version} with "
            "another manifest; publish it with that manifest to make it current again",
            code="model_exists",
        )
    if row is None:
        same_version = session.scalars(
            select(PublishedModel.sha256).where(
                PublishedModel.organisation_id == organisation_id,
                PublishedModel.model_id == manifest.model_id,
                PublishedModel.version == manifest.version,
            )
        ).first()
        if same_version is not None:
            raise Conflict(
                f"{manifest.model_id} {manifest.version} was already published with another "
                "file; give the new model a new version",
                code="version_exists",
            )
    others = update(PublishedModel).where(
        PublishedModel.organisation_id == organisation_id, PublishedModel.active.is_(True)
    )
    if row is not None:
        others = others.where(PublishedModel.id != row.id)
    session.execute(others.values(active=False))
    created = row is None
    if row is None:
        row = PublishedModel(
            id=str(uuid.uuid4()),
            organisation_id=organisation_id,
            model_id=manifest.model_id,
            version=manifest.version,
            sha256=manifest.sha256,
            size=manifest.size,
            manifest=canonical,
            signature=signature,
            published_by=publisher.id,
            active=True,
        )
        session.add(row)
    else:
        row.active = True
    session.flush()
    record_event(
        session=session,
        event=ModelPublished(actor=Actor.of(publisher), sha256=row.sha256),
        request_id=request_id,
    )
    return row, created


def current_model(
    *, session: Session, principal: Principal, request_id: str | None = None
) -> PublishedModel:
    """The model the caller's organisation published last (audited as a check).

    Raises:
        NotFound: ``no_model``: the organisation has not published one.
    """
    row = active_model(session=session, organisation_id=principal.organisation_id)
    if row is None:
        raise NotFound("no model is published for this organisation", code="no_model")
    record_event(
        session=session,
        event=ModelChecked(
            actor=Actor.of(principal), clinic_id=principal.clinic_id, sha256=row.sha256
        ),
        request_id=request_id,
    )
    return row


def locate_model_file(
    *, session: Session, backend: BlobBackend, principal: Principal, sha256: str
) -> int:
    """The size of a model file the caller's organisation published, checked against
    the storage.

    Raises:
        NotFound: ``model_not_found``.
        Unavailable: ``model_unavailable`` (published, but the storage does not hold
            it) or ``storage_unavailable``.
    """
    row = find_model(session=session, organisation_id=principal.organisation_id, sha256=sha256)
    if row is None:
        raise NotFound("no such model", code="model_not_found")
    try:
        stored = backend.size(MODEL_NAMESPACE, sha256)
    except BlobMissingError:
        stored = -1
    except BlobBackendError as exc:
        raise storage_unavailable(exc, "model storage") from exc
    if stored != row.size:
        log.error("model %s: recorded %d bytes, storage has %d", sha256, row.size, stored)
        raise Unavailable(
            "the model is published but its storage is unavailable", code="model_unavailable"
        )
    return row.size


def record_model_download(
    *, session: Session, principal: Principal, sha256: str, request_id: str | None
) -> None:
    """Audit a device's download of a model file."""
    record_event(
        session=session,
        event=ModelDownloaded(
            actor=Actor.of(principal), clinic_id=principal.clinic_id, sha256=sha256
        ),
        request_id=request_id,
    )
