"""Every public SDK call that touches patient data writes exactly its audit rows.

`TABLE` names every public method and property of `EdgeClient`, every public method of
the objects a client exposes (its collections, `bookings`, `orders`, `payments`,
`blobs`, `models`), and every function of `edge_sdk.__all__` that takes a client or a
replica. Each maps to the rows one call writes in the device's audit log, with a
recipe that builds what the call needs and makes it, or to the reason it writes none.

- `test_the_table_names_the_whole_public_surface`: the surface, found by introspection,
  is exactly the table's keys. A new method without an entry fails it, and so does an
  entry for a method that is gone.
- `test_each_call_writes_exactly_its_rows`: each entry with rows is called for real on
  a store synced with an in-memory hub (`MemoryHub`, the server's sync semantics), and
  the rows written during the call are compared whole (count, operation, action,
  collection, patients, outcome); no name or clinical value is in the log.

The same calls over HTTP write the same rows (the gate is below the transport); the
server's side of an audited sync is tests/server/test_device_audit_push.py.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

import edge_sdk
from crdt import (
    Availability,
    Catalogue,
    Decision,
    Directory,
    IntentKind,
    Invoice,
    NoConflictError,
    Notice,
    Record,
    RecordDocument,
    RecordValidationError,
    availability_id,
    catalogue_id,
    decision_id,
    directory_id,
    invoice_record_id,
    notice_id,
    run_in_memory,
)
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    PassphraseKeyProvider,
    ReadOnlyCollectionError,
    export_bundle,
    import_bundle,
    sync_replica,
    watch_sync,
)

PASSPHRASE = "correct horse battery staple"
CLINIC = "clinic-1"
WHEN = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
BOOKING = "booking-1"
ORDER = "order-1"
INVOICE = "inv-1"
SKU = "SALINE-250"
# Names and clinical values written into the world: none may reach the audit log.
SECRETS = (
    "Adaeze",
    "Okonkwo",
    "MRN-7731",
    "left heel",
    "Painful at night",
    "Dr Ncube",
    "91.25",
    "Saline wound cleanser",
)


def provider() -> PassphraseKeyProvider:
    return PassphraseKeyProvider(PASSPHRASE, params=Argon2Params.fast())


# ---------------------------------------------------------------- the world
@dataclass
class World:
    """A store synced with a hub: a patient P with a wound, a scanned assessment, a
    note, an appointment (booked: BOOKING) and an order (accepted: ORDER), an invoice,
    and the clinic's catalogue, directory and free slots."""

    client: EdgeClient
    hub: MemoryHub
    root: Path
    names: dict[str, str] = field(default_factory=dict)  # P, W, A, N, blob, ...

    def __getitem__(self, name: str) -> str:
        return self.names[name]

    def transport(self, client: EdgeClient | None = None) -> MemoryTransport:
        client = client or self.client
        return MemoryTransport(
            self.hub,
            device_id=client.device_id,
            clinic_id=client.clinic_id,
            public_key=client.identity.public_key,
        )

    def sync(self, client: EdgeClient | None = None) -> None:
        (client or self.client).sync(transport=self.transport(client))

    def server_writes(self, schema: type[Record], record_id: str, **values: Any) -> None:
        document = RecordDocument.create(
            schema,
            values,
            device_id=self.hub.server_device_id,
            clinic_id=CLINIC,
            record_id=record_id,
        )
        self.hub.write_documents(CLINIC, [document])

    def other_device(self, name: str) -> EdgeClient:
        """A second device of the clinic, synced with the hub."""
        other = EdgeClient.init(self.root / name, provider(), clinic_id=CLINIC)
        self.sync(other)
        return other

    def conflict(self, collection: str, record_id: str, **values: Any) -> None:
        """Make `values` conflict on a record: another device changes it too, offline."""
        other = self.other_device("other")
        try:
            other.collection(collection).update(
                record_id, **{k: f"{v}-there" for k, v in values.items()}
            )
            self.client.collection(collection).update(record_id, **values)
            self.sync(other)
        finally:
            other.close()
        self.sync()


def build_world(root: Path, hub: MemoryHub) -> dict[str, str]:
    client = EdgeClient.init(root, provider(), clinic_id=CLINIC)
    world = World(client, hub, root.parent)
    try:
        patient = client.patients.add(
            given_name="Adaeze", family_name="Okonkwo", birth_date="1950-03-01", mrn="MRN-7731"
        )
        wound = client.wounds.add(patient_id=patient.id, body_site="left heel")
        scan = client.blobs.put_bytes(b"a scan of the left heel")
        assessment = client.assessments.add(
            wound_id=wound.id,
            patient_id=patient.id,
            captured_at=WHEN,
            device_id=client.device_id,
            measurements={"area_cm2": 91.25},
            blobs=[{"sha256": scan.sha256, "size": scan.size, "kind": "image"}],
        )
        note = client.notes.add(
            patient_id=patient.id, wound_id=wound.id, author="Dr Ncube", text="Painful at night"
        )
        condition = client.conditions.add(patient_id=patient.id, description="Type 2 diabetes")
        allergy = client.allergies.add(patient_id=patient.id, substance="zinc oxide tape")
        medication = client.medications.add(patient_id=patient.id, medication="metformin")
        plan = client.care_plans.add(patient_id=patient.id, wound_id=wound.id, dressing="foam")
        appointment = client.bookings.request_appointment(patient.id, "wound-review", WHEN)
        order = client.orders.place(patient.id, [("prod-saline", 1)])
        world.sync()
        world.server_writes(
            Decision,
            decision_id(appointment.id),
            intent_id=appointment.id,
            status="accepted",
            outcome={"booking_id": BOOKING},
        )
        world.server_writes(
            Decision,
            decision_id(order.id),
            intent_id=order.id,
            status="accepted",
            outcome={"order_id": ORDER},
        )
        world.server_writes(
            Invoice,
            invoice_record_id(INVOICE),
            number="INV-000001",
            patient_id=patient.id,
            status="open",
            currency="EUR",
            total=650,
            issued_at=WHEN,
            lines=[
                {
                    "kind": "order",
                    "reference_id": ORDER,
                    "description": "Saline wound cleanser 250 ml",
                    "quantity": 1,
                    "unit_price": 650,
                    "amount": 650,
                }
            ],
        )
        world.server_writes(
            Notice,
            notice_id("delivery-1"),
            recipient=f"patient:{patient.id}",
            patient_id=patient.id,
            kind="booking.decided",
            title="Your appointment is booked",
            detail={"booking_id": BOOKING, "area": "91.25"},
            event_id="event-1",
        )
        world.server_writes(
            Catalogue,
            catalogue_id(CLINIC),
            generated_at=WHEN,
            products=[
                {
                    "id": "prod-saline",
                    "sku": SKU,
                    "name": "Saline wound cleanser 250 ml",
                    "category": "cleanser",
                    "product_class": "cleanser",
                    "unit": "bottle",
                    "price": 650,
                    "currency": "EUR",
                    "available": 40,
                }
            ],
        )
        world.server_writes(
            Directory,
            directory_id(CLINIC),
            generated_at=WHEN,
            providers=[
                {"id": "dr-osei", "name": "Dr Osei", "kind": "doctor", "services": ["wound-review"]}
            ],
            services=[{"code": "wound-review", "name": "Wound review", "duration_minutes": 30}],
        )
        world.server_writes(
            Availability,
            availability_id(CLINIC, WHEN.date()),
            day=WHEN.date(),
            timezone="UTC",
            generated_at=WHEN,
            slots=[
                {
                    "provider_id": "dr-osei",
                    "service": "wound-review",
                    "starts_at": WHEN,
                    "ends_at": WHEN.replace(minute=30),
                }
            ],
        )
        world.sync()
        return {
            "P": patient.id,
            "W": wound.id,
            "A": assessment.id,
            "N": note.id,
            "CO": condition.id,
            "AL": allergy.id,
            "ME": medication.id,
            "CP": plan.id,
            "blob": scan.sha256,
            "appointment": appointment.id,
            "order": order.id,
            "decision": decision_id(appointment.id),
            "invoice": invoice_record_id(INVOICE),
            "notice": notice_id("delivery-1"),
        }
    finally:
        client.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MemoryHub, Any, dict]:
    root = tmp_path_factory.mktemp("template") / "store"
    hub = MemoryHub(name="hub")
    names = build_world(root, hub)
    return root, hub, hub.snapshot(), names


@pytest.fixture
def world(template: tuple[Path, MemoryHub, Any, dict], tmp_path: Path) -> Iterator[World]:
    """A copy of the template world (store and hub), for one test."""
    source, hub, state, names = template
    hub.restore(state)
    root = tmp_path / "store"
    shutil.copytree(source, root)
    client = EdgeClient.open(root, provider(), idle_lock_after=None)
    client.user = "user-17"
    try:
        yield World(client, hub, tmp_path, dict(names))
    finally:
        client.close()


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Row:
    """One audit row: FHIR operation, action, collection, the patients (names in the
    world: "P"; "new": the record the call returned), and the outcome."""

    operation: str
    action: str
    collection: str
    patients: tuple[str, ...] = ("P",)
    outcome: str = "ok"


def R(action: str, collection: str, *patients: str) -> Row:
    return Row("R", action, collection, patients)


def C(collection: str, *patients: str, action: str = "create") -> Row:
    return Row("C", action, collection, patients)


def U(action: str, collection: str, *patients: str) -> Row:
    return Row("U", action, collection, patients)


def refused(action: str, collection: str, error: type[Exception], *patients: str) -> Row:
    return Row({"delete": "D"}.get(action, "U"), action, collection, patients, error.__name__)


Recipe = Callable[[World], Callable[[], Any]]
"""Builds what a call needs (its rows are not counted) and returns the call."""


@dataclass(frozen=True)
class Audited:
    recipe: Recipe
    rows: tuple[Row, ...]
    raises: type[Exception] | None = None


@dataclass(frozen=True)
class Exempt:
    reason: str


Entry = Audited | Exempt


def audited(recipe: Recipe, *rows: Row, raises: type[Exception] | None = None) -> Audited:
    return Audited(recipe, rows, raises)


NO_RECORD = "reads or writes no record, blob or patient data"

# ---- recipes shared by the collections
WRITABLE = {
    # collection: (the record it holds for P, the values of a new one, a change)
    "patients": ("P", {"given_name": "Bo", "family_name": "Dee", "birth_date": date(1960, 1, 1)}),
    "wounds": ("W", {"patient_id": "P", "body_site": "sacrum"}),
    "assessments": (
        "A",
        {"wound_id": "W", "patient_id": "P", "captured_at": WHEN, "device_id": "device"},
    ),
    "notes": ("N", {"patient_id": "P", "author": "x", "text": "t"}),
    "conditions": ("CO", {"patient_id": "P", "description": "PAD"}),
    "allergies": ("AL", {"patient_id": "P", "substance": "latex"}),
    "medications": ("ME", {"patient_id": "P", "medication": "aspirin"}),
    "care_plans": ("CP", {"patient_id": "P", "wound_id": "W"}),
}
CHANGES = {
    "patients": {"mrn": "MRN-9"},
    "wounds": {"body_site": "ankle"},
    "assessments": {"clinician": "clinician-2"},
    "notes": {"author": "author-2"},
    "conditions": {"note": "note-2"},
    "allergies": {"reaction": "rash"},
    "medications": {"dosage": "twice daily"},
    "care_plans": {"dressing": "alginate"},
}


def values_of(w: World, collection: str) -> dict[str, Any]:
    values = dict(WRITABLE[collection][1])
    for key in ("patient_id", "wound_id"):
        if key in values:
            values[key] = w[values[key]]
    if "device_id" in values:
        values["device_id"] = w.client.device_id
    return values


def held(collection: str) -> str:
    return WRITABLE[collection][0] if collection in WRITABLE else collection


def add_one(collection: str) -> Recipe:
    return lambda w: lambda: getattr(w.client, collection).add(**values_of(w, collection))


def fresh(w: World, collection: str) -> str:
    """A new record of `collection` (of P, or a new patient Q), named "Q" for patients."""
    record = getattr(w.client, collection).add(**values_of(w, collection))
    if collection == "patients":
        w.names["Q"] = record.id
    return str(record.id)


def on_held(collection: str, method: str, *args: Any) -> Recipe:
    return lambda w: (
        lambda: getattr(getattr(w.client, collection), method)(w[held(collection)], *args)
    )


def update_held(collection: str) -> Recipe:
    return lambda w: (
        lambda: getattr(w.client, collection).update(w[held(collection)], **CHANGES[collection])
    )


def delete_fresh(collection: str) -> Recipe:
    def recipe(w: World) -> Callable[[], Any]:
        record_id = fresh(w, collection)
        return lambda: getattr(w.client, collection).delete(record_id)

    return recipe


def restore_deleted(collection: str) -> Recipe:
    def recipe(w: World) -> Callable[[], Any]:
        record_id = fresh(w, collection)
        getattr(w.client, collection).delete(record_id)
        return lambda: getattr(w.client, collection).restore(record_id)

    return recipe


def resolve_conflict(collection: str) -> Recipe:
    def recipe(w: World) -> Callable[[], Any]:
        (name, value), *_ = CHANGES[collection].items()
        w.conflict(collection, w[held(collection)], **{name: value})
        return lambda: getattr(w.client, collection).resolve(w[held(collection)], name, value)

    return recipe


def writable_collection(collection: str) -> dict[tuple[str, str], Entry]:
    new = ("Q",) if collection == "patients" else ("P",)
    return {
        (collection, "add"): audited(
            add_one(collection), C(collection, "new" if collection == "patients" else "P")
        ),
        (collection, "get"): audited(on_held(collection, "get"), R("read", collection, "P")),
        (collection, "update"): audited(update_held(collection), U("update", collection, "P")),
        (collection, "delete"): audited(
            delete_fresh(collection), Row("D", "delete", collection, new)
        ),
        (collection, "restore"): audited(
            restore_deleted(collection), U("restore", collection, *new)
        ),
        (collection, "list"): audited(
            lambda w: lambda: getattr(w.client, collection).list(), R("list", collection, "P")
        ),
        (collection, "conflicts"): audited(
            on_held(collection, "conflicts"), R("conflicts", collection, "P")
        ),
        (collection, "resolve"): audited(
            resolve_conflict(collection), U("resolve", collection, "P")
        ),
        (collection, "history"): audited(
            on_held(collection, "history"), R("history", collection, "P")
        ),
        (collection, "query"): Exempt(
            "builds a query; running it (`Query.all`, `first`, `page`) is one `query` read "
            "(tests/test_queries.py)"
        ),
        (collection, "live"): audited(
            lambda w: lambda: getattr(w.client, collection).live(None, lambda r: None).cancel(),
            R("live", collection, "P"),
        ),
        (collection, "observe"): audited(
            lambda w: (
                lambda: (
                    getattr(w.client, collection)
                    .observe(w[held(collection)], lambda r: None)
                    .cancel()
                )
            ),
            R("observe", collection, "P"),
        ),
        (collection, "live_results"): Exempt(
            "returns an async iterator: each result it yields is a `live` read, as `live`"
        ),
    }


def server_owned_collection(collection: str, record: str) -> dict[tuple[str, str], Entry]:
    """A collection the server writes: reads audited, every write refused and audited."""

    def on_record(method: str, *args: Any) -> Recipe:
        return lambda w: lambda: getattr(getattr(w.client, collection), method)(w[record], *args)

    error = ReadOnlyCollectionError
    return {
        (collection, "add"): audited(
            lambda w: lambda: getattr(w.client, collection).add(),
            Row("C", "create", collection, (), error.__name__),
            raises=error,
        ),
        (collection, "get"): audited(on_record("get"), R("read", collection, "P")),
        (collection, "update"): audited(
            lambda w: lambda: getattr(w.client, collection).update(w[record], status="void"),
            refused("update", collection, error, "P"),
            raises=error,
        ),
        (collection, "delete"): audited(
            on_record("delete"), refused("delete", collection, error, "P"), raises=error
        ),
        (collection, "restore"): audited(
            on_record("restore"), refused("restore", collection, error, "P"), raises=error
        ),
        (collection, "resolve"): audited(
            on_record("resolve", "status", "void"),
            refused("resolve", collection, error, "P"),
            raises=error,
        ),
        (collection, "list"): audited(
            lambda w: lambda: getattr(w.client, collection).list(), R("list", collection, "P")
        ),
        (collection, "conflicts"): audited(on_record("conflicts"), R("conflicts", collection, "P")),
        (collection, "history"): audited(on_record("history"), R("history", collection, "P")),
        (collection, "query"): Exempt(
            "builds a query; running it (`Query.all`, `first`, `page`) is one `query` read "
            "(tests/test_queries.py)"
        ),
        (collection, "live"): audited(
            lambda w: lambda: getattr(w.client, collection).live(None, lambda r: None).cancel(),
            R("live", collection, "P"),
        ),
        (collection, "observe"): audited(
            lambda w: (
                lambda: getattr(w.client, collection).observe(w[record], lambda r: None).cancel()
            ),
            R("observe", collection, "P"),
        ),
        (collection, "live_results"): Exempt(
            "returns an async iterator: each result it yields is a `live` read, as `live`"
        ),
    }


# ---- recipes of single calls
def with_transport(call: Callable[[World], Any]) -> Recipe:
    """A sync with something to push (P changed here) and to pull (the server changed
    P's invoice)."""

    def recipe(w: World) -> Callable[[], Any]:
        w.client.patients.update(w["P"], mrn="MRN-8")
        invoice = w.client.replica.store.get_document(w["invoice"])
        assert invoice is not None
        invoice.update({"status": "void"}, device_id=w.hub.server_device_id)
        w.hub.write_documents(CLINIC, [invoice])
        return lambda: call(w)

    return recipe


def bundle_from_another_device(w: World) -> Callable[[], Any]:
    """A bundle of one new patient Q, from another device of the clinic (enrolled with
    the hub, so in the directory this device has)."""
    other = EdgeClient.init(w.root / "sender", provider(), clinic_id=CLINIC)
    try:
        w.transport(other)  # enrols it
        w.sync()  # this device learns of it
        w.names["Q"] = other.patients.add(
            given_name="Adaeze", family_name="Okonkwo", birth_date="1950-03-01"
        ).id
        export_bundle(other, w.root / "q.bundle", passphrase="bundle pass", kdf=Argon2Params.fast())
    finally:
        other.close()
    return lambda: import_bundle(w.client, w.root / "q.bundle", passphrase="bundle pass")


def decisions_queued(w: World) -> Callable[[], Any]:
    heard: list[Decision] = []
    return lambda: (w.client.on_decision(heard.append), heard)


def copy_blob(w: World) -> Callable[[], Any]:
    return lambda: w.client.blobs.copy_to(w["blob"], io.BytesIO())


BOOKING_CHANGE = (R("list", "decisions", "P"), R("read", "intents", "P"), C("intents", "P"))
"""A move, cancel or review names a booking: the decision that booked it, then its
intent, give the patient; then the new intent."""
STATUSES = (R("list", "intents", "P"), R("list", "decisions", "P"))

TABLE: dict[tuple[str, str], Entry] = {
    # ---------------------------------------------------------------- EdgeClient
    ("EdgeClient", "add_access_listener"): Exempt(
        "registers a listener; the accesses it hears of are audited where they happen"
    ),
    ("EdgeClient", "batch"): Exempt(
        "opens a transaction; each read and write inside it is audited as it happens"
    ),
    ("EdgeClient", "blobs"): Exempt("returns the audited blob store (its methods are below)"),
    ("EdgeClient", "change_key"): Exempt(f"rewraps the data key: {NO_RECORD}"),
    ("EdgeClient", "clinic_id"): Exempt("the device's clinic id"),
    ("EdgeClient", "close"): Exempt(f"closes the store: {NO_RECORD}"),
    ("EdgeClient", "collection"): Exempt("returns a collection object (its methods are audited)"),
    ("EdgeClient", "conflicts"): audited(
        lambda w: (w.conflict("patients", w["P"], mrn="MRN-5"), w.client.conflicts)[1],
        R("conflicts", "*", "P"),
    ),
    ("EdgeClient", "device_id"): Exempt("the device's own id"),
    ("EdgeClient", "enroll"): Exempt(
        f"trades a one-time token and the device key for server tokens: {NO_RECORD}"
    ),
    ("EdgeClient", "edge_transport"): Exempt(
        "builds a transport to a pinned edge box (a TLS handshake, no request): the sync "
        "through it is audited like any sync"
    ),
    ("EdgeClient", "find_edge_boxes"): Exempt(
        f"browses mDNS and compares the answers with the pins central gave: {NO_RECORD}"
    ),
    ("EdgeClient", "export_document"): audited(
        lambda w: lambda: w.client.export_document(w["P"]), R("export", "*", "P")
    ),
    ("EdgeClient", "export_documents"): audited(
        lambda w: lambda: w.client.export_documents([w["P"], w["W"]]), R("export", "*", "P")
    ),
    ("EdgeClient", "import_documents"): audited(
        # A document already held: nothing new is stored, so the row names no patient.
        lambda w: (lambda data: lambda: w.client.import_documents([data]))(
            w.client.export_document(w["P"])
        ),
        U("import", "*"),
    ),
    ("EdgeClient", "fhir_export"): audited(
        lambda w: lambda: w.client.fhir_export(w["P"]), R("export", "*", "P")
    ),
    ("EdgeClient", "fhir_import"): audited(
        # The patient's own bundle: every record already holds its values, so nothing
        # is written and the row names no patient.
        lambda w: (lambda bundle: lambda: w.client.fhir_import(bundle))(
            w.client.fhir_export(w["P"])
        ),
        U("import", "*"),
    ),
    ("EdgeClient", "find"): audited(lambda w: lambda: w.client.find(w["W"]), R("find", "*", "P")),
    ("EdgeClient", "identity"): Exempt("the device's key pair"),
    ("EdgeClient", "idle_lock_after"): Exempt("a setting"),
    ("EdgeClient", "init"): Exempt(f"creates an empty store: {NO_RECORD}"),
    ("EdgeClient", "intent_status"): audited(
        lambda w: lambda: w.client.intent_status(w["appointment"]),
        R("read", "intents", "P"),
        R("list", "decisions", "P"),
    ),
    ("EdgeClient", "list_intents"): audited(lambda w: lambda: w.client.list_intents(), *STATUSES),
    ("EdgeClient", "lock"): Exempt(f"drops the keys: {NO_RECORD}"),
    ("EdgeClient", "locked"): Exempt("whether the store is locked"),
    ("EdgeClient", "models"): Exempt("returns the model store (model files only)"),
    ("EdgeClient", "on_conflict"): audited(
        # A conflict already in the store is handed to the policy (read), then resolved.
        lambda w: (
            w.conflict("patients", w["P"], mrn="MRN-5"),
            lambda: w.client.on_conflict("patients", "mrn", edge_sdk.latest_wins),
        )[1],
        R("conflicts", "patients", "P"),
        U("resolve", "patients", "P"),
    ),
    ("EdgeClient", "records_needing_update"): Exempt(
        "ids, collections and versions of records a newer app wrote: no record is read"
    ),
    ("EdgeClient", "on_decision"): audited(
        # The two decisions synced in before any callback was registered are reported
        # (read) at once.
        decisions_queued,
        R("read", "decisions", "P"),
        R("read", "decisions", "P"),
    ),
    ("EdgeClient", "open"): Exempt(f"opens a store: {NO_RECORD}"),
    ("EdgeClient", "path"): Exempt("the store's folder"),
    ("EdgeClient", "rekey"): Exempt(
        "re-encrypts the database and blob files under new keys; nothing is read out "
        "for a caller and no record changes"
    ),
    ("EdgeClient", "sync"): audited(
        with_transport(lambda w: w.client.sync(transport=w.transport())),
        R("sync-read", "*", "P"),
        U("sync-write", "*", "P"),
    ),
    ("EdgeClient", "verification_status"): Exempt(
        "counts and record ids, no record content; a record verification takes out of "
        "the store is journalled as a `quarantine` access when it happens "
        "(tests/server/test_deferred_verification.py)"
    ),
    ("EdgeClient", "wait_verified"): Exempt(
        "waits for the background verification, which shows no record to the caller; "
        "each quarantine is journalled as it happens"
    ),
    ("EdgeClient", "sync_status"): Exempt(
        "counts of records and blobs waiting to go up, the peer's URL and the last error: "
        "no record content or id"
    ),
    ("EdgeClient", "on_sync_status"): Exempt(
        "registers a callback told the same counts as sync_status: no record content or id"
    ),
    ("EdgeClient", "start_sync"): Exempt(
        "starts a loop of `sync` calls, each audited as `sync` is (sync-read, sync-write)"
    ),
    ("EdgeClient", "sync_session"): Exempt(
        "returns a session over `replica.documents`, which audits every document the "
        "session reads (sync-read) or merges (sync-write) as messages are exchanged "
        "(test_a_sync_session_audits_what_it_exchanges)"
    ),
    ("EdgeClient", "unlock"): Exempt(f"reopens the store with its key: {NO_RECORD}"),
    ("EdgeClient", "update_model"): Exempt("installs a signed model file: no patient data"),
    ("EdgeClient", "user"): Exempt("the app's user id, recorded in every row"),
    ("EdgeClient", "verify_audit"): Exempt(
        "reads the audit log itself (ids only) and the kept checkpoints (with a server: "
        "its checkpoint and proofs, hashes only)"
    ),
    # ---------------------------------------------------------------- collections
    **writable_collection("patients"),
    ("patients", "search"): audited(
        lambda w: lambda: w.client.patients.search("okon"), R("search", "patients", "P")
    ),
    **writable_collection("wounds"),
    **writable_collection("assessments"),
    ("assessments", "for_wound_query"): Exempt(
        "builds a query; running it is one `query` read (tests/test_queries.py)"
    ),
    ("assessments", "for_wound"): audited(
        lambda w: lambda: w.client.assessments.for_wound(w["W"]), R("list", "assessments", "P")
    ),
    **writable_collection("notes"),
    ("notes", "splice"): audited(
        lambda w: lambda: w.client.notes.splice(w["N"], 0, 7, "Sore"), U("update", "notes", "P")
    ),
    ("notes", "edit"): audited(
        lambda w: lambda: w.client.notes.edit(w["N"], "Better"), U("update", "notes", "P")
    ),
    **{
        entry: row
        for collection in ("conditions", "allergies", "medications", "care_plans")
        for entry, row in {
            **writable_collection(collection),
            (collection, "for_patient"): audited(
                lambda w, c=collection: lambda: getattr(w.client, c).for_patient(w["P"]),
                R("list", collection, "P"),
            ),
        }.items()
    },
    ("care_plans", "for_wound"): audited(
        lambda w: lambda: w.client.care_plans.for_wound(w["W"]), R("list", "care_plans", "P")
    ),
    **server_owned_collection("decisions", "decision"),
    ("decisions", "for_intents"): audited(
        lambda w: lambda: w.client.decisions.for_intents([w["appointment"]]),
        R("list", "decisions", "P"),
    ),
    ("decisions", "for_booking"): audited(
        lambda w: lambda: w.client.decisions.for_booking(BOOKING), R("list", "decisions", "P")
    ),
    ("decisions", "for_order"): audited(
        lambda w: lambda: w.client.decisions.for_order(ORDER), R("list", "decisions", "P")
    ),
    **server_owned_collection("invoices", "invoice"),
    **server_owned_collection("notices", "notice"),
    ("notices", "inbox"): audited(
        lambda w: lambda: w.client.notices.inbox(f"patient:{w['P']}"), R("list", "notices", "P")
    ),
    ("notices", "mark_seen"): audited(
        lambda w: lambda: w.client.notices.mark_seen(w["notice"]), R("read", "notices", "P")
    ),
    # Intents are written once and never changed.
    ("intents", "add"): audited(
        lambda w: (
            lambda: w.client.intents.add(
                kind=IntentKind.VISIT_REQUEST,
                patient_id=w["P"],
                details={"skill": "wound-care", "area": "north", "starts_at": WHEN},
            )
        ),
        C("intents", "P"),
    ),
    ("intents", "ask"): audited(
        lambda w: (
            lambda: w.client.intents.ask(
                IntentKind.APPOINTMENT_REQUEST,
                patient_id=w["P"],
                details={"service": "wound-review", "starts_at": WHEN},
            )
        ),
        C("intents", "P"),
    ),
    ("intents", "get"): audited(
        lambda w: lambda: w.client.intents.get(w["appointment"]), R("read", "intents", "P")
    ),
    ("intents", "update"): audited(
        lambda w: lambda: w.client.intents.update(w["appointment"], subject_id="x"),
        refused("update", "intents", RecordValidationError, "P"),
        raises=RecordValidationError,
    ),
    ("intents", "delete"): audited(
        lambda w: lambda: w.client.intents.delete(w["appointment"]),
        refused("delete", "intents", RecordValidationError, "P"),
        raises=RecordValidationError,
    ),
    ("intents", "restore"): audited(
        # Not deleted (it cannot be): nothing to undo, and the attempt is audited.
        lambda w: lambda: w.client.intents.restore(w["appointment"]),
        U("restore", "intents", "P"),
    ),
    ("intents", "resolve"): audited(
        lambda w: lambda: w.client.intents.resolve(w["appointment"], "subject_id", "x"),
        refused("resolve", "intents", NoConflictError, "P"),
        raises=NoConflictError,
    ),
    ("intents", "query"): Exempt("builds a query; running it is one `query` read"),
    ("intents", "live"): audited(
        lambda w: lambda: w.client.intents.live(None, lambda r: None).cancel(),
        R("live", "intents", "P"),
    ),
    ("intents", "observe"): audited(
        lambda w: lambda: w.client.intents.observe(w["appointment"], lambda r: None).cancel(),
        R("observe", "intents", "P"),
    ),
    ("intents", "live_results"): Exempt(
        "returns an async iterator: each result it yields is a `live` read, as `live`"
    ),
    ("intents", "list"): audited(
        lambda w: lambda: w.client.intents.list(), R("list", "intents", "P")
    ),
    ("intents", "conflicts"): audited(
        lambda w: lambda: w.client.intents.conflicts(w["appointment"]),
        R("conflicts", "intents", "P"),
    ),
    ("intents", "history"): audited(
        lambda w: lambda: w.client.intents.history(w["appointment"]),
        R("history", "intents", "P"),
    ),
    ("intents", "patient_of"): audited(
        lambda w: lambda: w.client.intents.patient_of(w.client.decisions.get(w["decision"])),
        R("read", "decisions", "P"),
        R("read", "intents", "P"),
    ),
    ("intents", "status"): audited(
        lambda w: lambda: w.client.intents.status(w["order"]),
        R("read", "intents", "P"),
        R("list", "decisions", "P"),
    ),
    ("intents", "statuses"): audited(
        lambda w: lambda: w.client.intents.statuses(kind="appointment"), *STATUSES
    ),
    # ---------------------------------------------------------------- bookings
    ("bookings", "request_appointment"): audited(
        lambda w: lambda: w.client.bookings.request_appointment(w["P"], "wound-review", WHEN),
        C("intents", "P"),
    ),
    ("bookings", "reschedule_appointment"): audited(
        lambda w: lambda: w.client.bookings.reschedule_appointment(BOOKING, WHEN),
        *BOOKING_CHANGE,
    ),
    ("bookings", "cancel_appointment"): audited(
        lambda w: lambda: w.client.bookings.cancel_appointment(BOOKING, "moved away"),
        *BOOKING_CHANGE,
    ),
    ("bookings", "request_visit"): audited(
        lambda w: lambda: w.client.bookings.request_visit(w["P"], "wound-care", "north", WHEN),
        C("intents", "P"),
    ),
    ("bookings", "review_visit"): audited(
        lambda w: lambda: w.client.bookings.review_visit(BOOKING, 5), *BOOKING_CHANGE
    ),
    ("bookings", "directory"): audited(
        lambda w: lambda: w.client.bookings.directory(), R("read", "directory")
    ),
    ("bookings", "free_slots"): audited(
        lambda w: lambda: w.client.bookings.free_slots(), R("list", "availability")
    ),
    # ---------------------------------------------------------------- orders
    ("orders", "catalogue"): audited(
        lambda w: lambda: w.client.orders.catalogue(), R("read", "catalogue")
    ),
    ("orders", "products"): audited(
        lambda w: lambda: w.client.orders.products(category="cleanser"), R("read", "catalogue")
    ),
    ("orders", "product"): audited(
        lambda w: lambda: w.client.orders.product(SKU), R("read", "catalogue")
    ),
    ("orders", "place"): audited(
        lambda w: lambda: w.client.orders.place(w["P"], [(SKU, 2)]),
        R("read", "catalogue"),
        C("intents", "P"),
    ),
    ("orders", "cancel"): audited(
        lambda w: lambda: w.client.orders.cancel(ORDER, "healed"),
        R("list", "decisions", "P"),
        R("read", "intents", "P"),
        C("intents", "P"),
    ),
    ("orders", "list"): audited(lambda w: lambda: w.client.orders.list(), *STATUSES),
    # ---------------------------------------------------------------- payments
    ("payments", "invoices"): audited(
        lambda w: lambda: w.client.payments.invoices(), R("list", "invoices", "P")
    ),
    ("payments", "invoice"): audited(
        lambda w: lambda: w.client.payments.invoice(INVOICE), R("read", "invoices", "P")
    ),
    ("payments", "pay"): audited(
        # The invoice is read (the amount checked against it), then the payments still
        # pending (none), then the intent is written.
        lambda w: lambda: w.client.payments.pay(INVOICE, 650, "EUR", "pm_card_visa"),
        R("read", "invoices", "P"),
        R("list", "intents"),
        C("intents", "P"),
    ),
    ("payments", "list"): audited(
        lambda w: (
            w.client.payments.pay(INVOICE, 100, "EUR", "pm_card_visa"),
            lambda: w.client.payments.list(),
        )[1],
        R("list", "intents", "P"),
        Row("R", "list", "decisions", ()),  # no decision on the payment yet
    ),
    # ---------------------------------------------------------------- blobs
    ("blobs", "put_bytes"): audited(
        lambda w: lambda: w.client.blobs.put_bytes(b"another scan"),
        C("blobs", action="blob-write"),  # no assessment names it yet
    ),
    ("blobs", "put_stream"): audited(
        lambda w: lambda: w.client.blobs.put_stream(io.BytesIO(b"a scan of the left heel")),
        C("blobs", "P", action="blob-write"),  # the same bytes: P's assessment names them
    ),
    ("blobs", "open"): audited(
        lambda w: lambda: b"".join(w.client.blobs.open(w["blob"])), R("blob-read", "blobs", "P")
    ),
    ("blobs", "read_bytes"): audited(
        lambda w: lambda: w.client.blobs.read_bytes(w["blob"]), R("blob-read", "blobs", "P")
    ),
    ("blobs", "copy_to"): audited(copy_blob, R("blob-read", "blobs", "P")),
    ("blobs", "exists"): Exempt("whether a content address is stored: no content"),
    ("blobs", "size"): Exempt("a stored blob's size: no content"),
    ("blobs", "list"): Exempt("the content addresses stored: no content, no record"),
    # ---------------------------------------------------------------- models
    ("models", "current"): Exempt("the installed model's manifest: no patient data"),
    ("models", "install"): Exempt("verifies and installs model files: no patient data"),
    ("models", "install_bundled"): Exempt("installs the app's model files: no patient data"),
    ("models", "runner"): Exempt(
        "loads the model; it runs on arrays the app passes (the scan's read from the "
        "store is the blob-read)"
    ),
    # ---------------------------------------------------------------- functions
    ("edge_sdk", "enrollment_of"): Exempt("the server enrolment (URL, keys)"),
    ("edge_sdk", "export_bundle"): audited(
        lambda w: (
            lambda: export_bundle(
                w.client, w.root / "out.bundle", passphrase="bundle pass", kdf=Argon2Params.fast()
            )
        ),
        R("sync-read", "*", "P"),
    ),
    ("edge_sdk", "import_bundle"): audited(bundle_from_another_device, U("sync-write", "*", "Q")),
    ("edge_sdk", "kept_checkpoints"): Exempt("the server's checkpoints kept here"),
    ("edge_sdk", "sync_replica"): audited(
        with_transport(lambda w: sync_replica(w.client.replica, w.transport())),
        R("sync-read", "*", "P"),
        U("sync-write", "*", "P"),
    ),
    ("edge_sdk", "verify_audit"): Exempt("reads the audit log itself (ids only)"),
    ("edge_sdk", "watch_sync"): audited(
        with_transport(
            lambda w: next(watch_sync(w.client, wait=0.0, pause=0.0, transport=w.transport()))
        ),
        R("sync-read", "*", "P"),
        U("sync-write", "*", "P"),
    ),
}

SKIPPED = {
    "replica": "internal (`Replica`): what sync, bundles and model updates work on; its "
    "store's methods are not a stable API, and every path to patient data through it is "
    "the gated `documents` and `blobs` the public calls above use",
    "identity": "the device's key pair: it has no patient data",
    "path": "a folder path",
}
"""Objects a client exposes whose methods are not in the table, and why."""

_CLIENT_ARG = re.compile(r"\b(EdgeClient|Replica|ReplicaHolder)\b")


def sdk_surface(scratch: Path) -> set[tuple[str, str]]:
    """The SDK's public surface, by introspection (a client is made in `scratch`)."""
    found = {("EdgeClient", name) for name in dir(EdgeClient) if not name.startswith("_")}
    client = EdgeClient.init(scratch / "s", provider(), clinic_id=CLINIC)
    try:
        exposed = {name: getattr(client, name) for name in vars(client) if name[0] != "_"}
        for name in dir(EdgeClient):
            if not name.startswith("_") and isinstance(
                inspect.getattr_static(EdgeClient, name), property
            ):
                exposed[name] = getattr(client, name)
    finally:
        client.close()
    for name, value in exposed.items():
        if name in SKIPPED or not type(value).__module__.startswith("edge_sdk"):
            continue
        for method in dir(type(value)):
            if not method.startswith("_") and inspect.isfunction(
                inspect.getattr_static(type(value), method)
            ):
                found.add((name, method))
    for name in edge_sdk.__all__:
        function = getattr(edge_sdk, name)
        if inspect.isfunction(function):
            first = next(iter(inspect.signature(function).parameters.values()), None)
            if first is not None and _CLIENT_ARG.search(str(first.annotation)):
                found.add(("edge_sdk", name))
    return found


# ---------------------------------------------------------------- the tests
def test_the_table_names_the_whole_public_surface(tmp_path: Path) -> None:
    surface = sdk_surface(tmp_path)
    missing = sorted(surface - set(TABLE))
    stale = sorted(set(TABLE) - surface)
    assert not missing, f"public SDK calls with no audit entry: {missing}"
    assert not stale, f"entries for calls that are not public any more: {stale}"
    # Every object a client exposes is either listed or skipped with a reason.
    assert {owner for owner, _ in TABLE} >= {
        "EdgeClient",
        "patients",
        "wounds",
        "assessments",
        "notes",
        "conditions",
        "allergies",
        "medications",
        "care_plans",
        "intents",
        "decisions",
        "invoices",
        "notices",
        "bookings",
        "orders",
        "payments",
        "blobs",
        "models",
        "edge_sdk",
    }
    assert all(isinstance(e, Exempt) and e.reason for e in TABLE.values() if not _has_rows(e))


def _has_rows(entry: Entry) -> bool:
    return isinstance(entry, Audited) and bool(entry.rows)


def _rows_of(world: World, after: int) -> list[dict[str, Any]]:
    return [json.loads(e.canonical) for e in world.client.replica.audit.events(after=after)]


@pytest.mark.parametrize(
    "key", [key for key, entry in TABLE.items() if _has_rows(entry)], ids="{0[0]}.{0[1]}".format
)
def test_each_call_writes_exactly_its_rows(key: tuple[str, str], world: World) -> None:
    entry = TABLE[key]
    assert isinstance(entry, Audited)
    call = entry.recipe(world)
    before = world.client.replica.audit.head()[0]
    if entry.raises is not None:
        with pytest.raises(entry.raises):
            call()
        result = None
    else:
        result = call()
    if getattr(result, "id", None) is not None:
        world.names["new"] = result.id
    written = _rows_of(world, before)
    got = [
        Row(r["operation"], r["action"], r["collection"], tuple(r["patients"]), r["outcome"])
        for r in written
    ]
    want = [
        Row(
            row.operation,
            row.action,
            row.collection,
            tuple(sorted(world[p] for p in row.patients)),
            row.outcome,
        )
        for row in entry.rows
    ]
    assert got == want
    for row in written:
        assert row["user"] == "user-17" and row["device_id"] == world.client.device_id
    # Ids and codes only: no name or clinical value anywhere in the log.
    log = b"".join(e.canonical for e in world.client.replica.audit.events()).decode()
    for secret in SECRETS:
        assert secret not in log
    assert world.client.verify_audit().ok


def test_a_sync_session_audits_what_it_exchanges(world: World) -> None:
    """`sync_session` itself writes nothing; the session's reads and merges do."""
    other = EdgeClient.init(world.root / "peer", provider(), clinic_id=CLINIC)
    try:
        q = other.patients.add(given_name="Bo", family_name="Dee", birth_date="1960-01-01")
        # The peer is an enrolled device of the clinic (its record's signature must
        # check out against the directory this device holds).
        world.transport(other)
        world.sync()
        before = world.client.replica.audit.head()[0]
        session = world.client.sync_session()
        assert world.client.replica.audit.head()[0] == before
        run_in_memory(session, other.sync_session())
        rows = _rows_of(world, before)
        assert rows, "the exchange wrote no audit row"
        assert {(r["action"], r["outcome"]) for r in rows} <= {
            ("sync-read", "ok"),
            ("sync-write", "ok"),
        }
        written = [r for r in rows if r["action"] == "sync-write"]
        assert len(written) == 1 and written[0]["records"] == [q.id]
        assert written[0]["patients"] == [q.id]
        sent = {record for r in rows if r["action"] == "sync-read" for record in r["records"]}
        assert world["P"] in sent  # this device's patient went to the peer, audited
    finally:
        other.close()
