"""The SDK's sync client against a real server: enrolment, convergence, resumability.

Every test runs on SQLite and on PostgreSQL (the `server` fixture).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt import COLLECTIONS
from edge_sdk import (
    Argon2Params,
    DeviceRevokedError,
    EdgeClient,
    EnrolmentError,
    HttpTransport,
    NotEnrolledError,
    PassphraseKeyProvider,
    RetryPolicy,
    ServerUnreachableError,
    SyncProgress,
    SyncResult,
)
from sync_server import document_heads
from sync_server.identity.devices import revoke_device
from sync_server.identity.enrolment import create_enrolment_token

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)


def sync_with(
    client: EdgeClient, *, retry: RetryPolicy, transport: httpx.BaseTransport | None = None
) -> SyncResult:
    """Sync through an HTTP transport of its own (over `transport`), closed afterwards."""
    with HttpTransport(client.replica, retry=retry, transport=transport) as server:
        return client.sync(transport=server)


class Devices:
    """Makes enrolled device stores for one test."""

    def __init__(self, root: Path, server: Any) -> None:
        self.root = root
        self.server = server
        self.clients: list[EdgeClient] = []

    def token(self, clinic_id: str) -> str:
        with self.server.db.write() as session:
            token, _ = create_enrolment_token(
                session=session, clinic_id=clinic_id, ttl=timedelta(minutes=10)
            )
        return token

    def new(self, clinic_id: str, name: str, *, enroll: bool = True) -> EdgeClient:
        client = EdgeClient.init(
            self.root / name,
            PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
            clinic_id=clinic_id,
        )
        self.clients.append(client)
        if enroll:
            client.enroll(self.server.url, self.token(clinic_id), name=name)
        return client


@pytest.fixture
def devices(tmp_path: Path, server: Any) -> Iterator[Devices]:
    made = Devices(tmp_path, server)
    yield made
    for client in made.clients:
        client.close()


def add_patient(client: EdgeClient, family: str) -> str:
    return client.patients.add(given_name="Ada", family_name=family, birth_date=date(1980, 5, 6)).id


def state(client: EdgeClient) -> dict[str, Any]:
    store = client.replica.store
    return {
        "records": {
            name: json.dumps(store.query_records(name, [], []), sort_keys=True)
            for name in COLLECTIONS
        },
        "heads": {k: [h.hex() for h in v] for k, v in sorted(store.document_heads().items())},
    }


def test_enrolled_devices_of_a_clinic_exchange_records(devices: Devices, server: Any) -> None:
    clinic = server.new_clinic()
    a, b = devices.new(clinic, "a"), devices.new(clinic, "b")
    patient_id = add_patient(a, "Okafor")
    pushed = a.sync(retry=FAST)
    assert pushed.pushed == [patient_id]
    pulled = b.sync(retry=FAST)
    assert pulled.pulled == [patient_id]
    assert b.patients.get(patient_id).family_name == "Okafor"
    # A second sync moves nothing.
    again = a.sync(retry=FAST)
    assert again.pushed == [] and again.pulled == []


def test_the_server_holds_the_heads_its_devices_converged_on(devices: Devices, server: Any) -> None:
    clinic, other_clinic = server.new_clinic(), server.new_clinic()
    a, b = devices.new(clinic, "a"), devices.new(clinic, "b")
    add_patient(a, "Okafor")
    a.sync(retry=FAST)
    b.wounds.add(patient_id=add_patient(b, "Mensah"), body_site="sacrum")
    for client in (b, a):
        client.sync(retry=FAST)
    held = document_heads(server.settings, clinic_id=clinic)
    assert held == {doc_id: sorted(heads) for doc_id, heads in a.replica.document_heads().items()}
    assert len(held) == 3 and a.replica.document_heads() == b.replica.document_heads()
    assert document_heads(server.settings, clinic_id=other_clinic) == {}


def test_an_empty_store_takes_the_clinic_of_its_token(devices: Devices, server: Any) -> None:
    clinic = server.new_clinic()
    client = devices.new("not-yet-known", "fresh", enroll=False)
    enrollment = client.enroll(server.url, devices.token(clinic))
    assert enrollment.clinic_id == clinic == client.clinic_id
    add_patient(client, "Mbeki")
    assert len(client.sync(retry=FAST).pushed) == 1


def test_a_store_with_records_of_another_clinic_cannot_enrol(devices: Devices, server: Any) -> None:
    clinic = server.new_clinic()
    client = devices.new("some-other-clinic", "busy", enroll=False)
    add_patient(client, "Nakamura")
    token = devices.token(clinic)
    with pytest.raises(EnrolmentError, match="clinic"):
        client.enroll(server.url, token)
    # The token was not used up by the refusal.
    other = devices.new(clinic, "other", enroll=False)
    assert other.enroll(server.url, token).clinic_id == clinic


def test_sync_needs_an_enrolment(devices: Devices, server: Any) -> None:
    client = devices.new(server.new_clinic(), "lonely", enroll=False)
    with pytest.raises(NotEnrolledError):
        client.sync(retry=FAST)


@pytest.mark.parametrize("seed", [1, 2])
def test_offline_edits_converge_in_any_sync_order_and_stay_in_their_clinic(
    devices: Devices, server: Any, seed: int
) -> None:
    rng = random.Random(seed)
    clinic, other_clinic = server.new_clinic(), server.new_clinic()
    a, b = devices.new(clinic, "a"), devices.new(clinic, "b")
    c = devices.new(other_clinic, "c")
    shared = add_patient(a, "Shared")
    a.sync(retry=FAST)
    b.sync(retry=FAST)
    wound = b.wounds.add(patient_id=shared, body_site="left heel")
    c_patient = add_patient(c, "Elsewhere")
    for _ in range(3):
        for client in (a, b, c):  # offline edits on every device
            action = rng.choice(["add", "update", "note"])
            if action == "add":
                add_patient(client, f"P{rng.randrange(1000)}")
            elif action == "update" and client is not c:
                client.patients.update(shared, mrn=f"MRN-{rng.randrange(1000)}")
            else:
                target = shared if client is not c else c_patient
                client.notes.add(patient_id=target, author="Dr X", text=f"n{rng.random()}")
        order = [a, b, c]
        rng.shuffle(order)
        for client in order:
            client.sync(retry=FAST)
    for _ in range(2):  # let every device hear the last pushes
        for client in (a, b, c):
            client.sync(retry=FAST)
    assert state(a) == state(b)
    assert b.wounds.get(wound.id).patient_id == shared
    a_ids = set(a.replica.document_heads())
    c_ids = set(c.replica.document_heads())
    assert not a_ids & c_ids  # clinic C sees nothing of clinic A, and the other way
    assert c.patients.get(c_patient).family_name == "Elsewhere"
    # Concurrent MRN writes may conflict; both devices show the same conflict.
    assert a.conflicts() == b.conflicts()


class CuttingTransport(httpx.BaseTransport):
    """A real HTTP transport that drops the connection around chosen requests.

    `cut(request, phase)` decides: phase "before" fails the request before it is sent;
    "after" sends it (the server acts on it) and then loses the answer.
    """

    def __init__(self, cut: Callable[[httpx.Request, str], bool]) -> None:
        self._inner = httpx.HTTPTransport()
        self._cut = cut
        self.cuts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._cut(request, "before"):
            self.cuts += 1
            raise httpx.ConnectError("cut before sending", request=request)
        response = self._inner.handle_request(request)
        if self._cut(request, "after"):
            response.read()
            response.close()
            self.cuts += 1
            raise httpx.ReadError("cut after the server answered", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("phase", ["before", "after"])
@pytest.mark.parametrize("route", ["/v1/sync/push", "/v1/sync/pull", "/v1/auth/refresh"])
def test_a_cut_connection_loses_and_duplicates_nothing(
    devices: Devices, server: Any, route: str, phase: str
) -> None:
    clinic = server.new_clinic()
    a, b = devices.new(clinic, "a"), devices.new(clinic, "b")
    ids = {add_patient(a, f"Family{i}") for i in range(30)}
    sync_with(a, retry=FAST)
    ids |= {add_patient(a, f"Later{i}") for i in range(5)}
    seen: dict[str, int] = {}

    def cut(request: httpx.Request, when: str) -> bool:
        if request.url.path != route or when != phase:
            return False
        seen[route] = seen.get(route, 0) + 1
        return seen[route] <= 2  # the first two attempts fail, then it goes through

    transport, b_transport = CuttingTransport(cut), CuttingTransport(cut)
    a_result = sync_with(a, retry=FAST, transport=transport)
    b_result = sync_with(b, retry=FAST, transport=b_transport)
    assert transport.cuts + b_transport.cuts == 2  # and both syncs still finished
    if route == "/v1/auth/refresh":
        # A refresh is never resent (that would be reuse): the device key logs in.
        assert transport.cuts == b_transport.cuts == 1
    else:
        assert transport.cuts == 2 and a_result.retries >= 2
    assert set(b_result.pulled) == ids
    assert state(a)["records"] == state(b)["records"]
    # Nothing was duplicated: one document (and one patient row) per record.
    assert len(b.replica.document_heads()) == len(ids)
    assert len(b.patients.list()) == len(ids)


def test_a_server_that_stays_down_is_reported_after_the_retry_budget(
    devices: Devices, server: Any
) -> None:
    client = devices.new(server.new_clinic(), "a")
    add_patient(client, "Unsent")
    always = CuttingTransport(lambda request, phase: phase == "before")
    with pytest.raises(ServerUnreachableError, match="failed 6 times"):
        sync_with(client, retry=FAST, transport=always)
    # The record is still waiting and goes up on the next sync.
    assert len(client.sync(retry=FAST).pushed) == 1


def test_a_revoked_device_can_no_longer_sync(devices: Devices, server: Any) -> None:
    clinic = server.new_clinic()
    client = devices.new(clinic, "stolen")
    client.sync(retry=FAST)
    with server.db.write() as session:
        revoke_device(session=session, device_id=client.device_id)
    add_patient(client, "Never")
    with pytest.raises(DeviceRevokedError):
        client.sync(retry=FAST)


def test_a_lost_refresh_token_is_replaced_by_a_device_key_login(
    devices: Devices, server: Any
) -> None:
    clinic = server.new_clinic()
    client = devices.new(clinic, "a")
    with client.replica.store.transaction():
        client.replica.store.set_meta("sync.refresh_token", "lost-in-a-crash")
    add_patient(client, "StillSyncs")
    assert len(client.sync(retry=FAST).pushed) == 1


def test_progress_reports_each_phase(devices: Devices, server: Any) -> None:
    clinic = server.new_clinic()
    a, b = devices.new(clinic, "a"), devices.new(clinic, "b")
    for i in range(5):
        add_patient(a, f"P{i}")
    steps: list[SyncProgress] = []
    a.sync(retry=FAST, progress=steps.append)
    assert [s for s in steps if s.phase == "push"][-1] == SyncProgress("push", 5, 5)
    steps.clear()
    b.sync(retry=FAST, progress=steps.append)
    pulls = [s for s in steps if s.phase == "pull"]
    assert pulls[-1].done == 5 and pulls[-1].total == 5


def test_an_enrolment_whose_answer_was_lost_is_repeated_safely(
    devices: Devices, server: Any
) -> None:
    clinic = server.new_clinic()
    client = devices.new(clinic, "unlucky", enroll=False)
    lost: list[str] = []

    def cut_first_answer(request: httpx.Request, phase: str) -> bool:
        if request.url.path == "/v1/devices/enroll" and phase == "after" and not lost:
            lost.append("cut")
            return True
        return False

    enrollment = HttpTransport.enroll(
        client.replica,
        server.url,
        devices.token(clinic),
        retry=FAST,
        transport=CuttingTransport(cut_first_answer),
    )
    assert lost and enrollment.clinic_id == clinic
    add_patient(client, "Persistent")
    assert len(client.sync(retry=FAST).pushed) == 1


def test_syncs_and_model_checks_share_one_transport_and_token(
    devices: Devices, server: Any
) -> None:
    """One connection pool and one access token across syncs with their own retry
    policy and model checks between them: no token request after the first."""
    from sqlalchemy import func, select

    from sync_server.identity.tables import RefreshToken

    clinic = server.new_clinic()
    client = devices.new(clinic, "a")
    device_id = client.replica.identity.device_id

    def refreshes() -> int:
        with server.db.read() as session:
            count = session.scalar(select(func.count()).where(RefreshToken.subject_id == device_id))
        return int(count or 0)

    add_patient(client, "First")
    assert len(client.sync(retry=FAST).pushed) == 1
    issued = refreshes()  # the enrolment's, and the one the first sync's token rotated
    for i in range(3):
        add_patient(client, f"Then{i}")
        assert len(client.sync(retry=FAST).pushed) == 1
        client.update_model()  # whatever the server publishes (other tests publish models)
    assert refreshes() == issued
    # Another policy for sync is honoured: a transport of its own (and a token).
    assert client.sync(retry=RetryPolicy(attempts=2)).pushed == []
    assert refreshes() == issued + 1
