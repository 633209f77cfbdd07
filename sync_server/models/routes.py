"""Routes: wound models the server publishes, signed with its Ed25519 key.

- ``POST /v1/admin/models`` (organisation-wide admins): a multipart upload of a
  manifest and an ONNX file. The server checks the file against the manifest, stores
  it, signs the manifest's canonical bytes (`ModelManifest.to_bytes()`) with the key
  devices pinned at enrolment, and makes it the organisation's active model.
- ``GET /v1/models/current`` (devices): the active model's signed manifest and signature.
- ``GET /v1/models/{sha256}`` (devices): the model file.

Tenancy: models belong to an organisation. Its devices (every clinic) get its active
model; a device of another organisation sees none of them (404, as if they did not
exist). Clinic-bound admins cannot publish: a model changes every clinic's devices.

The bytes live in the blob backend under the ``models`` namespace, content-addressed
(``models/{sha256}``): they are not a clinic's data, and a clinic id (a UUID) can never
be ``models``. The database says which organisation published which model.

The server signs; it does not vouch for the graph beyond its size and SHA-256.
Devices verify the signature and the file, and try the graph, before they swap it in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, JsonValue
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from crdt import SHA256_PATTERN
from edge_sdk._errors import ModelError
from edge_sdk._models import ModelManifest
from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
)
from sync_server.deps import (
    DeviceCaller,
    blob_backend,
    get_db,
    get_signing_key,
    request_id_of,
    require_admin,
)
from sync_server.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    check_declared_length,
)
from sync_server.identity.principals import Principal
from sync_server.identity.services import record_audit
from sync_server.identity.tables import Organisation
from sync_server.identity.tokens import SigningKey
from sync_server.models.tables import PublishedModel

__all__ = [
    "MAX_MANIFEST_SIZE",
    "MAX_MODEL_SIZE",
    "MODEL_NAMESPACE",
    "CurrentModel",
    "ModelPublished",
    "active_model",
    "find_model",
    "publish_model",
    "router",
]

log = logging.getLogger("sync_server.models")

router = APIRouter(prefix="/v1", tags=["models"])

MAX_MODEL_SIZE = 20 * 1024 * 1024
"""The largest model file accepted (the shipped int8 model is under 3 MB)."""
MAX_MANIFEST_SIZE = 64 * 1024
MODEL_NAMESPACE = "models"
"""The blob backend namespace (where a clinic id would be) that holds model files."""
_MULTIPART_OVERHEAD = 64 * 1024

AdminCaller = Annotated[Principal, Depends(require_admin)]
SigningKeyDep = Annotated[SigningKey, Depends(get_signing_key)]
Sha256Path = Annotated[
    str,
    Path(pattern=SHA256_PATTERN, description="The model file's SHA-256, 64 lowercase hex."),
]


# ---------------------------------------------------------------- schemas
class ModelPublished(BaseModel):
    """A published model, as its publisher sees it."""

    id: str
    model_id: str
    version: str
    sha256: str = Field(description="SHA-256 of the model file, hex.")
    size: int = Field(description="The model file's size in bytes.")
    manifest: dict[str, JsonValue] = Field(
        description="The manifest; the signature covers its canonical JSON (sorted keys, "
        "no spaces, ASCII), which is what devices receive."
    )
    signature: str = Field(description="The server's Ed25519 signature of the manifest, base64.")
    published_at: datetime
    active: bool = Field(description="Whether devices of the organisation install this model.")

    @classmethod
    def of(cls, row: PublishedModel) -> ModelPublished:
        """The public view of a published model row."""
        return cls(
            id=row.id,
            model_id=row.model_id,
            version=row.version,
            sha256=row.sha256,
            size=row.size,
            manifest=json.loads(row.manifest),
            signature=base64.b64encode(row.signature).decode("ascii"),
            published_at=row.published_at,
            active=row.active,
        )


class CurrentModel(BaseModel):
    """The model a device should have: verify `signature` over the decoded `manifest`
    bytes with the pinned server key, then the file against the manifest."""

    manifest: str = Field(description="The canonical manifest bytes exactly as signed, base64.")
    signature: str = Field(description="The server's Ed25519 signature of those bytes, base64.")
    sha256: str = Field(description="SHA-256 of the model file: GET /v1/models/{sha256}.")
    size: int = Field(description="The model file's size in bytes.")


# ---------------------------------------------------------------- queries
def active_model(session: Session, *, organisation_id: str) -> PublishedModel | None:
    """The organisation's active model, if it published one."""
    return session.scalars(
        select(PublishedModel).where(
            PublishedModel.organisation_id == organisation_id, PublishedModel.active.is_(True)
        )
    ).one_or_none()


def find_model(session: Session, *, organisation_id: str, sha256: str) -> PublishedModel | None:
    """A model the organisation published (active or not), by its file's SHA-256."""
    return session.scalars(
        select(PublishedModel).where(
            PublishedModel.organisation_id == organisation_id, PublishedModel.sha256 == sha256
        )
    ).one_or_none()


def publish_model(
    session: Session,
    *,
    organisation_id: str,
    manifest: ModelManifest,
    signature: bytes,
    published_by: str,
) -> tuple[PublishedModel, bool]:
    """Make a model the organisation's active one, recording it if it is new.

    Publishing a model the organisation already published (same file, same manifest)
    makes it active again and adds nothing: that is how an admin rolls back.

    Returns:
        The row and whether it was created.

    Raises:
        Conflict: The same file was published with another manifest
            (``model_exists``), or the same model id and version with another file
            (``version_exists``).
    """
    # Publishes of one organisation take turns (PostgreSQL row lock; SQLite's write
    # lock already serialises), so exactly one model ends up active.
    session.execute(
        select(Organisation.id).where(Organisation.id == organisation_id).with_for_update()
    )
    canonical = manifest.to_bytes()
    row = find_model(session, organisation_id=organisation_id, sha256=manifest.sha256)
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
            published_by=published_by,
            active=True,
        )
        session.add(row)
    else:
        row.active = True
    session.flush()
    return row, created


# ---------------------------------------------------------------- helpers
def _storage_error(exc: Exception) -> Unavailable:
    log.error("model storage failure: %s", exc)
    return Unavailable("model storage is unavailable; try again later", code="storage_unavailable")


async def _read_form(request: Request) -> FormData:
    """The multipart body, refused (413) past the size cap before it is all read."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(
            "send the model as multipart/form-data with the parts manifest and model",
            code="unsupported_media_type",
        )
    limit = MAX_MODEL_SIZE + MAX_MANIFEST_SIZE + _MULTIPART_OVERHEAD
    too_large = PayloadTooLarge(
        f"a model may be at most {MAX_MODEL_SIZE} bytes", code="model_too_large"
    )
    check_declared_length(request.headers.get("content-length"), limit, too_large)

    async def capped() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for piece in request.stream():
            seen += len(piece)
            if seen > limit:
                raise too_large
            yield piece

    parser = MultiPartParser(
        request.headers, capped(), max_files=2, max_fields=2, max_part_size=MAX_MANIFEST_SIZE
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise Invalid(f"unusable multipart body: {exc.message}", code="bad_multipart") from None
    except ClientDisconnect:
        raise Invalid(
            "the connection closed before the whole model arrived; nothing was stored",
            code="incomplete_body",
        ) from None


async def _part(form: FormData, name: str, *, limit: int, file_only: bool) -> bytes:
    """One part's bytes: 422 when missing, 413 when over `limit`."""
    value = form.get(name)
    if value is None:
        raise Unprocessable(f"the {name!r} part is missing", code="missing_part")
    if isinstance(value, str):
        if file_only:
            raise Unprocessable(
                f"send {name!r} as a file part (with a filename)", code="invalid_part"
            )
        data = value.encode("utf-8")
    else:
        assert isinstance(value, UploadFile)
        data = await value.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the {name!r} part may be at most {limit} bytes", code=f"{name}_too_large"
        )
    return data


def _store(backend: BlobBackend, sha256: str, data: bytes) -> None:
    """Put the model file in the backend (once: it is content-addressed)."""
    if backend.exists(MODEL_NAMESPACE, sha256):
        return
    upload_id = uuid.uuid4().hex
    handle = backend.start(upload_id)
    try:
        etag = backend.write_part(upload_id, handle, 1, 0, data)
        backend.complete(upload_id, handle, [etag], MODEL_NAMESPACE, sha256, len(data))
    except BaseException:
        try:
            backend.abort(upload_id, handle)
        except BlobBackendError as exc:
            log.warning("could not discard the partial model upload %s: %s", upload_id, exc)
        raise


# ---------------------------------------------------------------- routes
@router.post(
    "/admin/models",
    summary="Publish a wound model",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublished,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["manifest", "model"],
                        "properties": {
                            "manifest": {
                                "type": "string",
                                "format": "binary",
                                "description": "manifest.json (a ModelManifest).",
                            },
                            "model": {
                                "type": "string",
                                "format": "binary",
                                "description": "The .onnx file, at most 20 MB.",
                            },
                        },
                    }
                }
            },
        }
    },
    responses={
        200: {"model": ModelPublished, "description": "Already published: now active again."},
        403: {"description": "Not an organisation-wide admin."},
        409: {"description": "Same file with another manifest, or same version, other file."},
        413: {"description": "The model is larger than 20 MB."},
        415: {"description": "The body is not multipart/form-data."},
        422: {"description": "Invalid manifest, or a file that does not match it."},
    },
)
async def post_model(
    request: Request, response: Response, caller: AdminCaller, signing_key: SigningKeyDep
) -> ModelPublished:
    """Check a model file against its manifest, sign the manifest and make the model
    the organisation's active one, which its devices install on their next update.

    422 ``invalid_manifest`` for a manifest that does not parse or validate (the
    message names the fields), ``model_mismatch`` when the file's size or SHA-256 is
    not the manifest's; nothing is stored then. Publishing the same file and manifest
    again answers 200 and makes it active again (a rollback).
    """
    if caller.clinic_id is not None:
        raise Forbidden(
            "only organisation-wide admins publish models: a model changes every clinic's devices",
            code="organisation_admins_only",
        )
    form = await _read_form(request)
    try:
        manifest_bytes = await _part(form, "manifest", limit=MAX_MANIFEST_SIZE, file_only=False)
        model_bytes = await _part(form, "model", limit=MAX_MODEL_SIZE, file_only=True)
    finally:
        await form.close()
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
    signature = signing_key.sign(manifest.to_bytes())
    backend, db, request_id = blob_backend(request), get_db(request), request_id_of(request)

    def work() -> tuple[PublishedModel, bool]:
        try:
            _store(backend, manifest.sha256, model_bytes)
        except (BlobBackendError, IntegrityError) as exc:
            raise _storage_error(exc) from exc
        with db.write() as session:
            row, created = publish_model(
                session,
                organisation_id=caller.organisation_id,
                manifest=manifest,
                signature=signature,
                published_by=caller.id,
            )
            record_audit(
                session,
                actor_kind=caller.kind,
                actor_id=caller.id,
                clinic_id=None,
                action="model-publish",
                outcome="ok",
                target=row.sha256,
                request_id=request_id,
            )
        return row, created

    row, created = await run_in_threadpool(work)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ModelPublished.of(row)


@router.get(
    "/models/current",
    summary="The organisation's current wound model",
    response_model=CurrentModel,
    responses={404: {"description": "The organisation has not published a model."}},
)
def get_current_model(caller: DeviceCaller, request: Request) -> CurrentModel:
    """The signed manifest of the model the device's organisation published last.

    Verify the signature over the decoded manifest bytes with the server key pinned at
    enrolment, then fetch the file with `GET /v1/models/{sha256}`. 404 ``no_model``
    when the organisation has not published one.
    """
    with get_db(request).write() as session:
        row = active_model(session, organisation_id=caller.organisation_id)
        if row is None:
            raise NotFound("no model is published for this organisation", code="no_model")
        record_audit(
            session,
            actor_kind=caller.kind,
            actor_id=caller.id,
            clinic_id=caller.clinic_id,
            action="model-check",
            outcome="ok",
            target=row.sha256,
            request_id=request_id_of(request),
        )
        return CurrentModel(
            manifest=base64.b64encode(row.manifest).decode("ascii"),
            signature=base64.b64encode(row.signature).decode("ascii"),
            sha256=row.sha256,
            size=row.size,
        )


@router.get(
    "/models/{sha256}",
    summary="Download a wound model file",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The model file."},
        404: {"description": "The device's organisation published no such model."},
    },
)
def download_model(sha256: Sha256Path, caller: DeviceCaller, request: Request) -> Response:
    """The model file (any model the device's organisation published), with its
    SHA-256 in `ETag`. Check it against the signed manifest before using it."""
    db, backend = get_db(request), blob_backend(request)
    with db.read() as session:
        row = find_model(session, organisation_id=caller.organisation_id, sha256=sha256)
        if row is None:
            raise NotFound("no such model", code="model_not_found")
        size = row.size
    try:
        stored = backend.size(MODEL_NAMESPACE, sha256)
    except BlobMissingError:
        stored = -1
    except BlobBackendError as exc:
        raise _storage_error(exc) from exc
    if stored != size:
        log.error("model %s: recorded %d bytes, storage has %d", sha256, size, stored)
        raise Unavailable(
            "the model is published but its storage is unavailable", code="model_unavailable"
        )
    with db.write() as session:
        record_audit(
            session,
            actor_kind=caller.kind,
            actor_id=caller.id,
            clinic_id=caller.clinic_id,
            action="model-download",
            outcome="ok",
            target=sha256,
            request_id=request_id_of(request),
        )
    return StreamingResponse(
        backend.open(MODEL_NAMESPACE, sha256),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "ETag": f'"{sha256}"',
            "Cache-Control": "private, no-store",
        },
    )
