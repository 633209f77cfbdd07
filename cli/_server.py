"""`coherency server ...`: run, migrate and administer the central sync server.

A thin layer over `sync_server`: options become `Settings` (with
``COHERENCY_SERVER_*`` variables for anything not given), results are printed for
people or as one JSON document (``--json``), and the server's `ServerError` becomes one
``error:`` line and an exit code by its class.

The server's modules are imported inside the commands: they need the ``server`` extra
(FastAPI, SQLAlchemy, ...), which a device-only install of `coherency` lacks.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from cli._app import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_OTHER, EXIT_USAGE, CliError
from cli._extras import needs_extras
from cli._output import emit, json_option, private_file, show_fields

__all__ = ["server"]

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _reported() -> Iterator[None]:
    """Turn the server's `ServerError` into a one-line `CliError` with its exit code.

    Malformed input (`Invalid`) is a usage error (2); refused input (`Unprocessable`,
    `Conflict`, ...) is invalid (5); `NotFound` is 4; `Unavailable` (a database,
    storage or port that cannot be used) is 1. Also reports a missing ``server`` extra
    as one line.
    """
    with needs_extras("server"):
        from sync_server import Invalid, NotFound, ServerError, Unavailable, Unprocessable

        # First match wins, so subclasses come before their bases.
        exit_codes: tuple[tuple[type[ServerError], int], ...] = (
            (Unavailable, EXIT_OTHER),
            (NotFound, EXIT_NOT_FOUND),
            (Unprocessable, EXIT_INVALID),
            (Invalid, EXIT_USAGE),
        )
        try:
            yield
        except ServerError as exc:
            code = next((code for cls, code in exit_codes if isinstance(exc, cls)), EXIT_INVALID)
            raise CliError(exc.message, code) from None


def _database_options(command: F) -> F:
    """Add ``--data-dir`` and ``--database-url`` (both with env fallback)."""
    command = click.option(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (env "
        "COHERENCY_SERVER_DATABASE_URL; default a SQLite file in the data folder).",
    )(command)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the SQLite file, local blobs and the signing key (env "
        "COHERENCY_SERVER_DATA_DIR; default ./coherency-server).",
    )(command)


def _blob_options(command: F) -> F:
    """Add the blob storage options (``--blob-backend``, ``--blob-dir``, ``--s3-*``,
    each with its env fallback), for every command that opens the storage."""
    options = [
        click.option(
            "--blob-backend",
            type=click.Choice(["local", "s3"]),
            help="Where blobs live (env COHERENCY_SERVER_BLOB_BACKEND; default local).",
        ),
        click.option(
            "--blob-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Local blob folder (env COHERENCY_SERVER_BLOB_DIR; default DATA_DIR/blobs).",
        ),
        click.option(
            "--s3-endpoint-url",
            metavar="URL",
            help="S3-compatible endpoint, e.g. MinIO (env COHERENCY_SERVER_S3_ENDPOINT_URL; "
            "default AWS).",
        ),
        click.option(
            "--s3-bucket", help="S3 bucket, created if missing (env COHERENCY_SERVER_S3_BUCKET)."
        ),
        click.option("--s3-region", help="S3 region (env COHERENCY_SERVER_S3_REGION)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _settings(**options: Any) -> Any:
    """`Settings` from the options given, the environment for the rest."""
    from sync_server import settings_from

    return settings_from(options)


_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _parse_duration(text: str) -> timedelta:
    """A duration such as ``90s``, ``30m``, ``24h``, ``7d``, ``1h30m`` or plain seconds.

    Raises:
        ValueError: Not a duration, or zero.
    """
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    else:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + unit for n, unit in parts) != value:
            raise ValueError(f"{text!r} is not a duration like 90s, 30m, 24h, 7d or 1h30m")
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


@click.group()
def server() -> None:
    """Run and administer the central sync server.

    \b
    Every option also reads a COHERENCY_SERVER_* variable (COHERENCY_SERVER_DATA_DIR,
    COHERENCY_SERVER_DATABASE_URL, COHERENCY_SERVER_BLOB_BACKEND, ...; S3 keys only
    from COHERENCY_SERVER_S3_ACCESS_KEY_ID and COHERENCY_SERVER_S3_SECRET_ACCESS_KEY).
    """


# ---------------------------------------------------------------------------- run
@server.command("run")
@_database_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="COHERENCY_SERVER_HOST",
    help="Address to listen on (env COHERENCY_SERVER_HOST).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8700,
    show_default=True,
    envvar="COHERENCY_SERVER_PORT",
    help="TCP port (env COHERENCY_SERVER_PORT).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="COHERENCY_SERVER_WORKERS",
    help="Worker processes (env COHERENCY_SERVER_WORKERS); more than one wants "
    "PostgreSQL and, across machines, S3 blobs.",
)
@click.option(
    "--no-migrate",
    is_flag=True,
    help="Do not migrate the database first (it must already be at the newest schema).",
)
@_blob_options
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (env COHERENCY_SERVER_LOG_LEVEL; default INFO). Logs are JSON lines on stderr.",
)
@json_option
def run(
    data_dir: Path | None,
    database_url: str | None,
    host: str,
    port: int,
    workers: int,
    no_migrate: bool,
    blob_backend: str | None,
    blob_dir: Path | None,
    s3_endpoint_url: str | None,
    s3_bucket: str | None,
    s3_region: str | None,
    log_level: str | None,
    as_json: bool,
) -> None:
    """Serve the sync API until stopped (Ctrl-C or SIGTERM).

    Migrates the database first unless --no-migrate. Prints one start-up line (a
    JSON document with --json) on stdout; the server's logs are JSON lines on stderr.
    """

    def started(serving: Any) -> None:
        emit(
            as_json,
            serving,
            lambda s: click.echo(
                f"serving {s.url} ({s.database}, schema {s.revision}, "
                f"{s.workers} worker{'s' if s.workers != 1 else ''}, {s.blob_backend} blobs)"
            ),
        )
        sys.stdout.flush()

    with _reported():
        from sync_server import serve

        settings = _settings(
            data_dir=data_dir,
            database_url=database_url,
            blob_backend=blob_backend,
            blob_dir=blob_dir,
            s3_endpoint_url=s3_endpoint_url,
            s3_bucket=s3_bucket,
            s3_region=s3_region,
            log_level=log_level.upper() if log_level else None,
        )
        serve(
            settings,
            host=host,
            port=port,
            workers=workers,
            migrate=not no_migrate,
            on_start=started,
        )


# ------------------------------------------------------------------------ migrate
@server.group("migrate", invoke_without_command=True)
@_database_options
@click.option(
    "--to",
    "to",
    metavar="REV",
    help="Move the schema up or down to this revision (an id or a unique prefix such "
    "as 0009) instead of the newest.",
)
@click.option(
    "--sql",
    is_flag=True,
    help="Print the SQL script for the database's dialect instead of running it "
    "(offline: the database is not touched).",
)
@click.option(
    "--from",
    "start",
    metavar="REV",
    help="With --sql: the revision the database is at (default: an empty database).",
)
@json_option
@click.pass_context
def migrate(
    ctx: click.Context,
    data_dir: Path | None,
    database_url: str | None,
    to: str | None,
    sql: bool,
    start: str | None,
    as_json: bool,
) -> None:
    """Create or upgrade the server database's schema to the newest revision.

    Migrators take a database lock, so several started at once end with one schema.
    `migrate current` says where the database is.
    """
    if ctx.invoked_subcommand is not None:
        return
    if start is not None and not sql:
        raise CliError("--from goes with --sql", EXIT_USAGE)
    with _reported():
        settings = _settings(data_dir=data_dir, database_url=database_url)
        if sql:
            from sync_server import migration_script

            script = migration_script(settings, to=to or "head", start=start)
        else:
            from sync_server import migrate as migrate_schema

            done = migrate_schema(settings, to=to or "head")
    if sql:
        emit(as_json, {"sql": script}, lambda r: click.echo(r["sql"], nl=False))
        return
    result = {
        "database": done.database,
        "previous_revision": done.previous_revision,
        "revision": done.revision,
        "changed": done.changed,
    }
    emit(
        as_json,
        result,
        lambda r: click.echo(
            f"{r['database']}: schema {r['previous_revision'] or 'none'} -> {r['revision']}"
            if r["changed"]
            else f"{r['database']}: schema already at {r['revision']}"
        ),
    )


@migrate.command("current")
@_database_options
@json_option
def migrate_current(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """Print the database's schema revision, this server's newest, and whether this
    server can serve the database."""
    with _reported():
        from sync_server import check_schema

        status = check_schema(_settings(data_dir=data_dir, database_url=database_url))
    result = {
        "database": status.database,
        "revision": status.revision,
        "head": status.head,
        "oldest_servable": status.oldest_servable,
        "servable": status.servable,
        "reason": status.reason,
    }
    emit(
        as_json,
        result,
        lambda r: click.echo(
            f"{r['database']}: schema {r['revision'] or 'none'} (this server: {r['head']}); "
            f"{'servable' if r['servable'] else 'NOT servable'}: {r['reason']}"
        ),
    )


# ------------------------------------------------------------------- create-admin
def _password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("--password-stdin: no password on standard input", EXIT_USAGE)
        return password
    try:
        typed: str = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    except click.Abort:
        raise CliError(
            "no password given: type it at the prompt or use --password-stdin", EXIT_USAGE
        ) from None
    return typed


@server.command("create-admin")
@_database_options
@click.option("--username", required=True, help="The admin's login name.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (else a hidden "
    "prompt, twice). At least 12 characters.",
)
@click.option(
    "--no-totp",
    is_flag=True,
    help="No TOTP second factor (not recommended: the account logs in with its password alone).",
)
@json_option
def create_admin(
    data_dir: Path | None,
    database_url: str | None,
    username: str,
    password_stdin: bool,
    no_totp: bool,
    as_json: bool,
) -> None:
    """Create an organisation-wide admin account.

    Prints the TOTP secret and its otpauth:// URI once: add it to an authenticator
    app now, it cannot be shown again.
    """
    with _reported():
        from sync_server import create_admin as create

        settings = _settings(data_dir=data_dir, database_url=database_url)
        password = _password(password_stdin)
        admin = create(settings, username=username, password=password, with_totp=not no_totp)

    def human(a: Any) -> None:
        click.echo(f"created admin {a.username} (id {a.user_id})")
        if a.totp_secret:
            click.echo("TOTP secret (shown once; add it to an authenticator app now):")
            show_fields({"secret": a.totp_secret, "uri": a.totp_uri})
        else:
            click.echo("no TOTP: this account logs in with its password alone")

    emit(as_json, admin, human)


# ------------------------------------------------------------------- enroll-token
@server.command("enroll-token")
@_database_options
@click.option(
    "--clinic",
    required=True,
    help="The clinic's name; created (in the default organisation) if missing.",
)
@click.option(
    "--ttl",
    metavar="DURATION",
    help="How long the token stays usable, e.g. 30m, 24h, 7d (default "
    "COHERENCY_SERVER_ENROLMENT_TOKEN_SECONDS, 24h; at most 30d).",
)
@click.option(
    "--edge",
    is_flag=True,
    help="The token enrols the clinic's edge box (which enrols with its TLS certificate).",
)
@json_option
def enroll_token(
    data_dir: Path | None,
    database_url: str | None,
    clinic: str,
    ttl: str | None,
    edge: bool,
    as_json: bool,
) -> None:
    """Issue a one-time token that enrols one device (or, with --edge, one edge box)
    into a clinic.

    The token is printed once (only its hash is stored); give it to the device's
    `coherency device enroll` (or to the edge box's enrolment).
    """
    with _reported():
        from sync_server import issue_enrolment_token

        lifetime: timedelta | None = None
        if ttl is not None:
            try:
                lifetime = _parse_duration(ttl)
            except ValueError as exc:
                raise CliError(f"--ttl: {exc}", EXIT_USAGE) from None
        settings = _settings(data_dir=data_dir, database_url=database_url)
        issued = issue_enrolment_token(settings, clinic=clinic, ttl=lifetime, edge=edge)

    def human(t: Any) -> None:
        click.echo(
            f"{'edge box ' if t.kind == 'edge' else ''}enrolment token for clinic "
            f"{t.clinic_name} (id {t.clinic_id}), usable once "
            f"until {t.expires_at.isoformat(timespec='seconds')}:"
        )
        click.echo(t.token)

    emit(as_json, issued, human)


# --------------------------------------------------------------------------- user
@server.command("user")
@_database_options
@click.argument(
    "action",
    type=click.Choice(["unlock", "deactivate", "reactivate", "reset-totp", "revoke-sessions"]),
)
@click.option("--username", required=True, help="The staff account's login name.")
@click.option(
    "--organisation",
    help="The account's organisation (name or id), when the username exists in several.",
)
@json_option
def user(
    data_dir: Path | None,
    database_url: str | None,
    action: str,
    username: str,
    organisation: str | None,
    as_json: bool,
) -> None:
    """First aid for a staff account: unlock (forget its failed logins), deactivate,
    reactivate, reset-totp (prints the new secret once) or revoke-sessions."""
    with _reported():
        from sync_server import manage_account

        settings = _settings(data_dir=data_dir, database_url=database_url)
        managed = manage_account(
            settings,
            username=username,
            action=cast(Any, action),  # one of the Choice's values: an AccountAction
            organisation=organisation,
        )

    def human(m: Any) -> None:
        click.echo(f"{m.action}: {m.username} (id {m.user_id}, active: {m.active})")
        if m.totp_secret:
            click.echo("new TOTP secret (shown once; add it to an authenticator app now):")
            show_fields({"secret": m.totp_secret, "uri": m.totp_uri})

    emit(as_json, managed, human)


# ---------------------------------------------------------------------- seed-demo
@server.command("seed-demo")
@_database_options
@click.option(
    "--organisation",
    default="default",
    show_default=True,
    help="The organisation (the hospital) to load it into; created if missing.",
)
@json_option
def seed_demo(
    data_dir: Path | None, database_url: str | None, organisation: str, as_json: bool
) -> None:
    """Load a demo booking directory: two clinics in different time zones, doctors and
    nurses, services, weekly hours, holidays and caregivers; then publish the reference
    data devices read. Running it again changes nothing."""
    with _reported():
        from sync_server import seed_demo as seed

        settings = _settings(data_dir=data_dir, database_url=database_url)
        seeded = seed(settings, organisation=organisation)

    def human(s: Any) -> None:
        for name, clinic_id in s.clinics.items():
            click.echo(f"clinic {name} (id {clinic_id})")
        click.echo(
            f"{s.providers} providers, {s.services} services; {s.created} rows created, "
            f"{s.updated} entries updated, {s.records_published} reference records published"
        )

    emit(as_json, seeded, human)


# ------------------------------------------------------------------------ export
def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time") from None


@server.command("export")
@_database_options
@click.option("--clinic", required=True, help="The clinic's id (or its name, if unique).")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(
        [
            "patients",
            "wounds",
            "assessments",
            "notes",
            "conditions",
            "allergies",
            "medications",
            "care_plans",
        ]
    ),
    help="What to export (one kind per file).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "ndjson"]),
    default="csv",
    show_default=True,
    help="CSV with a header line, or one JSON object per line.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file (default: stdout).",
)
@click.option("--patient", "patient_id", help="Only this patient's records.")
@click.option(
    "--wound",
    "wound_id",
    help="Only this wound's records (assessments, wounds, notes, care_plans).",
)
@click.option(
    "--from", "captured_from", callback=_moment, metavar="WHEN",
    help="Assessments captured at or after this ISO 8601 time (no offset: UTC).",
)  # fmt: skip
@click.option(
    "--before", "captured_before", callback=_moment, metavar="WHEN",
    help="Assessments captured before this ISO 8601 time.",
)  # fmt: skip
@click.option("--min-area", type=click.FloatRange(min=0), help="Assessments of at least this cm².")
@click.option("--max-area", type=click.FloatRange(min=0), help="Assessments of at most this cm².")
@click.option(
    "--model-output/--no-model-output",
    "has_model_output",
    default=None,
    help="Only assessments with (or without) model output.",
)
@click.option("--include-deleted", is_flag=True, help="Include deleted records.")
@json_option
def export(
    data_dir: Path | None,
    database_url: str | None,
    clinic: str,
    kind: str,
    fmt: str,
    out: Path | None,
    patient_id: str | None,
    wound_id: str | None,
    captured_from: datetime | None,
    captured_before: datetime | None,
    min_area: float | None,
    max_area: float | None,
    has_model_output: bool | None,
    include_deleted: bool,
    as_json: bool,
) -> None:
    """Export a clinic's patients, wounds, assessments (figures, tissue mix) or notes
    for analysts, as CSV or NDJSON, straight from the database, a batch at a time.

    Audited like a staff export (actor: the system). The columns are listed in
    docs/server.md. A summary goes to stdout (stderr when the data does).
    """
    if as_json and out is None:
        raise CliError("--json prints a summary on stdout: give --out for the data", EXIT_USAGE)
    with _reported():
        from sync_server import AssessmentFilters, export_records

        filters = AssessmentFilters(
            patient_id=patient_id,
            wound_id=wound_id,
            captured_from=captured_from,
            captured_before=captured_before,
            min_area_cm2=min_area,
            max_area_cm2=max_area,
            has_model_output=has_model_output,
            include_deleted=include_deleted,
        )
        settings = _settings(data_dir=data_dir, database_url=database_url)
        if out is None:
            done = export_records(
                settings, clinic=clinic, kind=kind, format=fmt,
                write=sys.stdout.buffer.write, filters=filters,
            )  # fmt: skip
            sys.stdout.buffer.flush()
        else:
            with private_file(out) as sink:
                done = export_records(
                    settings, clinic=clinic, kind=kind, format=fmt,
                    write=sink.write, filters=filters,
                )  # fmt: skip

    where = "stdout" if out is None else str(out)
    summary = f"exported {done.rows} {kind} of clinic {done.clinic_id} as {fmt} to {where}"
    emit(as_json, done, lambda _: click.echo(summary, err=out is None))


@server.command("report")
@_database_options
@click.option("--clinic", required=True, help="The clinic's id (or its name, if unique).")
@click.option("--month", required=True, metavar="YYYY-MM", help="The calendar month (UTC).")
@click.option(
    "--pdf",
    "pdf_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the report as a PDF to this file.",
)
@click.option(
    "--parquet",
    "parquet_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also export the clinic's tables as Parquet files into this folder.",
)
@click.option(
    "--identified",
    is_flag=True,
    help="Put patients' names (and birth dates, free text) in the Parquet export.",
)
@json_option
def report(
    data_dir: Path | None,
    database_url: str | None,
    clinic: str,
    month: str,
    pdf_file: Path | None,
    parquet_dir: Path | None,
    identified: bool,
    as_json: bool,
) -> None:
    """A clinic's monthly report (docs/reports.md): its figures on stdout, with
    --pdf as a PDF, with --parquet its tables for analysts (no names of patients
    unless --identified; MRNs never; audited with the system as the actor)."""
    if identified and parquet_dir is None:
        raise CliError("--identified applies to --parquet only", EXIT_USAGE)
    with _reported():
        from sync_server import monthly_report

        settings = _settings(data_dir=data_dir, database_url=database_url)
        made = monthly_report(
            settings, clinic=clinic, month=month, pdf=pdf_file, parquet=parquet_dir,
            identified=identified,
        )  # fmt: skip

    def human(value: Any) -> None:
        r = value.report
        w, h, a, v = r.wounds, r.healing, r.appointments, r.visits
        share = "n/a" if h.share_on_track is None else f"{100 * h.share_on_track:.1f} %"
        median = "n/a" if w.median_days_to_heal is None else f"{w.median_days_to_heal:.1f}"
        lines = [
            f"{r.clinic_name} ({r.clinic_id}), {month}",
            f"wounds seen {w.seen}, healed {w.healed}, median days to heal {median}",
            f"on track at {h.weeks} weeks: {h.on_track}/{h.known} ({share}); "
            f"not on track: {len(h.not_on_track)}",
            f"appointments {a.total}, no-shows {a.no_shows}, late cancellations "
            f"{a.late_cancellations}; visits completed {v.completed}",
        ]
        lines += [
            f"{m.currency}: revenue {m.revenue}, refunds {m.refunds}, "
            f"outstanding {m.outstanding} (minor units)"
            for m in r.money
        ]
        if value.pdf is not None:
            lines.append(f"PDF: {value.pdf}")
        if value.parquet is not None:
            rows = sum(value.parquet.rows.values())
            lines.append(f"Parquet: {value.parquet.folder} ({rows} rows)")
        for line in lines:
            click.echo(line)

    emit(as_json, made, human)


# ----------------------------------------------------------- notification-worker
@server.command("notification-worker")
@_database_options
@click.option(
    "--queue-url",
    metavar="URL",
    help="The Redis the server instances put new notification deliveries on, e.g. "
    "redis://127.0.0.1:6379/0 (env COHERENCY_SERVER_NOTIFICATION_QUEUE_URL; required).",
)
@click.option(
    "--burst",
    is_flag=True,
    help="Return once the queue is empty instead of waiting for more.",
)
@json_option
def notification_worker(
    data_dir: Path | None,
    database_url: str | None,
    queue_url: str | None,
    burst: bool,
    as_json: bool,
) -> None:
    """Send notifications from the queue until stopped (SIGTERM or Ctrl-C).

    Run one or more per deployment of several instances: each takes the deliveries
    the instances queue as they are recorded, sends them exactly once (the database's
    lease decides between workers) and sweeps what is due every
    COHERENCY_SERVER_NOTIFICATION_INTERVAL_SECONDS.
    """
    with _reported():
        from sync_server import run_notification_worker

        settings = _settings(
            data_dir=data_dir, database_url=database_url, notification_queue_url=queue_url
        )
        run_notification_worker(settings, burst=burst)
    emit(
        as_json,
        {"stopped": True, "burst": burst},
        lambda _: click.echo("notification worker stopped"),
    )
