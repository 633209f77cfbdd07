"""Who is asking: the authenticated caller of a request, as services see it.

`sync_server.deps` verifies the bearer access token and `authenticated` checks its
subject against the database; routes hand the resulting `Principal` to the services,
which scope every query by its clinic and organisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from sync_server.errors import Forbidden, Unauthorized
from sync_server.identity.tables import Device, User
from sync_server.identity.tokens import AccessClaims

__all__ = ["STAFF_ROLES", "Principal", "authenticated"]

STAFF_ROLES = frozenset({"clinician", "staff", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    kind: Literal["device", "user"]
    id: str
    clinic_id: str | None  # None only for organisation-wide staff (admins)
    organisation_id: str
    role: str  # device, edge (a clinic's edge box), clinician, staff, admin

    @property
    def organisation_wide(self) -> bool:
        """True for an account bound to no clinic (an organisation-wide admin)."""
        return self.clinic_id is None

    def can_see_clinic(self, clinic_id: str) -> bool:
        """True if this caller may read records of `clinic_id` (same organisation
        checks are the caller's job for organisation-wide admins)."""
        return self.clinic_id is None or self.clinic_id == clinic_id


def authenticated(*, session: Session, claims: AccessClaims) -> Principal:
    """The caller a verified access token names, as the database knows it now.

    A revoked device or a deactivated user is refused on the very next request,
    whatever its token says.

    Raises:
        Unauthorized: ``invalid_token``: an unknown device, or a token of an unknown kind.
        Forbidden: ``device_revoked`` or ``user_inactive``.
    """
    if claims.kind == "device":
        device = session.get(Device, claims.subject)
        if device is None:
            raise Unauthorized("unknown device", code="invalid_token")
        if device.revoked_at is not None:
            raise Forbidden("this device has been revoked", code="device_revoked")
        # An edge box is a device of kind "edge": its role is "edge".
        return Principal("device", device.id, device.clinic_id, claims.organisation_id, device.kind)
    if claims.kind == "user":
        user = session.get(User, claims.subject)
        if user is None or not user.active:
            raise Forbidden("this account is deactivated", code="user_inactive")
        return Principal("user", user.id, user.clinic_id, user.organisation_id, user.role)
    raise Unauthorized("access token of an unknown kind", code="invalid_token")
