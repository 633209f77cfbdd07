"""Routes: wound models the server publishes, signed with its artifact key.

- ``POST /v1/admin/models`` (organisation-wide admins): a multipart upload of a
  manifest and an ONNX file. The server checks the file against the manifest, stores
  it, signs the manifest's canonical bytes (`ModelManifest.to_bytes()`) bound to the
  organisation with the artifact key devices pinned at enrolment, and makes it the
  organisation's active model.
- ``GET /v1/models/current`` (devices): the active model's signed manifest and signature.
- ``GET /v1/models/{sha256}`` (devices): the model file.

What a model is and who sees it: `sync_server.models.services`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from crdt import SHA256_PATTERN
from sync_server.bodies import capped_stream
from sync_server.deps import (
    AdminCaller,
    ArtifactKeyDep,
    BlobsDep,
    DbDep,
    DeviceCaller,
    RequestIdDep,
    SigningKeyDep,
)
from sync_server.errors import Invalid, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from sync_server.models.schemas import CurrentModel, ModelPublished
from sync_server.models.services import (
    MAX_MANIFEST_SIZE,
    MAX_MODEL_SIZE,
    MODEL_NAMESPACE,
    check_model,
    current_model,
    locate_model_file,
    may_publish,
    publish_model,
    record_model_download,
    store_model_file,
)
from sync_server.models.tables import PublishedModel

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["models"])

_MULTIPART_OVERHEAD = 64 * 1024

Sha256Path = Annotated[
    str,
    Path(pattern=SHA256_PATTERN, description="The model file's SHA-256, 64 lowercase hex."),
]


async def _read_form(request: Request) -> FormData:
    """The multipart body, refused (413) past the size cap before it is all read."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(
            "send the model as multipart/form-data with the parts manifest and model",
            code="unsupported_media_type",
        )
    too_large = PayloadTooLarge(
        f"a model may be at most {MAX_MODEL_SIZE} bytes", code="model_too_large"
    )
    body = capped_stream(
        request,
        limit=MAX_MODEL_SIZE + MAX_MANIFEST_SIZE + _MULTIPART_OVERHEAD,
        too_large=too_large,
    )
    parser = MultiPartParser(
        request.headers, body, max_files=2, max_fields=2, max_part_size=MAX_MANIFEST_SIZE
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
    request: Request,
    response: Response,
    caller: AdminCaller,
    artifact_key: ArtifactKeyDep,
    db: DbDep,
    backend: BlobsDep,
    request_id: RequestIdDep,
) -> ModelPublished:
    """Check a model file against its manifest, sign the manifest and make the model
    the organisation's active one, which its devices install on their next update.

    422 ``invalid_manifest`` for a manifest that does not parse or validate (the
    message names the fields), ``model_mismatch`` when the file's size or SHA-256 is
    not the manifest's; nothing is stored then. Publishing the same file and manifest
    again answers 200 and makes it active again (a rollback).
    """
    may_publish(caller)
    form = await _read_form(request)
    try:
        manifest_bytes = await _part(form, "manifest", limit=MAX_MANIFEST_SIZE, file_only=False)
        model_bytes = await _part(form, "model", limit=MAX_MODEL_SIZE, file_only=True)
    finally:
        await form.close()
    manifest = check_model(manifest_bytes, model_bytes)
    signature = artifact_key.sign_model(
        organisation_id=caller.organisation_id, manifest_bytes=manifest.to_bytes()
    )

    def work() -> tuple[PublishedModel, bool]:
        store_model_file(backend=backend, manifest=manifest, data=model_bytes)
        with db.write() as session:
            return publish_model(
                session=session,
                publisher=caller,
                manifest=manifest,
                signature=signature,
                request_id=request_id,
            )

    row, created = await run_in_threadpool(work)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ModelPublished.model_validate(row)


@router.get(
    "/models/current",
    summary="The organisation's current wound model",
    response_model=CurrentModel,
    responses={404: {"description": "The organisation has not published a model."}},
)
def get_current_model(
    caller: DeviceCaller,
    db: DbDep,
    request_id: RequestIdDep,
    artifact_key: ArtifactKeyDep,
    signing_key: SigningKeyDep,
) -> CurrentModel:
    """The signed manifest of the model the device's organisation published last.

    Verify the signature over ``b"coherency-model\\n" + organisation_id + b"\\n" +
    manifest`` with the artifact key pinned at enrolment, then fetch the file with
    `GET /v1/models/{sha256}`. 404 ``no_model`` when the organisation has not
    published one.
    """
    with db.write() as session:
        row = current_model(session=session, principal=caller, request_id=request_id)
        return CurrentModel.model_validate(
            {
                "manifest": row.manifest,
                "signature": row.signature,
                "sha256": row.sha256,
                "size": row.size,
                "artifact_public_key": artifact_key.public_key_bytes,
                "artifact_key_signature": artifact_key.endorsement(signing_key),
            }
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
def download_model(
    sha256: Sha256Path,
    caller: DeviceCaller,
    db: DbDep,
    backend: BlobsDep,
    request_id: RequestIdDep,
) -> Response:
    """The model file (any model the device's organisation published), with its
    SHA-256 in `ETag`. Check it against the signed manifest before using it."""
    with db.read() as session:
        size = locate_model_file(session=session, backend=backend, principal=caller, sha256=sha256)
    with db.write() as session:
        record_model_download(
            session=session, principal=caller, sha256=sha256, request_id=request_id
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
