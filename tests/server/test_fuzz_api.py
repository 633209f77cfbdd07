"""Schemathesis over the server's OpenAPI document, as a device, a clinician and an
admin: generated requests to every operation (the sync push with generated wire
messages, a binary media type schemathesis cannot make up alone) must never get a 5xx
or an answer off the contract: every status answered is one the operation declares,
with a body of its declared schema (errors: the one `Error` shape) and a declared
content type. Bounded: a fixed number of examples per operation (fewer with
``COHERENCY_FUZZ_EXAMPLES``), each sent as one of the three roles in turn (every role
gets a third of every operation's examples; sending each as all three took three times
as long, 10 minutes on PostgreSQL alone on a slow day). Every body on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import pyotp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crdt import SYNC_MEDIA_TYPE, Entry, EntryKind, Patient, RecordDocument, SyncMessage
from crdt import encode_message as encode
from sync_server.identity.users import create_user

EXAMPLES_PER_OPERATION = int(os.environ.get("COHERENCY_FUZZ_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
"""No 5xx; and every answer on the contract: a declared status, content type, body."""


def _wire_messages() -> st.SearchStrategy[bytes]:
    """Sync messages: well-framed ones carrying documents (real, or garbage payloads
    under real-looking ids), and raw bytes."""
    document = RecordDocument.create(
        Patient,
        {"given_name": "Fuzz", "family_name": "Case", "birth_date": "1960-01-01"},
        device_id=str(uuid.UUID(int=9)),
        clinic_id="not-this-clinic",
    ).save()
    entry = st.builds(
        lambda doc_id, payload: Entry(EntryKind.DOC, doc_id, payload),
        st.from_regex(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", fullmatch=True
        ),
        st.one_of(st.just(document), st.binary(max_size=256)),
    )
    framed = st.lists(entry, max_size=4).map(lambda es: encode(SyncMessage({}, tuple(es))))
    return st.one_of(framed, st.binary(max_size=512))


schemathesis.openapi.media_type(SYNC_MEDIA_TYPE, _wire_messages())


def _staff_token(server: Any, role: str, clinic_id: str | None) -> str:
    username = f"fuzz-{role}-{uuid.uuid4().hex[:8]}"
    password = "a long fuzzing password"
    with server.db.write() as session:
        _, secret = create_user(
            session=session,
            username=username,
            password=password,
            role=role,
            organisation_id=server.organisation_id,
            clinic_id=clinic_id,
            secret_box=server.app.state.secret_box,
        )
    assert secret is not None
    with server.http() as http:
        answer = http.post(
            "/v1/auth/login",
            json={"username": username, "password": password, "totp": pyotp.TOTP(secret).now()},
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


_TOKENS: dict[str, dict[str, str]] = {}


def _tokens(server: Any) -> dict[str, str]:
    """A device, a clinician and an admin of one clinic, once per server."""
    if server.url not in _TOKENS:
        clinic = server.new_clinic()
        _, device = server.device_token(clinic, ttl=timedelta(hours=2))
        _TOKENS[server.url] = {
            "device": device,
            "clinician": _staff_token(server, "clinician", clinic),
            "admin": _staff_token(server, "admin", None),
        }
    return _TOKENS[server.url]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_5xx_or_an_answer_off_the_contract(
    server: Any, mode: GenerationMode
) -> None:
    """Every operation, valid (positive) and schema-violating (negative) requests.

    Driven operation by operation with Hypothesis (schemathesis's own pytest plugin
    does not load under this pytest), as a device, a clinician and an admin in turn.
    """
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    roles = list(_tokens(server).items())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20  # the whole API, not a corner of it
    calls = unsatisfiable = 0
    reached: dict[str, set[str]] = {role: set() for role, _ in roles}
    off_contract: list[str] = []

    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            nonlocal calls
            role, token = roles[calls % len(roles)]
            calls += 1
            reached[role].add(f"{case.operation.method} {case.operation.path}")
            case.call_and_validate(
                base_url=server.url,
                headers={"authorization": f"Bearer {token}"},
                checks=CHECKS,
                timeout=30,
            )

        try:
            check()
        except Unsatisfiable:
            # Negative mode has nothing to break in an operation without inputs
            # (GET /healthz): no request to make.
            assert mode is GenerationMode.NEGATIVE
            unsatisfiable += 1
        except (Failure, FailureGroup) as failures:
            # Every operation is swept, and all that broke the contract are reported.
            off_contract.append(f"{operation.method.upper()} {operation.path}: {failures}")
    print(f"fuzz {mode.value}: {len(operations)} operations, {calls} requests")
    assert not off_contract, "\n\n".join(off_contract)
    assert calls >= len(operations) - unsatisfiable
    # Hypothesis made at least three examples of nearly every operation, so every role
    # met nearly the whole API.
    for role, seen in reached.items():
        assert len(seen) >= (len(operations) - unsatisfiable) * 0.9, role
    assert unsatisfiable < len(operations) // 2
