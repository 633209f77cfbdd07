"""Scan a wound, measure it and keep the assessment in the encrypted store.

Uses the synthetic capture source (the shipped test double for a LiDAR device, with
exact ground truth) so it runs anywhere; on an iPad swap in `ARKitSource()`, on an
edge box with a depth camera `RealSenseSource()`, or read a file with `open_scan`.

Run:  python examples/wound_scan.py [STORE_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from lidar_capture import MeasurementRefused, SyntheticSource, measure, record_assessment


def main(store_dir: Path) -> None:
    source = SyntheticSource(seed=4, surface="calf", limb_radius_m=0.06, frames=10)
    scan = source.capture()
    result = measure(scan)
    truth = source.last.truth if source.last else None
    print(
        f"area {result.area_cm2:.2f} cm2, volume {result.volume_cm3:.2f} cm3, "
        f"max depth {result.max_depth_mm:.1f} mm, ruler {result.ruler_area_cm2:.2f} cm2"
    )
    if truth is not None:
        error = abs(result.area_cm2 - truth.area_cm2) / truth.area_cm2 * 100
        print(f"true area {truth.area_cm2:.2f} cm2 (error {error:.1f} %)")

    # A capture that refuses: the tablet held 70 cm away.
    try:
        measure(SyntheticSource(seed=4, surface="calf", frames=3, distance_m=0.7).capture())
    except MeasurementRefused as refusal:
        print(f"refused: {refusal.reason}")

    keys = PassphraseKeyProvider("correct horse battery staple", params=Argon2Params.fast())
    with EdgeClient.init(store_dir, keys, clinic_id="clinic-riverside") as client:
        patient = client.patients.add(
            given_name="Amara", family_name="Okonkwo", birth_date="1948-06-30", mrn="RVS-1"
        )
        wound = client.wounds.add(patient_id=patient.id, body_site="left calf", etiology="venous")
        assessment = record_assessment(client, wound.id, result, clinician="RN Patel")
        stored = client.assessments.get(assessment.id)
        kinds = sorted(b.kind for b in stored.blobs)
        print(f"stored assessment with blobs {kinds}; area {stored.measurements.area_cm2}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp) / "store")
