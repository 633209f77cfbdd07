"""The SDK against a live server: two offline tablets ask for the same slot; after
their syncs one holds the booking and the other sees the reason and the alternative,
its app told through `on_decision`. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crdt import Decision, DecisionStatus
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from sync_server.identity.enrolment import create_enrolment_token

from .bookings_world import BookingWorld, build_world, local


@pytest.fixture
def world(server: Any) -> Iterator[BookingWorld]:
    built = build_world(server)
    built.publish()
    yield built
    built.close()


@pytest.fixture
def tablets(tmp_path: Path, world: BookingWorld) -> Iterator[list[EdgeClient]]:
    made = []
    for name in ("ward-a", "ward-b"):
        client = EdgeClient.init(
            tmp_path / name,
            PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
            clinic_id=world.clinic_id,
        )
        with world.server.db.write() as session:
            token, _ = create_enrolment_token(
                session=session, clinic_id=world.clinic_id, ttl=timedelta(minutes=10)
            )
        client.enroll(world.server.url, token, name=name)
        made.append(client)
    yield made
    for client in made:
        client.close()


def test_two_offline_tablets_ask_for_one_slot_and_the_loser_is_told_why(
    world: BookingWorld, tablets: list[EdgeClient]
) -> None:
    a, b = tablets
    for tablet in tablets:
        tablet.sync()  # reference data: the directory and the free slots
    slots = a.bookings.free_slots(day=world.monday, service=world.review)
    assert slots and slots[0].generated_at is not None
    nine = local(world.monday, 9)
    assert any(s.starts_at == nine for s in slots[0].slots)

    heard: list[Decision] = []
    b.on_decision(heard.append)
    # Offline: each writes its request.
    mine = a.bookings.request_appointment(
        a.patients.add(given_name="Ada", family_name="Ames", birth_date=date(1950, 1, 1)).id,
        world.review,
        nine,
        provider_id=world.doctors[0],
    )
    theirs = b.bookings.request_appointment(
        b.patients.add(given_name="Bo", family_name="Brook", birth_date=date(1960, 1, 1)).id,
        world.review,
        nine,
        provider_id=world.doctors[0],
    )
    assert mine.state == theirs.state == "pending"

    a.sync()
    b.sync()
    won, lost = a.intent_status(mine.id), b.intent_status(theirs.id)
    assert won.state == DecisionStatus.ACCEPTED.value
    assert lost.state == DecisionStatus.REJECTED.value
    assert lost.decision is not None and lost.decision.alternative is not None
    assert "Dr Doctor 0" in (lost.decision.reason or "")
    assert [d.intent_id for d in heard if d.intent_id == theirs.id] == [theirs.id]

    # The loser takes the alternative it was offered.
    offered = lost.decision.alternative
    retry = b.bookings.request_appointment(
        lost.intent.patient_id or "",
        world.review,
        offered["starts_at"],
        provider_id=offered["provider_id"],
    )
    b.sync()
    assert b.intent_status(retry.id).state == DecisionStatus.ACCEPTED.value
    # Both tablets see the day's availability without the two booked slots.
    a.sync()
    left = a.bookings.free_slots(
        day=world.monday, service=world.review, provider_id=world.doctors[0]
    )
    starts = {s.starts_at for day in left for s in day.slots}
    assert nine not in starts and datetime.fromisoformat(offered["starts_at"]) not in starts
    assert local(world.monday, 11) in starts  # still free, and comparable


def test_a_tablet_back_from_a_long_offline_spell_gets_every_request_decided(
    world: BookingWorld, tablets: list[EdgeClient]
) -> None:
    """More intents than one push may carry: the SDK pushes them in halves, and every
    one is decided once in that one sync."""
    tablet = tablets[0]
    tablet.sync()
    patient = tablet.patients.add(given_name="Lu", family_name="Long", birth_date=date(1940, 2, 2))
    count = world.server.settings.push_max_intents + 20
    asked = [
        tablet.bookings.request_appointment(
            patient.id,
            world.review,
            local(world.monday, 9) + timedelta(days=7 * (n // 12), minutes=30 * (n % 6)),
            flexible=True,
        )
        for n in range(count)
    ]
    tablet.sync()
    statuses = [tablet.intent_status(a.id) for a in asked]
    assert [s for s in statuses if s.decision is None] == []
    # The patient went up before any intent naming it, whatever the batches.
    assert not [s for s in statuses if "not a patient" in (s.decision.reason or "")]  # type: ignore[union-attr]
    assert sum(s.state != "rejected" for s in statuses) >= count // 2
