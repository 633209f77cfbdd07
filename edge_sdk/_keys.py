"""Keys of the encrypted store: the data key, its wrapping, and key providers.

The SQLCipher database is keyed with a random 256-bit data key. The data key is stored
only wrapped (AES-256-GCM) by a key-encryption key (KEK) that a `KeyProvider` supplies:
derived from a passphrase, read from a key file, or kept in the platform keystore. The
wrapped key and the provider's non-secret parameters live in a small JSON keyring file
next to the database. Changing the passphrase rewraps the same data key; nothing else
has to be re-encrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_sdk._errors import (
    KeyProviderError,
    StoreCorruptError,
    StoreError,
    StoreNotFoundError,
    WrongKeyError,
)
from edge_sdk._files import fsync_dir, unlink_quietly
from edge_sdk._keychain import PlatformKeystore

__all__ = [
    "KEYRING_FORMAT",
    "KEYRING_VERSION",
    "Argon2Params",
    "KeyFileKeyProvider",
    "KeyProvider",
    "KeychainKeyProvider",
    "Keyring",
    "PassphraseKeyProvider",
    "PlatformKeystore",
    "create_keyring",
    "derive_subkey",
    "read_keyring",
    "rewrap",
    "unwrap_data_key",
    "write_keyring",
]

KEY_SIZE = 32
KEYRING_FORMAT = "coherency-keyring"
KEYRING_VERSION = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
_SALT_SIZE = 16
_KEY_ID_SIZE = 16
# A keyring is a few hundred bytes; a cap keeps a wrong path (a database, a video)
# from being read whole into memory just to be rejected.
_MAX_KEYRING_BYTES = 64 * 1024
# Costs read back from a keyring are capped so a damaged or planted keyring cannot make
# an open allocate unbounded memory or spin for hours before failing.
_MAX_MEMORY_KIB = 4 * 1024 * 1024
_MAX_ITERATIONS = 1000


@runtime_checkable
class KeyProvider(Protocol):
    """Supplies the key-encryption key (KEK) that wraps a store's data key.

    Attributes:
        kind: A short name recorded in the keyring ("passphrase", "keyfile",
            "keychain"); opening a store with a provider of another kind fails early.
    """

    kind: str

    def new_kek(self) -> tuple[bytes, dict[str, Any]]:
        """Return a 32-byte KEK and the JSON-safe, non-secret parameters to store."""
        ...

    def kek(self, params: Mapping[str, Any]) -> bytes:
        """Return the KEK described by stored `params`.

        Raises:
            KeyProviderError: The backing key file or keystore item is missing or
                unreadable.
            WrongKeyError: The provider can tell it holds another key.
            StoreCorruptError: `params` are malformed.
        """
        ...


# --- passphrase ---------------------------------------------------------------------


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id costs. The defaults follow RFC 9106's second recommendation.

    Attributes:
        memory_kib: Memory per derivation, in KiB.
        iterations: Passes over the memory.
        lanes: Degree of parallelism.
    """

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def __post_init__(self) -> None:
        if self.lanes < 1 or self.iterations < 1 or self.memory_kib < 8 * self.lanes:
            raise ValueError("Argon2 needs lanes >= 1, iterations >= 1 and memory_kib >= 8 * lanes")

    @classmethod
    def fast(cls) -> Argon2Params:
        """Cheap costs (8 MiB, 1 pass, 1 lane) for tests and benchmarks only.

        Never use these for a real store: they make guessing passphrases cheap.
        """
        return cls(memory_kib=8 * 1024, iterations=1, lanes=1)


class PassphraseKeyProvider:
    """Derives the KEK from a passphrase with Argon2id.

    The salt and costs are stored in the keyring, so a store keeps opening with the
    costs it was created with even after the defaults change.

    Args:
        passphrase: The user's passphrase; must not be empty.
        params: Argon2id costs for new keyrings; by default `Argon2Params()`.

    Raises:
        KeyProviderError: The passphrase is empty.
    """

    kind: str = "passphrase"

    def __init__(self, passphrase: str, *, params: Argon2Params | None = None) -> None:
        if not passphrase:
            raise KeyProviderError("the passphrase must not be empty")
        # NFC so the same passphrase typed on keyboards that compose accents
        # differently (macOS file dialogs produce NFD) derives the same key.
        self._secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        self._params = params if params is not None else Argon2Params()

    def __repr__(self) -> str:
        return f"PassphraseKeyProvider(params={self._params!r})"

    def new_kek(self) -> tuple[bytes, dict[str, Any]]:
        """Derive a KEK under a fresh random salt and return it with the salt and costs."""
        salt = secrets.token_bytes(_SALT_SIZE)
        stored = {
            "kdf": "argon2id",
            "salt": _b64encode(salt),
            "memory_kib": self._params.memory_kib,
            "iterations": self._params.iterations,
            "lanes": self._params.lanes,
        }
        return self._derive(salt, self._params), stored

    def kek(self, params: Mapping[str, Any]) -> bytes:
        """Re-derive the KEK with the salt and costs stored in the keyring."""
        if params.get("kdf") != "argon2id":
            raise StoreCorruptError(f"unknown passphrase KDF {params.get('kdf')!r} in keyring")
        salt = _b64decode_param(params, "salt")
        costs = []
        for name in ("memory_kib", "iterations", "lanes"):
            value = params.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise StoreCorruptError(f"keyring parameter {name!r} is not an integer")
            costs.append(value)
        try:
            argon2 = Argon2Params(*costs)
        except ValueError as exc:
            raise StoreCorruptError(f"keyring has invalid Argon2 costs: {exc}") from exc
        if argon2.memory_kib > _MAX_MEMORY_KIB or argon2.iterations > _MAX_ITERATIONS:
            raise StoreCorruptError(f"keyring has implausible Argon2 costs {argon2}")
        if len(salt) < 8:
            raise StoreCorruptError("keyring has an Argon2 salt shorter than 8 bytes")
        return self._derive(salt, argon2)

    def _derive(self, salt: bytes, params: Argon2Params) -> bytes:
        kdf = Argon2id(
            salt=salt,
            length=KEY_SIZE,
            iterations=params.iterations,
            lanes=params.lanes,
            memory_cost=params.memory_kib,
        )
        return kdf.derive(self._secret)


# --- key file -----------------------------------------------------------------------


class KeyFileKeyProvider:
    """Reads the KEK from a 32-byte key file, for edge boxes without a keystore.

    `new_kek` creates the file (mode 0600) if it is absent and otherwise uses the key
    already in it, so several stores can share one key file. To rotate, point a new
    provider at a new path and `rewrap`.

    Args:
        path: The key file.
    """

    kind: str = "keyfile"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyFileKeyProvider({str(self.path)!r})"

    def new_kek(self) -> tuple[bytes, dict[str, Any]]:
        """Return the file's key, creating the file first if it does not exist."""
        if not self.path.exists():
            self._create()
        key = self._read()
        return key, {"key_id": _key_id(key)}

    def kek(self, params: Mapping[str, Any]) -> bytes:
        """Return the file's key after checking it is the one the keyring expects.

        Raises:
            KeyProviderError: The file is missing, unreadable, of the wrong size or
                readable by other users.
            WrongKeyError: The file holds a different key than the store was made with.
        """
        expected = params.get("key_id")
        if not isinstance(expected, str):
            raise StoreCorruptError("keyring has no key file id")
        key = self._read()
        actual = _key_id(key)
        if not hmac.compare_digest(actual, expected):
            raise WrongKeyError(
                f"key file {self.path} holds key {actual}, but this store needs key {expected}"
            )
        return key

    def _create(self) -> None:
        directory = self.path.parent
        # Written under a temporary name, then linked into place: a crash never leaves a
        # short key file behind, and link (unlike rename) will not replace a key file
        # another process created meanwhile.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_SIZE))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return
            fsync_dir(directory)
        except OSError as exc:
            raise KeyProviderError(f"cannot create key file {self.path}: {exc}") from exc
        finally:
            unlink_quietly(tmp)

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise KeyProviderError(f"key file {self.path} is not a regular file")
                if os.name == "posix" and st.st_mode & 0o077:
                    raise KeyProviderError(
                        f"key file {self.path} is readable by other users "
                        f"(mode {stat.S_IMODE(st.st_mode):o}); run chmod 600 on it"
                    )
                key = f.read(KEY_SIZE + 1)
        except FileNotFoundError as exc:
            raise KeyProviderError(f"key file {self.path} does not exist") from exc
        except OSError as exc:
            raise KeyProviderError(f"cannot read key file {self.path}: {exc}") from exc
        if len(key) != KEY_SIZE:
            raise KeyProviderError(
                f"key file {self.path} must hold exactly {KEY_SIZE} bytes, "
                f"not {len(key) if len(key) <= KEY_SIZE else 'more'}"
            )
        return key


def _key_id(key: bytes) -> str:
    # Domain-separated so the published id is never the hash of the key used elsewhere.
    return hashlib.sha256(b"coherency key file id\x00" + key).hexdigest()[: 2 * _KEY_ID_SIZE]


# --- platform keystore --------------------------------------------------------------


class KeychainKeyProvider:
    """Keeps a random KEK in a platform keystore item (the iOS Keychain on devices).

    `new_kek` creates the item if it is absent and otherwise uses the key already in
    it, so retrying a failed `init` never orphans a store. To rotate, use a new account
    and `rewrap`, then delete the old item.

    Args:
        keystore: The keystore, e.g. `IOSKeychain()` or `MemoryKeystore()`.
        service: The item's service name.
        account: The item's account name, e.g. the store id.
    """

    kind: str = "keychain"

    def __init__(
        self,
        keystore: PlatformKeystore,
        *,
        service: str = "health.coherency.store",
        account: str,
    ) -> None:
        if not service or not account:
            raise KeyProviderError("a keychain key needs a non-empty service and account")
        self.keystore = keystore
        self.service = service
        self.account = account

    def __repr__(self) -> str:
        return f"KeychainKeyProvider(service={self.service!r}, account={self.account!r})"

    def new_kek(self) -> tuple[bytes, dict[str, Any]]:
        """Return the item's key, creating a random one first if the item is absent."""
        key = self.keystore.get(self.service, self.account)
        if key is None:
            self.keystore.set(self.service, self.account, secrets.token_bytes(KEY_SIZE))
        return self._fetch(), {"service": self.service, "account": self.account}

    def kek(self, params: Mapping[str, Any]) -> bytes:
        """Return the item's key.

        Raises:
            KeyProviderError: The item is missing or does not hold a 32-byte key.
            WrongKeyError: The keyring names another keystore item.
        """
        stored = (params.get("service"), params.get("account"))
        if stored != (self.service, self.account):
            raise WrongKeyError(
                f"this store's key is in keystore item {stored[0]}/{stored[1]}, "
                f"not {self.service}/{self.account}"
            )
        return self._fetch()

    def _fetch(self) -> bytes:
        key = self.keystore.get(self.service, self.account)
        if key is None:
            raise KeyProviderError(f"no key in keystore item {self.service}/{self.account}")
        if len(key) != KEY_SIZE:
            raise KeyProviderError(
                f"keystore item {self.service}/{self.account} does not hold a {KEY_SIZE}-byte key"
            )
        return key


# --- keyring ------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    """A store's wrapped data key and what is needed to unwrap it.

    Attributes:
        store_id: The store this keyring belongs to; bound into the wrapping.
        provider: The kind of key provider that supplies the KEK.
        params: The provider's non-secret parameters (salt and costs, key id, ...).
        nonce: The AES-GCM nonce of the wrapping.
        wrapped_key: The data key encrypted and authenticated under the KEK.
        version: The keyring format version.
    """

    store_id: str
    provider: str
    params: Mapping[str, Any] = field(repr=False)
    nonce: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)
    version: int = KEYRING_VERSION

    def to_json(self) -> bytes:
        """Serialise to the keyring file's JSON."""
        document = {
            "format": KEYRING_FORMAT,
            "version": self.version,
            "store_id": self.store_id,
            "provider": self.provider,
            "params": dict(self.params),
            "nonce": _b64encode(self.nonce),
            "wrapped_key": _b64encode(self.wrapped_key),
        }
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "keyring") -> Keyring:
        """Parse a keyring file's JSON.

        Args:
            data: The file's bytes.
            source: What to call the data in error messages, e.g. its path.

        Raises:
            StoreCorruptError: Not a keyring, an unsupported version, or malformed.
        """
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreCorruptError(f"{source} is not a keyring (not valid JSON)") from exc
        if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
            raise StoreCorruptError(f"{source} is not a Coherency keyring")
        version = document.get("version")
        if version != KEYRING_VERSION or isinstance(version, bool):
            raise StoreCorruptError(f"{source} has unsupported keyring version {version!r}")

        def text(name: str) -> str:
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise StoreCorruptError(f"{source} has no valid {name!r}")
            return value

        def blob(name: str, size: int) -> bytes:
            try:
                value = base64.b64decode(text(name), validate=True)
            except binascii.Error as exc:
                raise StoreCorruptError(f"{source} has malformed {name!r}") from exc
            if len(value) != size:
                raise StoreCorruptError(f"{source} has {name!r} of the wrong length")
            return value

        params = document.get("params")
        if not isinstance(params, dict):
            raise StoreCorruptError(f"{source} has no valid 'params'")
        return cls(
            store_id=text("store_id"),
            provider=text("provider"),
            params=params,
            nonce=blob("nonce", _NONCE_SIZE),
            wrapped_key=blob("wrapped_key", KEY_SIZE + _TAG_SIZE),
            version=version,
        )


def create_keyring(provider: KeyProvider, *, store_id: str) -> tuple[bytes, Keyring]:
    """Make a new random data key and wrap it with the provider's KEK.

    Returns:
        The 32-byte data key and the keyring to write next to the store.
    """
    if not store_id:
        raise ValueError("store_id must not be empty")
    data_key = secrets.token_bytes(KEY_SIZE)
    return data_key, _wrap(data_key, provider, store_id)


def unwrap_data_key(keyring: Keyring, provider: KeyProvider) -> bytes:
    """Return the store's data key.

    Raises:
        WrongKeyError: The provider is of another kind, or its key (passphrase, key
            file, keystore item) does not open this keyring, or the keyring was altered.
        KeyProviderError: The provider's key file or keystore item is unavailable.
        StoreCorruptError: The provider's stored parameters are malformed.
    """
    if provider.kind != keyring.provider:
        raise WrongKeyError(
            f"this store is opened with a {keyring.provider!r} key provider, not {provider.kind!r}"
        )
    kek = provider.kek(keyring.params)
    aad = _aad(keyring.store_id, keyring.provider, keyring.params, keyring.version)
    try:
        data_key = AESGCM(kek).decrypt(keyring.nonce, keyring.wrapped_key, aad)
    except InvalidTag:
        raise WrongKeyError("the passphrase or key does not open this store") from None
    if len(data_key) != KEY_SIZE:
        raise StoreCorruptError("the keyring's data key has the wrong length")
    return data_key


def rewrap(keyring: Keyring, data_key: bytes, new_provider: KeyProvider) -> Keyring:
    """Wrap the same data key under a new provider's KEK (e.g. a passphrase change).

    The database is untouched; once the returned keyring is written, the old
    passphrase or key no longer opens the store.
    """
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"the data key must be {KEY_SIZE} bytes")
    return _wrap(data_key, new_provider, keyring.store_id)


def _wrap(data_key: bytes, provider: KeyProvider, store_id: str) -> Keyring:
    kek, params = provider.new_kek()
    if len(kek) != KEY_SIZE:
        raise KeyProviderError(f"{provider.kind} key provider returned a {len(kek)}-byte KEK")
    # Round-trip through JSON so what is authenticated is exactly what is stored.
    params = json.loads(json.dumps(params))
    nonce = secrets.token_bytes(_NONCE_SIZE)
    aad = _aad(store_id, provider.kind, params, KEYRING_VERSION)
    wrapped = AESGCM(kek).encrypt(nonce, data_key, aad)
    return Keyring(
        store_id=store_id,
        provider=provider.kind,
        params=params,
        nonce=nonce,
        wrapped_key=wrapped,
    )


def _aad(store_id: str, provider: str, params: Mapping[str, Any], version: int) -> bytes:
    # Binding the params too means a tampered salt, cost or key id is reported the same
    # way as a wrong passphrase instead of silently feeding the KDF attacker values.
    header = {"params": params, "provider": provider, "store_id": store_id, "version": version}
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return KEYRING_FORMAT.encode() + b"\x00" + canonical.encode("ascii")


def write_keyring(path: str | os.PathLike[str], keyring: Keyring) -> None:
    """Write the keyring atomically (mode 0600): readers see the old or the new file.

    Raises:
        StoreError: The file cannot be written.
    """
    target = Path(path)
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot write keyring {target}: {exc}") from exc
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(keyring.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(directory)
    except OSError as exc:
        unlink_quietly(tmp)
        raise StoreError(f"cannot write keyring {target}: {exc}") from exc


def read_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a keyring file.

    Raises:
        StoreNotFoundError: There is no file at `path`.
        StoreCorruptError: The file is not a valid keyring (the message names it).
        StoreError: The file cannot be read (permissions, I/O error).
    """
    source = Path(path)
    try:
        with open(source, "rb") as f:
            data = f.read(_MAX_KEYRING_BYTES + 1)
    except FileNotFoundError as exc:
        raise StoreNotFoundError(f"no keyring at {source}") from exc
    except OSError as exc:
        raise StoreError(f"cannot read keyring {source}: {exc}") from exc
    if len(data) > _MAX_KEYRING_BYTES:
        raise StoreCorruptError(f"{source} is too large to be a keyring")
    return Keyring.from_json(data, source=str(source))


def derive_subkey(data_key: bytes, purpose: str) -> bytes:
    """Derive an independent 32-byte key for `purpose` (e.g. "blobs") with HKDF-SHA256.

    Keys for different purposes are unrelated: knowing one reveals nothing of another
    or of the data key.
    """
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"the data key must be {KEY_SIZE} bytes")
    if not purpose:
        raise ValueError("purpose must not be empty")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=None,
        info=b"coherency/" + purpose.encode("utf-8"),
    )
    return hkdf.derive(data_key)


# --- helpers ------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode_param(params: Mapping[str, Any], name: str) -> bytes:
    value = params.get(name)
    if not isinstance(value, str):
        raise StoreCorruptError(f"keyring parameter {name!r} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise StoreCorruptError(f"keyring parameter {name!r} is malformed") from exc
