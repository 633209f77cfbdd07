"""Sync bundles: export, import, convergence through files, and refusal of tampered files.

Every store is a real `EdgeClient` in a temporary folder; every bundle is a real file.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdt import Patient, RecordDocument
from edge_sdk import (
    AccessEvent,
    Argon2Params,
    BundleDecryptError,
    BundleError,
    BundleFormatError,
    BundleInfo,
    BundleSignatureError,
    EdgeClient,
    export_bundle,
    import_bundle,
    read_bundle_info,
)
from edge_sdk import _bundles as bundles  # the format's private constants

FAST = Argon2Params.fast()
SECRET = "bundle passphrase for the ward"
GIVEN, FAMILY, MRN = "Zanzibar", "Okonkwo-Quist", "MRN-77341"
NOTE_TEXT = "Necrotic slough at the heel margin."

Snapshot = Callable[[EdgeClient], dict[str, Any]]
Stores = Callable[..., EdgeClient]


def export(client: EdgeClient, path: Path, **kwargs: Any) -> BundleInfo:
    return export_bundle(client, path, passphrase=SECRET, kdf=FAST, **kwargs)


def populate(client: EdgeClient) -> dict[str, str]:
    """One patient with a wound, an assessment and a note; returns their ids."""
    patient = client.patients.add(
        given_name=GIVEN, family_name=FAMILY, birth_date="1950-03-01", mrn=MRN
    )
    wound = client.wounds.add(patient_id=patient.id, body_site="left heel")
    assessment = client.assessments.add(
        wound_id=wound.id,
        patient_id=patient.id,
        captured_at="2025-01-02T10:00:00+00:00",
        device_id=client.device_id,
        measurements={"area_cm2": 4.5, "max_depth_mm": 3.0},
    )
    note = client.notes.add(patient_id=patient.id, author="Dr Ade", text=NOTE_TEXT)
    return {"patient": patient.id, "wound": wound.id, "assessment": assessment.id, "note": note.id}


def add_notes(client: EdgeClient, count: int) -> list[str]:
    """One patient with `count` short notes; returns the notes' ids."""
    patient = client.patients.add(given_name=GIVEN, family_name=FAMILY, birth_date="1950-03-01")
    return [
        client.notes.add(patient_id=patient.id, author="Dr Ade", text=f"note {n}").id
        for n in range(count)
    ]


def state(client: EdgeClient, snapshot: Snapshot) -> dict[str, Any]:
    """Records, heads, conflicts, and the trust and peer bookkeeping of a store."""
    store = client.replica.store
    return {
        **snapshot(client),
        "trusted": store.execute("SELECT * FROM trusted_signers ORDER BY device_id").fetchall(),
        "peers": store.execute("SELECT * FROM peers ORDER BY peer_id, doc_id").fetchall(),
    }


def trusted_ids(client: EdgeClient) -> list[str]:
    rows = client.replica.store.execute("SELECT device_id FROM trusted_signers").fetchall()
    return sorted(row[0] for row in rows)


def layout(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """End of the header, and (offset, length) of each sealed message, per the format."""
    (header_size,) = struct.unpack_from(">I", data, 9)
    pos = 13 + header_size
    header_end = pos
    frames: list[tuple[int, int]] = []
    while True:
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if length == 0:
            return header_end, frames
        frames.append((pos, length))
        pos += length


def resigned(data: bytes, frames: list[bytes], signer: EdgeClient) -> bytes:
    """The bundle with its messages replaced, validly signed again by `signer`."""
    header_end, _ = layout(data)
    body = data[:header_end]
    for sealed in frames:
        body += struct.pack(">I", len(sealed)) + sealed
    body += struct.pack(">I", 0)
    digest = hashlib.sha256(body).digest()
    return body + signer.identity.sign(bundles._SIGNATURE_CONTEXT + digest)


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


# ----------------------------------------------------------------- round trips


def test_export_everything_copies_every_record(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    ids = populate(a)
    path = tmp_path / "all.bundle"

    info = export(a, path)
    report = import_bundle(b, path, passphrase=SECRET)

    assert info.documents == 4
    assert info.sender_device_id == a.device_id
    assert info.peer_id is None
    assert report.received == set(ids.values())
    assert report.rejected == []
    assert report.messages_received == 1
    assert report.bytes_received == path.stat().st_size
    assert b.patients.get(ids["patient"]) == a.patients.get(ids["patient"])
    assert b.wounds.get(ids["wound"]) == a.wounds.get(ids["wound"])
    assert b.assessments.get(ids["assessment"]) == a.assessments.get(ids["assessment"])
    assert b.notes.get(ids["note"]).text == NOTE_TEXT
    assert snapshot(b) == snapshot(a)
    assert trusted_ids(b) == [a.device_id]


def test_importing_twice_changes_nothing(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    populate(a)
    path = tmp_path / "all.bundle"
    export(a, path)
    import_bundle(b, path, passphrase=SECRET)
    before = state(b, snapshot)

    again = import_bundle(b, path, passphrase=SECRET)

    assert again.received == set()
    assert again.rejected == []
    assert state(b, snapshot) == before


def test_offline_edits_on_both_sides_converge_through_bundles(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    ids = populate(a)
    export(a, tmp_path / "first.bundle", peer_id=b.device_id)
    import_bundle(b, tmp_path / "first.bundle", passphrase=SECRET)

    # Both edit the same note (and other fields) with no connection between them.
    a.notes.edit(ids["note"], NOTE_TEXT + " Dressing changed.")
    a.patients.update(ids["patient"], mrn="MRN-99")
    b.notes.edit(ids["note"], "Home visit. " + NOTE_TEXT)
    b.wounds.update(ids["wound"], status="healing")
    to_b = export(a, tmp_path / "a-to-b.bundle", peer_id=b.device_id)
    to_a = export(b, tmp_path / "b-to-a.bundle", peer_id=a.device_id)
    assert (to_b.documents, to_a.documents) == (2, 2)

    import_bundle(b, tmp_path / "a-to-b.bundle", passphrase=SECRET)
    import_bundle(a, tmp_path / "b-to-a.bundle", passphrase=SECRET)

    assert snapshot(a) == snapshot(b)
    assert a.notes.get(ids["note"]).text == "Home visit. " + NOTE_TEXT + " Dressing changed."
    assert b.patients.get(ids["patient"]).mrn == "MRN-99"
    assert a.wounds.get(ids["wound"]).status == "healing"


def test_export_for_a_peer_carries_only_what_changed(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    ids = populate(a)
    for n in range(3):
        a.patients.add(given_name=f"P{n}", family_name="Extra", birth_date="1970-01-01")
    assert export(a, tmp_path / "1.bundle", peer_id=b.device_id).documents == 7
    import_bundle(b, tmp_path / "1.bundle", passphrase=SECRET)

    # Nothing changed: nothing to send, either way (the import recorded A's heads).
    assert export(a, tmp_path / "2.bundle", peer_id=b.device_id).documents == 0
    assert export(b, tmp_path / "back.bundle", peer_id=a.device_id).documents == 0
    assert import_bundle(b, tmp_path / "2.bundle", passphrase=SECRET).received == set()

    a.patients.update(ids["patient"], given_name="Zara")
    wound = a.wounds.add(patient_id=ids["patient"], body_site="sacrum")
    info = export(a, tmp_path / "3.bundle", peer_id=b.device_id)
    report = import_bundle(b, tmp_path / "3.bundle", passphrase=SECRET)

    assert info.documents == 2
    assert report.received == {ids["patient"], wound.id}
    assert snapshot(b) == snapshot(a)
    # Another peer has been sent nothing yet, and `everything` ignores what B holds.
    assert export(a, tmp_path / "c.bundle", peer_id="another-device").documents == 8
    assert export(a, tmp_path / "all.bundle", peer_id=b.device_id, everything=True).documents == 8


def test_a_bundle_spans_several_messages(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "_MESSAGE_CAP", 2048)
    a, b = tmp_store("a"), tmp_store("b")
    notes = add_notes(a, 12)
    path = tmp_path / "many.bundle"

    export(a, path)
    _, frames = layout(path.read_bytes())
    report = import_bundle(b, path, passphrase=SECRET)

    assert len(frames) > 2
    assert report.messages_received == len(frames)
    assert report.received == set(notes) | {a.notes.get(notes[0]).patient_id}
    assert snapshot(b) == snapshot(a)


def test_a_document_that_fails_validation_does_not_stop_the_others(
    tmp_store: Stores, tmp_path: Path
) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    ids = populate(a)
    foreign = RecordDocument.create(
        Patient,
        {"given_name": "Other", "family_name": "Clinic", "birth_date": "1960-01-01"},
        device_id=a.device_id,
        clinic_id="clinic-2",
    )
    a.replica.store.put_documents([foreign])
    path = tmp_path / "mixed.bundle"
    export(a, path)

    report = import_bundle(b, path, passphrase=SECRET)

    assert [r.doc_id for r in report.rejected] == [foreign.id]
    assert "clinic-2" in report.rejected[0].reason
    assert report.received == set(ids.values())
    assert foreign.id not in b.replica.document_heads()


def test_import_is_audited(tmp_store: Stores, tmp_path: Path) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    ids = populate(a)
    exported: list[AccessEvent] = []
    imported: list[AccessEvent] = []
    a.add_access_listener(exported.append)
    b.add_access_listener(imported.append)
    path = tmp_path / "all.bundle"

    export(a, path)
    import_bundle(b, path, passphrase=SECRET)

    read = {i for e in exported if e.action == "sync-read" for i in e.record_ids}
    written = {i for e in imported if e.action == "sync-write" for i in e.record_ids}
    assert read == written == set(ids.values())
    assert all(e.outcome == "ok" and e.device_id == b.device_id for e in imported)


def test_importing_its_own_bundle_is_harmless(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    a = tmp_store("a")
    populate(a)
    before = state(a, snapshot)
    export(a, tmp_path / "own.bundle")

    report = import_bundle(a, tmp_path / "own.bundle", passphrase=SECRET, trust_new_signer=False)

    assert report.received == set()
    assert state(a, snapshot) == before


def test_read_bundle_info_reports_the_signed_header(tmp_store: Stores, tmp_path: Path) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    populate(a)
    path = tmp_path / "x.bundle"
    written = export(a, path, peer_id=b.device_id)

    info = read_bundle_info(path)

    assert info == written
    assert info.sender_public_key == a.identity.public_key
    assert info.clinic_id == a.clinic_id
    assert info.size_bytes == path.stat().st_size
    assert info.created_at.tzinfo is not None
    path.write_bytes(flip(path.read_bytes(), path.stat().st_size - 1))
    with pytest.raises(BundleSignatureError):
        read_bundle_info(path)


def test_a_bundle_holds_no_patient_data_in_plaintext(tmp_store: Stores, tmp_path: Path) -> None:
    a = tmp_store("a")
    populate(a)
    path = tmp_path / "x.bundle"
    export(a, path)
    data = path.read_bytes()

    for secret in (GIVEN, FAMILY, MRN, NOTE_TEXT[:12], "left heel", SECRET):
        assert secret.encode() not in data
        assert secret.encode("utf-16-le") not in data
    assert path.stat().st_mode & 0o077 == 0


def test_export_replaces_a_file_atomically_and_leaves_no_temporary_file(
    tmp_store: Stores, tmp_path: Path
) -> None:
    a = tmp_store("a")
    populate(a)
    path = tmp_path / "out" / "x.bundle"
    path.parent.mkdir()
    path.write_bytes(b"old contents")

    export(a, path)

    assert read_bundle_info(path).documents == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bundle"]


# ----------------------------------------------------------------- refusals


@pytest.fixture
def pair(tmp_store: Stores, tmp_path: Path) -> tuple[EdgeClient, EdgeClient, Path]:
    """A and B after one exchange (B trusts A); A has changed since; the next bundle."""
    a, b = tmp_store("a"), tmp_store("b")
    ids = populate(a)
    export(a, tmp_path / "first.bundle", peer_id=b.device_id)
    import_bundle(b, tmp_path / "first.bundle", passphrase=SECRET)
    a.notes.edit(ids["note"], NOTE_TEXT + " Reviewed.")
    a.patients.add(given_name="New", family_name="Patient", birth_date="1980-05-05")
    path = tmp_path / "next.bundle"
    export(a, path, peer_id=b.device_id)
    return a, b, path


def _header_digit(data: bytes) -> int:
    return data.index(b'"created_at":"') + len(b'"created_at":"') + 1


def _frame_byte(which: str) -> Callable[[bytes], int]:
    def position(data: bytes) -> int:
        _, frames = layout(data)
        offset, length = frames[0]
        return {"first": offset, "middle": offset + length // 2, "tag": offset + length - 1}[which]

    return position


TAMPERS: dict[str, tuple[Callable[[bytes], bytes], type[BundleError]]] = {
    "magic": (lambda d: flip(d, 0), BundleFormatError),
    "version": (lambda d: d[:8] + b"\x02" + d[9:], BundleFormatError),
    "header length": (lambda d: flip(d, 12), BundleFormatError),
    "header json": (lambda d: flip(d, 13), BundleFormatError),
    "header value": (lambda d: flip(d, _header_digit(d)), BundleSignatureError),
    "ciphertext start": (lambda d: flip(d, _frame_byte("first")(d)), BundleSignatureError),
    "ciphertext middle": (lambda d: flip(d, _frame_byte("middle")(d)), BundleSignatureError),
    "ciphertext tag": (lambda d: flip(d, _frame_byte("tag")(d)), BundleSignatureError),
    "signature first": (lambda d: flip(d, len(d) - 64), BundleSignatureError),
    "signature last": (lambda d: flip(d, len(d) - 1), BundleSignatureError),
    "appended byte": (lambda d: d + b"\x00", BundleFormatError),
    "appended signature": (lambda d: d + d[-64:], BundleFormatError),
    "empty": (lambda d: b"", BundleFormatError),
    "cut in magic": (lambda d: d[:5], BundleFormatError),
    "cut in prefix": (lambda d: d[:11], BundleFormatError),
    "cut in header": (lambda d: d[:40], BundleFormatError),
    "cut before messages": (lambda d: d[: layout(d)[0]], BundleFormatError),
    "cut in message": (lambda d: d[: _frame_byte("middle")(d)], BundleFormatError),
    "cut before end": (lambda d: d[: len(d) - 68], BundleFormatError),
    "cut signature": (lambda d: d[: len(d) - 64], BundleFormatError),
    "cut last byte": (lambda d: d[:-1], BundleFormatError),
    "not a bundle": (lambda d: b"SQLite format 3\x00" + d[16:], BundleFormatError),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_a_tampered_bundle_is_refused_and_stores_nothing(
    name: str, pair: tuple[EdgeClient, EdgeClient, Path], snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b, path = pair
    good = path.read_bytes()
    change, error = TAMPERS[name]
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(change(good))
    before = state(b, snapshot)

    with pytest.raises(error):
        import_bundle(b, bad, passphrase=SECRET)

    assert state(b, snapshot) == before
    # The untouched bundle still imports: the change alone was refused.
    assert import_bundle(b, path, passphrase=SECRET).received
    assert snapshot(b) == snapshot(a)


def test_every_header_byte_is_covered(
    pair: tuple[EdgeClient, EdgeClient, Path], snapshot: Snapshot, tmp_path: Path
) -> None:
    _, b, path = pair
    good = path.read_bytes()
    header_end, _ = layout(good)
    before = state(b, snapshot)
    bad = tmp_path / "bad.bundle"
    for index in range(header_end):
        bad.write_bytes(flip(good, index))
        with pytest.raises((BundleFormatError, BundleSignatureError)):
            import_bundle(b, bad, passphrase=SECRET)
    assert state(b, snapshot) == before


@pytest.mark.parametrize("change", ["swap", "drop last", "drop first", "duplicate"])
def test_messages_resigned_out_of_order_are_refused(
    change: str,
    tmp_store: Stores,
    snapshot: Snapshot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Even the signer cannot reorder, drop or repeat messages unnoticed: the associated
    # data of each message binds its index and whether it is the last.
    monkeypatch.setattr(bundles, "_MESSAGE_CAP", 2048)
    a, b = tmp_store("a"), tmp_store("b")
    add_notes(a, 12)
    path = tmp_path / "many.bundle"
    export(a, path)
    data = path.read_bytes()
    sealed = [data[o : o + n] for o, n in layout(data)[1]]
    reordered = {
        "swap": [sealed[1], sealed[0], *sealed[2:]],
        "drop last": sealed[:-1],
        "drop first": sealed[1:],
        "duplicate": [sealed[0], *sealed],
    }[change]
    path.write_bytes(resigned(data, reordered, a))
    before = state(b, snapshot)

    with pytest.raises(BundleFormatError):
        import_bundle(b, path, passphrase=SECRET)

    assert state(b, snapshot) == before


def test_wrong_passphrase(tmp_store: Stores, snapshot: Snapshot, tmp_path: Path) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    populate(a)
    path = tmp_path / "x.bundle"
    export(a, path)
    before = state(b, snapshot)

    with pytest.raises(BundleDecryptError):
        import_bundle(b, path, passphrase=SECRET + "!")

    assert state(b, snapshot) == before
    assert trusted_ids(b) == []
    assert len(import_bundle(b, path, passphrase=SECRET).received) == 4


def test_another_key_claiming_a_trusted_device_is_refused(
    pair: tuple[EdgeClient, EdgeClient, Path], tmp_store: Any, snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b, _ = pair
    # A forger's store that claims A's device id but holds its own signing key.
    forger = tmp_store("forger")
    forger.replica.store.execute("UPDATE identity SET device_id = ?", (a.device_id,))
    forger.close()
    forger = tmp_store.open("forger")
    assert forger.device_id == a.device_id
    assert forger.identity.public_key != a.identity.public_key
    forger.patients.add(given_name="Fake", family_name="Record", birth_date="1990-01-01")
    path = tmp_path / "forged.bundle"
    export(forger, path)
    assert read_bundle_info(path).sender_device_id == a.device_id  # validly self-signed
    before = state(b, snapshot)

    with pytest.raises(BundleSignatureError, match="different key"):
        import_bundle(b, path, passphrase=SECRET)

    assert state(b, snapshot) == before


def test_an_unknown_signer_can_be_refused(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    populate(a)
    path = tmp_path / "x.bundle"
    export(a, path)
    before = state(b, snapshot)

    with pytest.raises(BundleSignatureError, match="not trusted"):
        import_bundle(b, path, passphrase=SECRET, trust_new_signer=False)

    assert state(b, snapshot) == before
    import_bundle(b, path, passphrase=SECRET)
    # Once trusted, the signer is accepted even when new signers are not.
    a.patients.add(given_name="Later", family_name="Patient", birth_date="1990-01-01")
    export(a, path)
    assert import_bundle(b, path, passphrase=SECRET, trust_new_signer=False).received


def test_a_bundle_from_another_clinic_is_refused(
    tmp_store: Stores, snapshot: Snapshot, tmp_path: Path
) -> None:
    other, b = tmp_store("other", clinic_id="clinic-2"), tmp_store("b")
    populate(other)
    path = tmp_path / "x.bundle"
    export(other, path)
    before = state(b, snapshot)

    with pytest.raises(BundleSignatureError, match="clinic-2"):
        import_bundle(b, path, passphrase=SECRET)

    assert state(b, snapshot) == before
    assert trusted_ids(b) == []
