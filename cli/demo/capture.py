"""The capture part of `coherency demo`: scan, measure, refuse, store.

A ward tablet (its own encrypted store in the demo folder) scans three synthetic wounds
(calf, heel, sacrum) with ten frames each, measures them and checks the figures against
the generator's ground truth, shows a scan refused for being taken too far away, and
stores each assessment with its point cloud and measurement details as encrypted blobs
— then checks that no blob on disk holds the point cloud in the clear. Needs the
``capture`` extra.
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
from edge_sdk import EdgeClient
from lidar_capture import (
    MeasurementRefused,
    SyntheticSource,
    WoundSpec,
    generate,
    measure,
    record_assessment,
)
from models import choose_runner

__all__ = ["CaptureDemoReport", "run_capture_demo"]

# Wounds the demo scans: what a ward round might meet. An area this far from the truth
# fails the demo as a gross fault (the benchmark reports the suite's medians and worst).
_WOUNDS = (
    ("left calf, venous", WoundSpec(seed=4, surface="calf", limb_radius_m=0.06)),
    (
        "right heel, pressure",
        WoundSpec(seed=11, surface="heel", limb_radius_m=0.045, radius_m=0.012, profile="punched"),
    ),
    ("sacrum, pressure", WoundSpec(seed=17, surface="sacrum", radius_m=0.02, profile="bowl")),
)
_MAX_AREA_ERROR = 0.20


@dataclass(slots=True)
class CaptureDemoReport:
    """What the capture part measured and stored."""

    store: Path
    steps: list[str] = field(default_factory=list)
    measurements: list[dict[str, object]] = field(default_factory=list)


def run_capture_demo(
    workdir: Path, *, say: Say = lambda line: None, fast_kdf: bool = True
) -> CaptureDemoReport:
    """Run the capture scenario in `workdir` and return its report.

    `say` and `fast_kdf` are as for `cli.demo.run_demo`.

    Raises:
        DemoFailedError: a figure was far from the truth, or a check failed.
    """
    store = workdir / "scan-tablet"
    report = CaptureDemoReport(store=store)
    step = Scenario(report.steps, say).step
    with EdgeClient.init(store, demo_key_provider(demo_kdf(fast_kdf)), clinic_id=CLINIC) as client:
        patient = client.patients.add(
            given_name="Kofi", family_name="Mensah-Demo", birth_date="1941-02-11", mrn="RVS-7"
        )
        model = choose_runner()  # the bundled model: a new store has none installed
        step(
            f"scan tablet {client.device_id[:8]}: scanning 3 wounds, 10 LiDAR frames each; "
            + (
                f"wound model {model.manifest.model_id} {model.manifest.version} (int8, "
                "sha256 checked) draws the boundary"
                if model is not None
                else "no onnxruntime: the colour/depth boundary alone"
            )
        )
        for site, spec in _WOUNDS:
            synthetic = generate(spec)
            result = measure(synthetic.scan, model=model)
            truth = synthetic.truth
            error = abs(result.area_cm2 - truth.area_cm2) / truth.area_cm2
            check(
                error <= _MAX_AREA_ERROR,
                f"{site} area {result.area_cm2:.2f} cm² against {truth.area_cm2:.2f} cm² true",
            )
            wound = client.wounds.add(
                patient_id=patient.id, body_site=site.split(",")[0], etiology=site.split(", ")[1]
            )
            assessment = record_assessment(client, wound.id, result, clinician="RN Patel")
            report.measurements.append(
                {"site": site, **result.to_json(), "true_area_cm2": round(truth.area_cm2, 3)}
            )
            step(
                f"  {site}: area {result.area_cm2:.2f} cm² (true {truth.area_cm2:.2f}), "
                f"volume {result.volume_cm3:.2f} cm³ (true {truth.volume_cm3:.2f}), "
                f"max depth {result.max_depth_mm:.1f} mm (true {truth.max_depth_mm:.1f}), "
                f"ruler {result.ruler_area_cm2:.2f} cm²; {result.timings_ms['total']:.0f} ms; "
                f"assessment {assessment.id[:8]} with {len(assessment.blobs)} encrypted blobs"
            )
            if result.model_output is not None:
                mix = ", ".join(
                    f"{name} {share:.0f} % (true {truth.tissue_composition[name]:.0f})"
                    for name, share in result.model_output.tissue_composition.items()
                )
                step(f"    tissue: {mix}")
        try:
            measure(SyntheticSource(seed=4, frames=3, distance_m=0.7).capture())
        except MeasurementRefused as refusal:
            step(f"  a scan from 70 cm is refused ({refusal.reason}): {refusal}")
        else:
            check(False, "a scan from 70 cm was measured")
    leaked = plaintext_leaks(store, [b"element vertex", b"outline_world"])
    check(not leaked, f"a point cloud is in the clear in {leaked[:1]}")
    step("  no point cloud or measurement is readable on disk without the store key")
    return report
