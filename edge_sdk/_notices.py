"""`client.notices`: the in-app notifications the server wrote, read offline.

A notice is a server-owned record (`crdt.Notice`, collection ``notices``) synced
down read-only like decisions and invoices: it is in the encrypted store once a sync
brought it, so the app shows it without a connection. `NoticesCollection.inbox`
lists one recipient's notices newest first with whether each was seen on this device;
`NoticesCollection.mark_seen` sets that flag. The flag is device-local (the
``notices_seen`` table): it is never replicated, and another device of the same
recipient keeps its own.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime

from crdt import Notice
from edge_sdk._collections import Collection
from edge_sdk._errors import InvalidArgumentError

__all__ = ["NoticeEntry", "NoticesCollection"]

_RECIPIENT_KINDS = ("patient", "staff")


@dataclass(frozen=True, slots=True)
class NoticeEntry:
    """A notice as this device shows it: the record and when it was seen here (None:
    not seen on this device)."""

    notice: Notice
    seen_at: datetime | None

    @property
    def seen(self) -> bool:
        """Whether the notice was marked seen on this device."""
        return self.seen_at is not None


class NoticesCollection(Collection[Notice]):
    """In-app notices (server-owned, read-only on a device), by recipient, newest
    first, with a device-local seen flag."""

    def inbox(
        self, recipient: str, *, unseen_only: bool = False, limit: int | None = None
    ) -> builtins.list[NoticeEntry]:
        """`recipient`'s notices as last synced (``patient:<id>`` or
        ``staff:<clinic id>``), newest first (by the event's time), deleted ones left
        out; only those not seen on this device with `unseen_only`; at most `limit`.
        One audited ``list`` read of the notices returned.

        Raises:
            InvalidArgumentError: `recipient` is not ``patient:<id>`` or
                ``staff:<clinic id>``, or `limit` is not a positive integer.
        """
        kind, _, rest = recipient.partition(":")
        if kind not in _RECIPIENT_KINDS or not rest:
            raise InvalidArgumentError(
                f"a recipient is patient:<id> or staff:<clinic id>, not {recipient!r}"
            )
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidArgumentError(f"limit must be a positive integer or None, not {limit!r}")
        notices = self.query(recipient=recipient)._with_action("list", ("-created_at",)).all()
        seen = self._seen_at([notice.id for notice in notices])
        entries = [NoticeEntry(notice, seen.get(notice.id)) for notice in notices]
        if unseen_only:
            entries = [entry for entry in entries if entry.seen_at is None]
        return entries[:limit] if limit is not None else entries

    def mark_seen(self, notice_id: str) -> NoticeEntry:
        """Mark notice `notice_id` seen on this device (a device-local flag, not a
        change to the record; marking it again keeps the first time). One audited
        ``read`` of the notice.

        Raises:
            RecordNotFoundError: No such notice on this device.
        """
        notice = self.get(notice_id)
        store = self._replica.store
        with store.transaction():
            store.execute(
                "INSERT OR IGNORE INTO notices_seen(notice_id, seen_at) VALUES (?, ?)",
                (notice.id, datetime.now(UTC).isoformat()),
            )
        return NoticeEntry(notice, self._seen_at([notice.id]).get(notice.id))

    def _seen_at(self, ids: builtins.list[str]) -> dict[str, datetime]:
        found: dict[str, datetime] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            rows = self._replica.store.execute(
                f"SELECT notice_id, seen_at FROM notices_seen WHERE notice_id IN ({marks})",
                chunk,
            ).fetchall()
            found.update({str(row[0]): datetime.fromisoformat(str(row[1])) for row in rows})
        return found
