"""The server's key files and private folders: created once, readable by the server's
user only.

Every key file (the token signing key, the artifact signing key, the secret key that
seals TOTP secrets) is written once, mode 0600, through a temporary file linked into
place: when several workers start at once, the first writer wins and every worker reads
the same key. Folders that hold keys or data are 0700.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "load_or_create_ed25519",
    "load_or_create_secret",
    "private_folder",
]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path) -> Path:
    """`path` as a folder only its owner can enter (created with its parents if missing;
    an existing folder is narrowed to 0700 when the server owns it)."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a folder the operator owns and set up
        if path.stat().st_mode & 0o777 != FOLDER_MODE:
            path.chmod(FOLDER_MODE)
    return path


def _create_once(path: Path, data: bytes) -> None:
    """Write `data` to `path` (0600) unless another process got there first; an
    existing file is narrowed to 0600."""
    if path.exists():
        with contextlib.suppress(PermissionError):
            if path.stat().st_mode & 0o777 != FILE_MODE:
                path.chmod(FILE_MODE)
        return
    if not path.parent.exists():
        private_folder(path.parent)
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # first writer wins when several workers start at once
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file at `path`, created on first use.

    Raises:
        ValueError: The file holds something else than an unencrypted Ed25519 key.
    """
    _create_once(
        path,
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_or_create_secret(path: Path, *, size: int = 32) -> bytes:
    """The `size` random bytes in the file at `path`, created on first use.

    Raises:
        ValueError: The file does not hold exactly `size` bytes.
    """
    _create_once(path, secrets.token_bytes(size))
    data = path.read_bytes()
    if len(data) != size:
        raise ValueError(f"{path}: a secret key file holds {size} bytes, this one {len(data)}")
    return data
