"""Realistic, varied and reproducible record values for the benchmarks.

Each function returns the keyword arguments a caller would pass to
``client.<collection>.add(...)``. Everything is drawn from one seeded `random.Random`,
so two runs write the same names, dates, sites and measurements (only the ids, made
by the store, differ).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = [
    "assessment_values",
    "device_uuid",
    "note_values",
    "patient_values",
    "wound_values",
]

_GIVEN = (
    "Ada", "Amara", "Bilal", "Carmen", "Chen", "Dagny", "Dmitri", "Eilidh", "Emeka",
    "Fatima", "Florence", "Gareth", "Hana", "Ibrahim", "Ingrid", "Jamal", "José",
    "Kaito", "Leila", "Lucía", "Mairead", "Mateus", "Nkechi", "Olga", "Oluwaseun",
    "Priya", "Rahul", "Rosa", "Saoirse", "Sven", "Tamar", "Teodor", "Uma", "Wei",
    "Yusuf", "Zofia", "Margaret", "Arthur", "Beatrice", "Harold",
)  # fmt: skip
_FAMILY = (
    "Okafor", "Nakamura", "O'Connell", "García", "Novak", "Kowalczyk", "Haddad",
    "Lindqvist", "Mensah", "Patel", "Ivanova", "MacLeod", "Fernández", "Nguyen",
    "Abdullah", "Schmidt", "Rossi", "Dubois", "Kim", "Osei", "Thompson", "Jones",
    "Williams", "Brennan", "Van der Berg", "Chaudhry", "Achterberg", "Papadopoulos",
    "Søndergaard", "Ó Súilleabháin", "Mbeki", "Hughes", "Adeyemi", "Silva", "Khan",
)  # fmt: skip
_STREETS = (
    "Mill Lane",
    "Station Road",
    "High Street",
    "Church View",
    "Orchard Close",
    "Victoria Terrace",
    "Kingsway",
    "Brook Street",
    "Elm Grove",
    "Harbour Row",
)
_TOWNS = (
    ("Leeds", "LS6"),
    ("Cork", "T12"),
    ("Bristol", "BS3"),
    ("Galway", "H91"),
    ("Sheffield", "S10"),
    ("Derby", "DE22"),
    ("Inverness", "IV2"),
    ("Truro", "TR1"),
)
_RELATIONS = ("daughter", "son", "wife", "husband", "partner", "niece", "neighbour")

_SITES = (
    "sacrum", "coccyx", "left heel", "right heel", "left lateral malleolus",
    "right medial malleolus", "left ischial tuberosity", "right greater trochanter",
    "left hallux, plantar", "right 2nd toe, dorsal", "left shin, anterior",
    "right gaiter area", "abdomen, midline incision", "left forearm", "occiput",
    "right elbow", "left foot, plantar 1st MTH", "right buttock", "left calf, posterior",
    "sternum, post-operative",
)  # fmt: skip
_ETIOLOGIES = (
    "pressure",
    "venous",
    "arterial",
    "diabetic",
    "surgical",
    "traumatic",
    "burn",
    "other",
    "unknown",
)
_ETIOLOGY_WEIGHTS = (30, 22, 6, 18, 10, 6, 2, 3, 3)
_STATUSES = ("active", "healing", "deteriorating", "healed", "closed")
_STATUS_WEIGHTS = (45, 35, 8, 8, 4)

_NOTE_SENTENCES = (
    "Dressing removed without trauma; moderate serous exudate on the primary dressing.",
    "Wound bed 70% granulation, 30% adherent slough at the distal margin.",
    "Periwound skin intact, mild maceration at 3 o'clock, no erythema beyond 1 cm.",
    "Patient reports pain 3/10 at dressing change, 1/10 at rest; paracetamol effective.",
    "Cleansed with saline, silver alginate applied, secured with a bordered foam.",
    "Compression reapplied at 40 mmHg after ABPI of 0.92 last month.",
    "No signs of local infection; no malodour, no increase in pain or exudate.",
    "Offloading boot in use; patient repositioning two-hourly with assistance.",
    "Edges attached and advancing; new epithelium visible along the proximal edge.",
    "Daughter present and shown how to check the dressing for strike-through.",
    "Diabetic review booked; last HbA1c 61 mmol/mol, podiatry referral sent.",
    "Tissue viability nurse to review next week if no reduction in area.",
    "Undermining 0.5 cm from 11 to 2 o'clock, probed gently, no tracking to bone.",
    "Nutrition: eating half of meals, supplement drinks started, weight stable.",
)  # fmt: skip
_CLINICIANS = (
    "RN A. Patel",
    "RN S. Murphy",
    "TVN K. Osei",
    "Dr L. García",
    "RN J. Lindqvist",
    "Podiatrist M. Hughes",
    "RN T. Nakamura",
)
_FLAGS = ("low_light", "motion_blur", "partial_occlusion", "ruler_not_found", "depth_noise")


def patient_values(rng: random.Random) -> dict[str, Any]:
    """A patient: name, birth date, sex, MRN and zero to three contacts."""
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    contacts: list[dict[str, Any]] = []
    if rng.random() < 0.8:
        contacts.append({"kind": "phone", "value": f"+44 7700 9{rng.randrange(10**5):05d}"})
    if rng.random() < 0.4:
        handle = f"{given}.{family}".lower().replace(" ", "").replace("'", "")
        contacts.append({"kind": "email", "value": f"{handle}@example.org", "label": "home"})
    if rng.random() < 0.5:
        town, district = rng.choice(_TOWNS)
        contacts.append(
            {
                "kind": "address",
                "value": f"{rng.randrange(1, 200)} {rng.choice(_STREETS)}, {town} "
                f"{district} {rng.randrange(1, 10)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
                f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
            }
        )
    if rng.random() < 0.3:
        contacts.append(
            {
                "kind": "next_of_kin",
                "value": f"{rng.choice(_GIVEN)} {family}, +44 7700 9{rng.randrange(10**5):05d}",
                "label": rng.choice(_RELATIONS),
            }
        )
    return {
        "given_name": given,
        "family_name": family,
        "birth_date": date(1925, 1, 1) + timedelta(days=rng.randrange(85 * 365)),
        "sex": rng.choices(("female", "male", "other", "unknown"), (49, 48, 1, 2))[0],
        "mrn": f"MRN-{rng.randrange(10**7):07d}",
        "contacts": contacts,
    }


def wound_values(rng: random.Random, patient_id: str) -> dict[str, Any]:
    """A wound of patient `patient_id`: site, etiology, status and (mostly) onset."""
    onset = date(2024, 1, 1) + timedelta(days=rng.randrange(600)) if rng.random() < 0.85 else None
    return {
        "patient_id": patient_id,
        "body_site": rng.choice(_SITES),
        "etiology": rng.choices(_ETIOLOGIES, _ETIOLOGY_WEIGHTS)[0],
        "status": rng.choices(_STATUSES, _STATUS_WEIGHTS)[0],
        "onset": onset,
    }


def note_values(
    rng: random.Random, patient_id: str, wound_id: str, *, length: int = 500
) -> dict[str, Any]:
    """A clinical note of about `length` characters about one wound."""
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < length:
        sentences.append(rng.choice(_NOTE_SENTENCES))
    text = " ".join(sentences)
    cut = text.rfind(" ", 0, length)
    return {
        "patient_id": patient_id,
        "wound_id": wound_id,
        "author": rng.choice(_CLINICIANS),
        "text": text[: cut if cut > 0 else length],
    }


def assessment_values(
    rng: random.Random, patient_id: str, wound_id: str, device_id: str
) -> dict[str, Any]:
    """An assessment with measurements, model output, two blob references and flags."""
    length = rng.uniform(0.5, 12.0)
    width = length * rng.uniform(0.3, 0.9)
    max_depth = rng.uniform(0.5, 25.0)
    area = 0.785 * length * width * rng.uniform(0.85, 1.0)
    tissue = [rng.random() for _ in range(4)]
    total = sum(tissue)
    composition = {
        name: round(100 * part / total, 1)
        for name, part in zip(
            ("granulation", "slough", "necrosis", "epithelium"), tissue, strict=True
        )
    }
    captured = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(300 * 86400))
    return {
        "patient_id": patient_id,
        "wound_id": wound_id,
        "captured_at": captured,
        "device_id": device_id,
        "clinician": rng.choice(_CLINICIANS),
        "measurements": {
            "area_cm2": round(area, 2),
            "perimeter_cm": round(3.1416 * (length + width) / 2 * rng.uniform(1.0, 1.2), 2),
            "length_cm": round(length, 2),
            "width_cm": round(width, 2),
            "max_depth_mm": round(max_depth, 1),
            "mean_depth_mm": round(max_depth * rng.uniform(0.3, 0.6), 1),
            "volume_cm3": round(area * max_depth / 10 * rng.uniform(0.3, 0.5), 2),
        },
        "model_output": {
            "model_id": "wound-seg",
            "model_version": "0.3.1-int8",
            "tissue_composition": composition,
            "confidence": round(rng.uniform(0.55, 0.99), 3),
        },
        "blobs": [
            {
                "sha256": rng.randbytes(32).hex(),
                "size": rng.randrange(2_000_000, 9_000_000),
                "kind": "point_cloud",
                "media_type": "application/vnd.coherency.ply",
            },
            {
                "sha256": rng.randbytes(32).hex(),
                "size": rng.randrange(300_000, 1_500_000),
                "kind": "image",
                "media_type": "image/jpeg",
            },
        ],
        "quality_flags": rng.sample(_FLAGS, rng.choices((0, 1, 2), (70, 25, 5))[0]),
    }


def device_uuid(rng: random.Random) -> str:
    """A reproducible device id (a UUID string)."""
    return str(uuid.UUID(bytes=rng.randbytes(16), version=4))
