"""The offline part of `coherency demo`: two tablets, sync bundles, a conflict.

Two tablets of one clinic work offline, exchange signed and encrypted sync bundles
(the path a clinic with no network at all uses), edit the same records concurrently,
converge, and settle a conflict; then no patient name may be on disk in plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cli.demo._scenario import (
    CLINIC,
    Say,
    Scenario,
    check,
    demo_kdf,
    demo_key_provider,
    plaintext_leaks,
)
from edge_sdk import EdgeClient, export_bundle, import_bundle

__all__ = ["OfflineDemoReport", "run_offline_demo"]

BUNDLE_PASSPHRASE = "demo bundle passphrase"
PATIENT_NAME = ("Amara", "Okonkwo-Demo")


@dataclass(slots=True)
class OfflineDemoReport:
    """What the offline part did, step by step, and where it left its stores."""

    workdir: Path
    steps: list[str] = field(default_factory=list)
    stores: dict[str, Path] = field(default_factory=dict)


def run_offline_demo(
    workdir: Path, *, say: Say = lambda line: None, fast_kdf: bool = True
) -> OfflineDemoReport:
    """Run the offline two-tablet scenario in `workdir` and return its report.

    `say` and `fast_kdf` are as for `cli.demo.run_demo`.

    Raises:
        DemoFailedError: A step's outcome was not what it must be.
    """
    report = OfflineDemoReport(workdir=workdir)
    scenario = Scenario(report.steps, say)
    step = scenario.step
    kdf = demo_kdf(fast_kdf)
    provider = demo_key_provider(kdf)

    ward_path, home_path = workdir / "ward-tablet", workdir / "home-visit-tablet"
    report.stores = {"ward": ward_path, "home": home_path}
    with (
        EdgeClient.init(ward_path, provider, clinic_id=CLINIC) as ward,
        EdgeClient.init(home_path, provider, clinic_id=CLINIC) as home,
    ):
        step(
            f"two tablets enrolled in {CLINIC}: ward {ward.device_id[:8]}, "
            f"home visit {home.device_id[:8]} (encrypted stores in {workdir})"
        )

        patient = ward.patients.add(
            given_name=PATIENT_NAME[0],
            family_name=PATIENT_NAME[1],
            birth_date="1948-06-30",
            sex="female",
            mrn="RVS-000451",
            contacts=[{"kind": "phone", "value": "+44 1632 960451"}],
        )
        wound = ward.wounds.add(
            patient_id=patient.id, body_site="left heel", etiology="pressure", onset="2026-10-02"
        )
        assessment = ward.assessments.add(
            wound_id=wound.id,
            patient_id=patient.id,
            captured_at="2026-11-20T09:30:00+00:00",
            device_id=ward.device_id,
            clinician="RN Patel",
            measurements={
                "area_cm2": 6.4,
                "length_cm": 3.2,
                "width_cm": 2.5,
                "max_depth_mm": 4.1,
                "volume_cm3": 1.2,
                "ruler_area_cm2": 8.0,
            },
            quality_flags=["manual-entry"],
        )
        note = ward.notes.add(
            patient_id=patient.id,
            wound_id=wound.id,
            author="RN Patel",
            text="Heel wound, moist granulation. Offload heel; review in 3 days.",
        )
        step(
            f"ward tablet, offline: patient {patient.id[:8]}, wound, assessment "
            f"({assessment.measurements.area_cm2} cm²) and a note recorded"
        )

        bundle = workdir / "ward-to-home.bundle"
        info = export_bundle(
            ward, bundle, passphrase=BUNDLE_PASSPHRASE, peer_id=home.device_id, kdf=kdf
        )
        received = import_bundle(home, bundle, passphrase=BUNDLE_PASSPHRASE)
        check(len(received.received) == 4 and not received.rejected, "first bundle import")
        step(
            f"signed, encrypted bundle carried by hand: {info.documents} records, "
            f"{bundle.stat().st_size} bytes; home tablet imported {len(received.received)}"
        )

        again = import_bundle(home, bundle, passphrase=BUNDLE_PASSPHRASE)
        check(not again.received, "importing the same bundle twice changes nothing")
        step("importing the same bundle again: nothing changed")

        ward.notes.edit(note.id, note.text.replace("review in 3 days", "review in 2 days"))
        ward.wounds.update(wound.id, status="healing")
        home.notes.edit(note.id, "Family carer present. " + note.text)
        home.wounds.update(wound.id, status="deteriorating")
        home.patients.update(patient.id, mrn="RVS-000451-B")
        step(
            "both tablets offline: both edit the note, both set the wound status, "
            "the home tablet corrects the MRN"
        )

        for source, target, name in ((ward, home, "ward-to-home-2"), (home, ward, "home-to-ward")):
            path = workdir / f"{name}.bundle"
            export_bundle(
                source, path, passphrase=BUNDLE_PASSPHRASE, peer_id=target.device_id, kdf=kdf
            )
            import_bundle(target, path, passphrase=BUNDLE_PASSPHRASE)
        merged = ward.notes.get(note.id).text
        check(merged == home.notes.get(note.id).text, "note text converged")
        check(
            "Family carer present." in merged and "review in 2 days" in merged,
            "both offline note edits survive",
        )
        check(ward.patients.get(patient.id).mrn == "RVS-000451-B", "MRN correction arrived")
        step(f"bundles exchanged both ways; the note kept both edits: {merged!r}")

        conflicts = ward.conflicts()
        check(conflicts == home.conflicts(), "both tablets report the same conflicts")
        check([c.field for c in conflicts] == ["status"], "one conflict, on wound status")
        values = ", ".join(f"{v.value} (device {v.device_id[:8]})" for v in conflicts[0].values)
        step(f"conflict shown on both tablets: wound status is {values}")

        ward.wounds.resolve(wound.id, "status", "deteriorating")
        path = workdir / "resolution.bundle"
        export_bundle(ward, path, passphrase=BUNDLE_PASSPHRASE, peer_id=home.device_id, kdf=kdf)
        import_bundle(home, path, passphrase=BUNDLE_PASSPHRASE)
        check(not ward.conflicts() and not home.conflicts(), "conflict resolved everywhere")
        check(home.wounds.get(wound.id).status.value == "deteriorating", "resolution synced")
        step("clinician resolved it on the ward tablet (deteriorating); resolution synced")

        history = home.wounds.history(wound.id)
        step(
            "wound history on the home tablet: "
            + "; ".join(
                f"{h.action} {','.join(h.fields) or '-'} by {(h.device_id or h.actor)[:8]}"
                for h in history
            )
        )

        ward_snapshot = [r.model_dump() for r in ward.patients.list()]
        check(
            ward_snapshot == [r.model_dump() for r in home.patients.list()],
            "patient records identical on both tablets",
        )

    leaks = plaintext_leaks(workdir, [PATIENT_NAME[1].encode()])
    check(not leaks, f"patient name found in plaintext in {leaks}")
    step(f"no plaintext patient name anywhere under {workdir} (database, WAL, blobs, bundles)")
    return report
