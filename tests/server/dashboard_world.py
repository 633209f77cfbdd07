"""The staff dashboard's test world: staff accounts with TOTP, and signed-in browsers
as plain HTTP clients (the Playwright tests drive a real chromium on top of these).

A TOTP code is accepted once per 30-second step per account (replay protection), in
the previous, current or next step: `StaffAccount.next_code` hands out each step once,
waiting for a fresh one when the current and next steps are spent.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
from sqlalchemy import select

from crdt import Wound, WoundAssessment
from sync_server.audit.tables import AuditEvent
from sync_server.identity.users import create_user
from sync_server.sync.projections import projection_row
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

PASSWORD = "correct horse battery staple"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class StaffAccount:
    """A staff account of the test organisation, with its TOTP secret."""

    username: str
    password: str
    totp_secret: str
    user_id: str
    clinic_id: str | None
    role: str
    _last_step: int = field(default=-1)

    def next_code(self) -> str:
        """A TOTP code the server has not seen for this account yet."""
        totp = pyotp.TOTP(self.totp_secret)
        while True:
            now = time.time()
            current = totp.timecode(now)
            # Never the previous step first: if the server's clock crosses into the
            # next step before the code arrives, that code is no longer accepted.
            step = max(self._last_step + 1, current)
            if step <= current + 1:
                self._last_step = step
                return totp.generate_otp(step)
            time.sleep(totp.interval - now % totp.interval + 0.05)


def new_staff(
    server: Any,
    clinic_id: str | None,
    *,
    role: str = "clinician",
    organisation_id: str | None = None,
) -> StaffAccount:
    """A fresh staff account with TOTP in `clinic_id` (None: an organisation admin) of
    `organisation_id` (default: the session's server's)."""
    username = f"{role}-{uuid.uuid4().hex[:10]}"
    with server.db.write() as session:
        user, secret = create_user(
            session=session,
            username=username,
            password=PASSWORD,
            role=role,
            organisation_id=organisation_id or server.organisation_id,
            clinic_id=clinic_id,
            secret_box=server.app.state.secret_box,
        )
        user_id = user.id
    assert secret is not None
    return StaffAccount(username, PASSWORD, secret, user_id, clinic_id, role)


def form_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(server: Any, account: StaffAccount) -> tuple[httpx.Client, str]:
    """A client signed in to the dashboard as `account`, and its session's CSRF token."""
    client = httpx.Client(base_url=server.url, timeout=60, follow_redirects=True)
    form = client.get("/dashboard/sign-in")
    answer = client.post(
        "/dashboard/sign-in",
        data={
            "csrf_token": form_token(form.text),
            "username": account.username,
            "password": account.password,
            "totp": account.next_code(),
        },
    )
    assert answer.status_code == 200, answer.text
    assert str(answer.url).endswith("/dashboard/patients"), answer.url
    return client, form_token(answer.text)


def audited_reads(server: Any, user_id: str) -> list[tuple[str, dict[str, list[str]]]]:
    """(outcome, target) of every read `user_id` made, oldest first."""
    with server.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.actor_id == user_id).order_by(AuditEvent.id)
        ).all()
        return [(e.outcome, json.loads(e.target or "{}")) for e in events if e.action == "read"]


T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SHA = "ab" * 32


def seed_patient(server: Any, clinic_id: str, family: str, *, mrn: str | None = None) -> str:
    """A patient row of `clinic_id` named Ada `family` (as a sync push projects it)."""
    pid = str(uuid.uuid4())
    with server.db.write() as session:
        session.add(
            PatientRow(
                id=pid,
                clinic_id=clinic_id,
                deleted=False,
                conflicted=False,
                updated_at="2026-03-01T10:00:00Z",
                record=json.dumps({"id": pid, "given_name": "Ada", "family_name": family}),
                given_name="Ada",
                family_name=family,
                birth_date="1950-01-02",
                sex="female",
                mrn=mrn,
            )
        )
    return pid


def _meta(clinic_id: str, moment: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "clinic_id": clinic_id,
        "created_at": moment,
        "created_by": str(uuid.uuid4()),
        "updated_at": moment,
        "updated_by": str(uuid.uuid4()),
    }


def seed_wound(
    server: Any,
    clinic_id: str,
    patient_id: str,
    areas: Sequence[tuple[float, float | None]],
    *,
    site: str = "left heel",
    deleted_days: tuple[float, ...] = (),
) -> tuple[str, list[str]]:
    """A wound with an assessment on each (day, area) of `areas` (volume shrinking faster
    than the area, a tissue composition, a scan on the first, a quality flag on the second); the
    assessments on `deleted_days` are deleted. Returns the wound id and the ids of the
    assessments not deleted, oldest first."""
    wound = Wound.model_validate(
        {
            **_meta(clinic_id, T0),
            "patient_id": patient_id,
            "body_site": site,
            "etiology": "pressure",
            "status": "active",
            "onset": "2026-02-20",
        }
    )
    rows: list[Any] = [WoundRow(**projection_row("wounds", wound.model_dump(mode="json"), False))]
    kept = []
    for n, (day, area) in enumerate(areas):
        moment = T0 + timedelta(days=day)
        granulation = min(90.0, 30.0 + 2 * day)
        assessment = WoundAssessment.model_validate(
            {
                **_meta(clinic_id, moment),
                "deleted": day in deleted_days,
                "wound_id": wound.id,
                "patient_id": patient_id,
                "captured_at": moment,
                "device_id": str(uuid.uuid4()),
                "clinician": "Nurse Okafor",
                "measurements": {
                    "area_cm2": area,
                    "perimeter_cm": 12.5,
                    "length_cm": 4.25,
                    "width_cm": 3.0,
                    "max_depth_mm": 6.5,
                    "mean_depth_mm": 3.25,
                    "volume_cm3": None if area is None else round(area * (0.3 - day / 400), 3),
                    "area_method": "measured",
                },
                "model_output": {
                    "model_id": "wound-seg",
                    "model_version": "2.3.1",
                    "confidence": 0.87,
                    "tissue_composition": {
                        "granulation": granulation,
                        "slough": 100.0 - granulation - 10.0,
                        "necrosis": 10.0,
                    },
                },
                "blobs": [{"sha256": SHA, "size": 1000, "kind": "scan-pointcloud"}]
                if n == 0
                else [],
                "quality_flags": ["low_light"] if n == 1 else [],
            }
        )
        dumped = assessment.model_dump(mode="json")
        rows.append(AssessmentRow(**projection_row("assessments", dumped, False)))
        if not assessment.deleted:
            kept.append(assessment.id)
    with server.db.write() as session:
        session.add_all(rows)
    return wound.id, kept
