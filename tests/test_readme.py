"""The README's SDK example, the SDK guide's sections, and the sync, bookings, commerce,
orders and payments guides', run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_sdk import EdgeClient, NotEnrolledError
from sync_server import Settings, ThreadedServer, create_app, issue_enrolment_token, migrate
from tests.conftest import fast_provider

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SYNC_GUIDE = ROOT / "docs" / "sync.md"
BOOKINGS_GUIDE = ROOT / "docs" / "bookings.md"
COMMERCE_GUIDE = ROOT / "docs" / "commerce.md"
ORDERS_GUIDE = ROOT / "docs" / "orders-on-a-device.md"
PAYMENTS_GUIDE = ROOT / "docs" / "payments.md"
NOTIFICATIONS_GUIDE = ROOT / "docs" / "notifications.md"
EDGE_GUIDE = ROOT / "docs" / "edge.md"
SDK_GUIDE = ROOT / "docs" / "sdk.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example, against a live server: its SERVER and TOKEN lines are the
    two a reader fills in, with a running server's URL and a token from its staff."""
    blocks = python_blocks(README)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "server-data")
    migrate(settings)
    token = issue_enrolment_token(settings, clinic="Riverside Ward")
    with ThreadedServer(create_app(settings)) as server:
        for block in blocks:
            filled, count = re.subn(
                r'^SERVER = ".*"\nTOKEN = ".*"$',
                f'SERVER = "{server.url}"\nTOKEN = "{token.token}"',
                block,
                flags=re.MULTILINE,
            )
            assert count == 1, "the README's example names its SERVER and TOKEN"
            exec(compile(filled, str(README), "exec"), {})
        # What the tablet wrote reached the clinic: a second tablet pulls it.
        other = EdgeClient.init(tmp_path / "other", fast_provider())
        try:
            other.enroll(server.url, issue_enrolment_token(settings, clinic="Riverside Ward").token)
            other.sync()
            assert other.clinic_id == token.clinic_id
            [patient] = other.patients.search("okonkwo")
            assert patient.mrn == "RVS-000451" and patient.clinic_id == token.clinic_id
            [wound] = other.wounds.list(patient_id=patient.id)
            assert wound.status.value == "healing"
        finally:
            other.close()
    assert (tmp_path / "ward-tablet" / "coherency.db").exists()


def test_a_store_without_a_clinic_refuses_writes_until_enrolled(tmp_path: Path) -> None:
    with EdgeClient.init(tmp_path / "tablet", fast_provider()) as client:
        assert client.clinic_id == ""
        with pytest.raises(NotEnrolledError, match="enrol it with a server first"):
            client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
        assert client.patients.list() == []


def test_sync_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(SYNC_GUIDE)
    assert blocks, "docs/sync.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(SYNC_GUIDE), "exec"), {})
    assert (tmp_path / "ward" / "coherency.db").exists()


def test_bookings_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(BOOKINGS_GUIDE)
    assert blocks, "docs/bookings.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(BOOKINGS_GUIDE), "exec"), {})
    assert (tmp_path / "ward" / "coherency.db").exists()


def test_commerce_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(COMMERCE_GUIDE)
    assert blocks, "docs/commerce.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(COMMERCE_GUIDE), "exec"), {})
    assert (tmp_path / "server").exists()


def test_orders_guide_python_blocks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = python_blocks(ORDERS_GUIDE)
    assert blocks, "docs/orders-on-a-device.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(ORDERS_GUIDE), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['FOAM-10X10']"
    assert printed[1].startswith(
        "refused offline: lines[0].product_id: no product 'GAUZE-5' in the clinic's"
        " catalogue (as of "
    )
    assert printed[2:] == [
        "accepted order-1",
        "INV-000001 4900",
        "a second payment is refused while the first is pending",
    ]


def test_payments_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(PAYMENTS_GUIDE)
    assert blocks, "docs/payments.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(PAYMENTS_GUIDE), "exec"), {})


def test_notifications_guide_python_blocks_run() -> None:
    blocks = python_blocks(NOTIFICATIONS_GUIDE)
    assert blocks, "docs/notifications.md has no Python example"
    for block in blocks:
        exec(compile(block, str(NOTIFICATIONS_GUIDE), "exec"), {})


def test_edge_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(EDGE_GUIDE)
    assert len(blocks) == 2, "docs/edge.md has its two Python examples"
    monkeypatch.chdir(tmp_path)
    names: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(EDGE_GUIDE), "exec"), names)
    assert callable(names["sync_through_a_box_if_there_is_one"])


def sdk_guide_sections() -> list[tuple[str, list[str]]]:
    """(title, python blocks) of each ``## `` section of docs/sdk.md that has any."""
    sections = []
    for part in SDK_GUIDE.read_text().split("\n## ")[1:]:
        title = part.splitlines()[0]
        blocks = re.findall(r"```python\n(.*?)```", part, flags=re.DOTALL)
        if blocks:
            sections.append((title, blocks))
    return sections


@pytest.mark.parametrize(
    ("title", "blocks"), sdk_guide_sections(), ids=[t for t, _ in sdk_guide_sections()]
)
def test_sdk_guide_sections_run(
    title: str, blocks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each section of the SDK guide runs as written, its blocks in one namespace, in a
    fresh directory."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, f"{SDK_GUIDE} ({title})", "exec"), namespace)


FHIR_GUIDE = ROOT / "docs" / "fhir.md"


def test_fhir_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/fhir.md's examples run as written, in one namespace, in a fresh directory
    (the FHIR client's, which needs a live server, runs in
    tests/server/test_fhir_endpoint.py)."""
    blocks = [b for b in python_blocks(FHIR_GUIDE) if "FHIR_BASE = " not in b]
    assert blocks, "docs/fhir.md has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(FHIR_GUIDE), "exec"), namespace)
    assert (tmp_path / "amara.json").is_file()
