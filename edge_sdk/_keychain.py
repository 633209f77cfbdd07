"""Platform keystores that hold a key provider's key-encryption key.

A `PlatformKeystore` stores small secrets by (service, account). `IOSKeychain` is the
real iOS Keychain; `MemoryKeystore` is an in-memory test double for app tests.

`IOSKeychain` talks to the Security framework through a small seam, `SecurityFramework`,
whose four methods mirror `SecItemAdd`, `SecItemCopyMatching`, `SecItemUpdate` and
`SecItemDelete`. Queries are plain dicts keyed by the Security constant names
(``"kSecClass"``, ...), with `SecConstant` for constant values, so the keychain logic can
be tested on any machine against a fake framework.

The real seam calls Security and CoreFoundation through ctypes rather than pyobjus
objects: pyobjus only sends Objective-C messages, while the keychain API is C functions
and C constants, and pyobjus's own helpers for those (`symbol`, `dereference`) are ctypes
underneath. Building the query as a CFDictionary directly avoids converting every value
through two bridges.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edge_sdk._errors import KeyProviderError

__all__ = [
    "ERR_SEC_DUPLICATE_ITEM",
    "ERR_SEC_INTERACTION_NOT_ALLOWED",
    "ERR_SEC_ITEM_NOT_FOUND",
    "ERR_SEC_PARAM",
    "ERR_SEC_SUCCESS",
    "IOSKeychain",
    "MemoryKeystore",
    "PlatformKeystore",
    "SecConstant",
    "SecValue",
    "SecurityFramework",
]

# OSStatus codes from <Security/SecBase.h>.
ERR_SEC_SUCCESS = 0
ERR_SEC_PARAM = -50
ERR_SEC_DUPLICATE_ITEM = -25299
ERR_SEC_ITEM_NOT_FOUND = -25300
ERR_SEC_INTERACTION_NOT_ALLOWED = -25308
_ERR_SEC_USER_CANCELED = -128
_ERR_SEC_AUTH_FAILED = -25293
_ERR_SEC_MISSING_ENTITLEMENT = -34018

_STATUS_MEANINGS = {
    ERR_SEC_PARAM: "invalid keychain query",
    ERR_SEC_INTERACTION_NOT_ALLOWED: "the device is locked",
    _ERR_SEC_USER_CANCELED: "the user cancelled",
    _ERR_SEC_AUTH_FAILED: "authentication failed",
    _ERR_SEC_MISSING_ENTITLEMENT: "the app lacks the keychain entitlement",
}


@runtime_checkable
class PlatformKeystore(Protocol):
    """Stores small secrets by (service, account), e.g. the iOS Keychain."""

    def get(self, service: str, account: str) -> bytes | None:
        """Return the secret, or None if there is no such item."""
        ...

    def set(self, service: str, account: str, secret: bytes) -> None:
        """Create or replace the item."""
        ...

    def delete(self, service: str, account: str) -> None:
        """Remove the item; removing a missing item is not an error."""
        ...


class MemoryKeystore:
    """A `PlatformKeystore` held in a dict, for tests and examples.

    Secrets live only as long as the object; nothing is written anywhere.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def get(self, service: str, account: str) -> bytes | None:
        """Return the secret, or None if there is no such item."""
        with self._lock:
            return self._items.get((service, account))

    def set(self, service: str, account: str, secret: bytes) -> None:
        """Create or replace the item."""
        with self._lock:
            self._items[(service, account)] = bytes(secret)

    def delete(self, service: str, account: str) -> None:
        """Remove the item if present."""
        with self._lock:
            self._items.pop((service, account), None)


@dataclass(frozen=True)
class SecConstant:
    """A Security framework constant used as a query value, e.g. kSecMatchLimitOne."""

    name: str


SecValue = str | bytes | bool | SecConstant
"""A query value: a string, data, a boolean or a Security constant."""


class SecurityFramework(Protocol):
    """The four Security framework calls the keychain needs.

    Query keys are Security constant names such as ``"kSecAttrService"``. Each method
    returns the OSStatus of the call.
    """

    def sec_item_add(self, attributes: Mapping[str, SecValue]) -> int:
        """SecItemAdd without a result."""
        ...

    def sec_item_copy_matching(self, query: Mapping[str, SecValue]) -> tuple[int, bytes | None]:
        """SecItemCopyMatching returning data: (status, the item's data or None)."""
        ...

    def sec_item_update(
        self, query: Mapping[str, SecValue], attributes: Mapping[str, SecValue]
    ) -> int:
        """SecItemUpdate."""
        ...

    def sec_item_delete(self, query: Mapping[str, SecValue]) -> int:
        """SecItemDelete."""
        ...


_GENERIC_PASSWORD = SecConstant("kSecClassGenericPassword")
# Readable only while the device is unlocked, and never restored to another device
# from a backup: a backup of the store without its key is useless, which is the point.
_THIS_DEVICE_ONLY = SecConstant("kSecAttrAccessibleWhenUnlockedThisDeviceOnly")


class IOSKeychain:
    """The iOS Keychain as a `PlatformKeystore`.

    Items are generic passwords readable only while the device is unlocked and never
    migrated to another device or included in backups. Built for iOS; on macOS the
    same calls reach the login keychain, where the accessibility class is not enforced
    the way it is on iOS.

    Args:
        security: The Security framework seam; by default the real framework, loaded
            on construction.

    Raises:
        KeyProviderError: The Security framework cannot be loaded (not an Apple
            platform), or a keychain call fails (for example, the device is locked).
    """

    def __init__(self, *, security: SecurityFramework | None = None) -> None:
        self._security = security if security is not None else _CtypesSecurityFramework()

    def get(self, service: str, account: str) -> bytes | None:
        """Return the item's secret, or None if there is no such item."""
        query = self._item_query(service, account)
        query["kSecReturnData"] = True
        query["kSecMatchLimit"] = SecConstant("kSecMatchLimitOne")
        status, data = self._security.sec_item_copy_matching(query)
        if status == ERR_SEC_ITEM_NOT_FOUND:
            return None
        _check(status, "read", service, account)
        if data is None:
            raise KeyProviderError(
                f"the keychain returned no data for {service}/{account}",
            )
        return data

    def set(self, service: str, account: str, secret: bytes) -> None:
        """Create the item, or replace its secret if it exists."""
        attributes = self._item_query(service, account)
        attributes["kSecValueData"] = bytes(secret)
        attributes["kSecAttrAccessible"] = _THIS_DEVICE_ONLY
        status = self._security.sec_item_add(attributes)
        if status == ERR_SEC_DUPLICATE_ITEM:
            # Also reset the accessibility, so an item made by an older build with a
            # weaker class is tightened when its secret is replaced.
            status = self._security.sec_item_update(
                self._item_query(service, account),
                {"kSecValueData": bytes(secret), "kSecAttrAccessible": _THIS_DEVICE_ONLY},
            )
        _check(status, "write", service, account)

    def delete(self, service: str, account: str) -> None:
        """Remove the item if present."""
        status = self._security.sec_item_delete(self._item_query(service, account))
        if status != ERR_SEC_ITEM_NOT_FOUND:
            _check(status, "delete", service, account)

    @staticmethod
    def _item_query(service: str, account: str) -> dict[str, SecValue]:
        if not service or not account:
            raise KeyProviderError("a keychain item needs a non-empty service and account")
        return {
            "kSecClass": _GENERIC_PASSWORD,
            "kSecAttrService": service,
            "kSecAttrAccount": account,
        }


def _check(status: int, action: str, service: str, account: str) -> None:
    if status == ERR_SEC_SUCCESS:
        return
    meaning = _STATUS_MEANINGS.get(status, "keychain error")
    raise KeyProviderError(
        f"cannot {action} keychain item {service}/{account}: {meaning} (OSStatus {status})"
    )


# --- the real framework, through ctypes -------------------------------------------

_SECURITY_PATH = "/System/Library/Frameworks/Security.framework/Security"
_CORE_FOUNDATION_PATH = "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation"
_CF_STRING_ENCODING_UTF8 = 0x08000100
_CFIndex = ctypes.c_long
_CFTypeRef = ctypes.c_void_p


class _CtypesSecurityFramework:
    """`SecurityFramework` over the real Security framework (iOS and macOS)."""

    def __init__(self) -> None:
        # Read through a variable so type checkers running on Linux still check the rest.
        platform = sys.platform
        if platform not in ("darwin", "ios"):
            raise KeyProviderError(
                f"IOSKeychain needs Apple's Security framework, not available on {platform}"
            )
        try:
            self._sec: ctypes.CDLL = ctypes.CDLL(_SECURITY_PATH)
            self._cf: ctypes.CDLL = ctypes.CDLL(_CORE_FOUNDATION_PATH)
        except OSError as exc:
            raise KeyProviderError(f"cannot load the Security framework: {exc}") from exc
        self._declare()

    def _declare(self) -> None:
        cf, sec = self._cf, self._sec
        signatures: list[tuple[ctypes.CDLL, str, list[object], object]] = [
            (cf, "CFDictionaryCreateMutable", [_CFTypeRef, _CFIndex, _CFTypeRef, _CFTypeRef],
             _CFTypeRef),
            (cf, "CFDictionarySetValue", [_CFTypeRef, _CFTypeRef, _CFTypeRef], None),
            (cf, "CFStringCreateWithBytes",
             [_CFTypeRef, ctypes.c_char_p, _CFIndex, ctypes.c_uint32, ctypes.c_ubyte],
             _CFTypeRef),
            (cf, "CFDataCreate", [_CFTypeRef, ctypes.c_char_p, _CFIndex], _CFTypeRef),
            (cf, "CFDataGetLength", [_CFTypeRef], _CFIndex),
            (cf, "CFDataGetBytePtr", [_CFTypeRef], ctypes.c_void_p),
            (cf, "CFDataGetTypeID", [], ctypes.c_ulong),
            (cf, "CFGetTypeID", [_CFTypeRef], ctypes.c_ulong),
            (cf, "CFRelease", [_CFTypeRef], None),
            (sec, "SecItemAdd", [_CFTypeRef, ctypes.POINTER(_CFTypeRef)], ctypes.c_int32),
            (sec, "SecItemCopyMatching", [_CFTypeRef, ctypes.POINTER(_CFTypeRef)],
             ctypes.c_int32),
            (sec, "SecItemUpdate", [_CFTypeRef, _CFTypeRef], ctypes.c_int32),
            (sec, "SecItemDelete", [_CFTypeRef], ctypes.c_int32),
        ]  # fmt: skip
        for lib, name, argtypes, restype in signatures:
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        self._key_callbacks = ctypes.addressof(
            ctypes.c_void_p.in_dll(cf, "kCFTypeDictionaryKeyCallBacks")
        )
        self._value_callbacks = ctypes.addressof(
            ctypes.c_void_p.in_dll(cf, "kCFTypeDictionaryValueCallBacks")
        )
        self._true = _symbol(cf, "kCFBooleanTrue")
        self._false = _symbol(cf, "kCFBooleanFalse")

    def _constant(self, name: str) -> int:
        return _symbol(self._sec, name)

    @contextmanager
    def _dictionary(self, entries: Mapping[str, SecValue]) -> Iterator[int]:
        """Yield a CFDictionaryRef for `entries`, released on exit."""
        cf = self._cf
        owned: list[int] = []

        def own(ref: int | None) -> int:
            if not ref:
                raise KeyProviderError("CoreFoundation could not allocate a keychain query")
            owned.append(ref)
            return ref

        try:
            dictionary = own(
                cf.CFDictionaryCreateMutable(
                    None, len(entries), self._key_callbacks, self._value_callbacks
                )
            )
            for key, value in entries.items():
                if isinstance(value, SecConstant):
                    ref = self._constant(value.name)
                elif isinstance(value, bool):
                    ref = self._true if value else self._false
                elif isinstance(value, bytes):
                    ref = own(cf.CFDataCreate(None, value, len(value)))
                else:
                    encoded = value.encode("utf-8")
                    ref = own(
                        cf.CFStringCreateWithBytes(
                            None, encoded, len(encoded), _CF_STRING_ENCODING_UTF8, 0
                        )
                    )
                # The dictionary retains keys and values; `owned` drops our references.
                cf.CFDictionarySetValue(dictionary, self._constant(key), ref)
            yield dictionary
        finally:
            for ref in reversed(owned):
                cf.CFRelease(ref)

    def sec_item_add(self, attributes: Mapping[str, SecValue]) -> int:
        with self._dictionary(attributes) as dictionary:
            return int(self._sec.SecItemAdd(dictionary, None))

    def sec_item_copy_matching(self, query: Mapping[str, SecValue]) -> tuple[int, bytes | None]:
        result = _CFTypeRef()
        with self._dictionary(query) as dictionary:
            status = int(self._sec.SecItemCopyMatching(dictionary, ctypes.byref(result)))
        if not result.value:
            return status, None
        cf = self._cf
        try:
            if cf.CFGetTypeID(result) != cf.CFDataGetTypeID():
                return status, None
            length = cf.CFDataGetLength(result)
            pointer = cf.CFDataGetBytePtr(result)
            return status, ctypes.string_at(pointer, length) if length else b""
        finally:
            cf.CFRelease(result)

    def sec_item_update(
        self, query: Mapping[str, SecValue], attributes: Mapping[str, SecValue]
    ) -> int:
        with self._dictionary(query) as q, self._dictionary(attributes) as a:
            return int(self._sec.SecItemUpdate(q, a))

    def sec_item_delete(self, query: Mapping[str, SecValue]) -> int:
        with self._dictionary(query) as dictionary:
            return int(self._sec.SecItemDelete(dictionary))


def _symbol(library: ctypes.CDLL, name: str) -> int:
    """The value of a global pointer constant such as kSecClass."""
    try:
        value = ctypes.c_void_p.in_dll(library, name).value
    except ValueError as exc:
        raise KeyProviderError(f"the Security framework has no constant {name}") from exc
    if value is None:
        raise KeyProviderError(f"the Security framework constant {name} is NULL")
    return value
