"""Database engines, transactions and the declarative base, the same on SQLite and
PostgreSQL.

Each domain declares its tables (``<domain>/tables.py``) on `Base`; the Alembic
migrations in ``migrations/`` create them. `open_database` is how the ``coherency
server`` commands reach a database: driver errors become the server's error tree.

An embedded SQLite database holds every record: its file, WAL and shared-memory files
are readable by the server's user only (0600; SQLite gives the WAL and shared-memory
files the database file's mode), in a folder of mode 0700 when the server creates it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import (
    CursorResult,
    DateTime,
    Engine,
    String,
    Table,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, sessionmaker

from sync_server.errors import Invalid, NotFound, Unavailable
from sync_server.keyfiles import FILE_MODE, private_folder
from sync_server.settings import Settings

__all__ = [
    "Base",
    "Database",
    "Id",
    "UTCDateTime",
    "commit_then_raise",
    "database_label",
    "insert_many",
    "insert_many_unless_taken",
    "insert_unless_taken",
    "is_sqlite",
    "new_id",
    "open_database",
    "rowcount",
    "utcnow",
]


T = TypeVar("T")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite too)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Id = String(64)
"""The column type of every id (UUIDs, token ids)."""


def new_id() -> str:
    """A new random id (a UUID4 string)."""
    return str(uuid.uuid4())


def rowcount(result: Any) -> int:
    """How many rows an UPDATE or DELETE matched."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def insert_unless_taken(session: Session, *rows: Any) -> bool:
    """Insert `rows` in a savepoint; False, the transaction still usable, if a unique
    or primary key already holds one of them (another transaction won a race, or the
    value is taken).

    What the session had pending is flushed before the savepoint, outside it: a
    constraint that refuses those rows is the caller's error, not a lost race.
    """
    session.flush()
    try:
        with session.begin_nested():
            session.add_all(rows)
            session.flush()
    except IntegrityError:
        return False
    return True


def insert_many(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    upsert_where: str | None = None,
) -> None:
    """Insert `rows` (dicts with the same columns) in one driver ``executemany``.

    The statement is written once and the values go through the columns' own bind
    processors, so rows are stored exactly as through the ORM, without building a
    statement of every row's values in Python (the ORM's unit of work and its bulk
    path cost more than the database's own work, PostgreSQL's most). Column defaults
    do not apply: every row gives every column it stores. No objects enter the
    session.

    With `upsert_where` (a column name), a row whose ``id`` exists updates it instead,
    but only where the stored row's `upsert_where` column equals the new row's (a
    record never moves between clinics, whatever a concurrent writer says).
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    table = cast(Table, model.__table__)
    names = list(rows[0])
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    target = quote(table.name)
    sql = (
        f"INSERT INTO {target} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join(mark for _ in names)})"
    )
    if upsert_where is not None:
        sql += (
            f" ON CONFLICT ({quote('id')}) DO UPDATE SET "
            + ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n != "id")
            + f" WHERE {target}.{quote(upsert_where)} = excluded.{quote(upsert_where)}"
        )
    columns = [
        (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names
    ]
    params = [
        tuple(row[name] if process is None else process(row[name]) for name, process in columns)
        for row in rows
    ]
    connection.exec_driver_sql(sql, params)


def insert_many_unless_taken(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]]
) -> bool:
    """`insert_many` in a savepoint; False, the transaction still usable, if a unique
    or primary key already holds one of the rows (as `insert_unless_taken`)."""
    session.flush()
    try:
        with session.begin_nested():
            insert_many(session, model, rows)
    except IntegrityError:
        return False
    return True


def commit_then_raise(session: Session, error: BaseException) -> NoReturn:
    """Commit what `session` recorded about a refusal (an audit row, a failure counter,
    a revocation, a discarded upload), then raise `error`.

    The caller's transaction (``with db.write()``) would roll back on the error; this
    keeps the record. So a service that calls it needs a transaction of its own.
    """
    session.commit()
    raise error


class Base(DeclarativeBase):
    """Declarative base of every server table."""


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return url.startswith("sqlite")


class Database:
    """An engine and a session factory.

    On SQLite every transaction starts with ``BEGIN IMMEDIATE`` when it will write
    (`write()`), so two writers queue on the busy timeout instead of failing at the
    first write; files use WAL and ``synchronous=FULL``.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        # Errors never carry statement parameters: they hold patient data, and errors
        # end up in logs.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        if self.sqlite:
            _private_sqlite_files(url)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.sqlite:
            _sqlite_pragmas(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "do_orm_execute", _locked_rows_are_fresh)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading (its transaction is rolled back at the end)."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits at the end, or rolls back on error."""
        with self._sessions() as session:
            if self.sqlite:
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def write_retrying(self, work: Callable[[Session], T], *, attempts: int = 3) -> T:
        """Run `work` in a write transaction (as `write`); when the database aborts it
        to break a deadlock or a serialization conflict (two transactions waiting on
        each other, e.g. two clinics booking the same caregivers in opposite orders),
        roll back and run it again, up to `attempts` times in all.

        Raises:
            Unavailable: ``database_busy``: still aborted after `attempts`; retry later.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.write() as session:
                    return work(session)
            except DBAPIError as exc:
                if _sqlstate(exc) not in _TRANSIENT_SQLSTATES:
                    raise
                if attempt == attempts:
                    raise Unavailable(
                        "the database was busy with conflicting writes; retry",
                        code="database_busy",
                    ) from None
                time.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    def listen(self, name: str, fn: Callable[..., Any]) -> None:
        """Attach `fn` to the session event `name` (SQLAlchemy's `SessionEvents`, e.g.
        ``after_commit``) of every session this database opens from now on."""
        event.listen(self._sessions, name, fn)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _locked_rows_are_fresh(state: ORMExecuteState) -> None:
    """Load a row read ``FOR UPDATE`` over the copy the session already holds.

    The session keeps one object per row, and a later SELECT of that row does not
    overwrite its attributes. On PostgreSQL (read committed) another transaction may
    commit between a plain read and the lock, so a locked clinic read earlier would
    still show the old ``feed_seq`` and two pushes would number documents alike. The
    row the lock returns is the current one; this makes the object say so too.
    """
    statement = state.statement
    if state.is_select and getattr(statement, "_for_update_arg", None) is not None:
        state.update_execution_options(populate_existing=True)


def _private_sqlite_files(url: str) -> None:
    """Create the SQLite file 0600 in its folder (an empty file is a new database to
    SQLite) and narrow an existing one, its WAL and shared-memory files to 0600."""
    try:
        database = make_url(url).database
    except ArgumentError:
        return  # refused with a clear message when the engine is built
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # no folder, no database: connecting fails as it should
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o777 != FILE_MODE:
                file.chmod(FILE_MODE)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is off; SQLAlchemy's begin event
        # below issues BEGIN (IMMEDIATE when asked).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def database_label(url: str) -> str:
    """The database URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _driver_message(exc: BaseException) -> str:
    """The first line of a database driver's error, without SQLAlchemy's boilerplate."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


@contextmanager
def open_database(settings: Settings, *, must_exist: bool) -> Iterator[Database]:
    """The settings' database, disposed of at the end; driver errors inside the block
    become `Unavailable`.

    For the ``coherency server`` commands (the app keeps one `Database` of its own).

    Raises:
        Invalid: Not a usable database URL.
        NotFound: `must_exist` and the SQLite file is missing.
        Unavailable: The database failed.
    """
    url = settings.resolved_database_url
    label = database_label(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise Invalid(f"not a database URL: {label}", code="invalid_database_url") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "")
        if must_exist and not path.exists():
            raise NotFound(
                f"no server database at {path}: run `coherency server migrate` first "
                "(or give --data-dir / --database-url)",
                code="no_database",
            )
        if not must_exist and not path.parent.exists():
            private_folder(path.parent)
    try:
        database = Database(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise Invalid(
            f"cannot use the database URL {label}: {exc}", code="invalid_database_url"
        ) from None
    try:
        yield database
    except SQLAlchemyError as exc:
        raise Unavailable(
            f"database {label} failed: {_driver_message(exc)}", code="database_unavailable"
        ) from None
    finally:
        database.dispose()
