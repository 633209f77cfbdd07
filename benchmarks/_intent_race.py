"""What the intent benchmarks (bookings, commerce, payments) share: devices racing to
push batches of signed intents to a live server and pull their decisions.

Each device's batches are planned beforehand as the intents' fields (``kind``,
``patient_id``, ``subject_id``, ``details``); `race` releases every device together,
and each writes a batch's intents (untimed: offline work), pushes them in one
request, pulls until the feed is drained, and finds each intent's decision in what
came back, timing each intent from just before its push to the end of that pull.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Racer", "drain", "race"]


@dataclass
class Racer:
    """One device in the race and what it measured."""

    client: Any  # edge_sdk.EdgeClient, enrolled
    transport: Any  # its edge_sdk.HttpTransport
    cursor: int = 0
    # Per sync: the fields of the intents it carries, written just before it.
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, one per intent
    decided: int = 0  # decisions that were not rejections
    error: BaseException | None = None

    def reset(self) -> None:
        """Forget the last repeat's plan and measurements."""
        self.batches, self.latencies, self.decided = [], [], 0


def race(racers: list[Any], label: str) -> float:
    """Run every racer's syncs concurrently; returns the wall seconds."""
    barrier = threading.Barrier(len(racers) + 1)
    threads = [threading.Thread(target=_loop, args=(r, barrier)) for r in racers]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    failed = [r.error for r in racers if r.error is not None]
    if failed:
        raise RuntimeError(f"{label} benchmark: a device failed") from failed[0]
    return seconds


def drain(racer: Racer) -> dict[str, bytes]:
    """Pull every page after the racer's cursor; the documents they brought."""
    from crdt import decode_message

    got: dict[str, bytes] = {}
    while True:
        message = decode_message(racer.transport.pull(cursor=racer.cursor, limit=500, wait=0))
        got.update((entry.doc_id, entry.payload) for entry in message.entries)
        racer.cursor = int(message.control["cursor"])
        if not message.control["more"]:
            return got


def _loop(racer: Racer, barrier: threading.Barrier) -> None:
    from crdt import (
        Decision,
        DecisionStatus,
        Entry,
        EntryKind,
        Intent,
        RecordDocument,
        SyncMessage,
        decision_id,
        encode_message,
        new_record_id,
    )

    client = racer.client
    try:
        barrier.wait()
        for batch in racer.batches:
            intents = [
                RecordDocument.create(
                    Intent,
                    fields,
                    device_id=client.device_id,
                    clinic_id=client.clinic_id,
                    record_id=new_record_id(),
                    signer=client.identity,
                )
                for fields in batch
            ]
            message = encode_message(
                SyncMessage({}, tuple(Entry(EntryKind.DOC, i.id, i.save()) for i in intents))
            )
            sent = time.perf_counter()
            answer = racer.transport.push(message)
            got = drain(racer)
            returned = time.perf_counter()
            if answer.rejected:
                raise RuntimeError(f"push refused: {answer.rejected[0]}")
            for intent in intents:
                data = got.get(decision_id(intent.id))
                if data is None:
                    raise RuntimeError(f"no decision for {intent.id} in the same exchange")
                racer.latencies.append(returned - sent)
                record = RecordDocument.load(data).read()
                assert isinstance(record, Decision)
                racer.decided += record.status is not DecisionStatus.REJECTED
    except BaseException as exc:  # reported by race
        racer.error = exc
