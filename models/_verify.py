"""Checking model folders against their manifests, without running them (or with).

`verify_model_folder` checks one folder as a device would before installing it: the
graph's size and sha256 against ``manifest.json``, and the manifest's signature when a
key is given; it needs no onnxruntime. `verify` checks a release: every model folder in
it, the size limit, and that onnxruntime loads each graph with its manifest's input and
output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sdk import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ModelError,
    ModelManifest,
    ModelRunner,
    verify_model,
)
from models._contract import MAX_MODEL_BYTES
from models._errors import ModelRecipeError

__all__ = ["verify", "verify_model_folder"]


def verify_model_folder(folder: str | Path, *, public_key: bytes | None = None) -> ModelManifest:
    """Check one model folder: its graph's size and sha256 against its ``manifest.json``,
    and the manifest's signature (``manifest.sig``) when `public_key` is given.

    Args:
        folder: a folder holding ``manifest.json`` and the .onnx file it names.
        public_key: the 32-byte Ed25519 key the signature must verify against.

    Returns:
        The verified manifest.

    Raises:
        edge_sdk.ModelError: no manifest, a manifest that does not parse, or the file it
            names is missing.
        edge_sdk.ModelVerificationError: the size, sha256 or signature does not match.
        ValueError: `public_key` is not a 32-byte Ed25519 key.
    """
    where = Path(folder)
    manifest_path = where / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelError(f"{where}: no {MANIFEST_FILE}")
    manifest_bytes = manifest_path.read_bytes()
    manifest = ModelManifest.from_bytes(manifest_bytes)
    model_path = where / manifest.file
    if not model_path.is_file():
        raise ModelError(f"{where}: the manifest names {manifest.file}, which is missing")
    signature_path = where / SIGNATURE_FILE
    signature = signature_path.read_bytes() if signature_path.is_file() else None
    return verify_model(
        manifest_bytes, model_path.read_bytes(), signature=signature, public_key=public_key
    )


def verify(model_dir: str | Path) -> dict[str, Any]:
    """Check a release folder: every model's sha256 and size against its manifest, the
    size limit, and that onnxruntime loads it with the manifest's input and output.

    Returns:
        {folder name: manifest} for each model folder checked.

    Raises:
        edge_sdk.ModelVerificationError: a file does not match its manifest.
        edge_sdk.ModelError: a graph does not load or differs from its manifest.
        ModelRecipeError: no model folder found, or a file is over `MAX_MODEL_BYTES`.
    """
    root = Path(model_dir)
    folders = sorted(p.parent for p in root.glob(f"*/{MANIFEST_FILE}"))
    if not folders:
        raise ModelRecipeError(f"{root} holds no model folder (*/{MANIFEST_FILE})")
    found = {}
    for folder in folders:
        runner = ModelRunner.load(folder)
        if runner.manifest.size > MAX_MODEL_BYTES:
            raise ModelRecipeError(
                f"{folder / runner.manifest.file} is {runner.manifest.size} bytes, "
                f"over {MAX_MODEL_BYTES}"
            )
        found[folder.name] = runner.manifest
    return found
