"""Queries: filters on any projected field, ranges, IN, None, sort, limit/offset and
keyset pages, checked against a plain Python filter over every record."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge_sdk import EdgeClient, Query, query_fields

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _world(client: EdgeClient, n: int = 40, seed: int = 7) -> tuple[str, str]:
    rng = random.Random(seed)
    patient = client.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01")
    wounds = [client.wounds.add(patient_id=patient.id, body_site=s).id for s in ("heel", "shin")]
    with client.batch():
        for i in range(n):
            client.assessments.add(
                wound_id=rng.choice(wounds),
                patient_id=patient.id,
                captured_at=T0 + timedelta(hours=rng.randrange(0, 30)),  # ties on purpose
                device_id=client.device_id,
                clinician=rng.choice(["dr-a", "dr-b", None]),
                measurements={"area_cm2": rng.choice([None, 1.5, 2.0, 3.25, float(i)])},
            )
    return wounds[0], wounds[1]


def _key(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)  # None first, as SQLite sorts it


def test_ranges_in_none_and_sort_match_a_python_filter(tmp_store: Any) -> None:
    client = tmp_store()
    heel, _ = _world(client)
    everything = client.assessments.query().all()
    assert len(everything) == 40
    since, until = T0 + timedelta(hours=5), T0 + timedelta(hours=20)
    got = (
        client.assessments.query(wound_id=heel)
        .where("captured_at", ">=", since)
        .where("captured_at", "<", until)
        .order_by("-captured_at")
        .all()
    )
    want = sorted(
        (a for a in everything if a.wound_id == heel and since <= a.captured_at < until),
        key=lambda a: a.id,
    )
    want = sorted(want, key=lambda a: a.captured_at, reverse=True)
    assert [a.id for a in got] == [a.id for a in want]
    assert got == client.assessments.for_wound(heel, since=since, until=until)[::-1] or {
        a.id for a in got
    } == {a.id for a in client.assessments.for_wound(heel, since=since, until=until)}

    missing = client.assessments.query().where(clinician=None).all()
    assert {a.id for a in missing} == {a.id for a in everything if a.clinician is None}
    present = client.assessments.query().where("clinician", "!=", None).all()
    assert len(missing) + len(present) == 40
    chosen = client.assessments.query().where("clinician", "in", ["dr-a"]).all()
    assert {a.id for a in chosen} == {a.id for a in everything if a.clinician == "dr-a"}
    assert client.assessments.query().where("clinician", "in", []).all() == []
    big = client.assessments.query().where("area_cm2", ">", 2.0).order_by("area_cm2").all()
    area = [a.measurements.area_cm2 for a in big]
    assert area == sorted(area) and all(v is not None and v > 2.0 for v in area)


def test_randomized_queries_agree_with_python(tmp_store: Any) -> None:
    client = tmp_store()
    _world(client, n=60, seed=11)
    records = client.assessments.query().all()
    rng = random.Random(5)
    fields = {
        "captured_at": lambda a: a.captured_at,
        "area_cm2": lambda a: a.measurements.area_cm2,
        "clinician": lambda a: a.clinician,
    }
    for _ in range(40):
        name = rng.choice(sorted(fields))
        pick = fields[name](rng.choice(records))
        op = rng.choice(["=", "<", "<=", ">", ">="] if pick is not None else ["=", "!="])
        descending = rng.random() < 0.5
        sort = rng.choice(sorted(fields))
        query = client.assessments.query().where(name, op, pick)
        query = query.order_by(("-" if descending else "") + sort)

        def keep(a: Any, name: str = name, op: str = op, pick: Any = pick) -> bool:
            value = fields[name](a)
            if pick is None:
                return (value is None) == (op == "=")
            if value is None:
                return False
            return {
                "=": value == pick,
                "<": value < pick,
                "<=": value <= pick,
                ">": value > pick,
                ">=": value >= pick,
            }[op]

        want = sorted((a for a in records if keep(a)), key=lambda a: a.id)
        want.sort(key=lambda a: _key(fields[sort](a)), reverse=descending)
        # ids break ties ascending whatever the direction: compare tie groups as sets
        got = query.all()
        assert [_key(fields[sort](a)) for a in got] == [_key(fields[sort](a)) for a in want]
        assert {a.id for a in got} == {a.id for a in want}
        # and every page, of any size, walks the same order
        size = rng.randrange(1, 8)
        paged, cursor = [], None
        while True:
            page = query.limit(size).page(after=cursor)
            paged += page.records
            if page.next is None:
                break
            cursor = page.next
        assert [a.id for a in paged] == [a.id for a in got]


def test_limit_offset_and_keyset_pages_survive_concurrent_inserts(tmp_store: Any) -> None:
    client = tmp_store()
    heel, _ = _world(client)
    query = client.assessments.query().order_by("captured_at")
    ordered = query.all()
    assert query.limit(5).offset(10).all() == ordered[10:15]
    first = query.limit(10).page()
    assert first.records == ordered[:10] and first.next
    # Records inserted before the cursor (earlier capture times) and after it.
    patient = ordered[0].patient_id
    early = client.assessments.add(
        wound_id=heel, patient_id=patient, captured_at=T0 - timedelta(days=1),
        device_id=client.device_id,
    )  # fmt: skip
    late = client.assessments.add(
        wound_id=heel, patient_id=patient, captured_at=T0 + timedelta(days=9),
        device_id=client.device_id,
    )  # fmt: skip
    rest, cursor = [], first.next
    while cursor:
        page = query.limit(10).page(after=cursor)
        rest += page.records
        cursor = page.next
    assert [a.id for a in rest] == [a.id for a in ordered[10:]] + [late.id]
    assert early.id not in {a.id for a in rest}
    # offset paging would have shifted: the same offset now starts one record earlier
    assert query.limit(10).offset(10).all()[0].id == ordered[9].id


def test_bad_fields_operators_and_cursors_are_clear_errors(tmp_store: Any) -> None:
    client = tmp_store()
    _world(client, n=3)
    assert "search_text" not in query_fields("patients") and "mrn" in query_fields("patients")
    with pytest.raises(ValueError, match="no field 'nickname'"):
        client.patients.query(nickname="x")
    with pytest.raises(ValueError, match="no field"):
        client.patients.query().order_by("-family_name; DROP TABLE patients")
    with pytest.raises(ValueError, match="no field 'record'"):
        client.patients.query().where("record", "=", "{}")
    with pytest.raises(ValueError, match="unknown operator"):
        client.patients.query().where("mrn", "LIKE", "%")
    with pytest.raises(ValueError, match="no order"):
        client.patients.query().where("mrn", ">", None)
    with pytest.raises(ValueError, match="list of values"):
        client.patients.query().where("mrn", "in", "MRN-1")
    with pytest.raises(ValueError, match="patients can"):
        client.wounds.query().search("x")
    with pytest.raises(ValueError, match="not a page cursor"):
        client.patients.query().page(after="%%%")
    other = client.assessments.query().order_by("captured_at").limit(1).page().next
    assert other is not None
    with pytest.raises(ValueError, match="another collection or order"):
        client.assessments.query().order_by("-captured_at").page(after=other)
    with pytest.raises(ValueError, match="limit"):
        client.patients.query().limit(0)
    assert client.patients.list()  # nothing above damaged the store


def test_search_list_and_deleted(tmp_store: Any) -> None:
    client = tmp_store()
    ada = client.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01")
    bea = client.patients.add(
        given_name="Bea", family_name="Müller", birth_date="1961-05-02", mrn="M-2"
    )
    assert isinstance(client.patients.query().search("mü"), Query)
    assert client.patients.query().search("MÜ").all() == [bea]
    assert client.patients.list(birth_date="1961-05-02") == [bea]  # any projected field
    client.patients.delete(ada.id)
    assert client.patients.query().all() == [bea]
    assert {p.id for p in client.patients.query().including_deleted().all()} == {ada.id, bea.id}
    assert [p.id for p in client.patients.query(deleted=True).all()] == [ada.id]
    assert client.patients.query().where("birth_date", "<", "1955-01-01").all() == []
