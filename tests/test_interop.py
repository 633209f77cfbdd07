"""Records and a real JavaScript Automerge (@automerge/automerge, pinned in tests/js).

Node writes record documents (tests/js/records.mjs) that the SDK imports through the
checks a sync merge makes, and reads the documents the SDK exports. Node and the npm
project are installed by `make install` (scripts/system-packages, then ``npm ci`` in
tests/js): missing, these tests fail rather than skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from crdt import (
    COLLECTIONS,
    MergeRejectedError,
    RecordDocument,
    check_new_document,
    record_schema_files,
    record_schemas,
)
from edge_sdk import EdgeClient, MemoryHub, MemoryTransport, RecordNotFoundError
from tests.conftest import CLINIC, StoreFactory

JS_PROJECT = Path(__file__).parent / "js"
SCHEMAS = Path(__file__).parent.parent / "docs" / "schemas"
RECORD = "0190a3b2-0000-7000-8000-000000000001"
WHEN = "2026-12-07T09:00:00+00:00"


def node(*args: str) -> str:
    """Run tests/js/records.mjs; its stdout."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed: run `make install` (scripts/system-packages)")
    if not (JS_PROJECT / "node_modules" / "@automerge" / "automerge").is_dir():
        pytest.fail("tests/js has no node_modules: run `make install` (npm ci in tests/js)")
    done = subprocess.run(
        ["node", "records.mjs", *args],
        cwd=JS_PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def patient_values(device: str, **changes: Any) -> dict[str, Any]:
    """A patient as another implementation writes it, following the published kinds."""
    return {
        "collection": "patients",
        "schema_version": 2,
        "id": RECORD,
        "clinic_id": CLINIC,
        "created_at": WHEN,
        "created_by": device,
        "updated_at": WHEN,
        "updated_by": device,
        "deleted": False,
        "given_name": "Adaeze",
        "family_name": "Okonkwo",
        "birth_date": "1950-03-01",
        "sex": "female",
        "mrn": None,
        "contacts": "[]",
        "emergency_contacts": "[]",
        "insurance": "[]",
        **changes,
    }


def js_write(tmp_path: Path, name: str, spec: dict[str, Any], source: Path | None = None) -> Any:
    """(saved bytes, what node said) of a document node creates or changes."""
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out = tmp_path / f"{name}.automerge"
    args = ("create", str(out)) if source is None else ("update", str(source), str(out))
    said = json.loads(node(*args, str(spec_path)))
    return out.read_bytes(), said


def refusal(client: EdgeClient, data: bytes) -> str:
    report = client.import_documents({RECORD: data})
    assert not report.received
    assert [r.doc_id for r in report.rejected] == [RECORD]
    assert client.replica.store.saved_document(RECORD) is None or report.rejected
    return report.rejected[0].reason


# ------------------------------------------------------------- written by JavaScript
def test_default_javascript_strings_are_refused_naming_the_field(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    device = str(uuid.uuid4())
    # Everything as JavaScript writes a string by default: collaborative text.
    strings = [k for k, v in patient_values(device).items() if isinstance(v, str)]
    everything, _ = js_write(
        tmp_path,
        "default",
        {"device": device, "values": patient_values(device), "sign": True, "text_fields": strings},
    )
    assert refusal(client, everything) == (
        "collection: expected a string scalar, found collaborative text"
    )
    # Only one scalar written as text, the rest right and signed: refused for that field.
    one, _ = js_write(
        tmp_path,
        "one",
        {"device": device, "values": patient_values(device), "sign": True}
        | {"text_fields": ["given_name"]},
    )
    assert refusal(client, one) == (
        "given_name: expected a string scalar, found collaborative text (an Automerge Text object)"
    )
    # A bookkeeping field too, and the sync path says the same (crdt.check_new_document).
    stamped, _ = js_write(
        tmp_path,
        "stamped",
        {"device": device, "values": patient_values(device), "sign": True}
        | {"text_fields": ["updated_by"]},
    )
    with pytest.raises(MergeRejectedError, match="updated_by: expected a string scalar, found"):
        check_new_document(RECORD, stamped, device_id=client.device_id)
    assert client.patients.list() == []


def test_a_number_where_the_schema_says_a_string_is_refused(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    device = str(uuid.uuid4())
    data, _ = js_write(
        tmp_path,
        "version",
        {"device": device, "values": patient_values(device, mrn=7731), "sign": True},
    )
    assert refusal(client, data) == (
        "mrn: expected a string scalar or a null scalar, found an int scalar"
    )


def test_a_record_with_the_right_kinds_signed_by_a_device_is_accepted(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    device = str(uuid.uuid4())
    data, said = js_write(
        tmp_path, "typed", {"device": device, "values": patient_values(device), "sign": True}
    )
    report = client.import_documents([data])
    assert report.rejected == []
    assert report.received == {RECORD}
    patient = client.patients.get(RECORD)
    assert (patient.given_name, patient.birth_date.isoformat(), patient.created_by) == (
        "Adaeze",
        "1950-03-01",
        device,
    )
    # The same device changes it in JavaScript, signing again: merged, and history says
    # who wrote what, each change verified against the key this store now trusts.
    exported = tmp_path / "exported.automerge"
    exported.write_bytes(client.export_document(RECORD))
    later = "2026-12-08T10:00:00+00:00"
    changed, _ = js_write(
        tmp_path,
        "changed",
        {
            "device": device,
            "record": RECORD,
            "values": {"mrn": "MRN-7731", "updated_at": later},
            "sign": True,
            "private_key": said["private_key"],
        },
        source=exported,
    )
    assert client.import_documents({RECORD: changed}).received == {RECORD}
    assert client.patients.get(RECORD).mrn == "MRN-7731"
    history = client.patients.history(RECORD)
    assert [(h.action, h.device_id, h.verified, h.fields) for h in history] == [
        ("created", device, True, history[0].fields),
        ("updated", device, True, ("mrn",)),
    ]
    assert {"given_name", "birth_date"} <= set(history[0].fields)
    assert history[1].at.isoformat() == later
    assert all(h.actor == device.replace("-", "") for h in history)


def test_a_javascript_change_to_a_scalar_as_text_is_refused_by_the_merge(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    patient = client.patients.add(given_name="Ada", family_name="Obi", birth_date="1950-03-01")
    exported = tmp_path / "ours.automerge"
    exported.write_bytes(client.export_document(patient.id))
    device = str(uuid.uuid4())
    changed, _ = js_write(
        tmp_path,
        "as-text",
        {
            "device": device,
            "record": patient.id,
            "values": {"family_name": "Obi-Okafor", "updated_by": device, "updated_at": WHEN},
            "text_fields": ["family_name"],
            "sign": True,
        },
        source=exported,
    )
    report = client.import_documents({patient.id: changed})
    assert [r.reason for r in report.rejected] == [
        "family_name: expected a string scalar, found collaborative text (an Automerge Text object)"
    ]
    assert client.patients.get(patient.id).family_name == "Obi"


def test_an_unsigned_record_is_refused_and_its_actor_is_no_device(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    actor = "5a" * 16  # JavaScript's own random actor, not a device's
    writer = str(uuid.uuid4())
    data, said = js_write(
        tmp_path, "unsigned", {"device": writer, "actor": actor, "values": patient_values(writer)}
    )
    assert said["actor"] == actor
    (reason,) = [r.reason for r in client.import_documents({RECORD: data}).rejected]
    assert reason == f"a change by device {uuid.UUID(actor)} writes created_by = {writer!r}"
    # Read without the checks, its history shows the actor as no device (it names
    # another device as its author, and it signs nothing): never a made-up device id.
    (entry,) = RecordDocument.load(data).history()
    assert (entry.device_id, entry.actor, entry.action) == (None, actor, "created")
    # Naming its own actor as author is not enough: the change must be signed.
    claimed = str(uuid.UUID(actor))
    data, _ = js_write(
        tmp_path,
        "claimed",
        {"device": claimed, "values": patient_values(claimed)},
    )
    (reason,) = [r.reason for r in client.import_documents({RECORD: data}).rejected]
    assert reason.endswith(f"by device {claimed} is not signed by that device")
    assert client.patients.list() == []


def test_a_device_outside_the_hubs_directory_is_refused(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    hub = MemoryHub(name="hub")
    client.sync(
        transport=MemoryTransport(
            hub,
            device_id=client.device_id,
            clinic_id=client.clinic_id,
            public_key=client.identity.public_key,
        )
    )
    device = str(uuid.uuid4())
    data, _ = js_write(
        tmp_path, "stranger", {"device": device, "values": patient_values(device), "sign": True}
    )
    assert refusal(client, data) == f"device {device} is not an enrolled device of clinic {CLINIC}"


# ------------------------------------------------------------- read by JavaScript
def test_javascript_reads_exported_records_and_their_kinds(
    tmp_store: StoreFactory, tmp_path: Path
) -> None:
    client = tmp_store()
    patient = client.patients.add(
        given_name="Adaeze",
        family_name="Okonkwo",
        birth_date="1950-03-01",
        mrn="MRN-7731",
        emergency_contacts=[{"name": "Chidi Okonkwo", "relationship": "son"}],
    )
    note = client.notes.add(patient_id=patient.id, author="Dr Ncube", text="Painful at night")
    exported = client.export_documents([patient.id, note.id])
    assert list(exported) == [patient.id, note.id]
    read: dict[str, Any] = {}
    for record_id, data in exported.items():
        path = tmp_path / f"{record_id}.automerge"
        path.write_bytes(data)
        read[record_id] = json.loads(node("read", str(path)))
    assert read[patient.id]["given_name"] == {"scalar": "Adaeze"}
    assert read[patient.id]["birth_date"] == {"scalar": "1950-03-01"}
    assert read[patient.id]["collection"] == {"scalar": "patients"}
    assert read[patient.id]["schema_version"] == 2
    assert read[patient.id]["deleted"] is False
    assert read[patient.id]["mrn"] == {"scalar": "MRN-7731"}
    assert json.loads(read[patient.id]["contacts"]["scalar"]) == []
    assert json.loads(read[patient.id]["emergency_contacts"]["scalar"]) == [
        {"name": "Chidi Okonkwo", "relationship": "son", "phone": None, "email": None}
    ]
    assert json.loads(read[patient.id]["insurance"]["scalar"]) == []
    assert read[note.id]["text"] == "Painful at night"  # collaborative text: a string
    assert read[note.id]["updated_by"] == {"scalar": client.device_id}


def test_export_of_a_record_not_held_exports_nothing(tmp_store: StoreFactory) -> None:
    client = tmp_store()
    patient = client.patients.add(given_name="Ada", family_name="Obi", birth_date="1950-03-01")
    with pytest.raises(RecordNotFoundError, match="no-such-record"):
        client.export_documents([patient.id, "no-such-record"])


def test_importing_our_own_export_elsewhere_round_trips(tmp_store: StoreFactory) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    patient = a.patients.add(given_name="Ada", family_name="Obi", birth_date="1950-03-01")
    report = b.import_documents([a.export_document(patient.id), b"not automerge"])
    assert report.received == {patient.id}
    assert [r.doc_id for r in report.rejected] == ["#1"]
    assert "not" in report.rejected[0].reason
    assert b.patients.get(patient.id) == a.patients.get(patient.id)


# ------------------------------------------------------------- published schemas
def test_the_published_schemas_match_the_code() -> None:
    files = record_schema_files()
    assert sorted(files) == sorted(f"{name}.schema.json" for name in COLLECTIONS)
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMAS.glob("*.json")}
    assert committed == files, "docs/schemas is stale: run `coherency schema --out docs/schemas`"


def test_the_schemas_say_each_fields_kind() -> None:
    notes = record_schemas()["notes"]
    fields = notes["x-coherency"]["fields"]
    assert fields["text"]["kind"] == "text"
    assert fields["wound_id"] == fields["wound_id"] | {"kind": "scalar", "types": ["str", "null"]}
    assert fields["updated_by"]["bookkeeping"] is True
    assert fields["_auth"]["kind"] == "map"
    assert set(notes["properties"]) == set(fields) - {"collection", "schema_version", "_auth"}
    assessments = record_schemas()["assessments"]["x-coherency"]["fields"]
    assert assessments["measurements"]["kind"] == "json"
    assert "not a timestamp" in assessments["captured_at"]["encoding"]


def test_the_schema_command_writes_what_is_published(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    result = CliRunner().invoke(cli, ["schema", "--out", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "schemas").iterdir()}
    assert written == record_schema_files()
    listed = CliRunner().invoke(cli, ["schema", "--json"])
    assert json.loads(listed.stdout) == json.loads(json.dumps(record_schemas()))
