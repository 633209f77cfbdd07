"""The store under attack or damage: wrong keys, truncation, corruption, key changes, leaks."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from automerge import core as am

from crdt import (
    Entry,
    EntryKind,
    MalformedMessageError,
    SyncMessage,
    SyncProtocolError,
    UnsupportedVersionError,
    actor_for_device,
    encode_message,
    run_in_memory,
)
from edge_sdk import (
    Argon2Params,
    BlobCorruptError,
    EdgeClient,
    KeyFileKeyProvider,
    PassphraseKeyProvider,
    StoreCorruptError,
    WrongKeyError,
)
from edge_sdk._keys import read_keyring, unwrap_data_key
from edge_sdk._store import Store

REPO = Path(__file__).resolve().parents[1]
FAST_KDF = Argon2Params.fast()
PASSPHRASE = "correct horse battery staple"  # the tmp_store default
PAGE = 4096


def provider(passphrase: str) -> PassphraseKeyProvider:
    return PassphraseKeyProvider(passphrase, params=FAST_KDF)


def add_patients(client: EdgeClient, count: int) -> list[str]:
    return [
        client.patients.add(
            given_name=f"Patient{i}", family_name="Okafor" * 20, birth_date="1950-03-01"
        ).id
        for i in range(count)
    ]


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------- keys


def test_wrong_passphrase_is_refused_and_the_store_still_opens_with_the_right_one(
    tmp_store: Any, snapshot: Callable[..., Any]
) -> None:
    client = tmp_store("a")
    add_patients(client, 3)
    before = snapshot(client)
    client.close()
    files = files_of(tmp_store.path("a"))
    for attempt in range(3):
        with pytest.raises(WrongKeyError):
            tmp_store.open("a", passphrase=f"wrong {attempt}")
    with pytest.raises(WrongKeyError):
        EdgeClient.open(tmp_store.path("a"), KeyFileKeyProvider(tmp_store.root / "some.key"))
    assert files_of(tmp_store.path("a")) == files
    with tmp_store.open("a") as reopened:
        assert snapshot(reopened) == before


# Run in a child process: SQLCipher logs from C straight to file descriptor 2, which
# pytest's capture of sys.stderr would not see.
QUIET_WRONG_KEY_SCRIPT = """
import sys
from pathlib import Path

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider, StoreCorruptError
from edge_sdk._keys import create_keyring, write_keyring
from edge_sdk._store import Store

root = Path(sys.argv[1])
provider = PassphraseKeyProvider(sys.argv[2], params=Argon2Params.fast())
try:
    Store.open(root / "coherency.db", bytes(32))
except StoreCorruptError:
    print("refused")
# A rekey cut short before the database moved: open tries the new key on it first.
_, pending = create_keyring(provider, store_id="interrupted-rekey")
write_keyring(root / "keyring.json.next", pending)
with EdgeClient.open(root, provider) as client:
    print(len(client.patients.list()))
"""


def test_a_wrong_database_key_prints_nothing_to_stderr(tmp_store: Any) -> None:
    client = tmp_store("a")
    add_patients(client, 2)
    client.close()
    result = subprocess.run(
        [sys.executable, "-c", QUIET_WRONG_KEY_SCRIPT, str(tmp_store.path("a")), PASSPHRASE],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,  # `-c` puts the working directory first on sys.path
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "refused\n2\n"
    assert result.stderr == ""  # no "hmac check failed" lines from SQLCipher


def test_change_key_rewraps_the_data_key(tmp_store: Any, snapshot: Callable[..., Any]) -> None:
    client = tmp_store("a")
    add_patients(client, 2)
    before = snapshot(client)
    client.change_key(provider("a brand new passphrase"))
    client.close()
    with pytest.raises(WrongKeyError):
        tmp_store.open("a")
    with tmp_store.open("a", passphrase="a brand new passphrase") as reopened:
        assert snapshot(reopened) == before
        reopened.patients.add(given_name="After", family_name="Change", birth_date="2000-01-01")


def test_rekey_re_encrypts_under_a_new_data_key(
    tmp_store: Any, snapshot: Callable[..., Any]
) -> None:
    client = tmp_store("a")
    add_patients(client, 5)
    blob = client.blobs.put_bytes(b"depth map " * 1000)
    root = tmp_store.path("a")
    old_data_key = unwrap_data_key(read_keyring(root / "keyring.json"), provider(PASSPHRASE))
    before = snapshot(client)
    client.rekey(provider("rekeyed passphrase"))
    assert snapshot(client) == before  # usable straight away
    client.patients.add(given_name="After", family_name="Rekey", birth_date="2000-01-01")
    after = snapshot(client)
    client.close()
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "coherency.db", "keyring.json"]
    with pytest.raises(WrongKeyError):
        tmp_store.open("a")
    with pytest.raises(StoreCorruptError):
        Store.open(root / "coherency.db", old_data_key)
    with tmp_store.open("a", passphrase="rekeyed passphrase") as reopened:
        assert snapshot(reopened) == after
        assert reopened.blobs.read_bytes(blob.sha256) == b"depth map " * 1000


# ---------------------------------------------------------------- damage


@pytest.mark.parametrize("size", ["0", "1", "100", "page-1", "page", "half", "all-but-a-page"])
def test_truncated_database_is_refused_and_left_untouched(tmp_store: Any, size: str) -> None:
    client = tmp_store("a")
    add_patients(client, 60)
    client.close()
    db = tmp_store.path("a") / "coherency.db"
    length = db.stat().st_size
    assert length % PAGE == 0 and length >= 8 * PAGE
    keep = {
        "page-1": PAGE - 1,
        "page": PAGE,
        "half": length // 2 // PAGE * PAGE,
        "all-but-a-page": length - PAGE,
    }.get(size) or int(size)
    with open(db, "r+b") as f:
        f.truncate(keep)
    damaged = db.read_bytes()
    for _ in range(2):  # and a second time: the first attempt must not have "repaired" it
        with pytest.raises(StoreCorruptError):
            tmp_store.open("a")
        assert db.read_bytes() == damaged
    assert not (db.parent / "coherency.db-wal").exists() or (
        (db.parent / "coherency.db-wal").stat().st_size == 0
    )


def test_a_damaged_page_is_detected_or_harmless(
    tmp_store: Any, snapshot: Callable[..., Any]
) -> None:
    client = tmp_store("a")
    add_patients(client, 120)  # enough that record pages outnumber empty tables
    expected = snapshot(client)
    client.close()
    root = tmp_store.path("a")
    pristine = (root / "coherency.db").read_bytes()
    detected = 0
    for page in range(len(pristine) // PAGE):
        damaged = bytearray(pristine)
        damaged[page * PAGE + PAGE // 2] ^= 0xFF
        (root / "coherency.db").write_bytes(bytes(damaged))
        try:
            with tmp_store.open("a") as reopened:
                seen = snapshot(reopened)
                for doc_id in reopened.replica.document_heads():
                    reopened.replica.store.get_document(doc_id)
                reopened.verification_status()  # reads the quarantine table
        except StoreCorruptError:
            detected += 1
        else:
            assert seen == expected  # an unused page: nothing read from it
    assert detected > len(pristine) // PAGE // 2


def blob_files(root: Path) -> list[Path]:
    blobs = root / "blobs"
    return [p for p in blobs.rglob("*") if p.is_file() and "tmp" not in p.relative_to(blobs).parts]


@pytest.mark.parametrize("damage", ["flip", "truncate", "append", "swap"])
def test_a_corrupted_blob_is_refused(tmp_store: Any, damage: str) -> None:
    client = tmp_store("a")
    first = client.blobs.put_bytes(os.urandom(3000))
    second = client.blobs.put_bytes(os.urandom(3000))
    paths = {p.name: p for p in blob_files(tmp_store.path("a"))}
    assert len(paths) == 2
    target = next(p for p in paths.values())
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif damage == "truncate":
        target.write_bytes(data[:-10])
    elif damage == "append":
        target.write_bytes(data + b"\x00")
    else:
        other = next(p for p in paths.values() if p != target)
        target.write_bytes(other.read_bytes())
    results = []
    for ref in (first, second):
        try:
            results.append(hashlib.sha256(client.blobs.read_bytes(ref.sha256)).hexdigest())
        except BlobCorruptError:
            results.append("corrupt")
    assert results.count("corrupt") == 1
    assert set(results) - {"corrupt"} <= {first.sha256, second.sha256}


def test_malformed_sync_messages_raise_and_leave_the_store_unchanged(
    tmp_store: Any, snapshot: Callable[..., Any]
) -> None:
    client = tmp_store("a")
    patient_id = add_patients(client, 2)[0]
    before = snapshot(client)
    session = client.sync_session()
    valid = encode_message(SyncMessage({}, (Entry(EntryKind.DOC, "doc-1", b"x"),)))
    bad_version = valid[:4] + bytes([99]) + valid[5:]
    for garbage, error in (
        (b"", MalformedMessageError),
        (b"GET / HTTP/1.1\r\n\r\n", MalformedMessageError),
        (valid[:-1], MalformedMessageError),
        (valid[:-1] + bytes([valid[-1] ^ 1]), MalformedMessageError),
        (bad_version, UnsupportedVersionError),
    ):
        with pytest.raises(error):
            session.receive(garbage)
        assert snapshot(client) == before
    # Well-formed, but carrying a document made invalid by hand: refused, not stored.
    raw = am.Document.load(client.replica.store.saved_document(patient_id))
    raw.set_actor(actor_for_device("00000000-0000-4000-8000-0000000000ff"))
    with raw.transaction() as tx:
        tx.put(am.ROOT, "given_name", am.ScalarType.Int, 5)
    forged = encode_message(SyncMessage({}, (Entry(EntryKind.DOC, patient_id, raw.save()),)))
    session.receive(forged)
    assert snapshot(client) == before
    assert [r.doc_id for r in session.report.rejected] == [patient_id]
    with pytest.raises(SyncProtocolError):
        client.sync_session().receive(b"\x00" * 64)


# ---------------------------------------------------------------- nothing in plaintext

GIVEN = "Zyxwvutsrq"
FAMILY = "Quixotically"
NAME = f"{GIVEN} {FAMILY}"


def needles() -> list[bytes]:
    found = []
    for text in (NAME, GIVEN, FAMILY, NAME.lower(), GIVEN.lower(), FAMILY.lower(), NAME.upper()):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            found.append(text.encode(encoding))
    return found


def leaks(data: bytes) -> list[bytes]:
    return [needle for needle in needles() if needle in data]


def leaking_files(root: Path) -> dict[str, list[bytes]]:
    return {name: leaks(data) for name, data in files_of(root).items() if leaks(data)}


@pytest.fixture
def logs_everything(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_the_leak_check_finds_plaintext(tmp_path: Path) -> None:
    # Guards the test below against passing because it cannot see anything.
    (tmp_path / "plain.txt").write_bytes(NAME.lower().encode("utf-16-le"))
    assert NAME.lower().encode("utf-16-le") in leaking_files(tmp_path)["plain.txt"]


def test_no_patient_data_on_disk_or_in_logs(
    tmp_store: Any, capfd: pytest.CaptureFixture[str], logs_everything: pytest.LogCaptureFixture
) -> None:
    client, peer = tmp_store("a"), tmp_store("peer")
    root = tmp_store.path("a")
    patient = client.patients.add(
        given_name=GIVEN,
        family_name=FAMILY,
        birth_date="1950-03-01",
        mrn=f"MRN-{GIVEN}",
        contacts=[
            {"kind": "email", "value": f"{GIVEN}.{FAMILY}@example.org".lower()},
            {"kind": "next_of_kin", "value": f"Ophelia {FAMILY}", "label": NAME},
        ],
    )
    for i in range(30):  # enough pages that the WAL holds many frames
        client.notes.add(
            patient_id=patient.id, author=f"Dr {FAMILY}", text=f"{NAME} visit {i}: " + "x" * 500
        )
    client.notes.edit(client.notes.list()[0].id, f"{NAME.upper()} ({NAME.lower()})")
    client.patients.update(patient.id, given_name=f"{GIVEN}a")
    client.patients.update(patient.id, given_name=GIVEN)
    client.blobs.put_bytes(f"{NAME}\n".encode() * 2000)
    client.blobs.put_bytes(NAME.encode("utf-16-le") * 100)
    run_in_memory(client.sync_session(), peer.sync_session())
    assert client.patients.search(GIVEN[:4])[0].family_name == FAMILY
    with pytest.raises(StoreCorruptError):  # an error path that makes SQLCipher log
        Store.open(root / "coherency.db", os.urandom(32))

    wal = root / "coherency.db-wal"
    assert wal.exists() and wal.stat().st_size > 0  # the open client's WAL is populated
    assert leaking_files(root) == {}
    assert leaking_files(tmp_store.path("peer")) == {}

    client.close()
    peer.close()
    assert leaking_files(root) == {}
    assert leaking_files(tmp_store.path("peer")) == {}
    out, err = capfd.readouterr()
    assert leaks(out.encode()) == [] and leaks(err.encode()) == []
    assert leaks(logs_everything.text.encode()) == []
