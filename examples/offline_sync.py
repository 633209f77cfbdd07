"""Two devices edit the same records offline, then sync and see the conflict.

The devices exchange a sync session in memory here; the same session runs over
HTTP to a server or an edge box, and bundles carry it on a file.

Run:  python examples/offline_sync.py [WORK_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from crdt import run_in_memory
from edge_sdk import EdgeClient, PassphraseKeyProvider


def main(work: Path) -> None:
    keys = PassphraseKeyProvider("correct horse battery staple")
    with (
        EdgeClient.init(work / "tablet-a", keys, clinic_id="clinic-riverside") as a,
        EdgeClient.init(work / "tablet-b", keys, clinic_id="clinic-riverside") as b,
    ):
        patient = a.patients.add(given_name="Amara", family_name="Okonkwo", birth_date="1948-06-30")
        note = a.notes.add(patient_id=patient.id, author="RN Patel", text="Offload heel.")
        run_in_memory(a.sync_session(), b.sync_session())

        # Offline on both: the same field set twice, the same note edited twice.
        a.patients.update(patient.id, mrn="RVS-1")
        b.patients.update(patient.id, mrn="RVS-2")
        a.notes.edit(note.id, "Offload heel. Review Friday.")
        b.notes.edit(note.id, "Day 1: Offload heel.")
        run_in_memory(a.sync_session(), b.sync_session())

        print("merged note:", b.notes.get(note.id).text)
        for conflict in b.conflicts():
            print(
                f"conflict on {conflict.field}:",
                [(v.value, v.device_id[:8]) for v in conflict.values],
            )
        b.patients.resolve(patient.id, "mrn", "RVS-1")
        run_in_memory(a.sync_session(), b.sync_session())
        print("after resolving:", a.patients.get(patient.id).mrn, "conflicts:", a.conflicts())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
