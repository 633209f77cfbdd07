"""Convergence by property: several replicas, random edits, a lossy link, then retry.

Two state machines. `EdgeReplicas` drives real `EdgeClient` stores (SQLCipher, fast
KDF) through their public collections and syncs random pairs over a link that drops,
duplicates and reorders messages (and, in its variants, through bundles some of which
are lost, or through a `MemoryHub` whose calls are cut before or after it acts);
`CrdtReplicas` does the same with bare `RecordDocument`s in `MemoryDocumentStore`s,
cheaply enough for many more examples. Both end with clean sync rounds across all
pairs until nothing moves, then require every replica to hold exactly the same
documents, projections and conflicts.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import uuid
from collections import deque
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import edge_sdk
from crdt import (
    ClinicalNote,
    FieldConflict,
    MemoryDocumentStore,
    Patient,
    RecordDocument,
    SyncSession,
    Wound,
    run_in_memory,
)
from edge_sdk import (
    Argon2Params,
    BlobDownload,
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    PassphraseKeyProvider,
    PushAnswer,
    ServerUnreachableError,
    UploadState,
)

FAST_KDF = Argon2Params.fast()
CLINIC = "clinic-1"
BUNDLE_PASSPHRASE = "bundle passphrase"

EDGE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CRDT_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Small value pools, so independent writes often hit the same field concurrently.
GIVEN = ["Ada", "Bea", "Chidi", "Zoë", "Åsa"]
FAMILY = ["Okafor", "Brown", "Müller", "李"]
MRN = [None, "MRN-1", "MRN-2"]
SEX = ["female", "male", "other", "unknown"]
BIRTH = ["1950-03-01", "1961-12-31", "1988-02-29"]
CONTACTS: list[list[dict[str, str]]] = [
    [],
    [{"kind": "phone", "value": "+44 20 7946 0000"}],
    [{"kind": "email", "value": "care@example.org", "label": "work"}],
]
SITES = ["left heel", "sacrum", "right shin"]
STATUS = ["active", "healing", "deteriorating", "healed", "closed"]
ETIOLOGY = ["pressure", "venous", "diabetic", "unknown"]
ALPHABET = "abc xyz\nÉé😀"

PATIENT_CHANGES = st.one_of(
    st.fixed_dictionaries({"given_name": st.sampled_from(GIVEN)}),
    st.fixed_dictionaries({"family_name": st.sampled_from(FAMILY)}),
    st.fixed_dictionaries({"mrn": st.sampled_from(MRN)}),
    st.fixed_dictionaries({"sex": st.sampled_from(SEX)}),
    st.fixed_dictionaries({"birth_date": st.sampled_from(BIRTH)}),
    st.fixed_dictionaries({"contacts": st.sampled_from(CONTACTS)}),
    st.fixed_dictionaries({"given_name": st.sampled_from(GIVEN), "mrn": st.sampled_from(MRN)}),
)
WOUND_CHANGES = st.one_of(
    st.fixed_dictionaries({"status": st.sampled_from(STATUS)}),
    st.fixed_dictionaries({"body_site": st.sampled_from(SITES)}),
    st.fixed_dictionaries({"etiology": st.sampled_from(ETIOLOGY)}),
    st.fixed_dictionaries({"onset": st.sampled_from([None, "2024-01-02", "2024-03-04"])}),
)
COLLECTION_NAMES = st.sampled_from(["patients", "wounds", "notes"])
INDEX = st.integers(min_value=0, max_value=10_000)  # taken modulo whatever list it picks from
TEXT = st.text(alphabet=ALPHABET, max_size=6)
# (collection, field, pool) for writes of one field on two replicas at once.
CONTESTED: list[tuple[str, str, list[Any]]] = [
    ("patients", "given_name", GIVEN),
    ("patients", "sex", SEX),
    ("patients", "mrn", MRN),
    ("patients", "contacts", CONTACTS),
    ("wounds", "status", STATUS),
    ("wounds", "onset", [None, "2024-01-02", "2024-03-04"]),
]
SHARED: list[tuple[type[Any], dict[str, Any]]] = [
    (Patient, {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"}),
    (Wound, {"patient_id": "p-1", "body_site": "sacrum"}),
    (ClinicalNote, {"patient_id": "p-1", "author": "Dr Mensah", "text": "Shared note."}),
]


# Few records, so that independent edits keep landing on the same ones.
MAX_RECORDS = 6


def can_add(machine: Any) -> bool:
    return bool(machine.created < MAX_RECORDS)


def has_records(machine: Any) -> bool:
    return bool(machine.created)


def pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)]


def edited(text: str, rng: random.Random) -> str:
    """A plausible whole-text edit: insert, delete or rewrite a stretch."""
    a = rng.randint(0, len(text))
    b = rng.randint(a, min(len(text), a + 5))
    insert = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))
    how = rng.choice(["insert", "delete", "replace", "upper"])
    if how == "insert":
        return text[:a] + insert + text[a:]
    if how == "delete":
        return text[:a] + text[b:]
    if how == "upper":
        return text[:a] + text[a:b].upper() + text[b:]
    return text[:a] + insert + text[b:]


# ---------------------------------------------------------------- the lossy link


class LossyLink:
    """A link between two sessions that drops, duplicates and reorders messages.

    `run_in_memory` passes every message through one `channel` callable; the link
    wraps each session in a `_Side` so it knows which way a message travels (the two
    sides are polled, then their messages delivered, in the same order every round).
    Reordering holds up to `hold` messages of one direction back and releases them,
    shuffled, with a later message going the same way; whatever is still held when
    the sessions stop is lost.
    """

    def __init__(self, rng: random.Random, *, drop: float, duplicate: float, hold: int) -> None:
        self._rng = rng
        self._drop = drop
        self._duplicate = duplicate
        self._hold = hold
        self._senders: deque[str] = deque()
        self._held: dict[str, list[bytes]] = {"a": [], "b": []}
        self.delivered = 0

    def run(self, a: SyncSession, b: SyncSession) -> int:
        """Exchange until neither side has anything to send; return the rounds."""
        return run_in_memory(_Side(a, "a", self), _Side(b, "b", self), channel=self)  # type: ignore[arg-type]

    def sent_by(self, side: str) -> None:
        self._senders.append(side)

    def __call__(self, data: bytes) -> list[bytes]:
        held = self._held[self._senders.popleft()]
        out: list[bytes] = []
        roll = self._rng.random()
        if roll < self._drop:
            pass  # lost on the link: nothing is delivered
        elif roll < self._drop + self._duplicate:
            out += [data, data]
        elif len(held) < self._hold and self._rng.random() < 0.5:
            held.append(data)
            return []
        else:
            out.append(data)
        if held and self._rng.random() < 0.5:
            out += held
            held.clear()
            self._rng.shuffle(out)
        self.delivered += len(out)
        return out


class _Side:
    """A session as the link sees it: what it polls is noted as sent from this side."""

    def __init__(self, session: SyncSession, name: str, link: LossyLink) -> None:
        self._session = session
        self._name = name
        self._link = link

    def poll(self) -> bytes | None:
        data = self._session.poll()
        if data is not None:
            self._link.sent_by(self._name)
        return data

    def receive(self, data: bytes) -> None:
        self._session.receive(data)


LINKS = st.builds(
    lambda seed, drop, duplicate, hold: LossyLink(
        random.Random(seed), drop=drop, duplicate=duplicate, hold=hold
    ),
    seed=st.integers(0, 2**32 - 1),
    drop=st.sampled_from([0.0, 0.1, 0.3]),
    duplicate=st.sampled_from([0.0, 0.1, 0.3]),
    hold=st.sampled_from([0, 1, 3]),
)


# ---------------------------------------------------------------- EdgeClient replicas


class EdgeReplicas(RuleBasedStateMachine):
    """3-5 `EdgeClient` stores of one clinic editing offline and meeting at random."""

    # Set by the test from its fixtures: a pytest tmp_path and conftest's `snapshot`.
    base: ClassVar[Path]
    snapshot: ClassVar[Callable[[EdgeClient], dict[str, Any]]]
    bundle_api: ClassVar[ModuleType | None] = None  # edge_sdk, for its bundle functions

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="replicas-", dir=self.base))
        self.clients: list[EdgeClient] = []
        self.exchanges = 0
        self.created = 0

    @initialize(count=st.integers(min_value=3, max_value=5), shared=st.booleans())
    def make_replicas(self, count: int, shared: bool) -> None:
        for i in range(count):
            provider = PassphraseKeyProvider(f"passphrase {i}", params=FAST_KDF)
            self.clients.append(EdgeClient.init(self.root / f"r{i}", provider, clinic_id=CLINIC))
        if shared:
            # Records every replica holds from the start, so edits are concurrent at once.
            first = self.clients[0]
            patient = first.patients.add(
                given_name="Ada", family_name="Okafor", birth_date="1950-03-01"
            )
            first.wounds.add(patient_id=patient.id, body_site="sacrum")
            first.notes.add(patient_id=patient.id, author="Dr Mensah", text="Shared note.")
            self.created = 3
            for other in self.clients[1:]:
                run_in_memory(first.sync_session(), other.sync_session())

    # ------------------------------------------------------------ helpers
    def client(self, index: int) -> EdgeClient:
        return self.clients[index % len(self.clients)]

    def ids(self, client: EdgeClient, collection: str) -> list[str]:
        rows = client.replica.store.query_records(collection, [], [])
        return [row["id"] for row in rows]

    def live_patients(self, client: EdgeClient) -> list[str]:
        """Patients a new wound or note may point at here: held and not deleted.

        Local creation refuses other references; records pointing at a patient deleted
        (or not yet received) elsewhere still arise, through sync.
        """
        rows = client.replica.store.query_records("patients", ["deleted = 0"], [])
        return [row["id"] for row in rows]

    # ------------------------------------------------------------ edits
    @precondition(can_add)
    @rule(replica=INDEX, given=st.sampled_from(GIVEN), family=st.sampled_from(FAMILY))
    def add_patient(self, replica: int, given: str, family: str) -> None:
        self.client(replica).patients.add(
            given_name=given, family_name=family, birth_date=date(1950, 3, 1), mrn="MRN-0"
        )
        self.created += 1

    @precondition(can_add)
    @rule(replica=INDEX, patient=INDEX, site=st.sampled_from(SITES))
    def add_wound(self, replica: int, patient: int, site: str) -> None:
        client = self.client(replica)
        patients = self.live_patients(client)
        if patients:
            client.wounds.add(patient_id=pick(patients, patient), body_site=site)
            self.created += 1

    @precondition(can_add)
    @rule(replica=INDEX, patient=INDEX, text=TEXT)
    def add_note(self, replica: int, patient: int, text: str) -> None:
        client = self.client(replica)
        patients = self.live_patients(client)
        if patients:
            client.notes.add(patient_id=pick(patients, patient), author="Dr Mensah", text=text)
            self.created += 1

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, changes=PATIENT_CHANGES)
    def update_patient(self, replica: int, record: int, changes: dict[str, Any]) -> None:
        client = self.client(replica)
        patients = self.ids(client, "patients")
        if patients:
            client.patients.update(pick(patients, record), **changes)

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, changes=WOUND_CHANGES)
    def update_wound(self, replica: int, record: int, changes: dict[str, Any]) -> None:
        client = self.client(replica)
        wounds = self.ids(client, "wounds")
        if wounds:
            client.wounds.update(pick(wounds, record), **changes)

    @precondition(has_records)
    @rule(replica=INDEX, collection=COLLECTION_NAMES, record=INDEX, restore=st.booleans())
    def delete_or_restore(self, replica: int, collection: str, record: int, restore: bool) -> None:
        client = self.client(replica)
        ids = self.ids(client, collection)
        if ids:
            target = client.collection(collection)
            if restore:
                target.restore(pick(ids, record))
            else:
                target.delete(pick(ids, record))

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, where=st.floats(0, 1), delete=st.integers(0, 3), text=TEXT)
    def splice_note(self, replica: int, record: int, where: float, delete: int, text: str) -> None:
        client = self.client(replica)
        notes = self.ids(client, "notes")
        if notes:
            note_id = pick(notes, record)
            length = len(client.notes.get(note_id).text)
            position = int(where * length)
            client.notes.splice(note_id, position, min(delete, length - position), text)

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, seed=st.integers(0, 2**16))
    def edit_note(self, replica: int, record: int, seed: int) -> None:
        client = self.client(replica)
        notes = self.ids(client, "notes")
        if notes:
            note_id = pick(notes, record)
            client.notes.edit(note_id, edited(client.notes.get(note_id).text, random.Random(seed)))

    @rule(replica=INDEX, which=INDEX, choice=INDEX)
    def resolve_conflict(self, replica: int, which: int, choice: int) -> None:
        client = self.client(replica)
        conflicts = client.conflicts()
        if conflicts:
            conflict: FieldConflict = pick(conflicts, which)
            value = pick(list(conflict.values), choice).value
            client.collection(conflict.collection).resolve(
                conflict.record_id, conflict.field, value
            )
            left = {(c.record_id, c.field) for c in client.conflicts()}
            assert (conflict.record_id, conflict.field) not in left

    # ------------------------------------------------------------ meetings
    @precondition(has_records)
    @rule(
        first=INDEX,
        offset=st.integers(1, 4),
        record=INDEX,
        contested=st.sampled_from(CONTESTED),
        choices=st.tuples(INDEX, INDEX),
    )
    def write_one_field_on_two_replicas(
        self,
        first: int,
        offset: int,
        record: int,
        contested: tuple[str, str, list[Any]],
        choices: tuple[int, int],
    ) -> None:
        collection, field, pool = contested
        i = first % len(self.clients)
        j = (i + offset) % len(self.clients)
        both = sorted(
            set(self.ids(self.clients[i], collection)) & set(self.ids(self.clients[j], collection))
        )
        if i != j and both:
            record_id = pick(both, record)
            for client, choice in zip((self.clients[i], self.clients[j]), choices, strict=True):
                client.collection(collection).update(record_id, **{field: pick(pool, choice)})

    @rule(first=INDEX, offset=st.integers(1, 4), link=LINKS)
    def exchange(self, first: int, offset: int, link: LossyLink) -> None:
        i = first % len(self.clients)
        j = (i + offset) % len(self.clients)
        if i == j:
            return
        a, b = self.clients[i], self.clients[j]
        link.run(a.sync_session(), b.sync_session())
        self.exchanges += 1

    @rule(first=INDEX, offset=st.integers(1, 4))
    def exchange_cleanly(self, first: int, offset: int) -> None:
        i = first % len(self.clients)
        j = (i + offset) % len(self.clients)
        if i != j:
            run_in_memory(self.clients[i].sync_session(), self.clients[j].sync_session())
            self.exchanges += 1

    @invariant()
    def projections_match_documents(self) -> None:
        # Cheap enough on one replica per step; the teardown checks all of them.
        if self.clients:
            check_projections(self.clients[self.exchanges % len(self.clients)])

    # ------------------------------------------------------------ the end
    def teardown(self) -> None:
        try:
            if self.clients:
                converge_edge(self.clients, self.snapshot)
        finally:
            for client in self.clients:
                client.close()
            shutil.rmtree(self.root, ignore_errors=True)


class BundleReplicas(EdgeReplicas):
    """`EdgeReplicas` where some meetings are sync bundles on a file, some of them lost."""

    @rule(
        source=INDEX,
        offset=st.integers(1, 4),
        for_peer=st.booleans(),
        lost=st.booleans(),
    )
    def exchange_by_bundle(self, source: int, offset: int, for_peer: bool, lost: bool) -> None:
        assert self.bundle_api is not None
        i = source % len(self.clients)
        j = (i + offset) % len(self.clients)
        if i == j:
            return
        a, b = self.clients[i], self.clients[j]
        path = self.root / f"bundle-{uuid.uuid4().hex}.cohb"
        self.bundle_api.export_bundle(
            a,
            path,
            passphrase=BUNDLE_PASSPHRASE,
            peer_id=b.device_id if for_peer else None,
            kdf=FAST_KDF,
        )
        if not lost:  # a lost bundle: the final sync still has to get b there
            report = self.bundle_api.import_bundle(b, path, passphrase=BUNDLE_PASSPHRASE)
            assert report.rejected == []
        path.unlink()


class CutHub(MemoryTransport):
    """A `MemoryTransport` whose call number `cut_at` fails, before or after the hub
    acts on it (`ServerUnreachableError`, as a transport out of retries)."""

    def __init__(self, hub: MemoryHub, client: EdgeClient, *, cut_at: int, after: bool) -> None:
        super().__init__(
            hub,
            device_id=client.device_id,
            clinic_id=client.clinic_id,
            public_key=client.identity.public_key,
        )
        self.calls = 0
        self.cut_at = cut_at
        self.after = after

    def _cut(self, phase_after: bool) -> None:
        if self.calls == self.cut_at and phase_after == self.after:
            raise ServerUnreachableError(f"call {self.calls} cut")

    def push(self, message: bytes) -> PushAnswer:
        self.calls += 1
        self._cut(False)
        answer = super().push(message)
        self._cut(True)
        return answer

    def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
        self.calls += 1
        self._cut(False)
        answer = super().pull(cursor=cursor, limit=limit, wait=wait)
        self._cut(True)
        return answer

    def declare_upload(self, *, sha256: str, size: int) -> UploadState:
        raise AssertionError("these replicas hold no blobs")

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
        raise AssertionError("these replicas hold no blobs")

    def download(self, *, sha256: str, start: int) -> BlobDownload:
        raise AssertionError("these replicas hold no blobs")


class HubReplicas(EdgeReplicas):
    """`EdgeReplicas` that also sync through a `MemoryHub` (small pages), some syncs cut
    before or after the hub acts; at the end, clean hub rounds alone must converge."""

    def __init__(self) -> None:
        super().__init__()
        self.hub = MemoryHub(page_size=2)

    def enrol_everyone(self) -> None:
        """Every replica's device is enrolled with the hub (as with a server, before
        it relays changes they made)."""
        for client in self.clients:
            self.hub.enrol(
                device_id=client.device_id,
                clinic_id=client.clinic_id,
                public_key=client.identity.public_key,
            )

    @rule(replica=INDEX, cut_at=st.integers(0, 4), after=st.booleans())
    def sync_through_hub(self, replica: int, cut_at: int, after: bool) -> None:
        self.enrol_everyone()
        client = self.client(replica)
        transport = CutHub(self.hub, client, cut_at=cut_at, after=after)
        try:
            client.sync(transport=transport)
        except ServerUnreachableError:
            assert cut_at  # call 0 never happens: an uncut sync
        self.exchanges += 1

    def teardown(self) -> None:
        try:
            if self.clients:
                self.enrol_everyone()
                for _ in range(len(self.clients) + 2):
                    moved = False
                    for client in self.clients:
                        result = client.sync(
                            transport=CutHub(self.hub, client, cut_at=0, after=False)
                        )
                        assert result.refused_by_server == result.rejected == []
                        moved |= bool(result.pushed or result.pulled)
                    if not moved:
                        break
                else:
                    pytest.fail("clean hub rounds never became quiescent")
                first = self.snapshot(self.clients[0])
                for client in self.clients[1:]:
                    assert self.snapshot(client) == first
        finally:
            super().teardown()


def check_projections(client: EdgeClient) -> None:
    """Every projection row is exactly the document's validated record."""
    store = client.replica.store
    for doc_id in store.document_heads():
        document = store.get_document(doc_id)
        assert document is not None
        assert store.get_record(document.collection, doc_id) == json.loads(
            json.dumps(document.read().model_dump(mode="json"))
        )


def converge_edge(
    clients: list[EdgeClient], snapshot: Callable[[EdgeClient], dict[str, Any]]
) -> None:
    """Clean sync rounds over every pair until a round moves nothing; then all equal."""
    pairs = [(a, b) for n, a in enumerate(clients) for b in clients[n + 1 :]]
    for _ in range(len(clients) + 2):
        moved = False
        for a, b in pairs:
            sa, sb = a.sync_session(), b.sync_session()
            run_in_memory(sa, sb)
            assert sa.report.rejected == sb.report.rejected == []
            moved |= bool(sa.report.received or sb.report.received)
        if not moved:
            break
    else:
        pytest.fail("clean sync rounds never became quiescent")
    first = snapshot(clients[0])
    for client in clients[1:]:
        assert snapshot(client) == first
    for client in clients:
        check_projections(client)
        store = client.replica.store
        documents = [store.get_document(d) for d in sorted(client.replica.document_heads())]
        expected = [c for d in documents if d is not None for c in d.conflicts()]
        assert sorted(client.conflicts(), key=repr) == sorted(expected, key=repr)


@pytest.mark.slow
def test_edge_replicas_converge(tmp_path: Path, snapshot: Callable[..., Any]) -> None:
    machine = type(
        "EdgeRun", (EdgeReplicas,), {"base": tmp_path, "snapshot": staticmethod(snapshot)}
    )
    run_state_machine_as_test(machine, settings=EDGE_SETTINGS)


@pytest.mark.slow
def test_edge_replicas_converge_through_a_hub_too(
    tmp_path: Path, snapshot: Callable[..., Any]
) -> None:
    attributes = {"base": tmp_path, "snapshot": staticmethod(snapshot)}
    machine = type("HubRun", (HubReplicas,), attributes)
    run_state_machine_as_test(machine, settings=EDGE_SETTINGS)


@pytest.mark.slow
def test_edge_replicas_converge_through_bundles_too(
    tmp_path: Path, snapshot: Callable[..., Any]
) -> None:
    attributes = {"base": tmp_path, "snapshot": staticmethod(snapshot), "bundle_api": edge_sdk}
    machine = type("BundleRun", (BundleReplicas,), attributes)
    run_state_machine_as_test(machine, settings=EDGE_SETTINGS)


# ---------------------------------------------------------------- bare crdt replicas


class CrdtReplicas(RuleBasedStateMachine):
    """3-5 in-memory replicas of bare record documents; cheap, so many examples."""

    def __init__(self) -> None:
        super().__init__()
        self.replicas: list[tuple[str, MemoryDocumentStore]] = []
        self.created = 0

    @initialize(count=st.integers(min_value=3, max_value=5), shared=st.booleans())
    def make_replicas(self, count: int, shared: bool) -> None:
        self.replicas = [
            (str(uuid.UUID(int=n + 1, version=4)), MemoryDocumentStore()) for n in range(count)
        ]
        if shared:
            device, store = self.replicas[0]
            store.put_documents(
                [
                    RecordDocument.create(schema, values, device_id=device, clinic_id=CLINIC)
                    for schema, values in SHARED
                ]
            )
            self.created = len(SHARED)
            for other in self.replicas[1:]:
                run_in_memory(session(self.replicas[0]), session(other))

    def docs(self, store: MemoryDocumentStore, schema: type[Any]) -> list[RecordDocument]:
        return [d for _, d in sorted(store.documents.items()) if d.schema is schema]

    def change(self, replica: int, schema: type[Any], record: int, how: Callable[..., Any]) -> None:
        device, store = pick(self.replicas, replica)
        docs = self.docs(store, schema)
        if docs:
            doc = pick(docs, record)
            how(doc, device)
            store.put_documents([doc])

    @precondition(can_add)
    @rule(replica=INDEX, given=st.sampled_from(GIVEN))
    def add_patient(self, replica: int, given: str) -> None:
        device, store = pick(self.replicas, replica)
        values = {"given_name": given, "family_name": "Okafor", "birth_date": "1950-03-01"}
        store.put_documents(
            [RecordDocument.create(Patient, values, device_id=device, clinic_id=CLINIC)]
        )
        self.created += 1

    @precondition(can_add)
    @rule(replica=INDEX, site=st.sampled_from(SITES))
    def add_wound(self, replica: int, site: str) -> None:
        device, store = pick(self.replicas, replica)
        values = {"patient_id": "p-1", "body_site": site}
        store.put_documents(
            [RecordDocument.create(Wound, values, device_id=device, clinic_id=CLINIC)]
        )
        self.created += 1

    @precondition(can_add)
    @rule(replica=INDEX, text=TEXT)
    def add_note(self, replica: int, text: str) -> None:
        device, store = pick(self.replicas, replica)
        values = {"patient_id": "p-1", "author": "Dr Mensah", "text": text}
        store.put_documents(
            [RecordDocument.create(ClinicalNote, values, device_id=device, clinic_id=CLINIC)]
        )
        self.created += 1

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, changes=PATIENT_CHANGES)
    def update_patient(self, replica: int, record: int, changes: dict[str, Any]) -> None:
        self.change(replica, Patient, record, lambda d, dev: d.update(changes, device_id=dev))

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, changes=WOUND_CHANGES)
    def update_wound(self, replica: int, record: int, changes: dict[str, Any]) -> None:
        self.change(replica, Wound, record, lambda d, dev: d.update(changes, device_id=dev))

    @precondition(has_records)
    @rule(
        replica=INDEX,
        schema=st.sampled_from([Patient, Wound, ClinicalNote]),
        record=INDEX,
        restore=st.booleans(),
    )
    def delete_or_restore(
        self, replica: int, schema: type[Any], record: int, restore: bool
    ) -> None:
        self.change(
            replica,
            schema,
            record,
            lambda d, dev: d.restore(device_id=dev) if restore else d.delete(device_id=dev),
        )

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, where=st.floats(0, 1), delete=st.integers(0, 3), text=TEXT)
    def splice_note(self, replica: int, record: int, where: float, delete: int, text: str) -> None:
        def splice(doc: RecordDocument, device: str) -> None:
            length = len(doc.read().text)  # type: ignore[attr-defined]
            position = int(where * length)
            doc.splice_text(
                "text", position, min(delete, length - position), text, device_id=device
            )

        self.change(replica, ClinicalNote, record, splice)

    @precondition(has_records)
    @rule(replica=INDEX, record=INDEX, seed=st.integers(0, 2**16))
    def edit_note(self, replica: int, record: int, seed: int) -> None:
        def edit(doc: RecordDocument, device: str) -> None:
            text = doc.read().text  # type: ignore[attr-defined]
            doc.update({"text": edited(text, random.Random(seed))}, device_id=device)

        self.change(replica, ClinicalNote, record, edit)

    @rule(replica=INDEX, which=INDEX, choice=INDEX)
    def resolve_conflict(self, replica: int, which: int, choice: int) -> None:
        device, store = pick(self.replicas, replica)
        conflicted = [(d, c) for d in store.documents.values() for c in d.conflicts()]
        if conflicted:
            doc, conflict = pick(conflicted, which)
            doc.resolve(conflict.field, pick(list(conflict.values), choice).value, device_id=device)
            store.put_documents([doc])
            assert conflict.field not in {c.field for c in doc.conflicts()}

    @precondition(has_records)
    @rule(
        first=INDEX,
        offset=st.integers(1, 4),
        record=INDEX,
        contested=st.sampled_from(CONTESTED),
        choices=st.tuples(INDEX, INDEX),
    )
    def write_one_field_on_two_replicas(
        self,
        first: int,
        offset: int,
        record: int,
        contested: tuple[str, str, list[Any]],
        choices: tuple[int, int],
    ) -> None:
        collection, field, pool = contested
        i = first % len(self.replicas)
        j = (i + offset) % len(self.replicas)
        (dev_a, a), (dev_b, b) = self.replicas[i], self.replicas[j]
        both = sorted(
            doc_id
            for doc_id, doc in a.documents.items()
            if doc.collection == collection and doc_id in b.documents
        )
        if i != j and both:
            record_id = pick(both, record)
            for device, store, choice in zip((dev_a, dev_b), (a, b), choices, strict=True):
                doc = store.documents[record_id]
                doc.update({field: pick(pool, choice)}, device_id=device)
                store.put_documents([doc])

    @rule(first=INDEX, offset=st.integers(1, 4), link=LINKS)
    def exchange(self, first: int, offset: int, link: LossyLink) -> None:
        i = first % len(self.replicas)
        j = (i + offset) % len(self.replicas)
        if i != j:
            link.run(session(self.replicas[i]), session(self.replicas[j]))

    @rule(first=INDEX, offset=st.integers(1, 4))
    def exchange_cleanly(self, first: int, offset: int) -> None:
        i = first % len(self.replicas)
        j = (i + offset) % len(self.replicas)
        if i != j:
            run_in_memory(session(self.replicas[i]), session(self.replicas[j]))

    @precondition(has_records)
    @rule(source=INDEX, into=INDEX, record=INDEX)
    def merge_directly(self, source: int, into: int, record: int) -> None:
        # The bundle path: a whole saved document merged in, not the sync protocol.
        _, from_store = pick(self.replicas, source)
        device, to_store = pick(self.replicas, into)
        if from_store.documents:
            doc = pick([d for _, d in sorted(from_store.documents.items())], record)
            copy = RecordDocument.load(doc.save(), device_id=device)
            held = to_store.get_document(doc.id)
            if held is None:
                to_store.put_documents([copy])
            elif held.merge(copy):
                to_store.put_documents([held])

    @invariant()
    def every_stored_document_is_valid(self) -> None:
        for _, store in self.replicas:
            for doc in store.documents.values():
                doc.read()

    def teardown(self) -> None:
        if not self.replicas:
            return
        pairs = [(a, b) for n, a in enumerate(self.replicas) for b in self.replicas[n + 1 :]]
        for _ in range(len(self.replicas) + 2):
            moved = False
            for a, b in pairs:
                sa, sb = session(a), session(b)
                run_in_memory(sa, sb)
                assert sa.report.rejected == sb.report.rejected == []
                moved |= bool(sa.report.received or sb.report.received)
            if not moved:
                break
        else:
            pytest.fail("clean sync rounds never became quiescent")
        first = crdt_state(self.replicas[0][1])
        for _, store in self.replicas[1:]:
            assert crdt_state(store) == first


def session(replica: tuple[str, MemoryDocumentStore]) -> SyncSession:
    device, store = replica
    return SyncSession(store, device_id=device)


def crdt_state(store: MemoryDocumentStore) -> dict[str, Any]:
    return {
        doc_id: (doc.heads, doc.values(), doc.conflicts())
        for doc_id, doc in sorted(store.documents.items())
    }


@pytest.mark.slow
def test_crdt_replicas_converge() -> None:
    run_state_machine_as_test(CrdtReplicas, settings=CRDT_SETTINGS)
