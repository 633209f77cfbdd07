"""Who is asking: the authenticated caller of a request, as services see it.

Routes get a `Principal` from the bearer token (`sync_server.deps`) and hand it to the
services, which scope every query by its clinic and organisation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STAFF_ROLES", "Principal"]

STAFF_ROLES = frozenset({"clinician", "staff", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    kind: str  # "device" or "user"
    id: str
    clinic_id: str | None  # None only for organisation-wide staff (admins)
    organisation_id: str
    role: str  # device, clinician, staff, admin

    def can_see_clinic(self, clinic_id: str) -> bool:
        """True if this caller may read records of `clinic_id` (same organisation
        checks are the caller's job for organisation-wide admins)."""
        return self.clinic_id is None or self.clinic_id == clinic_id
