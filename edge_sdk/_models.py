"""The on-device wound model: manifests, trust, the ONNX Runtime runner and the model store.

A model is two files: an ONNX graph and `manifest.json`, the canonical JSON of a
`ModelManifest` (what the graph reads and writes, its classes, its sha256 and size, its
metrics and provenance). A model the central server publishes also has `manifest.sig`,
the detached Ed25519 signature by the server's artifact key of
`model_signing_payload(organisation_id, manifest bytes)`: domain-separated and bound to
the organisation it was published for, so it verifies as nothing else (not as another
organisation's model, not as anything the server's token key signs). Since the manifest
pins the graph's sha256, the signature covers both files. Without an organisation (a
model signed outside a server, or a store enrolled before artifact keys existed) the
signature is over the manifest bytes alone.

Trust:

* `verify_model` checks a manifest and a graph: the signature (when a key is pinned),
  then the size and sha256 of the graph.
* `ModelStore.install` verifies a published model against the artifact key the device
  pinned at enrolment before it replaces the current one; `install_bundled` checks a
  model shipped with the app against the sha256 in its manifest.
* `ModelStore.runner` re-checks the current model's files before loading them, so a
  damaged or edited file is refused with an error naming it, never loaded and never
  silently replaced by another model.

Errors (added to the `EdgeError` tree):

    EdgeError
    └── ModelError                  a model cannot be read, loaded or run
        ├── ModelVerificationError  a model failed its sha256, size or signature check
        └── ModelUnavailableError   onnxruntime is not installed, or no model is installed

`onnxruntime` is optional (the `inference` extra) and imported only when a runner is
built: without it, everything here but `ModelRunner` works, and the capture pipeline
falls back to its geometric boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from crdt import SHA256_PATTERN
from edge_sdk._errors import ModelError, ModelUnavailableError, ModelVerificationError
from edge_sdk._files import fsync_dir
from edge_sdk._identity import verify_signature

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "OUTPUT_KIND_KEY",
    "SIGNATURE_FILE",
    "ModelError",
    "ModelManifest",
    "ModelRunner",
    "ModelStore",
    "ModelTensor",
    "ModelUnavailableError",
    "ModelVerificationError",
    "Segmentation",
    "artifact_key_statement",
    "graph_metadata",
    "model_signing_payload",
    "sign_manifest",
    "verify_model",
]

MANIFEST_FORMAT = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
#: The `preprocessing` key that says what the graph outputs: "logits" (the runner applies
#: a softmax over the class axis) or "probabilities" (used as they are).
OUTPUT_KIND_KEY = "output_kind"
OUTPUT_KINDS = ("logits", "probabilities")
#: The `preprocessing` key naming the version of the input the model was trained on
#: (`lidar_capture.MODEL_INPUT_VERSION` for the wound model).
PREPROCESSING_VERSION_KEY = "version"
#: The ``metadata_props`` keys `graph_metadata` writes and `ModelRunner` checks.
_GRAPH_METADATA_KEYS = ("model_id", "model_version", "classes", "preprocessing_version")

_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
_CURRENT_FILE = "current"
_VERSIONS_DIR = "versions"
_PARTIAL_PREFIX = ".partial-"
_INSTALL_HINT = "onnxruntime is not installed: pip install 'coherency[inference]'"


class ModelTensor(BaseModel):
    """A graph input or output: its name, NCHW shape and element type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    shape: tuple[int, int, int, int]
    """(N, C, H, W), all positive. N is the batch the graph takes (1 for a fixed batch)."""
    dtype: Literal["float32"] = "float32"

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if any(d < 1 for d in shape):
            raise ValueError(f"every dimension must be positive, not {shape}")
        return shape


class ModelManifest(BaseModel):
    """What a model is and how to check it; its canonical bytes are what gets signed.

    `preprocessing` is free-form (the training recipe documents it) except for
    `preprocessing["output_kind"]`: "logits" or "probabilities". The runner feeds the
    input as the caller built it: normalisation belongs in the graph or in the code that
    builds the canonical input (`lidar_capture.model_input`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int
    model_id: str = Field(pattern=f"^{_NAME}$")
    version: str = Field(pattern=f"^{_NAME}$")
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.onnx$")
    """The graph's file name, beside the manifest (a bare name: no folders)."""
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=1)
    input: ModelTensor
    output: ModelTensor
    classes: tuple[str, ...]
    """Class names in output-channel order; class 0 is "background"."""
    preprocessing: dict[str, JsonValue]
    metrics: dict[str, float]
    provenance: dict[str, JsonValue]
    created_at: AwareDatetime
    quantization: Literal["int8", "fp32"]
    tissue_mix: dict[str, JsonValue] | None = None
    """How the measurement turns the model's output into the tissue composition
    percentages, precisely enough for another runtime to reproduce them (the wound
    model's is `models` ``tissue_mix_rule()``); None in manifests written before it was
    recorded."""

    @field_validator("format")
    @classmethod
    def _supported_format(cls, value: int) -> int:
        if value != MANIFEST_FORMAT:
            raise ValueError(
                f"manifest format {value} is not supported (this SDK reads {MANIFEST_FORMAT})"
            )
        return value

    @field_validator("classes")
    @classmethod
    def _valid_classes(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        if len(classes) < 2 or classes[0] != "background":
            raise ValueError('needs "background" first and at least one other class')
        if len(set(classes)) != len(classes) or not all(classes):
            raise ValueError("class names must be non-empty and distinct")
        if len(classes) > 255:  # labels are uint8
            raise ValueError("at most 255 classes")
        return classes

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, metrics: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        if bad:
            raise ValueError(f"metrics must be finite numbers: {', '.join(bad)}")
        return metrics

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.output.shape[1] != len(self.classes):
            raise ValueError(
                f"output has {self.output.shape[1]} channels but there are "
                f"{len(self.classes)} classes"
            )
        if self.output.shape[0] != self.input.shape[0]:
            raise ValueError("input and output batch sizes differ")
        kind = self.preprocessing.get(OUTPUT_KIND_KEY)
        if kind not in OUTPUT_KINDS:
            raise ValueError(
                f'preprocessing["{OUTPUT_KIND_KEY}"] must be "logits" or "probabilities", '
                f"not {kind!r}"
            )
        try:  # free-form values must survive canonical JSON (no NaN or infinity)
            self.to_bytes()
        except ValueError as exc:
            raise ValueError(f"not representable as canonical JSON: {exc}") from None
        return self

    @property
    def output_kind(self) -> Literal["logits", "probabilities"]:
        """Whether the graph outputs logits or class probabilities."""
        return "logits" if self.preprocessing[OUTPUT_KIND_KEY] == "logits" else "probabilities"

    @property
    def preprocessing_version(self) -> str | None:
        """The version of the input the model reads (None when the manifest does not say)."""
        value = self.preprocessing.get(PREPROCESSING_VERSION_KEY)
        return None if value is None else str(value)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, ASCII): the bytes that are signed.

        A manifest without a tissue-mix rule has no ``tissue_mix`` key, so manifests
        written before the rule existed keep their bytes.
        """
        fields = self.model_dump(mode="json")
        if fields["tissue_mix"] is None:
            del fields["tissue_mix"]
        return json.dumps(
            fields,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        ).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelManifest:
        """Parse manifest bytes.

        Raises:
            ModelError: not JSON, or not a valid manifest (the message lists the fields).
        """
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"the model manifest is not valid JSON: {exc}") from None
        except RecursionError:
            raise ModelError("the model manifest is nested too deeply to be a manifest") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(f"the model manifest is invalid: {_describe(exc)}") from None


def graph_metadata(
    *, model_id: str, version: str, classes: Collection[str], preprocessing_version: str | None
) -> dict[str, str]:
    """The ONNX ``metadata_props`` a model graph carries: its id, version, class names
    (a JSON array) and, when known, the version of the input it reads.

    The release writes them into every graph; `ModelRunner` refuses a graph whose
    metadata disagrees with its manifest, so a graph paired with the wrong manifest is
    caught even though the manifest's sha256 matches.
    """
    meta = {
        "model_id": model_id,
        "model_version": version,
        "classes": json.dumps(list(classes), separators=(",", ":")),
    }
    if preprocessing_version is not None:
        meta["preprocessing_version"] = preprocessing_version
    return meta


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


MODEL_SIGNATURE_DOMAIN = b"coherency-model\n"
ARTIFACT_KEY_DOMAIN = b"coherency-artifact-key\n"


def model_signing_payload(organisation_id: str | None, manifest_bytes: bytes) -> bytes:
    """The bytes a model signature covers: ``coherency-model``, the organisation the
    model is published for and the manifest bytes exactly as published, one per line.

    With `organisation_id` None: the manifest bytes alone (models signed outside a
    server, and stores enrolled before servers had an artifact key).
    """
    if organisation_id is None:
        return manifest_bytes
    return MODEL_SIGNATURE_DOMAIN + organisation_id.encode() + b"\n" + manifest_bytes


def artifact_key_statement(public_key: bytes) -> bytes:
    """The bytes a server's token key signs to vouch for its artifact key (`public_key`),
    for devices that pinned only the token key (enrolled before artifact keys existed)."""
    return ARTIFACT_KEY_DOMAIN + public_key


def sign_manifest(
    manifest: ModelManifest, private_key: Ed25519PrivateKey, *, organisation_id: str | None = None
) -> bytes:
    """The detached 64-byte Ed25519 signature of the manifest for `organisation_id`
    (`model_signing_payload` of `manifest.to_bytes()`).

    Publish `manifest.to_bytes()` itself as `manifest.json`: devices verify the bytes
    they receive, not a re-serialisation.
    """
    return private_key.sign(model_signing_payload(organisation_id, manifest.to_bytes()))


def verify_model(
    manifest_bytes: bytes,
    model_bytes: bytes,
    *,
    signature: bytes | None,
    public_key: bytes | None,
    organisation_id: str | None = None,
) -> ModelManifest:
    """Check a model against its manifest, and the manifest against a pinned key.

    With `public_key` (the artifact key pinned at enrolment) the signature is required
    and checked over `model_signing_payload(organisation_id, manifest_bytes)`, the
    manifest exactly as received, before anything in the manifest is trusted. Then the
    model's size and sha256 must match the manifest.

    Returns:
        The parsed manifest.

    Raises:
        ModelVerificationError: the message names the check that failed.
        ValueError: `public_key` is not a 32-byte Ed25519 key (a configuration error).
    """
    if public_key is not None:
        _check_signature(manifest_bytes, signature, public_key, organisation_id)
    try:
        manifest = ModelManifest.from_bytes(manifest_bytes)
    except ModelError as exc:
        raise ModelVerificationError(str(exc)) from None
    if len(model_bytes) != manifest.size:
        raise ModelVerificationError(
            f"the model file {manifest.file} is {len(model_bytes)} bytes; "
            f"its manifest says {manifest.size}"
        )
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != manifest.sha256:
        raise ModelVerificationError(
            f"the model file {manifest.file} has sha256 {digest}; "
            f"its manifest pins {manifest.sha256}"
        )
    return manifest


def _check_signature(
    manifest_bytes: bytes, signature: bytes | None, public_key: bytes, organisation_id: str | None
) -> None:
    if signature is None:
        raise ModelVerificationError(
            "the model is unsigned, and this device only accepts models signed by its server"
        )
    if not verify_signature(
        public_key, model_signing_payload(organisation_id, manifest_bytes), signature
    ):
        raise ModelVerificationError(
            "the model manifest's signature does not verify with the server's pinned key "
            "(the manifest was changed after signing, another key signed it, or it was "
            "signed for another organisation)"
        )


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The model's reading of one canonical input."""

    labels: npt.NDArray[np.uint8]
    """(H, W) class index per cell (0 = background; 0 wherever the input was not valid)."""
    probabilities: FloatArray
    """(C, H, W) class probabilities."""
    wound_mask: npt.NDArray[np.bool_]
    """(H, W) cells of any class but background."""
    tissue_composition: dict[str, float]
    """Percent of wound cells per class (every class but background); sums to 100 over a
    wound, all zeros when there is none."""
    confidence: float
    """Mean top-class probability over the wound cells (over the valid cells when there is
    no wound), in [0, 1]."""
    model_id: str
    model_version: str


def _onnxruntime() -> ModuleType:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise ModelUnavailableError(_INSTALL_HINT) from None


class ModelRunner:
    """One ONNX Runtime session for one model, created once and reused.

    Build it with `ModelStore.runner()` or `ModelRunner.load(folder)`, which verify the
    files first; the constructor trusts the bytes it is given.
    """

    def __init__(
        self,
        manifest: ModelManifest,
        model_bytes: bytes,
        *,
        threads: int = 1,
        input_version: str | None = None,
    ) -> None:
        """Create the session and check it against the manifest.

        Args:
            manifest: the model's (verified) manifest.
            model_bytes: the ONNX graph.
            threads: intra-op threads (one inference uses this many cores).
            input_version: the input version the caller builds
                (`lidar_capture.MODEL_INPUT_VERSION`); a model whose manifest names
                another is refused. None skips that check.

        Raises:
            ModelUnavailableError: onnxruntime is not installed.
            ModelError: the graph does not load; its input or output, or its
                ``metadata_props``, differ from the manifest; or it reads another
                input version than `input_version`.
            ValueError: `threads` is below 1.
        """
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        ort = _onnxruntime()
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's errors derive from Exception directly (a private pybind module),
        # so the boundary catches Exception and says which model failed.
        try:
            self._session: Any = ort.InferenceSession(
                model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"{self._label} does not load in onnxruntime: {exc}") from None
        self._fixed_batch = self._check_io()
        self._check_metadata(input_version)

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        threads: int = 1,
        public_key: bytes | None = None,
        organisation_id: str | None = None,
        input_version: str | None = None,
    ) -> ModelRunner:
        """Verify the model in `directory` (manifest.json, its .onnx, and manifest.sig
        when `public_key` is given, signed for `organisation_id`), then load it
        (refusing another input version than `input_version`, as the constructor).

        Raises:
            ModelVerificationError: a check failed (the message names the file).
            ModelError: a file is missing or unreadable, or the graph does not load.
            ModelUnavailableError: onnxruntime is not installed.
        """
        manifest, _, model_bytes = _read_verified(
            Path(directory),
            public_key=public_key,
            require_signature=public_key is not None,
            organisation_id=organisation_id,
        )
        return cls(manifest, model_bytes, threads=threads, input_version=input_version)

    @property
    def threads(self) -> int:
        """The intra-op thread count the session runs with."""
        return int(self._session.get_session_options().intra_op_num_threads)

    @property
    def _label(self) -> str:
        return f"model {self.manifest.model_id} {self.manifest.version}"

    def _check_io(self) -> bool:
        """Check the session's input and output against the manifest; whether N is fixed."""
        inputs = self._session.get_inputs()
        outputs = {o.name: o for o in self._session.get_outputs()}
        want_in, want_out = self.manifest.input, self.manifest.output
        if len(inputs) != 1 or inputs[0].name != want_in.name:
            names = [i.name for i in inputs]
            raise ModelError(
                f"{self._label}: the graph's inputs are {names}, the manifest expects one "
                f"input {want_in.name!r}"
            )
        if want_out.name not in outputs:
            raise ModelError(
                f"{self._label}: the graph has no output {want_out.name!r} "
                f"(it has {sorted(outputs)})"
            )
        for role, node, want in (
            ("input", inputs[0], want_in),
            ("output", outputs[want_out.name], want_out),
        ):
            if node.type != "tensor(float)":
                raise ModelError(f"{self._label}: the graph's {role} is {node.type}, not float32")
            shape = list(node.shape)
            # A dimension the graph leaves symbolic (a str or None) accepts the manifest's.
            if len(shape) != 4 or any(
                isinstance(got, int) and got != exp
                for got, exp in zip(shape, want.shape, strict=True)
            ):
                raise ModelError(
                    f"{self._label}: the graph's {role} shape is {shape}, "
                    f"the manifest says {list(want.shape)}"
                )
        return isinstance(inputs[0].shape[0], int)

    def _check_metadata(self, input_version: str | None) -> None:
        """Refuse a graph whose ``metadata_props`` disagree with the manifest, or a model
        of another input version than the caller builds.

        A graph without a key (one exported before the metadata was written) is not
        checked on that key; the manifest's input version still is.
        """
        manifest = self.manifest
        found = dict(self._session.get_modelmeta().custom_metadata_map)
        expected = graph_metadata(
            model_id=manifest.model_id,
            version=manifest.version,
            classes=manifest.classes,
            preprocessing_version=manifest.preprocessing_version,
        )
        for key in _GRAPH_METADATA_KEYS:
            if key in found and found[key] != expected.get(key):
                raise ModelError(
                    f"{self._label}: the graph's metadata says {key} {found[key]!r}, its "
                    f"manifest {expected.get(key)!r}; the graph and manifest do not belong "
                    "together"
                )
        if input_version is not None and manifest.preprocessing_version not in (
            None,
            input_version,
        ):
            raise ModelError(
                f"{self._label} reads input {manifest.preprocessing_version!r}, but this SDK "
                f"builds {input_version!r}: install a model trained for {input_version!r}"
            )

    def predict(self, batch: FloatArray) -> FloatArray:
        """Class probabilities for a batch of canonical inputs.

        Args:
            batch: (N, C, H, W) float32, C, H and W as in `manifest.input.shape` (and N
                too when the graph's batch size is fixed).

        Returns:
            (N, classes, H', W') float32 probabilities summing to 1 over the class axis.

        Raises:
            ModelError: wrong type, dtype or shape, or the graph failed to run.
        """
        import numpy as np  # onnxruntime depends on numpy; the base install has neither

        expected = self.manifest.input.shape
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            got = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ModelError(f"{self._label} takes a float32 array, not {got}")
        if (
            batch.ndim != 4
            or batch.shape[1:] != expected[1:]
            or batch.shape[0] < 1
            or (self._fixed_batch and batch.shape[0] != expected[0])
        ):
            first = str(expected[0]) if self._fixed_batch else "N"
            want = ", ".join([first, *(str(d) for d in expected[1:])])
            raise ModelError(f"{self._label} takes a batch shaped ({want}), not {batch.shape}")
        try:
            (raw,) = self._session.run(
                [self.manifest.output.name],
                {self.manifest.input.name: np.ascontiguousarray(batch)},
            )
        except Exception as exc:  # onnxruntime's errors: see __init__
            raise ModelError(f"{self._label} failed to run: {exc}") from None
        out = np.asarray(raw, dtype=np.float32)
        classes = len(self.manifest.classes)
        want_out = (batch.shape[0], classes, *self.manifest.output.shape[2:])
        if out.shape != want_out:
            raise ModelError(f"{self._label} returned shape {out.shape}, expected {want_out}")
        if self.manifest.output_kind == "logits":
            shifted = np.exp(out - out.max(axis=1, keepdims=True))
            out = shifted / shifted.sum(axis=1, keepdims=True)
        return out

    def segment(
        self, image: FloatArray, valid: npt.NDArray[np.bool_] | None = None
    ) -> Segmentation:
        """Segment one canonical input.

        Args:
            image: (C, H, W) float32, the canonical input.
            valid: optional (H', W') cells the scan actually saw (the output grid, the
                input's when the model keeps the size); cells outside it are background.

        Raises:
            ModelError: bad input (see `predict`) or a `valid` mask of the wrong shape.
        """
        import numpy as np

        if not isinstance(image, np.ndarray) or image.ndim != 3:
            shape = image.shape if isinstance(image, np.ndarray) else type(image).__name__
            raise ModelError(f"{self._label}.segment takes one (C, H, W) image, not {shape}")
        probs = self.predict(image[np.newaxis])[0]
        labels = probs.argmax(axis=0).astype(np.uint8)
        if valid is not None:
            mask = np.asarray(valid, dtype=bool)
            if mask.shape != labels.shape:
                raise ModelError(
                    f"the valid mask is {mask.shape}, the model's output grid {labels.shape}"
                )
            labels[~mask] = 0
        else:
            mask = np.ones(labels.shape, dtype=bool)
        wound = labels > 0
        cells = int(wound.sum())
        counts = np.bincount(labels[wound], minlength=len(self.manifest.classes))
        composition = {
            name: (100.0 * float(counts[i]) / cells if cells else 0.0)
            for i, name in enumerate(self.manifest.classes)
            if i > 0
        }
        top = probs.max(axis=0)
        over = wound if cells else mask
        confidence = float(top[over].mean()) if over.any() else 0.0
        return Segmentation(
            labels=labels,
            probabilities=probs,
            wound_mask=wound,
            tissue_composition=composition,
            confidence=min(1.0, max(0.0, confidence)),
            model_id=self.manifest.model_id,
            model_version=self.manifest.version,
        )

    def __repr__(self) -> str:
        return f"ModelRunner({self.manifest.model_id!r}, {self.manifest.version!r})"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_verified(
    directory: Path,
    *,
    public_key: bytes | None,
    require_signature: bool,
    unsigned_ok: Collection[str] = (),
    organisation_id: str | None = None,
) -> tuple[ModelManifest, bytes, bytes]:
    """Read and verify a model folder: (manifest, manifest bytes, model bytes).

    The signature is checked when `public_key` is given and either it is required or a
    signature file is present; a required signature may be absent only for a manifest
    whose sha256 is in `unsigned_ok` (the app's own bundled models). Errors name the file
    that failed.
    """
    manifest_path = directory / MANIFEST_FILE
    manifest_bytes = _read(manifest_path)
    sig_path = directory / SIGNATURE_FILE
    if (
        public_key is not None
        and require_signature
        and not sig_path.exists()
        and hashlib.sha256(manifest_bytes).hexdigest() in unsigned_ok
    ):
        require_signature = False
    elif public_key is not None and require_signature and not sig_path.exists():
        raise ModelVerificationError(
            f"{manifest_path}: the model is not signed by the pinned server key "
            f"({SIGNATURE_FILE} is missing); the model was not loaded"
        )
    if public_key is not None and (require_signature or sig_path.exists()):
        try:
            _check_signature(manifest_bytes, _read(sig_path), public_key, organisation_id)
        except ModelVerificationError as exc:
            raise ModelVerificationError(
                f"{manifest_path}: {exc}; the model was not loaded"
            ) from None
    try:
        manifest = ModelManifest.from_bytes(manifest_bytes)
    except ModelError as exc:
        raise ModelVerificationError(f"{manifest_path}: {exc}") from None
    model_path = directory / manifest.file
    model_bytes = _read(model_path)
    try:
        verified = verify_model(manifest_bytes, model_bytes, signature=None, public_key=None)
    except ModelVerificationError as exc:
        raise ModelVerificationError(f"{model_path}: {exc}; the model was not loaded") from None
    return verified, manifest_bytes, model_bytes


class ModelStore:
    """The models installed on a device, in a folder, swapped atomically.

    Layout: `versions/<sha256 prefix>-<random>/` holds each installed model's
    manifest.json, manifest.sig (when signed) and .onnx file; the `current` file names
    the folder in use. Installing writes a new folder, then replaces `current` in one
    rename, so a crash at any point leaves the previous model current. The current model
    and the one before it are kept; older folders (and leftovers of interrupted installs)
    are removed after the next successful install.

    One process installs at a time (the app); readers may load concurrently.
    """

    def __init__(
        self,
        root: Path,
        *,
        public_key: bytes | None,
        organisation_id: str | None = None,
        bundled: Collection[str] = (),
        fallback: Path | None = None,
    ) -> None:
        """Open (or start) a model store.

        Args:
            root: the store's folder, e.g. `<device store>/models` (created on first install).
            public_key: the artifact key pinned at enrolment
                (`Enrollment.artifact_public_key`); when set, `install` takes only models
                that key signed, and `runner` loads only models that key signed. None
                before enrolment: `install` then checks sha256 only.
            organisation_id: the organisation models must be signed for
                (`model_signing_payload`); None: signatures over the manifest alone.
            bundled: sha256 (hex) of the manifest files the app itself ships; those
                install and load unsigned (`install_bundled`) even with a pinned key.
            fallback: a model folder the app ships (checked against its manifest's
                sha256) that `runner` loads while no model is installed.

        Raises:
            ValueError: `public_key` is not a 32-byte Ed25519 public key.
        """
        if public_key is not None and len(public_key) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
        self.root = Path(root)
        self._public_key = public_key
        self._organisation_id = organisation_id
        self._bundled = frozenset(bundled)
        self.fallback = fallback
        """The model folder `runner` loads while none is installed (None: no fallback)."""
        self._versions = self.root / _VERSIONS_DIR
        self._pointer = self.root / _CURRENT_FILE

    def install(
        self, manifest_bytes: bytes, model_bytes: bytes, signature: bytes | None
    ) -> ModelManifest:
        """Verify a published model and make it current.

        Args:
            manifest_bytes: manifest.json exactly as published (the signed bytes).
            model_bytes: the .onnx file.
            signature: manifest.sig; required when the store has a pinned key.

        Returns:
            The new current model's manifest.

        Raises:
            ModelVerificationError: a check failed, or (when onnxruntime is installed)
                the graph does not load or differs from its manifest. Nothing changed.
            ModelError: the files could not be written. Nothing changed.
        """
        manifest = verify_model(
            manifest_bytes,
            model_bytes,
            signature=signature,
            public_key=self._public_key,
            organisation_id=self._organisation_id,
        )
        return self._install(manifest, manifest_bytes, model_bytes, signature)

    def install_bundled(self, directory: Path) -> ModelManifest:
        """Install the model shipped with the app (checked against its manifest's sha256).

        The app's package pins the bundled manifest, so no signature is needed. Installing
        the model that is already current does nothing.

        Raises:
            ModelVerificationError: the bundled files do not match the manifest.
            ModelError: a file is missing, or the files could not be written.
        """
        manifest, manifest_bytes, model_bytes = _read_verified(
            Path(directory), public_key=None, require_signature=False
        )
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        if self._public_key is not None and digest not in self._bundled:
            raise ModelVerificationError(
                f"{Path(directory) / MANIFEST_FILE}: not one of this app's bundled models "
                "and not signed by the pinned server key; nothing was installed"
            )
        return self._install(manifest, manifest_bytes, model_bytes, None)

    def current(self) -> ModelManifest | None:
        """The current model's manifest, or None when no model is installed.

        Raises:
            ModelError: the store is damaged (the message names the file).
        """
        folder = self._current_folder()
        if folder is None:
            return None
        path = folder / MANIFEST_FILE
        try:
            return ModelManifest.from_bytes(_read(path))
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None

    def runner(self, *, threads: int = 1, input_version: str | None = None) -> ModelRunner:
        """Load the current model, re-verifying its files first; on a store with none
        installed, the `fallback` model (the app's bundled one), checked against its
        manifest. `input_version`: as for `ModelRunner`.

        Raises:
            ModelUnavailableError: no model is installed and there is no fallback, or
                onnxruntime is not installed.
            ModelVerificationError: a file of the current (or fallback) model was
                changed on disk (the message names it); no other model is loaded in
                its place.
        """
        folder = self._current_folder()
        if folder is None and self.fallback is not None:
            return ModelRunner.load(self.fallback, threads=threads, input_version=input_version)
        if folder is None:
            raise ModelUnavailableError(f"no model is installed in {self.root}")
        manifest, _, model_bytes = _read_verified(
            folder,
            public_key=self._public_key,
            require_signature=True,
            unsigned_ok=self._bundled,
            organisation_id=self._organisation_id,
        )
        return ModelRunner(manifest, model_bytes, threads=threads, input_version=input_version)

    def _current_folder(self) -> Path | None:
        try:
            name = self._pointer.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"cannot read the model pointer {self._pointer}: {exc}") from None
        folder = self._versions / name
        if not re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{8}", name) or not folder.is_dir():
            raise ModelError(
                f"the model pointer {self._pointer} names {name!r}, which is not an installed model"
            )
        return folder

    def _install(
        self,
        manifest: ModelManifest,
        manifest_bytes: bytes,
        model_bytes: bytes,
        signature: bytes | None,
    ) -> ModelManifest:
        try:
            previous = self._current_folder()
        except ModelError:
            previous = None  # a damaged pointer: this install repairs it
        if previous is not None and self._is_same(previous, manifest_bytes, model_bytes, signature):
            return manifest
        self._check_loads(manifest, model_bytes)
        self._versions.mkdir(parents=True, exist_ok=True)
        name = f"{manifest.sha256[:16]}-{secrets.token_hex(4)}"
        final = self._versions / name
        partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=self._versions))
        swapped = False
        try:
            files = {MANIFEST_FILE: manifest_bytes, manifest.file: model_bytes}
            if signature is not None:
                files[SIGNATURE_FILE] = signature
            for file_name, data in files.items():
                _write_synced(partial / file_name, data)
            fsync_dir(partial)
            os.rename(partial, final)  # the folder appears complete or not at all
            fsync_dir(self._versions)
            pointer_tmp = self.root / f".{_CURRENT_FILE}.{secrets.token_hex(4)}.tmp"
            try:
                _write_synced(pointer_tmp, (name + "\n").encode("ascii"))
                os.replace(pointer_tmp, self._pointer)  # the swap
                swapped = True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    pointer_tmp.unlink()
            fsync_dir(self.root)
        except OSError as exc:
            if swapped:  # the new model is current; only the directory sync failed
                raise ModelError(
                    f"installed the model in {self.root}, but syncing the folder failed: {exc}"
                ) from None
            raise ModelError(f"could not install the model in {self.root}: {exc}") from None
        finally:
            if not swapped:
                shutil.rmtree(partial, ignore_errors=True)
                shutil.rmtree(final, ignore_errors=True)
        self._prune(keep={name, previous.name if previous is not None else name})
        return manifest

    def _is_same(
        self, folder: Path, manifest_bytes: bytes, model_bytes: bytes, signature: bytes | None
    ) -> bool:
        """Whether `folder` already holds these exact, intact files (the same signature
        too: a model re-signed under a new key is installed again)."""
        try:
            current = _read(folder / MANIFEST_FILE)
            if current != manifest_bytes:
                return False
            sig_path = folder / SIGNATURE_FILE
            held = _read(sig_path) if sig_path.exists() else None
            if held != signature:
                return False
            file = ModelManifest.from_bytes(current).file
            return _read(folder / file) == model_bytes
        except ModelError:
            return False

    @staticmethod
    def _check_loads(manifest: ModelManifest, model_bytes: bytes) -> None:
        """Refuse a graph that will not run, when onnxruntime is here to tell."""
        try:
            ModelRunner(manifest, model_bytes)
        except ModelUnavailableError:
            return  # checked when a runner is first built on a device that has onnxruntime
        except ModelError as exc:
            raise ModelVerificationError(str(exc)) from None

    def _prune(self, keep: set[str]) -> None:
        for entry in self._versions.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
