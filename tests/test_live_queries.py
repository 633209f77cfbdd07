"""Live queries and record observers on real stores: each committed change that alters a
result arrives once (a local write, a merged sync page, a bundle import, a batch, a
record becoming verified), an unchanged result arrives not at all."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crdt import Patient
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    MemoryHub,
    export_bundle,
    import_bundle,
)
from tests.conftest import connect

FAST_KDF = Argon2Params.fast()


def add(client: EdgeClient, given: str, family: str = "Okafor") -> Patient:
    return client.patients.add(given_name=given, family_name=family, birth_date="1950-03-01")


def names(result: list[Patient]) -> list[str]:
    return [p.given_name for p in result]


def test_a_local_write_a_batch_and_an_unchanged_result(tmp_store: Any) -> None:
    client = tmp_store()
    add(client, "Ada")
    calls: list[list[str]] = []
    query = client.patients.query().search("oka")
    sub = client.patients.live(query, lambda r: calls.append(names(r)))
    assert calls == [["Ada"]]  # the first result, on subscribing
    add(client, "Bea")
    assert calls[-1] == ["Ada", "Bea"] and len(calls) == 2
    add(client, "Cy", family="Zed")  # not in the result: no call
    assert len(calls) == 2
    with client.batch():
        for i in range(20):
            add(client, f"N{i:02}")
    assert len(calls) == 3 and len(calls[-1]) == 22
    sub.cancel()
    add(client, "Dee")
    assert len(calls) == 3 and not sub.active


def test_a_merged_sync_page_and_a_bundle_arrive_once_each(tmp_store: Any, tmp_path: Path) -> None:
    hub = MemoryHub()
    here, there = tmp_store("here"), tmp_store("there")
    here.sync(transport=connect(hub, here))
    there.sync(transport=connect(hub, there))
    calls: list[list[str]] = []
    with here.patients.live(None, lambda r: calls.append(names(r))):
        for i in range(3):
            add(there, f"S{i}")
        there.sync(transport=connect(hub, there))
        here.sync(transport=connect(hub, here))
        here.wait_verified()  # a first pull may store records unverified: shown once verified
        assert calls == [[], ["S0", "S1", "S2"]]
        here.sync(transport=connect(hub, here))  # nothing new: no call
        assert len(calls) == 2

        add(there, "B0")
        add(there, "B1")
        export_bundle(there, tmp_path / "b.bundle", passphrase="bundle pass", kdf=FAST_KDF)
        import_bundle(here, tmp_path / "b.bundle", passphrase="bundle pass")
        assert len(calls) == 3 and sorted(calls[-1]) == ["B0", "B1", "S0", "S1", "S2"]
        import_bundle(here, tmp_path / "b.bundle", passphrase="bundle pass")  # again: same
        assert len(calls) == 3
    add(here, "After")
    assert len(calls) == 3


def test_a_first_sync_stored_unverified_is_seen_once_when_verified(tmp_store: Any) -> None:
    hub = MemoryHub()
    there = tmp_store("there")
    with there.batch():
        for i in range(30):
            add(there, f"P{i:02}")
    there.sync(transport=connect(hub, there))
    here = tmp_store("here")
    seen: list[int] = []
    lock = threading.Lock()

    def heard(result: list[Patient]) -> None:
        with lock:
            seen.append(len(result))

    with here.patients.live(None, heard):
        here.sync(transport=connect(hub, here))
        here.wait_verified()
        assert here.verification_status().done
        # Every record is shown, each change at most once per commit, never a record
        # before it was verified; the last result holds all 30.
        assert seen[0] == 0 and seen[-1] == 30 and seen == sorted(set(seen))


def test_a_record_observer(tmp_store: Any) -> None:
    client = tmp_store()
    ada = add(client, "Ada")
    other = add(client, "Bea")
    heard: list[Any] = []
    with client.patients.observe(ada.id, heard.append):
        client.patients.update(other.id, mrn="M-2")  # another record: no call
        client.patients.update(ada.id, mrn="M-1")
        client.patients.update(ada.id, mrn="M-1")  # unchanged: writes nothing, no call
        client.patients.delete(ada.id)
        client.patients.restore(ada.id)
    client.patients.update(ada.id, mrn="M-3")
    assert [p and p.mrn for p in heard] == [None, "M-1", None, "M-1"]
    assert heard[0].given_name == "Ada" if heard[0] else True
    missing: list[Any] = []
    client.patients.observe("no-such-id", missing.append).cancel()
    assert missing == [None]


def test_deliver_on_another_thread(tmp_store: Any) -> None:
    client = tmp_store()
    threads: list[str] = []
    done = threading.Event()

    def heard(result: list[Patient]) -> None:
        threads.append(threading.current_thread().name)
        if len(result) == 1:
            done.set()

    ui = ThreadPoolExecutor(1, thread_name_prefix="ui")
    with ui, client.patients.live(None, heard, deliver=ui.submit):
        add(client, "Ada")
        assert done.wait(10)
    assert threads and all(name.startswith("ui") for name in threads)


def test_the_asyncio_form(tmp_store: Any) -> None:
    client = tmp_store()
    add(client, "Ada")

    async def main() -> list[list[str]]:
        results: list[list[str]] = []
        writer = threading.Thread(target=lambda: add(client, "Bea"))
        async for records in client.patients.live_results(client.patients.query()):
            results.append(names(records))
            if len(results) == 1:
                writer.start()  # a write from another thread, while the loop waits
            else:
                break
        writer.join()
        return results

    assert asyncio.run(main()) == [["Ada"], ["Ada", "Bea"]]


def test_live_deliveries_are_audited_and_a_failing_callback_stays_with_the_app(
    tmp_store: Any,
) -> None:
    client = tmp_store()
    ada = add(client, "Ada")
    events: list[Any] = []
    client.add_access_listener(events.append)

    def fails(result: list[Patient]) -> None:
        raise RuntimeError("app bug")

    with client.patients.live(client.patients.query(), fails):
        add(client, "Bea")  # the writer sees no error
        add(client, "Cy", family="Zed")
    live = [e for e in events if e.action == "live"]
    assert len(live) == 3 and live[0].record_ids == (ada.id,)
    assert all(e.collection == "patients" and e.outcome == "ok" for e in live)
    assert client.verify_audit().ok


def test_a_callback_may_write_and_subscribe_without_deadlock(tmp_store: Any) -> None:
    client = tmp_store()
    calls: list[int] = []

    def heard(result: list[Patient]) -> None:
        calls.append(len(result))
        if len(result) == 1:
            add(client, "Echo")  # writes from inside the callback

    with client.patients.live(None, heard):
        worker = threading.Thread(target=lambda: add(client, "Ada"))
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
    assert calls == [0, 1, 2]
