"""Routes: what an edge box asks of central about itself.

- ``PUT /v1/edge/certificate``: the calling box replaces its TLS certificate (same
  checks as at enrolment); the clinic's devices learn the new fingerprint from their
  next directory fetch. Edge boxes only (403 ``edge_only``); audited.
"""

from __future__ import annotations

from fastapi import APIRouter

from sync_server.deps import DbDep, DeviceCaller
from sync_server.edge.certificates import replace_certificate
from sync_server.edge.schemas import CertificateReplace, EdgeBoxPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/edge", tags=["edge"])


@router.put(
    "/certificate",
    response_model=EdgeBoxPublic,
    summary="Replace the edge box's TLS certificate",
    responses={
        400: {"description": "bad_certificate: not PEM X.509, over 8 KiB or not valid now."},
        403: {"description": "edge_only: the caller is not an edge box."},
    },
)
def put_certificate(body: CertificateReplace, caller: DeviceCaller, db: DbDep) -> EdgeBoxPublic:
    """Replace the calling edge box's self-signed TLS certificate.

    The answer is the box as devices are told of it, with the new fingerprint (lowercase
    hex SHA-256 of the certificate's DER), which devices pin from their next directory
    fetch (``GET /v1/sync/directory``).
    """
    with db.write() as session:
        entry = replace_certificate(session=session, principal=caller, pem=body.certificate)
    return EdgeBoxPublic.model_validate(entry)
