"""Fetching the wound model the central server publishes, and swapping it in safely.

    update_model(client)   # GET /v1/models/current; when that is not the installed
                           # model: GET /v1/models/{sha256}, verify, try, install

The server signs a model's canonical manifest with its Ed25519 key; the device checks
that signature over the manifest bytes exactly as received, with the key it pinned at
enrolment, then the file's size and SHA-256 against the manifest, then runs the graph
once on a blank input. Only then does `ModelStore.install` make it current (in one
atomic rename). Anything wrong raises, and the previous model stays in use.

Requests go through the sync client's connection (`_Http`: the device's access token,
retries with backoff), so httpx (the `[server]` extra) is imported only when a model is
fetched: `ModelUpdate` and `model_store` work with the base install.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdt import is_sha256
from edge_sdk._errors import (
    ModelError,
    ModelUnavailableError,
    ModelVerificationError,
    NotEnrolledError,
    SyncError,
)
from edge_sdk._models import ModelManifest, ModelRunner, ModelStore, verify_model
from edge_sdk._replica import Replica

if TYPE_CHECKING:
    from edge_sdk._http_transport import HttpTransport

__all__ = ["MODEL_DIR", "ModelUpdate", "model_store", "update_model"]

MODEL_DIR = "models"
"""The model store's folder inside a device store."""
_NO_MODEL = "the server has not published a model"
_UP_TO_DATE = "the installed model is the server's current one"


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """What `update_model` did."""

    changed: bool
    """True when a new model was installed and is now current."""
    manifest: ModelManifest | None
    """The current model after the update (None when no model is installed)."""
    reason: str | None
    """Why nothing changed; None when a new model was installed."""


@dataclass(frozen=True, slots=True)
class _Offer:
    manifest: bytes  # the canonical manifest bytes exactly as the server signed them
    signature: bytes | None
    sha256: str
    size: int


def model_store(replica: Replica) -> ModelStore:
    """The device's model store, ``<store>/models``.

    Once the device is enrolled it accepts only models signed by the server key pinned
    at enrolment; before that it checks SHA-256 only (bundled models).
    """
    enrollment = replica.enrollment
    key = None if enrollment is None else enrollment.server_public_key
    return ModelStore(replica.path / MODEL_DIR, public_key=key)


def update_model(replica: Replica, http: HttpTransport, *, threads: int = 1) -> ModelUpdate:
    """Install the server's current model if it is not the installed one.

    Args:
        replica: an enrolled device's replica.
        http: the connection to its server.
        threads: intra-op threads for the trial run of a new model before it is swapped
            in (as the app will run it).

    Raises:
        NotEnrolledError: the store was never enrolled.
        ModelVerificationError: the server's model failed its signature, size or
            SHA-256 check, or does not run; the previous model stays current.
        ModelError: the model could not be written; the previous model stays current.
        SyncError: the server refused a request or sent an unusable answer.
        ServerUnreachableError: the server did not answer within the retry budget.
    """
    enrollment = replica.enrollment
    if enrollment is None:
        raise NotEnrolledError("this store is not enrolled with a server: run device enroll")
    store = model_store(replica)
    offer = _fetch_offer(http)
    installed = _installed(store)
    if offer is None:
        return ModelUpdate(changed=False, manifest=installed, reason=_NO_MODEL)
    if installed is not None and installed.sha256 == offer.sha256:
        return ModelUpdate(changed=False, manifest=installed, reason=_UP_TO_DATE)
    model_bytes = _download(http, offer)
    try:
        manifest = verify_model(
            offer.manifest,
            model_bytes,
            signature=offer.signature,
            public_key=enrollment.server_public_key,
        )
    except ModelVerificationError as exc:
        raise ModelVerificationError(
            f"the server's model {offer.sha256} was refused: {exc}; the previous model stays in use"
        ) from None
    _try_run(manifest, model_bytes, threads)
    installed = store.install(offer.manifest, model_bytes, offer.signature)
    return ModelUpdate(changed=True, manifest=installed, reason=None)


def _installed(store: ModelStore) -> ModelManifest | None:
    try:
        return store.current()
    except ModelError:
        return None  # a damaged pointer: installing a model repairs it


def _fetch_offer(http: HttpTransport) -> _Offer | None:
    """The server's current model, or None when it has not published one."""
    from edge_sdk._http_errors import error_code, raise_for_status

    response = http.request("GET", "/v1/models/current")
    if response.status_code == 404 and error_code(response) == "no_model":
        return None
    raise_for_status(response, "model check")
    try:
        answer: Any = response.json()
        manifest = base64.b64decode(answer["manifest"], validate=True)
        signature = base64.b64decode(answer["signature"] or "", validate=True)
        sha256, size = answer["sha256"], answer["size"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SyncError("the server sent an unusable answer about its current model") from None
    if (
        not isinstance(sha256, str)
        or not is_sha256(sha256)
        or not isinstance(size, int)
        or size < 1
    ):
        raise SyncError("the server sent an unusable answer about its current model")
    return _Offer(manifest=manifest, signature=signature or None, sha256=sha256, size=size)


def _download(http: HttpTransport, offer: _Offer) -> bytes:
    from edge_sdk._http_errors import raise_for_status

    # Read whole (models are a few MB; the server caps them at 20 MB): a connection cut
    # mid-body is then retried by `_Http` like any other failure.
    response = http.request("GET", f"/v1/models/{offer.sha256}")
    raise_for_status(response, "model download")
    return response.content


def _try_run(manifest: ModelManifest, model_bytes: bytes, threads: int) -> None:
    """Load the verified graph and run it once, so a model that cannot run never
    replaces one that can. Skipped without onnxruntime (checked at first load then)."""
    try:
        runner = ModelRunner(manifest, model_bytes, threads=threads)
    except ModelUnavailableError:
        return
    except ModelError as exc:
        raise ModelVerificationError(f"{exc}; the previous model stays in use") from None
    import numpy as np  # onnxruntime is installed, so numpy is

    try:
        runner.predict(np.zeros(manifest.input.shape, dtype=np.float32))
    except ModelError as exc:
        raise ModelVerificationError(f"{exc}; the previous model stays in use") from None
