"""What every command shares: the store, the key providers, and error reporting.

Errors the libraries raise on purpose become `CliError`: one line on stderr and an exit
code by kind (see `EXIT_CODES`). Anything else is reported the same way, with a hint
to rerun with ``--debug`` for the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from crdt import (
    CrdtError,
    DocumentError,
    MergeRejectedError,
    NoConflictError,
    RecordValidationError,
    SyncProtocolError,
)
from edge_sdk import (
    Argon2Params,
    AuthenticationError,
    BlobCorruptError,
    BlobNotFoundError,
    BundleDecryptError,
    BundleFormatError,
    BundleSignatureError,
    DeviceRevokedError,
    EdgeClient,
    EdgeError,
    EnrolmentError,
    KeyFileKeyProvider,
    KeyProvider,
    KeyProviderError,
    ModelError,
    ModelUnavailableError,
    ModelVerificationError,
    NotEnrolledError,
    PassphraseKeyProvider,
    RecordNotFoundError,
    StoreCorruptError,
    StoreExistsError,
    StoreNotFoundError,
    WrongKeyError,
)
from lidar_capture import (
    CaptureError,
    MeasurementRefused,
    ScanFileError,
    SensorUnavailableError,
)

EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_KEY = 3
EXIT_NOT_FOUND = 4
EXIT_INVALID = 5
EXIT_CORRUPT = 6

# First match wins, so subclasses come before their bases.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (MeasurementRefused, EXIT_INVALID),
    (ScanFileError, EXIT_CORRUPT),
    # No ARKit or depth camera here: not the scan's fault, nothing to fix in the input.
    (SensorUnavailableError, EXIT_OTHER),
    (CaptureError, EXIT_INVALID),
    (WrongKeyError, EXIT_KEY),
    (DeviceRevokedError, EXIT_KEY),
    (AuthenticationError, EXIT_KEY),
    (EnrolmentError, EXIT_INVALID),
    (NotEnrolledError, EXIT_NOT_FOUND),
    (KeyProviderError, EXIT_KEY),
    (BundleDecryptError, EXIT_KEY),
    (StoreNotFoundError, EXIT_NOT_FOUND),
    (RecordNotFoundError, EXIT_NOT_FOUND),
    (BlobNotFoundError, EXIT_NOT_FOUND),
    (StoreExistsError, EXIT_INVALID),
    (RecordValidationError, EXIT_INVALID),
    (NoConflictError, EXIT_INVALID),
    (MergeRejectedError, EXIT_INVALID),
    (StoreCorruptError, EXIT_CORRUPT),
    (BundleFormatError, EXIT_CORRUPT),
    (BundleSignatureError, EXIT_CORRUPT),
    (BlobCorruptError, EXIT_CORRUPT),
    (ModelVerificationError, EXIT_CORRUPT),
    (ModelUnavailableError, EXIT_OTHER),
    (ModelError, EXIT_INVALID),
    (DocumentError, EXIT_CORRUPT),
    (SyncProtocolError, EXIT_CORRUPT),
    (EdgeError, EXIT_OTHER),
    (CrdtError, EXIT_OTHER),
    # Bad filters and other bad arguments the libraries refuse.
    (ValueError, EXIT_INVALID),
    # The file system said no (a bundle path, a read-only folder): not a bug.
    (OSError, EXIT_OTHER),
)


PASSPHRASE_ENV = "COHERENCY_PASSPHRASE"
NEW_PASSPHRASE_ENV = "COHERENCY_NEW_PASSPHRASE"
KDF_ENV = "COHERENCY_KDF"


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(text.split())


class CliError(Exception):
    """An error reported as one line on stderr, with its own exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_OTHER) -> None:
        self.message = one_line(message)
        self.exit_code = exit_code
        super().__init__(self.message)

    def show(self) -> None:
        """Print ``error: MESSAGE`` on stderr."""
        click.echo(f"error: {self.message}", err=True)


def translate(exc: Exception, *, debug: bool) -> CliError:
    """The `CliError` to report for an exception a command raised."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            if isinstance(exc, OSError) and exc.strerror:
                where = f": {exc.filename}" if exc.filename else ""
                return CliError(f"{exc.strerror}{where}", code)
            return CliError(str(exc) or type(exc).__name__, code)
    hint = "" if debug else " (rerun as `coherency --debug ...` to see the traceback)"
    return CliError(f"unexpected {type(exc).__name__}: {exc}{hint}", EXIT_OTHER)


def new_keyring_params() -> Argon2Params | None:
    """Argon2 costs for keyrings made now: the defaults, or cheap ones for tests.

    ``COHERENCY_KDF=fast`` is for tests and demos only; stores keep opening with the
    costs they were made with, whatever this says.
    """
    value = os.environ.get(KDF_ENV, "").strip().lower()
    if value in ("", "default"):
        return None
    if value == "fast":
        return Argon2Params.fast()
    raise CliError(f"{KDF_ENV} must be 'fast' or 'default', not {value!r}", EXIT_USAGE)


def ask_passphrase(prompt: str, *, env: str, confirm: bool) -> str:
    """The passphrase from `env`, or typed at a hidden prompt (twice if `confirm`)."""
    given = os.environ.get(env)
    if given is not None:
        return given
    try:
        value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    except click.Abort:
        raise CliError(
            f"no passphrase given: set {env} or type it at the prompt", EXIT_USAGE
        ) from None
    return value


class LazyPassphraseProvider:
    """A passphrase key provider that asks for the passphrase only when a key is needed.

    So `coherency` says "no store here" or "this store uses a key file" before asking
    for a passphrase it would not use.
    """

    kind: str = "passphrase"

    def __init__(self, ask: Callable[[], str], params: Argon2Params | None) -> None:
        self._ask = ask
        self._params = params
        self._provider: PassphraseKeyProvider | None = None

    def _get(self) -> PassphraseKeyProvider:
        if self._provider is None:
            self._provider = PassphraseKeyProvider(self._ask(), params=self._params)
        return self._provider

    def new_kek(self) -> tuple[bytes, dict[str, Any]]:
        """See `KeyProvider.new_kek`."""
        return self._get().new_kek()

    def kek(self, params: Mapping[str, Any]) -> bytes:
        """See `KeyProvider.kek`."""
        return self._get().kek(params)


@dataclass
class App:
    """The global options, and the client a command opened (closed after it runs)."""

    store: Path
    key_file: Path | None
    _client: EdgeClient | None = field(default=None, repr=False)

    def key_provider(self, *, new: bool) -> KeyProvider:
        """The provider of the store's key: the key file, or the passphrase.

        Args:
            new: The key is for a new keyring (asks for the passphrase twice).
        """
        if self.key_file is not None:
            return KeyFileKeyProvider(self.key_file)
        prompt = "New store passphrase" if new else "Store passphrase"
        return LazyPassphraseProvider(
            lambda: ask_passphrase(prompt, env=PASSPHRASE_ENV, confirm=new),
            new_keyring_params(),
        )

    def client(self) -> EdgeClient:
        """The open store (opened on first use)."""
        if self._client is None:
            self._client = EdgeClient.open(self.store, self.key_provider(new=False))
        return self._client

    def init(self, clinic_id: str | None) -> EdgeClient:
        """Create the store."""
        self._client = EdgeClient.init(self.store, self.key_provider(new=True), clinic_id=clinic_id)
        return self._client

    def close(self) -> None:
        """Close the client, if a command opened one."""
        if self._client is not None:
            self._client.close()
            self._client = None


# Passes the `App` the root group built as a command's first argument.
with_app = click.make_pass_decorator(App)


def new_key_provider(new_key_file: Path | None) -> KeyProvider:
    """The provider a key change or rekey moves the store to."""
    if new_key_file is not None:
        return KeyFileKeyProvider(new_key_file)
    return LazyPassphraseProvider(
        lambda: ask_passphrase("New store passphrase", env=NEW_PASSPHRASE_ENV, confirm=True),
        new_keyring_params(),
    )
