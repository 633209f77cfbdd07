"""The `coherency` command line, end to end against real stores in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from crdt import (
    Availability,
    Catalogue,
    Decision,
    Directory,
    Invoice,
    RecordDocument,
    availability_id,
    catalogue_id,
    decision_id,
    directory_id,
    invoice_record_id,
    run_in_memory,
)
from edge_sdk import Argon2Params, EdgeClient, MemoryHub, MemoryTransport, PassphraseKeyProvider

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = "correct horse battery staple"
CLINIC = "clinic-1"


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2 for new keyrings, a passphrase, and nothing from the caller's shell."""
    for name in list(os.environ):
        if name.startswith("COHERENCY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COHERENCY_KDF", "fast")
    monkeypatch.setenv("COHERENCY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("COHERENCY_BUNDLE_PASSPHRASE", "bundle passphrase")


def run(store: Path, *args: str, input: str | None = None, **env: str | None) -> Result:
    """`coherency --store STORE ARGS...`; never raises, whatever the command does."""
    return CliRunner().invoke(cli, ["--store", str(store), *args], input=input, env=env)


def ok(store: Path, *args: str, input: str | None = None, **env: str | None) -> Any:
    """Run a command with ``--json``, check it succeeded, and return its parsed output."""
    result = run(store, *args, "--json", input=input, **env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def failed(result: Result, code: int) -> str:
    """Check `result` failed with `code` and one ``error:`` line; return that line."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An initialised store."""
    path = tmp_path / "store"
    ok(path, "init", "--clinic", CLINIC)
    return path


@pytest.fixture
def patient(store: Path) -> dict[str, Any]:
    """One patient in `store`, as `patients add --json` printed it."""
    added: dict[str, Any] = ok(
        store,
        *("patients", "add", "--given", "Ada", "--family", "Okafor"),
        *("--birth-date", "1950-03-01", "--mrn", "MRN-1"),
    )
    return added


def open_client(path: Path) -> EdgeClient:
    return EdgeClient.open(path, PassphraseKeyProvider(PASSPHRASE, params=Argon2Params.fast()))


# ------------------------------------------------------------------------------ init
def test_init_creates_a_store_once(tmp_path: Path) -> None:
    path = tmp_path / "s"
    info = ok(path, "init", "--clinic", CLINIC)
    assert info["clinic_id"] == CLINIC
    assert info["store"] == str(path)
    with open_client(path) as client:
        assert client.device_id == info["device_id"]

    line = failed(run(path, "init", "--clinic", CLINIC), 5)
    assert "already exists" in line


def test_init_asks_for_the_passphrase_twice(tmp_path: Path) -> None:
    path = tmp_path / "s"
    no_env = {"COHERENCY_PASSPHRASE": None}
    result = run(path, "init", "--clinic", CLINIC, input="typo\nother\nsecret\nsecret\n", **no_env)
    assert result.exit_code == 0, result.output
    assert "do not match" in result.stderr
    assert result.stdout.startswith("created store")

    assert ok(path, "patients", "list", COHERENCY_PASSPHRASE="secret") == []
    assert run(path, "patients", "list", input="secret\n", **no_env).exit_code == 0
    wrong = run(path, "patients", "list", input="wrong\n", **no_env)
    assert wrong.exit_code == 3
    assert wrong.stderr.splitlines() == [
        "Store passphrase: ",
        "error: the passphrase or key does not open this store",
    ]
    unanswered = run(tmp_path / "t", "init", "--clinic", CLINIC, input="", **no_env)
    assert unanswered.exit_code == 2
    assert unanswered.stderr.splitlines()[-1].startswith("error: no passphrase given")


def test_a_store_made_without_a_clinic_gets_it_from_enrolment(tmp_path: Path) -> None:
    made = ok(tmp_path / "s", "init")
    assert made["clinic_id"] == ""
    # Until enrolled, a write says what to do (and writes nothing).
    line = failed(
        run(
            tmp_path / "s",
            "patients",
            "add",
            "--given",
            "A",
            "--family",
            "B",
            "--birth-date",
            "1950-01-01",
        ),
        4,
    )
    assert "enrol it with a server first" in line
    assert ok(tmp_path / "s", "patients", "list") == []


def test_a_key_file_store_opens_only_with_its_key_file(tmp_path: Path) -> None:
    path, key = tmp_path / "s", tmp_path / "box.key"
    ok(path, "--key-file", str(key), "init", "--clinic", CLINIC, COHERENCY_PASSPHRASE=None)
    assert key.stat().st_size == 32
    assert ok(path, "--key-file", str(key), "patients", "list") == []
    # No prompt: the store says which kind of key it wants before any is asked for.
    line = failed(run(path, "patients", "list", COHERENCY_PASSPHRASE=None), 3)
    assert "keyfile" in line


def test_an_unknown_kdf_setting_is_a_usage_error(tmp_path: Path) -> None:
    line = failed(run(tmp_path / "s", "init", "--clinic", CLINIC, COHERENCY_KDF="slow"), 2)
    assert "COHERENCY_KDF" in line


# -------------------------------------------------------------------------- patients
def test_patients_add_show_list_round_trip(store: Path, patient: dict[str, Any]) -> None:
    assert patient["given_name"] == "Ada"
    assert patient["birth_date"] == "1950-03-01"
    assert patient["sex"] == "unknown"
    assert patient["clinic_id"] == CLINIC
    assert ok(store, "patients", "show", patient["id"]) == patient
    assert ok(store, "patients", "list") == [patient]
    assert ok(store, "patients", "list", "--mrn", "MRN-1") == [patient]
    assert ok(store, "patients", "list", "--mrn", "MRN-2") == []
    assert ok(store, "patients", "list", "--name", "oka") == [patient]
    assert ok(store, "patients", "list", "--name", "zed") == []


def test_patients_list_limit_and_human_table(store: Path) -> None:
    for given in ("Ada", "Bea", "Cy"):
        ok(
            store,
            "patients",
            "add",
            "--given",
            given,
            "--family",
            "Lee",
            "--birth-date",
            "1960-01-01",
        )
    assert [p["given_name"] for p in ok(store, "patients", "list", "--limit", "2")] == [
        "Ada",
        "Bea",
    ]
    assert len(ok(store, "patients", "list", "--name", "lee", "--limit", "1")) == 1

    wide = run(store, "patients", "list", COLUMNS="120")
    assert wide.exit_code == 0
    assert wide.stdout.splitlines()[0].split() == ["id", "name", "born", "sex", "mrn"]
    assert "Lee, Bea" in wide.stdout
    narrow = run(store, "patients", "list", COLUMNS="40")
    assert "  name: Lee, Cy" in narrow.stdout.splitlines()
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 40

    failed(run(store, "patients", "list", "--name", "a", "--mrn", "b"), 2)


def test_patients_add_with_sex_and_contacts(store: Path) -> None:
    added = ok(
        store,
        *("patients", "add", "--given", "Bo", "--family", "Li", "--birth-date", "1970-05-05"),
        *("--sex", "female", "--contact", "phone=+44 20 7946 0000", "--contact", "email=bo@x.org"),
    )
    assert added["sex"] == "female"
    assert added["contacts"] == [
        {"kind": "phone", "value": "+44 20 7946 0000", "label": None},
        {"kind": "email", "value": "bo@x.org", "label": None},
    ]
    shown = run(store, "patients", "show", added["id"])
    assert "  - kind=phone, value=+44 20 7946 0000" in shown.stdout.splitlines()

    base = ("patients", "add", "--given", "X", "--family", "Y", "--birth-date", "1970-05-05")
    assert "KIND=VALUE" in failed(run(store, *base, "--contact", "phone"), 2)
    assert "contacts" in failed(run(store, *base, "--contact", "fax=1"), 5)
    assert "--sex" in failed(run(store, *base, "--sex", "robot"), 2)


def test_patients_update_changes_only_the_fields_given(
    store: Path, patient: dict[str, Any]
) -> None:
    pid = patient["id"]
    updated = ok(store, "patients", "update", pid, "--given", "Adaeze", "--contact", "phone=1")
    assert updated["given_name"] == "Adaeze"
    assert updated["contacts"] == [{"kind": "phone", "value": "1", "label": None}]
    assert {
        k: v for k, v in updated.items() if k not in ("given_name", "contacts", "updated_at")
    } == {k: v for k, v in patient.items() if k not in ("given_name", "contacts", "updated_at")}
    cleared = ok(store, "patients", "update", pid, "--clear-mrn", "--clear-contacts")
    assert cleared["mrn"] is None
    assert cleared["contacts"] == []
    assert ok(store, "patients", "show", pid) == cleared

    assert "nothing to change" in failed(run(store, "patients", "update", pid), 2)
    failed(run(store, "patients", "update", pid, "--mrn", "A", "--clear-mrn"), 2)
    failed(run(store, "patients", "update", "no-such-id", "--given", "X"), 4)


def test_patients_delete_and_restore(store: Path, patient: dict[str, Any]) -> None:
    pid = patient["id"]
    assert ok(store, "patients", "delete", pid)["deleted"] is True
    assert ok(store, "patients", "list") == []
    (listed,) = ok(store, "patients", "list", "--include-deleted")
    assert listed["id"] == pid and listed["deleted"] is True
    assert ok(store, "patients", "show", pid)["deleted"] is True
    assert run(store, "patients", "delete", pid).stdout == f"deleted patient {pid}\n"
    assert ok(store, "patients", "restore", pid)["deleted"] is False
    assert [p["id"] for p in ok(store, "patients", "list")] == [pid]


def test_a_bad_birth_date_is_a_validation_error_naming_the_field(store: Path) -> None:
    result = run(
        store, "patients", "add", "--given", "A", "--family", "B", "--birth-date", "1950-13-01"
    )
    assert "birth_date" in failed(result, 5)
    future = run(
        store, "patients", "add", "--given", "A", "--family", "B", "--birth-date", "2999-01-01"
    )
    assert "birth date is in the future" in failed(future, 5)
    assert ok(store, "patients", "list") == []


def test_patients_show_of_an_unknown_id_is_not_found(store: Path) -> None:
    assert "no-such-id" in failed(run(store, "patients", "show", "no-such-id"), 4)


# ---------------------------------------------------------------------------- wounds
def test_wounds_add_list_show(store: Path, patient: dict[str, Any]) -> None:
    pid = patient["id"]
    wound = ok(
        store,
        *("wounds", "add", "--patient", pid, "--site", "left heel"),
        *("--etiology", "pressure", "--onset", "2024-01-02"),
    )
    assert (wound["patient_id"], wound["body_site"], wound["etiology"]) == (
        pid,
        "left heel",
        "pressure",
    )
    assert wound["status"] == "active"
    assert wound["onset"] == "2024-01-02"
    someone_else = ok(
        store,
        *("patients", "add", "--given", "Bea", "--family", "Mensah"),
        *("--birth-date", "1961-07-12"),
    )
    other = ok(store, "wounds", "add", "--patient", someone_else["id"], "--site", "sacrum")

    assert ok(store, "wounds", "show", wound["id"]) == wound
    assert ok(store, "wounds", "list") == [wound, other]
    assert ok(store, "wounds", "list", "--patient", pid) == [wound]
    assert ok(store, "wounds", "list", "--status", "healed") == []
    assert "left heel" in run(store, "wounds", "list", "--patient", pid).stdout

    assert "--etiology" in failed(
        run(store, "wounds", "add", "--patient", pid, "--site", "x", "--etiology", "bite"), 2
    )
    assert "onset" in failed(
        run(store, "wounds", "add", "--patient", pid, "--site", "x", "--onset", "yesterday"), 5
    )
    failed(run(store, "wounds", "show", patient["id"]), 4)  # a patient is not a wound
    # A wound needs a patient this store holds.
    unknown = run(store, "wounds", "add", "--patient", "someone-else", "--site", "sacrum")
    assert "patient_id" in failed(unknown, 5)
    assert ok(store, "wounds", "list") == [wound, other]


def test_assessments_list_and_show(store: Path, patient: dict[str, Any]) -> None:
    wound = ok(store, "wounds", "add", "--patient", patient["id"], "--site", "left heel")
    other = ok(store, "wounds", "add", "--patient", patient["id"], "--site", "sacrum")
    with open_client(store) as client:
        made = [
            client.assessments.add(
                wound_id=wound_id,
                patient_id=patient["id"],
                captured_at=f"2024-01-0{day}T09:30:00+00:00",
                device_id=client.device_id,
                measurements={"area_cm2": area},
            ).id
            for wound_id, day, area in ((wound["id"], 1, 6.4), (other["id"], 2, 2.5))
        ]
    listed = ok(store, "assessments", "list")
    assert [a["id"] for a in listed] == made
    assert [a["id"] for a in ok(store, "assessments", "list", "--wound", other["id"])] == made[1:]
    assert len(ok(store, "assessments", "list", "--patient", patient["id"], "--limit", "1")) == 1
    shown = ok(store, "assessments", "show", made[0])
    assert shown == listed[0] and shown["measurements"]["area_cm2"] == 6.4
    assert "6.4" in run(store, "assessments", "list").stdout
    failed(run(store, "assessments", "show", wound["id"]), 4)  # a wound is not an assessment


def test_list_commands_print_spreadsheet_safe_csv(store: Path, patient: dict[str, Any]) -> None:
    import csv
    import io

    risky = ok(store, "patients", "add", "--given", "=HYPERLINK(\"x\")", "--family",
               "O'Neil, Jr", "--birth-date", "1960-01-01")  # fmt: skip
    wound = ok(store, "wounds", "add", "--patient", patient["id"], "--site", "-left heel")
    with open_client(store) as client:
        scan = client.assessments.add(
            wound_id=wound["id"],
            patient_id=patient["id"],
            captured_at="2024-01-01T09:30:00+00:00",
            device_id=client.device_id,
            measurements={"area_cm2": 6.4, "max_depth_mm": 3.0},
            model_output={"model_id": "m", "model_version": "1",
                          "tissue_composition": {"granulation": 80.0, "slough": 20.0}},
        )  # fmt: skip
    ok(store, "notes", "add", "--patient", patient["id"], "--author", "RN", "--text", "@mention, x")

    def rows(*args: str) -> list[dict[str, str]]:
        result = run(store, *args, "--csv")
        assert result.exit_code == 0, result.output
        return list(csv.DictReader(io.StringIO(result.stdout)))

    people = {row["id"]: row for row in rows("patients", "list")}
    assert people[risky["id"]]["given_name"] == '\'=HYPERLINK("x")'
    assert people[risky["id"]]["family_name"] == "O'Neil, Jr"
    assert rows("wounds", "list")[0]["body_site"] == "'-left heel"
    [assessed] = rows("assessments", "list")
    assert assessed["id"] == scan.id
    assert assessed["measurements.area_cm2"] == "6.4"
    assert assessed["measurements.max_depth_mm"] == "3.0"
    assert json.loads(assessed["model_output.tissue_composition"]) == {
        "granulation": 80.0, "slough": 20.0,
    }  # fmt: skip
    assert rows("notes", "list")[0]["text"] == "'@mention, x"
    empty = run(store, "wounds", "list", "--status", "healed", "--csv")
    assert empty.stdout.startswith("id,clinic_id,") and len(empty.stdout.splitlines()) == 1
    for command in (("appointments",), ("orders",), ("payments",), ("invoices",), ("visits",)):
        assert run(store, *command, "list", "--csv").exit_code == 0, command
    both = run(store, "patients", "list", "--csv", "--json")
    assert both.exit_code == 2 and "not both" in both.output


# ----------------------------------------------------------------------------- notes
def test_notes_add_from_text_file_and_stdin(
    tmp_path: Path, store: Path, patient: dict[str, Any]
) -> None:
    pid = patient["id"]
    base = ("notes", "add", "--patient", pid, "--author", "RN Patel")
    by_text = ok(store, *base, "--text", "Moist granulation.")
    assert (by_text["text"], by_text["author"], by_text["wound_id"]) == (
        "Moist granulation.",
        "RN Patel",
        None,
    )
    file = tmp_path / "note.txt"
    file.write_text("Line one.\nLine två.\n", encoding="utf-8")
    assert ok(store, *base, "--file", str(file))["text"] == "Line one.\nLine två.\n"
    assert ok(store, *base, input="From stdin.")["text"] == "From stdin."

    assert ok(store, "notes", "show", by_text["id"]) == by_text
    shown = run(store, "notes", "show", by_text["id"]).stdout
    assert shown.endswith("\nMoist granulation.\n")
    assert len(ok(store, "notes", "list", "--patient", pid)) == 3
    failed(run(store, *base, "--text", "a", "--file", str(file)), 2)


def test_notes_edit(tmp_path: Path, store: Path, patient: dict[str, Any]) -> None:
    note = ok(store, "notes", "add", "--patient", patient["id"], "--author", "A", "--text", "abc")
    edited = ok(store, "notes", "edit", note["id"], "--text", "abXc")
    assert edited["text"] == "abXc"
    file = tmp_path / "new.txt"
    file.write_text("from a file", encoding="utf-8")
    assert ok(store, "notes", "edit", note["id"], "--file", str(file))["text"] == "from a file"
    assert ok(store, "notes", "show", note["id"])["text"] == "from a file"
    failed(run(store, "notes", "edit", note["id"]), 2)
    failed(run(store, "notes", "edit", "no-such-note", "--text", "x"), 4)


def test_notes_edits_on_two_stores_both_survive_a_bundle_exchange(
    tmp_path: Path, store: Path, patient: dict[str, Any]
) -> None:
    other = tmp_path / "other"
    ok(other, "init", "--clinic", CLINIC)
    note = ok(
        store, "notes", "add", "--patient", patient["id"], "--author", "A", "--text", "Heel wound."
    )
    bundle = tmp_path / "first.bundle"
    info = ok(store, "sync", "export", "--to", str(bundle), "--all")
    assert info["documents"] == 2
    report = ok(other, "sync", "import", str(bundle))
    assert sorted(report["received"]) == sorted([patient["id"], note["id"]])
    assert report["rejected"] == []

    ok(store, "notes", "edit", note["id"], "--text", "Day 1. Heel wound.")
    ok(other, "notes", "edit", note["id"], "--text", "Heel wound. Review in 2 days.")

    for source, target in ((store, other), (other, store)):
        path = tmp_path / f"{source.name}-to-{target.name}.bundle"
        ok(source, "sync", "export", "--to", str(path), "--all")
        ok(target, "sync", "import", str(path))
    expected = "Day 1. Heel wound. Review in 2 days."
    assert ok(store, "notes", "show", note["id"])["text"] == expected
    assert ok(other, "notes", "show", note["id"]) == ok(store, "notes", "show", note["id"])


def test_sync_bundle_errors(tmp_path: Path, store: Path, patient: dict[str, Any]) -> None:
    bundle = tmp_path / "b.bundle"
    human = run(store, "sync", "export", "--to", str(bundle))
    assert human.exit_code == 0, human.output
    assert human.stdout == f"exported 1 record to {bundle}\n"
    info = ok(store, "sync", "info", str(bundle), COHERENCY_PASSPHRASE=None)
    assert (info["documents"], info["clinic_id"]) == (1, CLINIC)
    assert info["sender_device_id"] == patient["created_by"]
    assert "documents: 1" in run(store, "sync", "info", str(bundle)).stdout.splitlines()
    line = failed(
        run(store, "sync", "import", str(bundle), "--bundle-passphrase", "not the one"), 3
    )
    assert "passphrase" in line
    garbage = tmp_path / "garbage.bundle"
    garbage.write_bytes(b"not a bundle at all")
    failed(run(store, "sync", "import", str(garbage)), 6)
    failed(run(store, "sync", "info", str(garbage)), 6)
    failed(run(store, "sync", "import", str(tmp_path / "absent.bundle")), 2)


# ------------------------------------------------------------------------- conflicts
def test_conflicts_list_and_resolve(tmp_path: Path, store: Path, patient: dict[str, Any]) -> None:
    other = tmp_path / "other"
    ok(other, "init", "--clinic", CLINIC)

    def sync_stores() -> None:
        with open_client(store) as a, open_client(other) as b:
            run_in_memory(a.sync_session(), b.sync_session())

    sync_stores()
    pid = patient["id"]
    ok(store, "patients", "update", pid, "--given", "Adaeze", "--mrn", "0041", "--family", "Ok")
    ok(other, "patients", "update", pid, "--given", "Ava", "--mrn", "0042")
    sync_stores()

    found = ok(store, "conflicts")
    assert ok(other, "conflicts") == found
    assert [(c["record_id"], c["collection"], c["field"]) for c in found] == [
        (pid, "patients", "given_name"),
        (pid, "patients", "mrn"),
    ]
    given = found[0]["values"]
    assert sorted(v["value"] for v in given) == ["Adaeze", "Ava"]
    assert sum(v["current"] for v in given) == 1
    assert len({v["device_id"] for v in given}) == 2
    human = run(store, "conflicts").stdout
    assert f"patients {pid} given_name:" in human
    assert '"Ava"' in human and '"Adaeze"' in human

    # VALUE is JSON when it parses ("0042" is the string, not the number) ...
    assert ok(store, "conflicts", "resolve", pid, "mrn", '"0042"')["mrn"] == "0042"
    # ... and a plain string otherwise.
    assert ok(store, "conflicts", "resolve", pid, "given_name", "Ada")["given_name"] == "Ada"
    assert ok(store, "patients", "show", pid)["family_name"] == "Ok"  # not in conflict
    assert ok(store, "conflicts") == []
    assert "no conflicts" in run(store, "conflicts").stderr
    sync_stores()
    assert ok(other, "conflicts") == []
    assert ok(other, "patients", "show", pid)["given_name"] == "Ada"

    failed(run(store, "conflicts", "resolve", pid, "given_name", "X"), 5)
    failed(run(store, "conflicts", "resolve", "no-such-id", "given_name", "X"), 4)


# --------------------------------------------------------------------------- history
def test_history_lists_each_change(store: Path, patient: dict[str, Any]) -> None:
    pid = patient["id"]
    ok(store, "patients", "update", pid, "--given", "Adaeze")
    ok(store, "patients", "delete", pid)
    entries = ok(store, "history", pid)
    assert [e["action"] for e in entries] == ["created", "updated", "deleted"]
    assert entries[1]["fields"] == ["given_name"]
    assert {e["device_id"] for e in entries} == {patient["created_by"]}
    assert "given_name" in run(store, "history", pid).stdout
    failed(run(store, "history", "no-such-id"), 4)


# ------------------------------------------------------------------------------- key
def test_key_change_and_rekey(tmp_path: Path, store: Path, patient: dict[str, Any]) -> None:
    done = ok(store, "key", "change", COHERENCY_NEW_PASSPHRASE="second passphrase")
    assert done["provider"] == "passphrase"
    failed(run(store, "patients", "list"), 3)
    assert ok(store, "patients", "list", COHERENCY_PASSPHRASE="second passphrase") == [patient]

    ok(
        store,
        *("key", "rekey"),
        COHERENCY_PASSPHRASE="second passphrase",
        COHERENCY_NEW_PASSPHRASE="third passphrase",
    )
    assert ok(store, "patients", "list", COHERENCY_PASSPHRASE="third passphrase") == [patient]

    key = tmp_path / "box.key"
    result = run(
        store, "key", "change", "--new-key-file", str(key), COHERENCY_PASSPHRASE="third passphrase"
    )
    assert result.exit_code == 0, result.output
    assert ok(store, "--key-file", str(key), "patients", "list") == [patient]


def test_key_change_prompts_for_the_new_passphrase_twice(store: Path) -> None:
    result = run(store, "key", "change", input="new one\nnew one\n")
    assert result.exit_code == 0, result.output
    assert ok(store, "patients", "list", COHERENCY_PASSPHRASE="new one") == []


# ---------------------------------------------------------------------------- errors
def test_wrong_passphrase_is_one_line_and_exit_3(store: Path) -> None:
    line = failed(run(store, "patients", "list", COHERENCY_PASSPHRASE="wrong"), 3)
    assert "does not open this store" in line


def test_wrong_passphrase_through_the_entry_point_shows_no_traceback(store: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COHERENCY_STORE": str(store),
        "COHERENCY_PASSPHRASE": "wrong",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "patients", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.startswith("error: ")
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_a_missing_store_is_reported_without_asking_for_a_passphrase(tmp_path: Path) -> None:
    result = run(tmp_path / "absent", "patients", "list", COHERENCY_PASSPHRASE=None)
    line = failed(result, 4)
    assert "no Coherency store" in line
    assert "coherency init" in line
    assert "passphrase" not in result.output.lower()


def test_store_from_the_environment(tmp_path: Path, store: Path) -> None:
    result = CliRunner().invoke(
        cli, ["patients", "list", "--json"], env={"COHERENCY_STORE": str(store)}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_a_corrupt_store_is_exit_6(store: Path) -> None:
    (store / "coherency.db").write_bytes(b"\0" * 8192)
    failed(run(store, "patients", "list"), 6)


def test_usage_errors_are_one_line_exit_2(store: Path) -> None:
    assert "frobnicate" in failed(run(store, "patients", "frobnicate"), 2)
    line = failed(run(store, "patients", "add", "--given", "A"), 2)
    assert "--family" in line
    assert "coherency patients add --help" in line
    failed(run(store, "patients", "list", "--limit", "0"), 2)


def test_an_unexpected_error_is_one_line_with_a_debug_hint(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: EdgeClient) -> list[Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(EdgeClient, "conflicts", broken)
    line = failed(run(store, "conflicts"), 1)
    assert "unexpected RuntimeError: disk on fire" in line
    assert "--debug" in line

    debug = run(store, "--debug", "conflicts")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1] == "error: unexpected RuntimeError: disk on fire"


# --------------------------------------------------------------------- bookings
def serve(store: Path, hub: MemoryHub, *made: tuple[type[Any], str, dict[str, Any]]) -> None:
    """Sync `store` with `hub`, have the hub write server records, and sync again: what
    `coherency sync` against a server that decides in the push amounts to."""
    with open_client(store) as client:
        link = MemoryTransport(
            hub,
            device_id=client.device_id,
            clinic_id=client.clinic_id,
            public_key=client.identity.public_key,
        )
        client.sync(transport=link)
        documents = [
            RecordDocument.create(
                schema,
                values,
                device_id=hub.server_device_id,
                clinic_id=CLINIC,
                record_id=record_id,
            )
            for schema, record_id, values in made
        ]
        hub.write_documents(CLINIC, documents)
        client.sync(transport=link)


def test_appointments_request_list_and_decisions(store: Path, patient: dict[str, Any]) -> None:
    hub = MemoryHub()
    at = "2026-12-07T09:00:00+01:00"
    asked = ok(
        store,
        *("appointments", "request", "--patient", patient["id"]),
        *("--service", "wound-review", "--at", at, "--provider", "dr-osei"),
    )
    assert asked["state"] == "pending" and asked["decision"] is None
    assert asked["intent"]["kind"] == "appointment.request"
    assert asked["intent"]["details"]["starts_at"] == at
    human = run(store, "appointments", "list")
    assert asked["intent"]["id"] in human.stdout and "pending" in human.stdout

    booked = {"booking_id": "booking-1", "provider_id": "dr-osei", "starts_at": at}
    serve(
        store,
        hub,
        (
            Decision,
            decision_id(asked["intent"]["id"]),
            {
                "intent_id": asked["intent"]["id"],
                "status": "accepted",
                "reason": "booked with Dr Osei",
                "outcome": booked,
            },
        ),
    )
    (listed,) = ok(store, "appointments", "list", "--state", "accepted")
    assert listed["decision"]["outcome"] == booked
    assert ok(store, "appointments", "list", "--state", "pending") == []
    human = run(store, "appointments", "list")
    assert "accepted" in human.stdout and "booking-1" in human.stdout

    moved = ok(
        store,
        *("appointments", "reschedule", "booking-1", "--at", "2026-12-08T10:00+01:00"),
    )
    assert moved["intent"]["subject_id"] == "booking-1"
    assert moved["intent"]["patient_id"] == patient["id"]  # known from the booking
    cancel = run(store, "appointments", "cancel", "booking-1", "--reason", "better now")
    assert cancel.exit_code == 0, cancel.output
    assert "appointment.cancel" in cancel.stdout and "pending" in cancel.stdout
    kinds = [s["intent"]["kind"] for s in ok(store, "appointments", "list")]
    assert kinds == ["appointment.request", "appointment.reschedule", "appointment.cancel"]

    # The server's rejection shows its reason and the alternative it offered.
    serve(
        store,
        hub,
        (
            Decision,
            decision_id(moved["intent"]["id"]),
            {
                "intent_id": moved["intent"]["id"],
                "status": "rejected",
                "reason": "Dr Osei is away on Tuesday",
                "alternative": {**booked, "starts_at": "2026-12-09T10:00:00+01:00"},
            },
        ),
    )
    (rejected,) = ok(store, "appointments", "list", "--state", "rejected")
    assert rejected["decision"]["alternative"]["starts_at"] == "2026-12-09T10:00:00+01:00"
    assert "Dr Osei is away on Tuesday" in run(store, "appointments", "list").stdout


def test_appointment_times_need_their_offset(store: Path, patient: dict[str, Any]) -> None:
    base = ("appointments", "request", "--patient", patient["id"], "--service", "x")
    assert "UTC offset" in failed(run(store, *base, "--at", "2026-12-07T09:00"), 5)
    assert "--at" in failed(run(store, *base, "--at", "Monday"), 2)
    assert "patient_id" in failed(
        run(
            store,
            "appointments",
            "request",
            "--patient",
            "p-9",
            "--service",
            "x",
            "--at",
            "2026-12-07T09:00+01:00",
        ),
        5,
    )
    assert ok(store, "appointments", "list") == []


def test_appointments_slots_as_synced_down(store: Path) -> None:
    assert ok(store, "appointments", "slots") == []
    assert "no free slots" in run(store, "appointments", "slots").stderr
    generated = "2026-12-04T07:00:00+01:00"
    serve(
        store,
        MemoryHub(),
        (
            Directory,
            directory_id(CLINIC),
            {
                "generated_at": generated,
                "providers": [{"id": "dr-osei", "name": "Dr Osei", "kind": "doctor"}],
            },
        ),
        (
            Availability,
            availability_id(CLINIC, date(2026, 12, 7)),
            {
                "day": "2026-12-07",
                "timezone": "Europe/Berlin",
                "generated_at": generated,
                "slots": [
                    {
                        "provider_id": "dr-osei",
                        "service": "wound-review",
                        "starts_at": "2026-12-07T09:00:00+01:00",
                        "ends_at": "2026-12-07T09:30:00+01:00",
                    }
                ],
            },
        ),
    )
    (day,) = ok(store, "appointments", "slots", "--day", "2026-12-07")
    assert day["generated_at"] == generated and len(day["slots"]) == 1
    human = run(store, "appointments", "slots")
    assert "Dr Osei" in human.stdout and "09:00" in human.stdout
    assert "as of 2026-12-04T07:00:00+01:00" in human.stdout
    assert ok(store, "appointments", "slots", "--service", "dressing")[0]["slots"] == []
    assert "--day" in failed(run(store, "appointments", "slots", "--day", "soon"), 2)


def test_visits_request_review_list(store: Path, patient: dict[str, Any]) -> None:
    asked = ok(
        store,
        *("visits", "request", "--patient", patient["id"], "--skill", "compression"),
        *("--area", "north", "--at", "2026-12-07T09:00+01:00", "--minutes", "45"),
        *("--language", "yo"),
    )
    assert asked["state"] == "pending"
    assert asked["intent"]["details"]["duration_minutes"] == 45
    review = ok(store, "visits", "review", "visit-1", "--rating", "4", "--comment", "on time")
    assert review["intent"]["details"] == {"rating": 4, "comment": "on time"}
    assert "--rating" in failed(run(store, "visits", "review", "visit-1", "--rating", "6"), 2)
    listed = ok(store, "visits", "list")
    assert [s["intent"]["kind"] for s in listed] == ["visit.request", "visit.review"]
    assert ok(store, "visits", "list", "--state", "accepted") == []
    assert ok(store, "appointments", "list") == []
    human = run(store, "visits", "list")
    assert "visit.review" in human.stdout


# --------------------------------------------------------------------- orders, payments
CATALOGUE = {
    "generated_at": "2026-12-04T07:00:00+01:00",
    "products": [
        {
            "id": "prod-foam-10",
            "sku": "FOAM-10X10",
            "name": "Foam dressing 10x10 cm",
            "category": "dressing",
            "product_class": "foam dressing",
            "unit": "box of 10",
            "price": 2450,
            "currency": "EUR",
            "prescription_required": True,
            "available": 12,
        },
        {
            "id": "prod-saline",
            "sku": "SALINE-250",
            "name": "Saline wound cleanser 250 ml",
            "category": "cleanser",
            "product_class": "cleanser",
            "unit": "bottle",
            "price": 650,
            "currency": "EUR",
        },
    ],
}


def test_orders_products_place_list_cancel(store: Path, patient: dict[str, Any]) -> None:
    assert ok(store, "orders", "products") == []
    assert "no products synced" in run(store, "orders", "products").stderr
    hub = MemoryHub()
    serve(store, hub, (Catalogue, catalogue_id(CLINIC), CATALOGUE))
    assert [p["sku"] for p in ok(store, "orders", "products")] == ["FOAM-10X10", "SALINE-250"]
    assert [p["sku"] for p in ok(store, "orders", "products", "--category", "cleanser")] == [
        "SALINE-250"
    ]
    human = run(store, "orders", "products", "--class", "Foam Dressing")
    assert "FOAM-10X10" in human.stdout and "24.50 EUR" in human.stdout
    assert "SALINE-250" not in human.stdout
    assert "as of 2026-12-04T07:00:00+01:00" in human.stdout

    placed = ok(
        store,
        *("orders", "place", "--patient", patient["id"]),
        *("--line", "FOAM-10X10:2", "--line", "SALINE-250"),
        *("--deliver-to", "home", "--address", "12 Canal Street", "--partial"),
    )
    assert placed["state"] == "pending" and placed["decision"] is None
    assert placed["intent"]["kind"] == "order.place"
    assert placed["intent"]["details"] == {
        "lines": [
            {"product_id": "prod-foam-10", "quantity": 2},
            {"product_id": "prod-saline", "quantity": 1},
        ],
        "deliver_to": "home",
        "address": "12 Canal Street",
        "partial": True,
    }
    human = run(store, "orders", "list")
    assert placed["intent"]["id"] in human.stdout and "pending" in human.stdout
    assert "FOAM-10X10 x2" in human.stdout

    intent_id = placed["intent"]["id"]
    serve(
        store,
        hub,
        (
            Decision,
            decision_id(intent_id),
            {
                "intent_id": intent_id,
                "status": "accepted",
                "reason": "reserved from lot L-7",
                "outcome": {"order_id": "order-1"},
            },
        ),
    )
    (accepted,) = ok(store, "orders", "list", "--state", "accepted")
    assert accepted["decision"]["outcome"]["order_id"] == "order-1"
    assert "order-1" in run(store, "orders", "list").stdout

    cancel = run(store, "orders", "cancel", "order-1", "--reason", "healed")
    assert cancel.exit_code == 0, cancel.output
    assert "order.cancel" in cancel.stdout and "order: order-1" in cancel.stdout
    listed = ok(store, "orders", "list", "--patient", patient["id"])
    assert [s["intent"]["kind"] for s in listed] == ["order.place", "order.cancel"]
    assert listed[1]["intent"]["subject_id"] == "order-1"
    assert ok(store, "appointments", "list") == []


def test_orders_place_refuses_what_cannot_be_right(store: Path, patient: dict[str, Any]) -> None:
    serve(store, MemoryHub(), (Catalogue, catalogue_id(CLINIC), CATALOGUE))
    base = ("orders", "place", "--patient", patient["id"])
    assert "no product 'GAUZE'" in failed(run(store, *base, "--line", "GAUZE:1"), 5)
    assert "--line" in failed(run(store, *base, "--line", "FOAM-10X10:two"), 2)
    assert "address" in failed(run(store, *base, "--line", "SALINE-250", "--deliver-to", "home"), 5)
    assert "--line" in failed(run(store, *base), 2)
    assert ok(store, "orders", "list") == []


INVOICE = {
    "number": "INV-000001",
    "status": "open",
    "currency": "EUR",
    "total": 3100,
    "paid": 1000,
    "lines": [
        {
            "kind": "order",
            "reference_id": "order-1",
            "description": "Foam dressing 10x10 cm",
            "quantity": 1,
            "unit_price": 2450,
            "amount": 2450,
        },
        {
            "kind": "order",
            "reference_id": "order-1",
            "description": "Saline wound cleanser 250 ml",
            "quantity": 1,
            "unit_price": 650,
            "amount": 650,
        },
    ],
    "payments": [
        {
            "id": "pay-0",
            "kind": "payment",
            "amount": 1000,
            "status": "succeeded",
            "at": "2026-12-04T08:00:00+00:00",
        }
    ],
}


def test_invoices_list_show_and_payments_pay_list(store: Path, patient: dict[str, Any]) -> None:
    assert ok(store, "invoices", "list") == []
    assert "no invoices synced" in run(store, "invoices", "list").stderr
    hub = MemoryHub()
    serve(
        store,
        hub,
        (Invoice, invoice_record_id("inv-1"), {**INVOICE, "patient_id": patient["id"]}),
        (
            Invoice,
            invoice_record_id("inv-2"),
            {**INVOICE, "number": "INV-000002", "status": "paid", "paid": 3100, "payments": []},
        ),
    )
    assert [i["number"] for i in ok(store, "invoices", "list")] == ["INV-000001", "INV-000002"]
    (mine,) = ok(store, "invoices", "list", "--patient", patient["id"])
    assert mine["id"] == invoice_record_id("inv-1")
    assert [i["number"] for i in ok(store, "invoices", "list", "--status", "paid")] == [
        "INV-000002"
    ]
    human = run(store, "invoices", "list")
    assert "31.00 EUR" in human.stdout and "21.00 EUR" in human.stdout  # total, due
    shown = run(store, "invoices", "show", "INV-000001")
    assert shown.exit_code == 0, shown.output
    assert "balance due: 21.00 EUR" in shown.stdout
    assert "Saline wound cleanser 250 ml" in shown.stdout and "pay-0" in shown.stdout
    assert ok(store, "invoices", "show", "inv-1")["number"] == "INV-000001"
    assert "no invoice 'INV-9'" in failed(run(store, "invoices", "show", "INV-9"), 4)

    # More than is left to pay, another currency: refused before anything is written.
    pay = ("payments", "pay", "INV-000001", "--method", "tok_success")
    assert "more than the 2100" in failed(run(store, *pay, "--amount", "2101"), 5)
    assert "not USD" in failed(run(store, *pay, "--amount", "5", "--currency", "USD"), 5)
    assert "--amount" in failed(run(store, *pay, "--amount", "0"), 2)
    assert "--currency" in failed(
        run(store, "payments", "pay", "inv-x", "--amount", "5", "--method", "tok"), 2
    )
    assert ok(store, "payments", "list") == []

    paid = ok(store, *pay, "--amount", "2100")  # the currency is the invoice's
    assert paid["state"] == "pending"
    assert paid["intent"]["subject_id"] == "inv-1"
    assert paid["intent"]["patient_id"] == patient["id"]
    assert paid["intent"]["details"] == {
        "amount": 2100,
        "currency": "EUR",
        "payment_method": "tok_success",
    }
    # Pending, it counts: a second tap cannot pay the invoice twice.
    assert "more than the 0" in failed(run(store, *pay, "--amount", "1"), 5)

    intent_id = paid["intent"]["id"]
    serve(
        store,
        hub,
        (
            Decision,
            decision_id(intent_id),
            {
                "intent_id": intent_id,
                "status": "rejected",
                "reason": "insufficient funds",
            },
        ),
    )
    (rejected,) = ok(store, "payments", "list", "--state", "rejected")
    assert rejected["decision"]["reason"] == "insufficient funds"
    human = run(store, "payments", "list", "--patient", patient["id"])
    assert "insufficient funds" in human.stdout and "21.00 EUR" in human.stdout


# --------------------------------------------------------------------- help, version
def _commands(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in _commands(cli, "coherency"):
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []
    assert len(list(_commands(cli, "coherency"))) > 20


def test_every_leaf_command_takes_json() -> None:
    lacking = [
        path
        for path, command in _commands(cli, "coherency")
        if not isinstance(command, click.Group) or command.invoke_without_command
        if not any(p.name == "as_json" for p in command.params)
    ]
    assert lacking == []


def test_help_and_version(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "COHERENCY_KDF=fast" in result.stdout
    for name in (
        "init",
        "patients",
        "wounds",
        "assessments",
        "notes",
        "conflicts",
        "history",
        "appointments",
        "visits",
        "orders",
        "payments",
        "invoices",
        "sync",
        "device",
        "key",
        "scan",
        "models",
        "server",
        "demo",
        "fhir",
    ):
        assert name in result.stdout
    version = CliRunner().invoke(cli, ["--version"])
    assert version.exit_code == 0
    assert version.stdout.startswith("coherency ")


def test_help_does_not_import_the_demo() -> None:
    # In a fresh interpreter, as the console script runs: the demo's scenarios (and the
    # server and capture libraries they drive) load only when `coherency demo` runs.
    script = (
        "import sys\n"
        "from cli.main import main\n"
        "sys.argv = ['coherency', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "loaded = [m for m in sys.modules if m == 'cli.demo' or m.startswith('cli.demo.')]\n"
        "print('LOADED', *loaded, 'sync_server' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout and "demo" in done.stdout
    assert done.stdout.split("LOADED", 1)[1].split() == ["False"]


@pytest.mark.slow
def test_demo_runs(tmp_path: Path) -> None:
    report = ok(tmp_path / "unused", "demo", "--workdir", str(tmp_path / "demo"))
    assert report["workdir"] == str(tmp_path / "demo")
    assert len(report["steps"]) >= 5
    assert not (tmp_path / "unused").exists()
    capture = report["capture"]
    assert report["capture_skipped"] is None
    assert len(capture["measurements"]) == 3
    for wound in capture["measurements"]:
        assert abs(wound["area_cm2"] - wound["true_area_cm2"]) <= 0.2 * wound["true_area_cm2"]
        assert wound["volume_cm3"] > 0 and wound["max_depth_mm"] > 0
    assert any("refused (too_far)" in step for step in capture["steps"])
    assert (tmp_path / "demo" / "scan-tablet").is_dir()
    assert report["fhir_skipped"] is None
    assert report["fhir"]["path"] == str(tmp_path / "demo" / "fhir" / "demo-patient.json")
