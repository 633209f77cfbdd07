"""Server settings: pydantic-settings, from `COHERENCY_SERVER_*` variables or arguments.

With no configuration at all the server runs embedded: a SQLite file and a local blob
folder under `data_dir`. Set `database_url` to a `postgresql+psycopg://` URL and
`blob_backend="s3"` to run several stateless workers on PostgreSQL and object storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from crdt import DEFAULT_MAX_MESSAGE_SIZE, DocumentLimits
from sync_server.errors import Invalid

__all__ = ["ENV_PREFIX", "Settings", "export_settings_env", "settings_from"]

ENV_PREFIX = "COHERENCY_SERVER_"


class Settings(BaseSettings):
    """Everything the server reads at start. Every field has a working default."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path = Field(
        default=Path("coherency-server"),
        description="Folder for the embedded SQLite file, local blobs and the signing key.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/server.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    blob_backend: Literal["local", "s3"] = "local"
    blob_dir: Path | None = Field(default=None, description="Default <data_dir>/blobs.")
    s3_endpoint_url: str | None = None
    s3_bucket: str = "coherency-blobs"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs access tokens; default "
        "<data_dir>/signing-key.pem, created on first start. Every worker of one "
        "deployment must use the same key.",
    )
    artifact_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs published artifacts (models), "
        "never tokens; default <data_dir>/artifact-key.pem, created on first start. "
        "Shared by every worker; devices pin its public key at enrolment.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="32 random bytes that seal secrets the server must read back (TOTP "
        "secrets, AES-256-GCM); default <data_dir>/secret-key, created on first start "
        "(mode 0600). Shared by every worker; back it up with the database: without it "
        "no TOTP code can be checked.",
    )
    jwt_issuer: str = "coherency-sync-server"
    jwt_audience: str = "coherency"
    access_token_seconds: int = Field(default=900, gt=0)
    refresh_token_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    enrolment_token_seconds: int = Field(default=24 * 3600, gt=0)
    long_poll_max_seconds: float = Field(default=30.0, ge=0)
    pull_page_size: int = Field(default=5000, gt=0, description="Most documents per pull page.")
    push_max_documents: int = Field(default=5000, gt=0)
    push_max_changes: int = Field(
        default=500_000,
        gt=0,
        description="Most Automerge changes the documents of one push may hold in all "
        "(measured before loading); a bigger push gets 413 push_too_costly.",
    )
    push_max_intents: int = Field(
        default=100,
        gt=0,
        description="Most intents one push may carry: each is decided while the push "
        "holds its clinic's feed, so a bigger push gets 413 push_too_costly (the SDK "
        "pushes in halves).",
    )
    order_hold_hours: float = Field(
        default=48.0,
        gt=0,
        description="How long an accepted supplies order holds its stock unpaid before "
        "the hourly housekeeping cancels it and releases the stock (server clock).",
    )
    document_max_changes: int = Field(
        default=50_000, gt=0, description="Most changes one record document may hold."
    )
    document_max_operations: int = Field(
        default=2_000_000, gt=0, description="Most operations one record document may hold."
    )
    max_message_size: int = Field(default=DEFAULT_MAX_MESSAGE_SIZE, gt=0)
    max_blob_chunk: int = Field(default=16 * 1024 * 1024, gt=0)
    max_blob_size: int = Field(default=2 * 1024 * 1024 * 1024, gt=0)
    blob_quota_device_open_uploads: int = Field(
        default=32, gt=0, description="Most uploads one device may have open at once."
    )
    blob_quota_device_pending_bytes: int = Field(
        default=8 * 1024**3,
        gt=0,
        description="Most bytes one device may have declared in open uploads.",
    )
    blob_quota_clinic_pending_bytes: int = Field(
        default=64 * 1024**3,
        gt=0,
        description="Most bytes one clinic's devices may have declared in open uploads.",
    )
    blob_quota_device_bytes: int = Field(
        default=256 * 1024**3,
        gt=0,
        description="Most bytes one device may have uploaded (stored and open) in all.",
    )
    blob_quota_clinic_bytes: int = Field(
        default=2 * 1024**4,
        gt=0,
        description="Most blob bytes one clinic may hold (stored and open) in all.",
    )
    max_json_body: int = Field(
        default=64 * 1024,
        gt=0,
        description="Most body bytes of a request to any route that does not stream a "
        "body of its own (logins, enrolments, admin forms): 413 past it.",
    )
    body_chunk_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the next piece of a request body: 408 past it.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest a client may take to send a request's line and headers; "
        "the connection is closed past it.",
    )
    payment_gateway: Literal["sandbox"] = Field(
        default="sandbox",
        description="The payment gateway backend (the sandbox: deterministic test tokens).",
    )
    payment_sandbox_file: Path | None = Field(
        default=None,
        description="The sandbox gateway's own record (SQLite); default "
        "<data_dir>/sandbox-gateway.db. Shared by every worker of one deployment.",
    )
    payment_webhook_secret: str | None = Field(
        default=None,
        description="The HMAC secret of gateway webhooks; default: 32 random bytes in "
        "<data_dir>/payment-webhook-secret, created on first start.",
    )
    payment_sweep_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often payments left processing (gateway timeouts) are settled "
        "from the gateway's record.",
    )
    audit_checkpoint_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often the server signs a checkpoint of its audit log (when it "
        "grew since the last).",
    )
    staff_idle_seconds: int = Field(
        default=900,
        gt=0,
        description="A staff session (its refresh-token family) with no request for this "
        "long is over: its access and refresh tokens are refused (401 "
        "session_idle_expired) and the user logs in again (automatic logoff).",
    )
    break_glass_minutes: float = Field(
        default=60.0,
        gt=0,
        le=24 * 60,
        description="How long a break-glass grant (a clinician's emergency access to a "
        "patient of another clinic) lasts.",
    )
    log_level: str = "INFO"

    # Throttling (state in the database, shared by every worker). Rate limits count
    # requests per client address in fixed windows; failure limits slow a client, and
    # an account, after repeated failed credentials, with a delay that doubles per
    # failure. A client that has not been failing on an account is never held back by
    # that account's failures.
    rate_window_seconds: int = Field(default=60, gt=0, description="The rate limits' window.")
    rate_login_per_client: int = Field(default=30, gt=0)
    rate_enrol_per_client: int = Field(default=20, gt=0)
    rate_device_login_per_client: int = Field(default=30, gt=0)
    rate_refresh_per_client: int = Field(default=120, gt=0)
    rate_refresh_per_subject: int = Field(
        default=10, gt=0, description="Refreshes per device or user per window."
    )
    failures_free_per_client: int = Field(
        default=20, ge=0, description="Failed credentials a client address may send freely."
    )
    failures_free_per_account: int = Field(
        default=5, ge=0, description="Failed credentials an account (or device) takes freely."
    )
    failures_free_per_account_client: int = Field(
        default=3,
        ge=0,
        description="Failed attempts a client may make on an account that is being "
        "throttled before that client, too, must wait.",
    )
    failure_backoff_seconds: float = Field(
        default=2.0, gt=0, description="The first wait after the free failures; doubles."
    )
    failure_backoff_max_seconds: float = Field(default=900.0, gt=0)
    failure_memory_seconds: int = Field(
        default=3600, gt=0, description="Failures are forgotten this long after the last one."
    )

    @property
    def document_limits(self) -> DocumentLimits:
        """What one received document may cost (`crdt.DocumentLimits`)."""
        return DocumentLimits(
            max_bytes=self.max_message_size,
            max_changes=self.document_max_changes,
            max_operations=self.document_max_operations,
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'server.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        """The local blob folder."""
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def resolved_signing_key_file(self) -> Path:
        """Where the server's Ed25519 token signing key lives."""
        return self.signing_key_file or self.data_dir / "signing-key.pem"

    @property
    def resolved_artifact_key_file(self) -> Path:
        """Where the server's Ed25519 artifact (model) signing key lives."""
        return self.artifact_key_file or self.data_dir / "artifact-key.pem"

    @property
    def resolved_payment_sandbox_file(self) -> Path:
        """Where the sandbox gateway keeps its record."""
        return self.payment_sandbox_file or self.data_dir / "sandbox-gateway.db"

    @property
    def resolved_secret_key_file(self) -> Path:
        """Where the key that seals secrets at rest lives."""
        return self.secret_key_file or self.data_dir / "secret-key"


def settings_from(options: Mapping[str, Any]) -> Settings:
    """Settings from command-line options; options left as None come from the
    ``COHERENCY_SERVER_*`` environment, else the defaults.

    Raises:
        Invalid: ``invalid_setting``: a value (given or from the environment) is not
            valid; the message names each one and where it came from.
    """
    given = {name: value for name, value in options.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error.get("loc", ()))
            source = "option" if field in given else f"{ENV_PREFIX}{field.upper()}"
            problems.append(f"{field} ({source}): {error.get('msg', 'invalid')}")
        raise Invalid(
            "invalid server setting " + "; ".join(problems), code="invalid_setting"
        ) from None


def export_settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as ``COHERENCY_SERVER_*`` variables that rebuild them in a worker.

    Paths are made absolute, so a worker started elsewhere finds the same files.
    Fields that are None are left out (their default applies).
    """
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = value.resolve()
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env
