"""IOSKeychain against a fake Security framework, and MemoryKeystore.

`FakeSecurity` behaves like the Security framework for generic-password items: items
are keyed by (class, service, account), a second add is errSecDuplicateItem, a missing
item is errSecItemNotFound, a locked device is errSecInteractionNotAllowed, and
malformed queries (unknown keys, wrong value types, search keys where iOS rejects
them) are errSecParam. It records every item's accessibility class so tests can check
what IOSKeychain asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from edge_sdk import (
    IOSKeychain,
    KeychainKeyProvider,
    KeyProviderError,
    MemoryKeystore,
    PlatformKeystore,
    WrongKeyError,
)
from edge_sdk._keychain import (
    ERR_SEC_DUPLICATE_ITEM,
    ERR_SEC_INTERACTION_NOT_ALLOWED,
    ERR_SEC_ITEM_NOT_FOUND,
    ERR_SEC_PARAM,
    ERR_SEC_SUCCESS,
    SecConstant,
    SecValue,
)
from edge_sdk._keys import create_keyring, unwrap_data_key

SERVICE = "health.coherency.store"
THIS_DEVICE_ONLY = "kSecAttrAccessibleWhenUnlockedThisDeviceOnly"

_CLASSES = {"kSecClassGenericPassword", "kSecClassInternetPassword", "kSecClassKey"}
_ACCESSIBILITY = {
    "kSecAttrAccessibleWhenUnlocked",
    "kSecAttrAccessibleAfterFirstUnlock",
    "kSecAttrAccessibleWhenPasscodeSetThisDeviceOnly",
    "kSecAttrAccessibleWhenUnlockedThisDeviceOnly",
    "kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly",
}
_ATTRIBUTES = {"kSecClass", "kSecAttrService", "kSecAttrAccount", "kSecAttrAccessible"}
_SEARCH = {"kSecReturnData", "kSecMatchLimit"}


@dataclass
class Item:
    data: bytes
    accessible: str


class FakeSecurity:
    """An in-memory Security framework for generic passwords."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], Item] = {}
        self.locked = False
        self.fail_with: int | None = None
        self.calls: list[str] = []

    # --- the seam ---------------------------------------------------------------

    def sec_item_add(self, attributes: Mapping[str, SecValue]) -> int:
        self.calls.append("add")
        if (status := self._precheck(attributes, _ATTRIBUTES | {"kSecValueData"})) is not None:
            return status
        key = self._key(attributes)
        if key in self.items:
            return ERR_SEC_DUPLICATE_ITEM
        data = attributes.get("kSecValueData", b"")
        accessible = attributes.get(
            "kSecAttrAccessible", SecConstant("kSecAttrAccessibleWhenUnlocked")
        )
        assert isinstance(data, bytes) and isinstance(accessible, SecConstant)
        self.items[key] = Item(bytes(data), accessible.name)
        return ERR_SEC_SUCCESS

    def sec_item_copy_matching(self, query: Mapping[str, SecValue]) -> tuple[int, bytes | None]:
        self.calls.append("copy_matching")
        if (status := self._precheck(query, _ATTRIBUTES | _SEARCH)) is not None:
            return status, None
        limit = query.get("kSecMatchLimit", SecConstant("kSecMatchLimitOne"))
        if limit != SecConstant("kSecMatchLimitOne"):
            # kSecMatchLimitAll returns a CFArray, which the seam does not model.
            return ERR_SEC_PARAM, None
        matches = self._matches(query)
        if not matches:
            return ERR_SEC_ITEM_NOT_FOUND, None
        if query.get("kSecReturnData") is True:
            return ERR_SEC_SUCCESS, bytes(self.items[matches[0]].data)
        return ERR_SEC_SUCCESS, None

    def sec_item_update(
        self, query: Mapping[str, SecValue], attributes: Mapping[str, SecValue]
    ) -> int:
        self.calls.append("update")
        # iOS rejects search keys (kSecMatchLimit, kSecReturn...) in an update query.
        if (status := self._precheck(query, _ATTRIBUTES)) is not None:
            return status
        allowed = {"kSecValueData", "kSecAttrAccessible", "kSecAttrAccount", "kSecAttrService"}
        if not attributes or set(attributes) - allowed:
            return ERR_SEC_PARAM
        if (status := self._check_types(attributes)) is not None:
            return status
        matches = self._matches(query)
        if not matches:
            return ERR_SEC_ITEM_NOT_FOUND
        for key in matches:
            item = self.items.pop(key)
            data = attributes.get("kSecValueData", item.data)
            accessible = attributes.get("kSecAttrAccessible", SecConstant(item.accessible))
            assert isinstance(data, bytes) and isinstance(accessible, SecConstant)
            new_key = (
                key[0],
                str(attributes.get("kSecAttrService", key[1])),
                str(attributes.get("kSecAttrAccount", key[2])),
            )
            self.items[new_key] = Item(bytes(data), accessible.name)
        return ERR_SEC_SUCCESS

    def sec_item_delete(self, query: Mapping[str, SecValue]) -> int:
        self.calls.append("delete")
        # As in update, iOS answers errSecParam to search keys in a delete query.
        if (status := self._precheck(query, _ATTRIBUTES, locked_matters=False)) is not None:
            return status
        matches = self._matches(query)
        if not matches:
            return ERR_SEC_ITEM_NOT_FOUND
        for key in matches:
            del self.items[key]
        return ERR_SEC_SUCCESS

    # --- helpers ----------------------------------------------------------------

    def _precheck(
        self, query: Mapping[str, SecValue], allowed: set[str], *, locked_matters: bool = True
    ) -> int | None:
        if self.fail_with is not None:
            return self.fail_with
        if "kSecClass" not in query or set(query) - allowed:
            return ERR_SEC_PARAM
        if (status := self._check_types(query)) is not None:
            return status
        if self.locked and locked_matters:
            return ERR_SEC_INTERACTION_NOT_ALLOWED
        return None

    @staticmethod
    def _check_types(query: Mapping[str, SecValue]) -> int | None:
        expected: dict[str, set[str]] = {
            "kSecClass": _CLASSES,
            "kSecAttrAccessible": _ACCESSIBILITY,
            "kSecMatchLimit": {"kSecMatchLimitOne", "kSecMatchLimitAll"},
        }
        for name, value in query.items():
            if name in expected:
                if not isinstance(value, SecConstant) or value.name not in expected[name]:
                    return ERR_SEC_PARAM
            elif name in ("kSecAttrService", "kSecAttrAccount"):
                if not isinstance(value, str):
                    return ERR_SEC_PARAM
            elif name == "kSecValueData":
                if not isinstance(value, bytes):
                    return ERR_SEC_PARAM
            elif name == "kSecReturnData" and not isinstance(value, bool):
                return ERR_SEC_PARAM
        return None

    @staticmethod
    def _key(query: Mapping[str, SecValue]) -> tuple[str, str, str]:
        item_class = query["kSecClass"]
        assert isinstance(item_class, SecConstant)
        return (
            item_class.name,
            str(query.get("kSecAttrService", "")),
            str(query.get("kSecAttrAccount", "")),
        )

    def _matches(self, query: Mapping[str, SecValue]) -> list[tuple[str, str, str]]:
        item_class = query["kSecClass"]
        assert isinstance(item_class, SecConstant)
        return [
            key
            for key, item in self.items.items()
            if key[0] == item_class.name
            and query.get("kSecAttrService", key[1]) == key[1]
            and query.get("kSecAttrAccount", key[2]) == key[2]
            and (
                "kSecAttrAccessible" not in query
                or query["kSecAttrAccessible"] == SecConstant(item.accessible)
            )
        ]


@pytest.fixture
def security() -> FakeSecurity:
    return FakeSecurity()


@pytest.fixture
def keychain(security: FakeSecurity) -> IOSKeychain:
    return IOSKeychain(security=security)


# --- the fake behaves like the framework ----------------------------------------------


def test_fake_reports_duplicates_and_missing_items(security: FakeSecurity) -> None:
    item: dict[str, SecValue] = {
        "kSecClass": SecConstant("kSecClassGenericPassword"),
        "kSecAttrService": "s",
        "kSecAttrAccount": "a",
    }
    assert security.sec_item_copy_matching(item) == (ERR_SEC_ITEM_NOT_FOUND, None)
    assert security.sec_item_add({**item, "kSecValueData": b"x"}) == ERR_SEC_SUCCESS
    assert security.sec_item_add({**item, "kSecValueData": b"y"}) == ERR_SEC_DUPLICATE_ITEM
    assert security.sec_item_delete(item) == ERR_SEC_SUCCESS
    assert security.sec_item_delete(item) == ERR_SEC_ITEM_NOT_FOUND
    assert security.sec_item_add({"kSecAttrService": "s"}) == ERR_SEC_PARAM
    assert security.sec_item_add({**item, "kSecValueData": "not data"}) == ERR_SEC_PARAM


# --- IOSKeychain ----------------------------------------------------------------------


def test_set_then_get(keychain: IOSKeychain) -> None:
    keychain.set(SERVICE, "acct", b"\x00secret\xff")
    assert keychain.get(SERVICE, "acct") == b"\x00secret\xff"


def test_items_are_generic_passwords_for_this_device_only(
    keychain: IOSKeychain, security: FakeSecurity
) -> None:
    keychain.set(SERVICE, "acct", b"k" * 32)
    assert security.items == {
        ("kSecClassGenericPassword", SERVICE, "acct"): Item(b"k" * 32, THIS_DEVICE_ONLY)
    }


def test_get_missing_item_is_none(keychain: IOSKeychain) -> None:
    assert keychain.get(SERVICE, "nobody") is None


def test_set_replaces_an_existing_item(keychain: IOSKeychain, security: FakeSecurity) -> None:
    keychain.set(SERVICE, "acct", b"first")
    keychain.set(SERVICE, "acct", b"second")
    assert keychain.get(SERVICE, "acct") == b"second"
    assert len(security.items) == 1
    assert security.calls[:3] == ["add", "add", "update"]


def test_set_tightens_accessibility_of_an_older_item(
    keychain: IOSKeychain, security: FakeSecurity
) -> None:
    security.items[("kSecClassGenericPassword", SERVICE, "acct")] = Item(
        b"old", "kSecAttrAccessibleAfterFirstUnlock"
    )
    keychain.set(SERVICE, "acct", b"new")
    item = security.items[("kSecClassGenericPassword", SERVICE, "acct")]
    assert item == Item(b"new", THIS_DEVICE_ONLY)


def test_items_are_separate_by_service_and_account(keychain: IOSKeychain) -> None:
    keychain.set(SERVICE, "a", b"1")
    keychain.set(SERVICE, "b", b"2")
    keychain.set("other.service", "a", b"3")
    assert keychain.get(SERVICE, "a") == b"1"
    assert keychain.get(SERVICE, "b") == b"2"
    assert keychain.get("other.service", "a") == b"3"
    keychain.delete(SERVICE, "a")
    assert keychain.get(SERVICE, "a") is None
    assert keychain.get("other.service", "a") == b"3"


def test_delete_is_idempotent(keychain: IOSKeychain) -> None:
    keychain.set(SERVICE, "acct", b"x")
    keychain.delete(SERVICE, "acct")
    keychain.delete(SERVICE, "acct")
    assert keychain.get(SERVICE, "acct") is None


def test_locked_device_is_a_clear_key_provider_error(
    keychain: IOSKeychain, security: FakeSecurity
) -> None:
    keychain.set(SERVICE, "acct", b"x")
    security.locked = True
    with pytest.raises(KeyProviderError, match=r"device is locked.*-25308"):
        keychain.get(SERVICE, "acct")
    with pytest.raises(KeyProviderError, match="device is locked"):
        keychain.set(SERVICE, "acct", b"y")


def test_unexpected_status_is_key_provider_error(
    keychain: IOSKeychain, security: FakeSecurity
) -> None:
    security.fail_with = -34018
    with pytest.raises(KeyProviderError, match=r"entitlement.*-34018"):
        keychain.get(SERVICE, "acct")
    security.fail_with = -99999
    with pytest.raises(KeyProviderError, match="-99999"):
        keychain.delete(SERVICE, "acct")


def test_empty_service_or_account_is_refused(keychain: IOSKeychain) -> None:
    with pytest.raises(KeyProviderError):
        keychain.get("", "acct")
    with pytest.raises(KeyProviderError):
        keychain.set(SERVICE, "", b"x")


def test_ios_keychain_is_a_platform_keystore(keychain: IOSKeychain) -> None:
    assert isinstance(keychain, PlatformKeystore)
    assert isinstance(MemoryKeystore(), PlatformKeystore)


@pytest.mark.skipif(sys.platform in ("darwin", "ios"), reason="the framework exists here")
def test_real_backend_off_apple_platforms_is_key_provider_error() -> None:
    with pytest.raises(KeyProviderError, match="Security framework"):
        IOSKeychain()


# --- with the key provider ------------------------------------------------------------


def test_keychain_provider_round_trip_across_restarts(security: FakeSecurity) -> None:
    provider = KeychainKeyProvider(IOSKeychain(security=security), account="store-1")
    data_key, keyring = create_keyring(provider, store_id="store-1")

    # A new process: new keychain and provider objects, same device keychain.
    reopened = KeychainKeyProvider(IOSKeychain(security=security), account="store-1")
    assert unwrap_data_key(keyring, reopened) == data_key
    item = security.items[("kSecClassGenericPassword", SERVICE, "store-1")]
    assert item.accessible == THIS_DEVICE_ONLY
    assert len(item.data) == 32


def test_keychain_provider_with_item_gone(security: FakeSecurity) -> None:
    provider = KeychainKeyProvider(IOSKeychain(security=security), account="store-1")
    _, keyring = create_keyring(provider, store_id="store-1")
    security.items.clear()  # e.g. the app was reinstalled on a restored device
    with pytest.raises(KeyProviderError, match="no key"):
        unwrap_data_key(keyring, provider)


def test_keychain_provider_with_item_replaced(security: FakeSecurity) -> None:
    provider = KeychainKeyProvider(IOSKeychain(security=security), account="store-1")
    _, keyring = create_keyring(provider, store_id="store-1")
    IOSKeychain(security=security).set(SERVICE, "store-1", os.urandom(32))
    with pytest.raises(WrongKeyError):
        unwrap_data_key(keyring, provider)


# --- MemoryKeystore -------------------------------------------------------------------


def test_memory_keystore() -> None:
    keystore = MemoryKeystore()
    secret = bytearray(b"secret")
    keystore.set("s", "a", bytes(secret))
    secret[0] = 0
    assert keystore.get("s", "a") == b"secret"
    assert keystore.get("s", "b") is None
    keystore.set("s", "a", b"replaced")
    assert keystore.get("s", "a") == b"replaced"
    keystore.delete("s", "a")
    keystore.delete("s", "a")
    assert keystore.get("s", "a") is None
