"""Two tablets of a clinic sync through a central server; a third clinic sees nothing.

Starts a real sync server on embedded defaults (SQLite and a blob folder under the
work folder) on a loopback port, issues one-time enrolment tokens as clinic staff
would (`coherency server enroll-token`), and syncs the tablets over HTTP: push, then
pull, then scan blobs. Needs the `[server]` extra.

Run:  python examples/server_sync.py [WORK_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edge_sdk import EdgeClient, PassphraseKeyProvider, SyncProgress
from sync_server import Settings, ThreadedServer, create_app, issue_enrolment_token, migrate


def main(work: Path) -> None:
    settings = Settings(data_dir=work / "server")
    migrate(settings)
    keys = PassphraseKeyProvider("correct horse battery staple")
    with (
        ThreadedServer(create_app(settings)) as server,
        EdgeClient.init(work / "ward", keys) as ward,
        EdgeClient.init(work / "home", keys) as home,
        EdgeClient.init(work / "hillside", keys) as hillside,
    ):
        for tablet, clinic in ((ward, "Riverside"), (home, "Riverside"), (hillside, "Hillside")):
            # What clinic staff get from `coherency server enroll-token --clinic NAME`:
            token = issue_enrolment_token(settings, clinic=clinic).token
            tablet.enroll(server.url, token)

        patient = ward.patients.add(
            given_name="Amara", family_name="Okonkwo", birth_date="1948-06-30", mrn="RVS-1"
        )
        wound = ward.wounds.add(patient_id=patient.id, body_site="left heel")
        scan = ward.blobs.put_bytes(b"point cloud bytes " * 1000)
        ward.assessments.add(
            wound_id=wound.id,
            patient_id=patient.id,
            captured_at="2026-11-24T10:00:00Z",
            device_id=ward.device_id,
            measurements={"area_cm2": 4.2},
            blobs=[{"sha256": scan.sha256, "size": scan.size, "kind": "scan"}],
        )
        pushed = ward.sync()
        print(f"ward pushed {len(pushed.pushed)} records and {len(pushed.blobs_uploaded)} blob")

        steps: list[SyncProgress] = []
        pulled = home.sync(progress=steps.append)
        fetched = home.blobs.exists(scan.sha256)
        print(f"home pulled {len(pulled.pulled)} records; scan fetched: {fetched}")
        print(f"progress phases: {sorted({step.phase for step in steps})}")

        # Offline edits on both tablets, then sync both ways: they converge.
        ward.wounds.update(wound.id, status="healing")
        home.patients.update(patient.id, mrn="RVS-1-B")
        for tablet in (ward, home, ward):
            tablet.sync()
        print(
            f"converged: status {home.wounds.get(wound.id).status.value}, "
            f"mrn {ward.patients.get(patient.id).mrn}"
        )
        print(f"hillside pulled {len(hillside.sync().pulled)} records of Riverside's")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
