"""Installing the wound model a server publishes, safely, from any `ModelSource`.

    update_model(replica, source)   # the source's current model; when that is not the
                                    # installed one: download, verify, try, install

The server signs a model's canonical manifest, bound to the organisation it publishes
it for (`model_signing_payload`), with its artifact key; the device checks that
signature over the manifest bytes exactly as received, with the artifact key it pinned
at enrolment (never one the source offers), then the file's size and SHA-256 against
the manifest, then runs the graph once on a blank input. Only then does
`ModelStore.install` make it current (in one atomic rename). Anything wrong raises,
and the previous model stays in use.

A replica enrolled before servers had an artifact key pinned only the server's token
key (and checks the models it installed then against it, over the manifest alone). Its
first update from a newer server learns the artifact key from the offer, only once the
pinned token key's endorsement of it verifies (`artifact_key_statement`); the offered
model is then verified with it and installed again under it, and the key is pinned.

Fetching models is a protocol of its own (`ModelSource`), beside `SyncTransport`: model
distribution is not replication (no feed, no cursor, no merge), and a sync peer need
not serve models. `HttpTransport` implements both, over the same server, connection,
token and retries; `MemoryTransport` implements both over a `MemoryHub`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_sdk._errors import (
    ModelError,
    ModelUnavailableError,
    ModelVerificationError,
    NotEnrolledError,
)
from edge_sdk._identity import verify_signature
from edge_sdk._models import (
    MANIFEST_FILE,
    ModelManifest,
    ModelRunner,
    ModelStore,
    artifact_key_statement,
    verify_model,
)
from edge_sdk._replica import Replica
from edge_sdk._sync_types import Enrollment

__all__ = [
    "MODEL_DIR",
    "ModelOffer",
    "ModelSource",
    "ModelUpdate",
    "bundled_model_dir",
    "model_store",
    "update_model",
]

MODEL_DIR = "models"
"""The model store's folder inside a device store."""

_BUNDLED = ("wound_seg", "int8")
"""Where the package ships its int8 wound model, inside the ``models`` package
(`models.BUNDLED_MODEL_DIR`)."""


def bundled_model_dir() -> Path | None:
    """The folder of the wound model shipped with the package, or None without it.

    Found as package data, without importing the ``models`` package (which builds on
    this one): the folder next to its ``__init__``.
    """
    try:
        spec = importlib.util.find_spec("models")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location).joinpath(*_BUNDLED)
        if (folder / MANIFEST_FILE).is_file():
            return folder
    return None


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
class ModelOffer:
    """The model a source offers as current.

    Attributes:
        manifest: The canonical manifest bytes, exactly as the server signed them.
        signature: The server's Ed25519 signature of `manifest` (None if unsigned).
        sha256: The model file's SHA-256.
        size: The model file's size in bytes.
        artifact_key: The server's artifact key, for replicas enrolled before they
            pinned one (None: the source does not say).
        artifact_key_signature: The server token key's endorsement of `artifact_key`.
    """

    manifest: bytes
    signature: bytes | None
    sha256: str
    size: int
    artifact_key: bytes | None = None
    artifact_key_signature: bytes | None = None


class ModelSource(Protocol):
    """Where a device gets the wound model its server publishes (`HttpTransport`,
    `MemoryTransport`)."""

    def current_model(self) -> ModelOffer | None:
        """The model offered as current, or None when none is published."""
        ...

    def download_model(self, sha256: str) -> bytes:
        """The bytes of the model file with that SHA-256 (checked by the caller)."""
        ...


def model_store(replica: Replica) -> ModelStore:
    """The device's model store, ``<store>/models``.

    Once the device is enrolled it accepts only models signed for its organisation by
    the artifact key pinned at enrolment (a replica enrolled before artifact keys: by
    the server key it pinned, over the manifest alone); before that it checks SHA-256
    only (bundled models). While none is installed, `ModelStore.runner` loads the
    model shipped with the package (`bundled_model_dir`).
    """
    enrollment = replica.enrollment
    fallback = bundled_model_dir()
    if enrollment is None:
        return ModelStore(replica.path / MODEL_DIR, public_key=None, fallback=fallback)
    key, organisation_id = _pinned(enrollment)
    return ModelStore(
        replica.path / MODEL_DIR,
        public_key=key,
        organisation_id=organisation_id,
        fallback=fallback,
    )


def _pinned(enrollment: Enrollment) -> tuple[bytes, str | None]:
    """The key models must be signed with, and the organisation they are bound to."""
    if enrollment.artifact_public_key is not None:
        return enrollment.artifact_public_key, enrollment.organisation_id
    return enrollment.current_token_key, None


def _key_for(enrollment: Enrollment, offer: ModelOffer) -> tuple[bytes, str | None, bool]:
    """The key and organisation the offer must verify with, and whether that key is one
    to pin now (an artifact key the pinned token key vouches for).

    Raises:
        ModelVerificationError: The offered artifact key is not vouched for.
    """
    if enrollment.artifact_public_key is not None or offer.artifact_key is None:
        return (*_pinned(enrollment), False)
    if offer.artifact_key_signature is None or not verify_signature(
        enrollment.current_token_key,
        artifact_key_statement(offer.artifact_key),
        offer.artifact_key_signature,
    ):
        raise ModelVerificationError(
            "the server's artifact key is not vouched for by the server key pinned at "
            "enrolment; the previous model stays in use"
        )
    return offer.artifact_key, enrollment.organisation_id, True


def update_model(replica: Replica, source: ModelSource, *, threads: int = 1) -> ModelUpdate:
    """Install the source's current model if it is not the installed one.

    Args:
        replica: an enrolled device's replica (its pinned server key verifies models).
        source: where the model comes from (the server: an `HttpTransport`).
        threads: intra-op threads for the trial run of a new model before it is swapped
            in (as the app will run it).

    Raises:
        NotEnrolledError: the store was never enrolled.
        ModelVerificationError: the server's model failed its signature, size or
            SHA-256 check, or does not run; the previous model stays current.
        ModelError: the model could not be written; the previous model stays current.
        SyncError: the source refused a request or sent an unusable answer.
        ServerUnreachableError: the server did not answer within the retry budget.
    """
    enrollment = replica.enrollment
    if enrollment is None:
        raise NotEnrolledError("this store is not enrolled with a server: run device enroll")
    offer = source.current_model()
    installed = _installed(model_store(replica))
    if offer is None:
        return ModelUpdate(changed=False, manifest=installed, reason=_NO_MODEL)
    key, organisation_id, new_key = _key_for(enrollment, offer)
    # Under a newly pinned key even the installed model is installed again, signed
    # with it: the store re-verifies the current model with the pinned key.
    if not new_key and installed is not None and installed.sha256 == offer.sha256:
        return ModelUpdate(changed=False, manifest=installed, reason=_UP_TO_DATE)
    model_bytes = source.download_model(offer.sha256)
    try:
        manifest = verify_model(
            offer.manifest,
            model_bytes,
            signature=offer.signature,
            public_key=key,
            organisation_id=organisation_id,
        )
    except ModelVerificationError as exc:
        raise ModelVerificationError(
            f"the server's model {offer.sha256} was refused: {exc}; the previous model stays in use"
        ) from None
    _try_run(manifest, model_bytes, threads)
    store = ModelStore(replica.path / MODEL_DIR, public_key=key, organisation_id=organisation_id)
    now = store.install(offer.manifest, model_bytes, offer.signature)
    if new_key:
        replica.pin_artifact_key(key)
    changed = installed is None or installed.sha256 != now.sha256
    return ModelUpdate(changed=changed, manifest=now, reason=None if changed else _UP_TO_DATE)


def _installed(store: ModelStore) -> ModelManifest | None:
    try:
        return store.current()
    except ModelError:
        return None  # a damaged pointer: installing a model repairs it


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
