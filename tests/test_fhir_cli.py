"""`coherency fhir export|import` on the device store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fhir_interop import validate
from tests.test_cli import cli_env, failed, ok, patient, run, store  # noqa: F401 - fixtures
from tests.test_fhir_import import FOREIGN


def test_export_then_import_again_changes_nothing(
    store: Path,  # noqa: F811
    patient: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "one.json"
    done = ok(store, "fhir", "export", "--patient", patient["id"], "--out", str(out))
    assert done == {"path": str(out), "kind": "collection", "resources": 1}
    bundle = json.loads(out.read_text())
    validate(bundle)
    assert bundle["entry"][0]["resource"]["identifier"][1]["value"] == "MRN-1"
    everyone = tmp_path / "all.json"
    ok(store, "fhir", "export", "--all", "--kind", "transaction", "--out", str(everyone))
    assert json.loads(everyone.read_text())["type"] == "transaction"
    clinic = tmp_path / "clinic.json"
    ok(store, "fhir", "export", "--clinic", "clinic-1", "--out", str(clinic))
    assert len(json.loads(clinic.read_text())["entry"]) == 1
    report = ok(store, "fhir", "import", str(out))
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 1)


def test_import_a_foreign_bundle_lists_what_it_did_not_map(
    store: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "ehr.json"
    path.write_text(json.dumps(FOREIGN))
    result = run(store, "fhir", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "created 4, updated 0, unchanged 0" in result.stdout
    assert "not mapped: Encounter/enc-1: resource type not mapped" in result.stdout


def test_errors_are_one_line_with_their_exit_code(
    store: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert "not JSON" in failed(run(store, "fhir", "import", str(bad)), 5)
    bad.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": "x", "birthDate": "1950-02-31"}}
                ],
            }
        )
    )
    assert "invalid FHIR" in failed(run(store, "fhir", "import", str(bad)), 5)
    out = str(tmp_path / "x.json")
    assert "no patients record" in failed(
        run(store, "fhir", "export", "--patient", "nobody", "--out", out), 4
    )
    assert run(store, "fhir", "export", "--out", out).exit_code == 2
    assert "not elsewhere" in failed(
        run(store, "fhir", "export", "--clinic", "elsewhere", "--out", out), 4
    )
    assert run(store, "fhir", "export", "--all", "--patient", "p", "--out", out).exit_code == 2


def test_the_demo_writes_a_valid_bundle_of_the_demo_patient(tmp_path: Path) -> None:
    from cli.demo.fhir import run_fhir_demo
    from cli.demo.offline import run_offline_demo

    offline = run_offline_demo(tmp_path)
    report = run_fhir_demo(tmp_path, offline.stores["ward"])
    assert report.path == tmp_path / "fhir" / "demo-patient.json"
    bundle = json.loads(report.path.read_text())
    validate(bundle)
    assert report.resources["Patient"] == 1
    assert report.resources["Condition"] == 2  # the wound and the diabetes
    assert {"Observation", "Provenance", "CarePlan", "AllergyIntolerance"} <= set(report.resources)
    assert report.steps[-1].endswith(str(report.path))
