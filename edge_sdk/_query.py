"""Queries over a collection's projection: filters, ranges, sort, limit/offset and pages.

A `Query` is an immutable description (each method returns a new one) of which records
of one collection to read and in which order; `all`, `first` and `page` run it. Only
projection columns can be named (`Query.fields`), each checked against that list, and
every value is passed to SQLite as a parameter: nothing the caller gives is ever
written into the SQL text.

Keyset pages: `page` returns a `Page` whose `next` is an opaque cursor holding the
last record's sort key (and id, the tie-breaker); `page(after=cursor)` continues
strictly after that key, so records inserted meanwhile never shift a page or repeat.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

from crdt import Record, sortable_time
from edge_sdk._errors import InvalidArgumentError
from edge_sdk._replica import Replica
from edge_sdk._store import _TIME_COLUMNS, PROJECTIONS, SEARCH_SEPARATOR, fold

__all__ = ["DEFAULT_PAGE_SIZE", "Page", "Query", "QuerySource", "query_fields"]

R = TypeVar("R", bound=Record)

DEFAULT_PAGE_SIZE = 50
"""Records per page when the query has no `limit`."""

_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_HIDDEN = frozenset({"search_text"})  # projected for search, not a field of the record


def query_fields(collection: str) -> tuple[str, ...]:
    """The fields a query of `collection` may filter and sort on (its projection)."""
    own = [name for name in PROJECTIONS[collection] if name not in _HIDDEN]
    return ("id", "clinic_id", *own, "deleted", "conflicted", "updated_at")


class QuerySource(Protocol[R]):
    """What a query runs on: a collection (`edge_sdk.Collection`)."""

    _replica: Replica

    @property
    def name(self) -> str:
        """The collection's name."""
        ...

    def _run(
        self,
        action: str,
        where: Sequence[str],
        params: Sequence[Any],
        *,
        order_by: str = "id",
        limit: int | None = None,
        offset: int = 0,
        keys: Sequence[str] = (),
    ) -> tuple[list[R], list[tuple[Any, ...]]]:
        """Run an audited read; the records and their `keys` columns."""
        ...

    def _parse(self, record_json: str) -> R:
        """A record from its projected JSON."""
        ...


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """One page of a query's records, and where the next one starts.

    Attributes:
        records: The records of this page, in the query's order.
        next: Pass to `Query.page` as ``after=`` for the next page; None when this
            page reached the end (records added later may still follow it).
    """

    records: list[R]
    next: str | None


@dataclass(frozen=True, slots=True)
class _Spec:
    conditions: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    order: tuple[tuple[str, bool], ...] = ()  # (column, descending)
    limit: int | None = None
    offset: int = 0
    deleted_filtered: bool = False  # the caller filters `deleted` itself
    include_deleted: bool = False
    action: str = "query"  # the audit action
    default_order: tuple[tuple[str, bool], ...] = field(default=())


class Query(Generic[R]):
    """Which records of one collection to read, in which order (immutable).

    Made by `Collection.query` (``client.assessments.query(wound_id=w)``); every method
    returns a new query::

        q = client.assessments.query(wound_id=w).where("captured_at", ">=", since)
        latest = q.order_by("-captured_at").limit(20).all()

    Deleted records are left out unless `including_deleted` is called (or the query
    filters on ``deleted`` itself).
    """

    def __init__(self, collection: QuerySource[R], spec: _Spec | None = None) -> None:
        self._collection = collection
        self._spec = spec or _Spec()

    @property
    def collection(self) -> str:
        """The name of the collection queried."""
        return self._collection.name

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this query may filter and sort on."""
        return query_fields(self.collection)

    def __repr__(self) -> str:
        return f"<Query {self.collection} {self._sql()[0]!r} order {self._order()}>"

    # ---------------------------------------------------------------- building
    def where(
        self, field_name: str | None = None, op: str = "=", value: Any = None, /, **equals: Any
    ) -> Query[R]:
        """Add conditions (all must hold): ``where("area_cm2", ">", 2.5)`` or
        ``where(wound_id=w, status="open")``.

        Operators: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in`` and ``not in``
        (with a list). ``= None`` matches a missing value (``!= None`` a present
        one). Datetimes and dates compare as times and dates.

        Raises:
            InvalidArgumentError: An unknown field or operator, or None with a range.
        """
        conditions = list(self._spec.conditions)
        deleted = self._spec.deleted_filtered
        pairs: list[tuple[str, str, Any]] = [(name, "=", v) for name, v in equals.items()]
        if field_name is not None:
            pairs.insert(0, (field_name, op, value))
        for name, operator, operand in pairs:
            conditions.append(self._condition(name, operator, operand))
            deleted = deleted or name == "deleted"
        return self._with(conditions=tuple(conditions), deleted_filtered=deleted)

    def search(self, text: str) -> Query[R]:
        """Patients whose given name, family name or MRN starts with `text` (any case).

        Raises:
            InvalidArgumentError: The collection has no search (only patients do).
        """
        if "search_text" not in PROJECTIONS[self.collection]:
            raise InvalidArgumentError(
                f"{self.collection} cannot be searched by text (patients can)"
            )
        escaped = fold(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # Each part in search_text follows a separator: "%<sep>text%" is a prefix match
        # of any part.
        condition = ("search_text LIKE ? ESCAPE '\\'", (f"%{SEARCH_SEPARATOR}{escaped}%",))
        return self._with(conditions=(*self._spec.conditions, condition))

    def order_by(self, *fields: str) -> Query[R]:
        """Sort by these fields, in turn; ``"-field"`` sorts descending. Ties are
        broken by id. A missing value (None) sorts first ascending, last descending.

        Raises:
            InvalidArgumentError: An unknown field.
        """
        order = []
        for name in fields:
            descending = name.startswith("-")
            order.append((self._column(name.removeprefix("-")), descending))
        return self._with(order=tuple(order))

    def limit(self, count: int | None) -> Query[R]:
        """At most `count` records (None: no limit); the page size of `page`."""
        if count is not None and (not isinstance(count, int) or count < 1):
            raise InvalidArgumentError(f"limit must be a positive integer or None, not {count!r}")
        return self._with(limit=count)

    def offset(self, count: int) -> Query[R]:
        """Skip the first `count` records (prefer `page` for paging: it is stable)."""
        if not isinstance(count, int) or count < 0:
            raise InvalidArgumentError(f"offset must be a non-negative integer, not {count!r}")
        return self._with(offset=count)

    def including_deleted(self) -> Query[R]:
        """Include deleted (tombstoned) records."""
        return self._with(include_deleted=True)

    # ---------------------------------------------------------------- running
    def all(self) -> builtins.list[R]:
        """The matching records (audited as one read)."""
        where, params = self._sql()
        records, _ = self._collection._run(
            self._spec.action,
            where,
            params,
            order_by=self._order_sql(),
            limit=self._spec.limit,
            offset=self._spec.offset,
        )
        return records

    def first(self) -> R | None:
        """The first matching record, or None."""
        found = self.limit(1).all()
        return found[0] if found else None

    def page(self, after: str | None = None) -> Page[R]:
        """One page of `limit` records (default `DEFAULT_PAGE_SIZE`), after the cursor
        `after` of the previous page (from its `Page.next`; None: the first page).

        Raises:
            InvalidArgumentError: `after` is not a cursor of this query's order, or the query
                has an offset.
        """
        if self._spec.offset:
            raise InvalidArgumentError("page() continues from a cursor: use after=, not offset()")
        size = self._spec.limit or DEFAULT_PAGE_SIZE
        where, params = self._sql()
        order = self._order()
        if after is not None:
            condition, values = _after(order, self._decode(after, order))
            where, params = [*where, condition], [*params, *values]
        keys = tuple(column for column, _ in order)
        records, rows = self._collection._run(
            self._spec.action, where, params, order_by=self._order_sql(), limit=size + 1, keys=keys
        )
        if len(records) <= size:
            return Page(records, None)
        return Page(records[:size], self._encode(order, rows[size - 1]))

    # ---------------------------------------------------------------- internals
    def _with(self, **changes: Any) -> Query[R]:
        return Query(self._collection, replace(self._spec, **changes))

    def _with_action(self, action: str, default_order: Sequence[str]) -> Query[R]:
        """The same query, audited as `action`, sorted by `default_order` when the
        caller gave no order (what `list`, `search` and `for_wound` build on)."""
        order = tuple((self._column(n.removeprefix("-")), n.startswith("-")) for n in default_order)
        return self._with(action=action, default_order=order)

    def _column(self, name: str) -> str:
        if name not in self.fields:
            raise InvalidArgumentError(
                f"{self.collection} has no field {name!r} to query "
                f"(fields: {', '.join(self.fields)})"
            )
        return name

    def _condition(self, name: str, op: str, value: Any) -> tuple[str, tuple[Any, ...]]:
        column = self._column(name)
        operator = op.strip().lower() if isinstance(op, str) else op
        if operator in ("in", "not in"):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
                raise InvalidArgumentError(f"{operator!r} takes a list of values, not {value!r}")
            values = tuple(self._value(column, v) for v in value)
            if not values:
                return ("0" if operator == "in" else "1", ())
            marks = ", ".join("?" for _ in values)
            return (f"{column} {operator.upper()} ({marks})", values)
        if operator not in _OPERATORS:
            raise InvalidArgumentError(
                f"unknown operator {op!r} (use one of {', '.join(_OPERATORS)}, in, not in)"
            )
        sql_op = _OPERATORS[operator]
        if value is None:
            if sql_op not in ("=", "!="):
                raise InvalidArgumentError(f"{name} {op} None: a missing value has no order")
            return (f"{column} IS {'NOT ' if sql_op == '!=' else ''}NULL", ())
        return (f"{column} {sql_op} ?", (self._value(column, value),))

    def _value(self, column: str, value: Any) -> Any:
        if column in _TIME_COLUMNS.get(self.collection, ()) and isinstance(value, str | datetime):
            return sortable_time(value)  # the column holds sortable UTC text
        if isinstance(value, bool):
            return int(value)
        return value.isoformat() if isinstance(value, date) else value  # datetimes are dates

    def _sql(self) -> tuple[builtins.list[str], builtins.list[Any]]:
        where = [condition for condition, _ in self._spec.conditions]
        params = [value for _, values in self._spec.conditions for value in values]
        if not self._spec.include_deleted and not self._spec.deleted_filtered:
            where.append("deleted = 0")
        return where, params

    def _order(self) -> tuple[tuple[str, bool], ...]:
        order = self._spec.order or self._spec.default_order
        if not any(column == "id" for column, _ in order):
            order = (*order, ("id", False))
        return order

    def _order_sql(self) -> str:
        return ", ".join(f"{column}{' DESC' if desc else ''}" for column, desc in self._order())

    def _encode(self, order: Sequence[tuple[str, bool]], key: Sequence[Any]) -> str:
        payload = {"c": self.collection, "o": _order_text(order), "k": list(key)}
        text = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    def _decode(self, cursor: str, order: Sequence[tuple[str, bool]]) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            payload = json.loads(raw)
            key = payload["k"]
            same = payload["c"] == self.collection and payload["o"] == _order_text(order)
        except (binascii.Error, ValueError, TypeError, KeyError):
            raise InvalidArgumentError("not a page cursor (pass a Page.next unchanged)") from None
        if not same or not isinstance(key, list) or len(key) != len(order):
            raise InvalidArgumentError("this cursor is from a query of another collection or order")
        return key


def _order_text(order: Sequence[tuple[str, bool]]) -> str:
    return ",".join(("-" if desc else "") + column for column, desc in order)


def _after(order: Sequence[tuple[str, bool]], key: Sequence[Any]) -> tuple[str, list[Any]]:
    """The condition "sorts after `key`" in `order` (SQLite: None first ascending,
    last descending), as OR-ed prefixes: equal on the first k keys, after on key k."""
    alternatives: list[str] = []
    params: list[Any] = []
    for k, ((column, descending), value) in enumerate(zip(order, key, strict=True)):
        prefix = [f"{c} IS ?" for c, _ in order[:k]]
        prefix_params = list(key[:k])
        if value is None:
            if descending:
                continue  # nothing sorts after a missing value, descending
            beyond, beyond_params = f"{column} IS NOT NULL", []
        elif descending:
            beyond, beyond_params = f"({column} < ? OR {column} IS NULL)", [value]
        else:
            beyond, beyond_params = f"{column} > ?", [value]
        alternatives.append("(" + " AND ".join([*prefix, beyond]) + ")")
        params += prefix_params + beyond_params
    return ("(" + (" OR ".join(alternatives) or "0") + ")", params)
