"""`client.bookings`: ask for appointments and caregiver visits, and see what is free.

Asking writes an intent (an immutable record under a new UUIDv7, its idempotency key,
signed like every local write) and returns its `IntentStatus`: ``pending`` until the
server's decision syncs down. What can be asked for is server-owned reference data
synced down read-only (`Directory`, `Availability`): it may be stale offline, so each
record says when the server wrote it (`generated_at`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from crdt import Availability, Directory, IntentKind, directory_id
from edge_sdk._collections import Collection
from edge_sdk._errors import RecordNotFoundError
from edge_sdk._intents import DecisionsCollection, IntentsCollection, IntentStatus
from edge_sdk._replica import Replica

__all__ = ["AvailabilityCollection", "Bookings"]


class AvailabilityCollection(Collection[Availability]):
    """Free slots per clinic and day (server-owned, read-only on a device)."""


class Bookings:
    """Appointments with doctors and nurses, and caregiver visits at home.

    Every request, move, cancellation and review is an intent the server decides; the
    methods return at once with the intent ``pending`` (see `EdgeClient.intent_status`
    and `EdgeClient.on_decision` for the answer).
    """

    def __init__(
        self, replica: Replica, intents: IntentsCollection, decisions: DecisionsCollection
    ) -> None:
        self._replica = replica
        self._intents = intents
        self._decisions = decisions
        self._directory: Collection[Directory] = Collection(replica, Directory)
        self._availability = AvailabilityCollection(replica, Availability)

    # ---------------------------------------------------------------- appointments
    def request_appointment(
        self,
        patient_id: str,
        service: str,
        starts_at: datetime,
        *,
        provider_id: str | None = None,
        specialisation: str | None = None,
        flexible: bool = False,
    ) -> IntentStatus:
        """Ask for an appointment: `service` at `starts_at` (a time with its UTC offset),
        with `provider_id` or any provider of `specialisation` (or anyone offering the
        service). With `flexible`, the server may book the nearest free fit instead.

        Raises:
            RecordValidationError: A value is invalid (a naive time, an unknown patient).
        """
        return self._ask(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=patient_id,
            details={
                "service": service,
                "starts_at": starts_at,
                "provider_id": provider_id,
                "specialisation": specialisation,
                "flexible": flexible,
            },
        )

    def reschedule_appointment(
        self,
        booking_id: str,
        starts_at: datetime,
        *,
        provider_id: str | None = None,
        flexible: bool = False,
    ) -> IntentStatus:
        """Ask to move booking `booking_id` (from an accepted decision's outcome) to
        `starts_at`, with `provider_id` or its current provider."""
        return self._ask(
            IntentKind.APPOINTMENT_RESCHEDULE,
            subject_id=booking_id,
            details={"starts_at": starts_at, "provider_id": provider_id, "flexible": flexible},
        )

    def cancel_appointment(self, booking_id: str, reason: str | None = None) -> IntentStatus:
        """Ask to cancel booking `booking_id`, with a reason a person can read."""
        return self._ask(
            IntentKind.APPOINTMENT_CANCEL, subject_id=booking_id, details={"reason": reason}
        )

    # ---------------------------------------------------------------- visits
    def request_visit(
        self,
        patient_id: str,
        skill: str,
        area: str,
        starts_at: datetime,
        *,
        duration_minutes: int = 60,
        caregiver_id: str | None = None,
        language: str | None = None,
        flexible: bool = False,
    ) -> IntentStatus:
        """Ask for a caregiver visit at the patient's home: someone with `skill` serving
        `area` at `starts_at` for `duration_minutes` (5 to 480, in steps of 5), either
        `caregiver_id` or the best free one (speaking `language`, if given).

        Raises:
            RecordValidationError: A value is invalid.
        """
        return self._ask(
            IntentKind.VISIT_REQUEST,
            patient_id=patient_id,
            details={
                "skill": skill,
                "area": area,
                "starts_at": starts_at,
                "duration_minutes": duration_minutes,
                "caregiver_id": caregiver_id,
                "language": language,
                "flexible": flexible,
            },
        )

    def review_visit(
        self, booking_id: str, rating: int, comment: str | None = None
    ) -> IntentStatus:
        """Review visit `booking_id`: `rating` 1 to 5, and a comment.

        Raises:
            RecordValidationError: The rating is out of range.
        """
        return self._ask(
            IntentKind.VISIT_REVIEW,
            subject_id=booking_id,
            details={"rating": rating, "comment": comment},
        )

    # ---------------------------------------------------------------- reference data
    def directory(self) -> Directory | None:
        """The clinic's bookable directory (providers, services), as last synced, or
        None if none has arrived yet. `generated_at` says how old it is."""
        try:
            return self._directory.get(directory_id(self._replica.clinic_id))
        except RecordNotFoundError:
            return None

    def free_slots(
        self,
        day: date | None = None,
        service: str | None = None,
        provider_id: str | None = None,
    ) -> list[Availability]:
        """The clinic's free slots as last synced, one `Availability` per day held
        (oldest day first; only `day` if given), each with only the slots of `service`
        and `provider_id` if given. A day held with no matching slot comes back with
        none; a day not held is absent. `generated_at` says how old each day is.
        """
        days = self._availability.list() if day is None else self._availability.list(day=day)
        return sorted(
            (
                held.model_copy(
                    update={
                        "slots": tuple(
                            slot
                            for slot in held.slots
                            if service in (None, slot.service)
                            and provider_id in (None, slot.provider_id)
                        )
                    }
                )
                for held in days
            ),
            key=lambda held: held.day,
        )

    # ---------------------------------------------------------------- internals
    def _ask(
        self,
        kind: IntentKind,
        *,
        details: dict[str, Any],
        patient_id: str | None = None,
        subject_id: str | None = None,
    ) -> IntentStatus:
        if subject_id is not None and patient_id is None:  # the booking's patient
            patient_id = self._intents.patient_of(self._decisions.for_booking(subject_id))
        return self._intents.ask(
            kind, details=details, patient_id=patient_id, subject_id=subject_id
        )
