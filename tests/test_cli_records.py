"""`coherency conditions|allergies|medications|care-plans ...` and a patient's emergency
contacts and insurance, end to end against real stores (helpers from tests/test_cli.py).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.test_cli import cli_env, failed, ok, run, store  # noqa: F401 - fixtures

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def patient_and_wound(store: Path) -> tuple[str, str]:  # noqa: F811 - the fixture's name
    patient = ok(store, "patients", "add", "--given", "Ada", "--family", "Obi",
                 "--birth-date", "1950-03-01")  # fmt: skip
    wound = ok(store, "wounds", "add", "--patient", patient["id"], "--site", "left heel")
    return patient["id"], wound["id"]


def test_conditions_add_list_show_update_delete_restore(store: Path) -> None:  # noqa: F811
    patient, _ = patient_and_wound(store)
    added = ok(store, "conditions", "add", "--patient", patient, "--description",
               "Type 2 diabetes", "--code", "snomed|44054006|Diabetes mellitus type 2",
               "--onset", "2010-06-01", "--note", "diet and metformin")  # fmt: skip
    assert added["code"] == {"system": SNOMED, "code": "44054006",
                             "display": "Diabetes mellitus type 2"}  # fmt: skip
    assert (added["clinical_status"], added["onset"]) == ("active", "2010-06-01")
    other = ok(store, "conditions", "add", "--patient", patient, "--description", "PAD",
               "--code", f"{ICD10}|I73.9", "--status", "inactive")  # fmt: skip
    assert other["code"] == {"system": ICD10, "code": "I73.9",
                             "display": None}  # fmt: skip
    listed = ok(store, "conditions", "list", "--patient", patient)
    assert [c["id"] for c in listed] == [added["id"], other["id"]]
    assert [c["id"] for c in ok(store, "conditions", "list", "--status", "inactive")] == [
        other["id"]
    ]
    human = run(store, "conditions", "list")
    assert human.exit_code == 0 and "Type 2 diabetes" in human.stdout
    shown = run(store, "conditions", "show", added["id"])
    assert "description: Type 2 diabetes" in shown.stdout and "44054006" in shown.stdout

    changed = ok(store, "conditions", "update", added["id"], "--status", "remission",
                 "--abatement", "2024-01-01", "--clear", "note")  # fmt: skip
    assert (changed["clinical_status"], changed["abatement"], changed["note"]) == (
        "remission", "2024-01-01", None,
    )  # fmt: skip
    assert changed["description"] == "Type 2 diabetes"  # the rest kept
    failed(run(store, "conditions", "update", added["id"], "--abatement", "2000-01-01"), 5)
    failed(run(store, "conditions", "update", added["id"]), 2)
    failed(run(store, "conditions", "update", added["id"], "--note", "x", "--clear", "note"), 2)

    assert ok(store, "conditions", "delete", added["id"])["deleted"] is True
    assert [c["id"] for c in ok(store, "conditions", "list")] == [other["id"]]
    assert len(ok(store, "conditions", "list", "--include-deleted")) == 2
    assert ok(store, "conditions", "restore", added["id"])["deleted"] is False


def test_allergies_and_medications(store: Path) -> None:  # noqa: F811
    patient, _ = patient_and_wound(store)
    allergy = ok(store, "allergies", "add", "--patient", patient, "--substance", "penicillin",
                 "--type", "allergy", "--category", "medication", "--criticality", "high",
                 "--reaction", "anaphylaxis", "--code", "rxnorm|7980")  # fmt: skip
    assert (allergy["criticality"], allergy["code"]["system"]) == (
        "high", "http://www.nlm.nih.gov/research/umls/rxnorm",
    )  # fmt: skip
    assert (
        ok(store, "allergies", "update", allergy["id"], "--status", "resolved")["clinical_status"]
        == "resolved"
    )
    medication = ok(store, "medications", "add", "--patient", patient, "--medication",
                    "metformin 500 mg", "--dosage", "500 mg twice daily", "--route", "oral",
                    "--started", "2020-01-01")  # fmt: skip
    stopped = ok(store, "medications", "update", medication["id"], "--status", "stopped",
                 "--ended", "2024-02-01")  # fmt: skip
    assert (stopped["status"], stopped["ended"], stopped["dosage"]) == (
        "stopped", "2024-02-01", "500 mg twice daily",
    )  # fmt: skip
    table = run(store, "medications", "list", "--patient", patient, "--csv")
    assert table.exit_code == 0, table.output
    [row] = list(csv.DictReader(io.StringIO(table.stdout)))
    assert (row["medication"], row["status"], row["code.system"]) == (
        "metformin 500 mg", "stopped", "",
    )  # fmt: skip
    line = failed(run(store, "medications", "add", "--patient", patient, "--medication", "x",
                      "--started", "2024-02-01", "--ended", "2024-01-01"), 5)  # fmt: skip
    assert "ended is before started" in line
    line = failed(run(store, "allergies", "add", "--patient", "nobody", "--substance", "x"), 5)
    assert "patient_id" in line
    assert "--code" in failed(run(store, "conditions", "add", "--patient", patient,
                                  "--description", "x", "--code", "just-a-code"), 2)  # fmt: skip


def test_care_plans(store: Path) -> None:  # noqa: F811
    patient, wound = patient_and_wound(store)
    plan = ok(store, "care-plans", "add", "--patient", patient, "--wound", wound,
              "--title", "Heel ulcer", "--goal", "closed by week 12", "--goal", "no infection",
              "--dressing", "hydrofibre and foam", "--dressing-every-days", "3",
              "--offloading", "total contact cast", "--review-on", "2024-06-01")  # fmt: skip
    assert plan["goals"] == ["closed by week 12", "no infection"]
    assert (plan["dressing_every_days"], plan["status"]) == (3, "active")
    assert [p["id"] for p in ok(store, "care-plans", "list", "--wound", wound)] == [plan["id"]]
    changed = ok(store, "care-plans", "update", plan["id"], "--goal", "closed by week 10",
                 "--clear", "review-on", "--status", "on-hold")  # fmt: skip
    assert changed["goals"] == ["closed by week 10"] and changed["review_on"] is None
    assert ok(store, "care-plans", "update", plan["id"], "--clear", "goal")["goals"] == []
    assert ok(store, "care-plans", "list", "--status", "active") == []
    # Another patient's wound, an unknown wound: refused, one line.
    other = ok(store, "patients", "add", "--given", "B", "--family", "C",
               "--birth-date", "1960-01-01")["id"]  # fmt: skip
    assert "another patient" in failed(
        run(store, "care-plans", "add", "--patient", other, "--wound", wound), 5
    )
    failed(run(store, "care-plans", "add", "--patient", patient, "--wound", "nope"), 5)
    failed(run(store, "care-plans", "add", "--patient", patient, "--wound", wound,
               "--dressing-every-days", "0"), 5)  # fmt: skip
    assert "--wound" not in run(store, "care-plans", "update", "--help").stdout  # immutable
    failed(run(store, "care-plans", "show", "nope"), 4)
    ok(store, "care-plans", "delete", plan["id"])
    assert ok(store, "care-plans", "list") == []


def test_patients_emergency_contacts_and_insurance(store: Path) -> None:  # noqa: F811
    patient = ok(store, "patients", "add", "--given", "Ada", "--family", "Obi",
                 "--birth-date", "1950-03-01",
                 "--emergency-contact", "name=Chidi Obi;relationship=son;phone=+44 20 7946 0000",
                 "--emergency-contact", "name=Grace Obi",
                 "--insurance", "payer=Acme Health;member_id=AC-1;valid_until=2027-12-31",
                 )  # fmt: skip
    assert patient["emergency_contacts"] == [
        {"name": "Chidi Obi", "relationship": "son", "phone": "+44 20 7946 0000", "email": None},
        {"name": "Grace Obi", "relationship": None, "phone": None, "email": None},
    ]
    assert patient["insurance"][0]["payer"] == "Acme Health"
    assert patient["insurance"][0]["valid_until"] == "2027-12-31"
    shown = run(store, "patients", "show", patient["id"])
    assert "emergency_contacts:" in shown.stdout
    assert "  - name=Chidi Obi, relationship=son, phone=+44 20 7946 0000" in shown.stdout
    assert "  - payer=Acme Health, member_id=AC-1, valid_until=2027-12-31" in shown.stdout

    changed = ok(store, "patients", "update", patient["id"], "--insurance", "payer=NHS",
                 "--clear-emergency-contacts")  # fmt: skip
    assert changed["emergency_contacts"] == [] and changed["insurance"][0]["payer"] == "NHS"
    assert changed["family_name"] == "Obi"
    assert "colour" in failed(
        run(store, "patients", "update", patient["id"], "--insurance", "payer=X;colour=red"), 5
    )
    assert "KEY=VALUE" in failed(
        run(store, "patients", "update", patient["id"], "--emergency-contact", "Chidi"), 2
    )
    failed(run(store, "patients", "update", patient["id"], "--insurance", "payer=X",
               "--clear-insurance"), 2)  # fmt: skip
    assert ok(store, "patients", "update", patient["id"], "--clear-insurance")["insurance"] == []
