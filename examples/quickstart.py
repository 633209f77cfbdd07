"""Quickstart: create an encrypted store, record a patient, a wound, a note, the
patient's medical history and the wound's care plan.

Run:  python examples/quickstart.py [STORE_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edge_sdk import EdgeClient, PassphraseKeyProvider, WrongKeyError


def main(store_dir: Path) -> None:
    keys = PassphraseKeyProvider("correct horse battery staple")
    with EdgeClient.init(store_dir, keys, clinic_id="clinic-riverside") as client:
        patient = client.patients.add(
            given_name="Amara",
            family_name="Okonkwo",
            birth_date="1948-06-30",
            sex="female",
            mrn="RVS-000451",
        )
        wound = client.wounds.add(patient_id=patient.id, body_site="left heel", etiology="pressure")
        note = client.notes.add(
            patient_id=patient.id, wound_id=wound.id, author="RN Patel", text="Offload heel."
        )
        client.notes.splice(note.id, 0, 0, "Day 1: ")
        client.wounds.update(wound.id, status="healing")
        client.conditions.add(
            patient_id=patient.id,
            description="Type 2 diabetes",
            code={"system": "http://snomed.info/sct", "code": "44054006"},
        )
        client.medications.add(patient_id=patient.id, medication="metformin 500 mg")
        client.allergies.add(patient_id=patient.id, substance="zinc oxide tape")
        plan = client.care_plans.add(
            patient_id=patient.id,
            wound_id=wound.id,
            goals=["closed by week 12"],
            dressing="hydrofibre, foam cover",
            dressing_every_days=3,
            offloading="heel offloading boot",
        )
        history = [c.description for c in client.conditions.for_patient(patient.id)]
        print("medical history:", history)
        print("care plan:", plan.dressing, f"every {plan.dressing_every_days} days")
        print("patients matching 'okon':", [p.mrn for p in client.patients.search("okon")])
        print("note:", client.notes.get(note.id).text)
        for entry in client.wounds.history(wound.id):
            print(f"  {entry.at:%H:%M:%S} {entry.action} {entry.fields} by {entry.device_id[:8]}")

    # The store only opens with the right key; a wrong one is a clear error.
    try:
        EdgeClient.open(store_dir, PassphraseKeyProvider("wrong passphrase"))
    except WrongKeyError as exc:
        print("wrong passphrase refused:", exc)
    with EdgeClient.open(store_dir, keys) as client:
        print("reopened with", len(client.patients.list()), "patient(s)")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "store"
    main(target)
