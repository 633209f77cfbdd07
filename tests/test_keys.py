"""Data key wrapping, key providers and the keyring file."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from edge_sdk import (
    Argon2Params,
    KeychainKeyProvider,
    KeyFileKeyProvider,
    KeyProvider,
    KeyProviderError,
    MemoryKeystore,
    PassphraseKeyProvider,
    StoreCorruptError,
    StoreError,
    StoreNotFoundError,
    WrongKeyError,
)
from edge_sdk._keys import (
    Keyring,
    create_keyring,
    derive_subkey,
    read_keyring,
    rewrap,
    unwrap_data_key,
    write_keyring,
)

FAST = Argon2Params.fast()
STORE_ID = "0b5e6f3c-8a43-4c43-9d7e-2b8f6f3f9a10"


def passphrase(text: str = "correct horse battery staple") -> PassphraseKeyProvider:
    return PassphraseKeyProvider(text, params=FAST)


@pytest.fixture(params=["passphrase", "keyfile", "keychain"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> KeyProvider:
    if request.param == "passphrase":
        return passphrase()
    if request.param == "keyfile":
        return KeyFileKeyProvider(tmp_path / "store.key")
    return KeychainKeyProvider(MemoryKeystore(), account=STORE_ID)


def flip_b64(value: str, index: int = 0) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def tampered(keyring: Keyring, **changes: Any) -> Keyring:
    document = json.loads(keyring.to_json())
    document.update(changes)
    return Keyring.from_json(json.dumps(document).encode())


# --- round trips ----------------------------------------------------------------------


def test_round_trip_for_each_provider(provider: KeyProvider, tmp_path: Path) -> None:
    data_key, keyring = create_keyring(provider, store_id=STORE_ID)
    assert len(data_key) == 32
    assert keyring.provider == provider.kind
    write_keyring(tmp_path / "keyring.json", keyring)

    reread = read_keyring(tmp_path / "keyring.json")

    assert reread == keyring
    assert unwrap_data_key(reread, provider) == data_key


def test_every_keyring_gets_a_fresh_data_key(provider: KeyProvider) -> None:
    first, _ = create_keyring(provider, store_id=STORE_ID)
    second, _ = create_keyring(provider, store_id=STORE_ID)
    assert first != second


def test_keyring_holds_no_secret(provider: KeyProvider, tmp_path: Path) -> None:
    data_key, keyring = create_keyring(provider, store_id=STORE_ID)
    kek = provider.kek(keyring.params)
    text = keyring.to_json()
    for secret in (data_key, kek):
        assert secret not in text
        assert base64.b64encode(secret) not in text
        assert secret.hex().encode() not in text


def test_keyring_json_layout(tmp_path: Path) -> None:
    _, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    write_keyring(tmp_path / "keyring.json", keyring)
    document = json.loads((tmp_path / "keyring.json").read_text())
    assert document["format"] == "coherency-keyring"
    assert document["version"] == 1
    assert document["store_id"] == STORE_ID
    assert document["provider"] == "passphrase"
    assert len(base64.b64decode(document["nonce"])) == 12
    assert len(base64.b64decode(document["wrapped_key"])) == 48


# --- wrong keys -----------------------------------------------------------------------


def test_wrong_passphrase_is_wrong_key() -> None:
    _, keyring = create_keyring(passphrase("right one"), store_id=STORE_ID)
    with pytest.raises(WrongKeyError, match="does not open this store"):
        unwrap_data_key(keyring, passphrase("wrong one"))


def test_passphrase_is_unicode_normalised() -> None:
    composed = "caf\u00e9 au lait"
    decomposed = "cafe\u0301 au lait"
    data_key, keyring = create_keyring(passphrase(composed), store_id=STORE_ID)
    assert unwrap_data_key(keyring, passphrase(decomposed)) == data_key


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(KeyProviderError):
        PassphraseKeyProvider("")


def test_provider_of_another_kind_is_wrong_key(tmp_path: Path) -> None:
    _, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    with pytest.raises(WrongKeyError, match=r"'passphrase'.*'keyfile'"):
        unwrap_data_key(keyring, KeyFileKeyProvider(tmp_path / "k"))


def test_wrong_key_file_is_wrong_key(tmp_path: Path) -> None:
    _, keyring = create_keyring(KeyFileKeyProvider(tmp_path / "a.key"), store_id=STORE_ID)
    other = KeyFileKeyProvider(tmp_path / "b.key")
    other.new_kek()  # creates b.key with another random key
    with pytest.raises(WrongKeyError, match=r"b\.key"):
        unwrap_data_key(keyring, other)


def test_replaced_key_file_content_is_wrong_key(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    _, keyring = create_keyring(KeyFileKeyProvider(path), store_id=STORE_ID)
    path.write_bytes(os.urandom(32))
    with pytest.raises(WrongKeyError):
        unwrap_data_key(keyring, KeyFileKeyProvider(path))


def test_another_keychain_item_is_wrong_key() -> None:
    keystore = MemoryKeystore()
    _, keyring = create_keyring(KeychainKeyProvider(keystore, account="a"), store_id=STORE_ID)
    with pytest.raises(WrongKeyError, match=r"not health\.coherency\.store/b"):
        unwrap_data_key(keyring, KeychainKeyProvider(keystore, account="b"))


def test_changed_keychain_secret_is_wrong_key() -> None:
    keystore = MemoryKeystore()
    provider = KeychainKeyProvider(keystore, account="a")
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    keystore.set("health.coherency.store", "a", os.urandom(32))
    with pytest.raises(WrongKeyError, match="does not open this store"):
        unwrap_data_key(keyring, provider)


# --- tampering ------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 20, 47])
def test_flipped_wrapped_key_byte_is_wrong_key(index: int) -> None:
    provider = passphrase()
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    bad = tampered(
        keyring, wrapped_key=flip_b64(base64.b64encode(keyring.wrapped_key).decode(), index)
    )
    with pytest.raises(WrongKeyError):
        unwrap_data_key(bad, provider)


def test_flipped_nonce_is_wrong_key() -> None:
    provider = passphrase()
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    bad = tampered(keyring, nonce=flip_b64(base64.b64encode(keyring.nonce).decode()))
    with pytest.raises(WrongKeyError):
        unwrap_data_key(bad, provider)


def test_changed_store_id_is_wrong_key(provider: KeyProvider) -> None:
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    bad = tampered(keyring, store_id=STORE_ID[:-1] + "1")
    with pytest.raises(WrongKeyError):
        unwrap_data_key(bad, provider)


def test_lowered_argon2_costs_are_wrong_key() -> None:
    provider = PassphraseKeyProvider("pw", params=Argon2Params(memory_kib=16 * 1024))
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    params = dict(keyring.params, memory_kib=8 * 1024)
    with pytest.raises(WrongKeyError):
        unwrap_data_key(tampered(keyring, params=params), provider)


def test_wrapped_key_moved_to_another_store_is_wrong_key() -> None:
    provider = passphrase()
    _, first = create_keyring(provider, store_id="store-a")
    _, second = create_keyring(provider, store_id="store-b")
    # The second store's keyring with the first's wrapped key and nonce (same KEK if
    # the salt were shared; here it is not, so swap the params as well).
    spliced = tampered(
        second,
        params=dict(first.params),
        nonce=base64.b64encode(first.nonce).decode(),
        wrapped_key=base64.b64encode(first.wrapped_key).decode(),
    )
    with pytest.raises(WrongKeyError):
        unwrap_data_key(spliced, provider)


# --- malformed keyring files ----------------------------------------------------------


def test_missing_keyring_is_store_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match=r"nothing\.json"):
        read_keyring(tmp_path / "nothing.json")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'{"format": "something-else", "version": 1}',
        b'{"format": "coherency-keyring", "version": 2}',
        b'{"format": "coherency-keyring", "version": true}',
        b'{"format": "coherency-keyring", "version": 1}',
    ],
    ids=["empty", "text", "binary", "list", "format", "version", "bool-version", "fields"],
)
def test_malformed_keyring_is_store_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorruptError, match=r"keyring\.json"):
        read_keyring(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("store_id", ""),
        ("store_id", 7),
        ("provider", None),
        ("params", "salt"),
        ("nonce", "!!!not base64!!!"),
        ("nonce", base64.b64encode(b"short").decode()),
        ("wrapped_key", base64.b64encode(b"x" * 47).decode()),
    ],
)
def test_keyring_with_a_bad_field_is_store_corrupt(tmp_path: Path, field: str, value: Any) -> None:
    _, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    document = json.loads(keyring.to_json())
    document[field] = value
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorruptError, match=r"keyring\.json"):
        read_keyring(path)


def test_huge_file_is_not_a_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(b" " * (1024 * 1024))
    with pytest.raises(StoreCorruptError, match="too large"):
        read_keyring(path)


def test_unreadable_keyring_is_store_error(tmp_path: Path) -> None:
    (tmp_path / "keyring.json").mkdir()
    with pytest.raises(StoreError, match="cannot read keyring"):
        read_keyring(tmp_path / "keyring.json")


@pytest.mark.parametrize(
    "params",
    [
        {"kdf": "scrypt"},
        {"kdf": "argon2id", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": "lots"},
        {"kdf": "argon2id", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": 8192,
         "iterations": 1, "lanes": 0},
        {"kdf": "argon2id", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "memory_kib": 2**40,
         "iterations": 1, "lanes": 1},
        {"kdf": "argon2id", "salt": "%%%", "memory_kib": 8192, "iterations": 1, "lanes": 1},
    ],
    ids=["kdf", "type", "lanes", "huge-memory", "salt"],
)  # fmt: skip
def test_malformed_passphrase_params_are_store_corrupt(params: dict[str, Any]) -> None:
    _, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    with pytest.raises(StoreCorruptError):
        unwrap_data_key(tampered(keyring, params=params), passphrase())


# --- rewrap and costs -----------------------------------------------------------------


def test_rewrap_keeps_data_key_and_retires_old_passphrase(tmp_path: Path) -> None:
    old, new = passphrase("old passphrase"), passphrase("new passphrase")
    data_key, keyring = create_keyring(old, store_id=STORE_ID)
    path = tmp_path / "keyring.json"
    write_keyring(path, keyring)

    write_keyring(path, rewrap(read_keyring(path), unwrap_data_key(keyring, old), new))

    reread = read_keyring(path)
    assert reread.store_id == STORE_ID
    assert unwrap_data_key(reread, new) == data_key
    with pytest.raises(WrongKeyError):
        unwrap_data_key(reread, old)


def test_rewrap_to_another_kind_of_provider(tmp_path: Path) -> None:
    data_key, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    key_file = KeyFileKeyProvider(tmp_path / "edge.key")
    moved = rewrap(keyring, data_key, key_file)
    assert moved.provider == "keyfile"
    assert unwrap_data_key(moved, key_file) == data_key
    with pytest.raises(WrongKeyError):
        unwrap_data_key(moved, passphrase())


def test_argon2_costs_are_persisted_and_used(tmp_path: Path) -> None:
    costs = Argon2Params(memory_kib=12 * 1024, iterations=2, lanes=2)
    data_key, keyring = create_keyring(PassphraseKeyProvider("pw", params=costs), store_id="s")
    write_keyring(tmp_path / "keyring.json", keyring)

    params = read_keyring(tmp_path / "keyring.json").params
    assert (params["memory_kib"], params["iterations"], params["lanes"]) == (12 * 1024, 2, 2)
    assert params["kdf"] == "argon2id"
    assert len(base64.b64decode(params["salt"])) == 16
    # Opened with a provider configured for other costs: the stored costs win.
    assert unwrap_data_key(keyring, PassphraseKeyProvider("pw", params=FAST)) == data_key


def test_default_argon2_costs() -> None:
    assert Argon2Params() == Argon2Params(memory_kib=65536, iterations=3, lanes=4)
    assert Argon2Params.fast().memory_kib < Argon2Params().memory_kib
    with pytest.raises(ValueError):
        Argon2Params(memory_kib=4, lanes=1)


def test_providers_do_not_show_secrets_in_repr() -> None:
    assert "hunter2" not in repr(PassphraseKeyProvider("hunter2", params=FAST))


# --- key files ------------------------------------------------------------------------


def test_key_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    kek, params = KeyFileKeyProvider(path).new_kek()
    assert path.read_bytes() == kek
    assert len(kek) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(params["key_id"], str)
    assert kek.hex() not in json.dumps(params)
    assert [p.name for p in tmp_path.iterdir()] == ["store.key"]


def test_existing_key_file_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    first, _ = KeyFileKeyProvider(path).new_kek()
    second, _ = KeyFileKeyProvider(path).new_kek()
    assert first == second


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "store.key"
    provider = KeyFileKeyProvider(path)
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    path.chmod(mode)
    with pytest.raises(KeyProviderError, match=r"store\.key.*chmod 600"):
        unwrap_data_key(keyring, provider)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_file_of_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "store.key"
    path.write_bytes(os.urandom(size))
    path.chmod(0o600)
    with pytest.raises(KeyProviderError, match=r"store\.key.*32 bytes"):
        KeyFileKeyProvider(path).new_kek()


def test_missing_key_file_is_key_provider_error(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    provider = KeyFileKeyProvider(path)
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    path.unlink()
    with pytest.raises(KeyProviderError, match=r"store\.key does not exist"):
        unwrap_data_key(keyring, provider)


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "store.key").mkdir()
    with pytest.raises(KeyProviderError, match=r"store\.key"):
        KeyFileKeyProvider(tmp_path / "store.key").kek({"key_id": "00"})


# --- keychain provider ----------------------------------------------------------------


def test_keychain_provider_keeps_a_random_key_in_the_item() -> None:
    keystore = MemoryKeystore()
    provider = KeychainKeyProvider(keystore, account=STORE_ID)
    kek, params = provider.new_kek()
    assert keystore.get("health.coherency.store", STORE_ID) == kek
    assert params == {"service": "health.coherency.store", "account": STORE_ID}
    # A retried init reuses the item instead of orphaning an earlier keyring.
    assert provider.new_kek()[0] == kek


def test_missing_keychain_item_is_key_provider_error() -> None:
    keystore = MemoryKeystore()
    provider = KeychainKeyProvider(keystore, account=STORE_ID)
    _, keyring = create_keyring(provider, store_id=STORE_ID)
    keystore.delete("health.coherency.store", STORE_ID)
    with pytest.raises(KeyProviderError, match="no key in keystore item"):
        unwrap_data_key(keyring, provider)


def test_keychain_item_of_wrong_size_is_key_provider_error() -> None:
    keystore = MemoryKeystore()
    keystore.set("health.coherency.store", STORE_ID, b"short")
    with pytest.raises(KeyProviderError, match="32-byte"):
        KeychainKeyProvider(keystore, account=STORE_ID).new_kek()


# --- write_keyring --------------------------------------------------------------------


def test_write_keyring_is_private_and_leaves_no_temp_files(tmp_path: Path) -> None:
    _, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    path = tmp_path / "keyring.json"
    write_keyring(path, keyring)
    write_keyring(path, keyring)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]


def test_write_keyring_into_missing_directory_is_store_error(tmp_path: Path) -> None:
    _, keyring = create_keyring(passphrase(), store_id=STORE_ID)
    with pytest.raises(StoreError):
        write_keyring(tmp_path / "absent" / "keyring.json", keyring)


# --- subkeys --------------------------------------------------------------------------


def test_derive_subkey_is_deterministic_and_separated() -> None:
    data_key = os.urandom(32)
    blobs = derive_subkey(data_key, "blobs")
    assert len(blobs) == 32
    assert derive_subkey(data_key, "blobs") == blobs
    assert derive_subkey(data_key, "audit") != blobs
    assert derive_subkey(os.urandom(32), "blobs") != blobs
    assert blobs != data_key


def test_derive_subkey_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        derive_subkey(b"short", "blobs")
    with pytest.raises(ValueError):
        derive_subkey(os.urandom(32), "")
