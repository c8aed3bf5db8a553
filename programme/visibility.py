"""Who may see which member, and how much of their statement.

A partner sees only members who have dealt with it (DESIGN.md section 7), by the rule checkout's
``visible_member`` applies: the member found by identifier, and a partner link; any other member
looks exactly like an unknown one. Of a visible member a partner sees its own share, or the whole
network-wide statement when the member consents and the network policy allows it. Operator staff
see everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection

from common.errors import InvalidArgument, PermissionDenied
from members.identifiers import MemberIdentifier
from members.repository import MemberRepository, MemberRow
from members.services import MemberNotFound, find_member
from partners.repository import PartnerRepository
from partners.services import PartnerNotFound, PartnerSuspended
from programme.expiry import HeldPoints
from programme.services import policy_in_force

log = logging.getLogger(__name__)

# Points pending outside the ledger (open card authorisations): (connection, member id, now) -> points.
PendingPoints = Callable[[Connection, int, datetime], int]


class OtherPartnersNotVisible(PermissionDenied):
    reason = "OTHER_PARTNERS_NOT_VISIBLE"


class UnknownPartnerFilter(InvalidArgument):
    reason = "UNKNOWN_PARTNER_FILTER"


class StatementScope(StrEnum):
    OWN_SHARE = "OWN_SHARE"
    NETWORK = "NETWORK"


@dataclass(frozen=True)
class Viewer:
    """The caller: a partner, or operator staff (no partner), who see everything."""

    partner_id: int | None = None
    partner_code: str | None = None

    @property
    def is_partner(self) -> bool:
        return self.partner_id is not None


OPERATOR_STAFF = Viewer()


@dataclass(frozen=True)
class MemberReadSettings:
    """What member reads need from the composition root; holds and card authorisations live above."""

    identifier_pepper: bytes
    held_points: HeldPoints
    pending_sources: tuple[PendingPoints, ...] = ()


@dataclass(frozen=True)
class VisibleMember:
    """A member the viewer may see, and whose transactions show: one partner's, or (None) everyone's."""

    row: MemberRow
    scope: StatementScope
    only_partner_id: int | None


def visible_member(
    connection: Connection,
    settings: MemberReadSettings,
    viewer: Viewer,
    identifier: MemberIdentifier,
    *,
    member_consent: bool,
    now: datetime,
) -> VisibleMember:
    if viewer.partner_id is not None:
        require_active_partner(connection, viewer.partner_id)
    repository = MemberRepository(connection)
    member = find_member(repository, identifier, settings.identifier_pepper)
    if member is None or (viewer.partner_id is not None and not repository.is_linked(member.id, viewer.partner_id)):
        raise MemberNotFound("no member has that identifier")
    if viewer.partner_id is None:
        return VisibleMember(member, StatementScope.NETWORK, None)
    if member_consent and policy_in_force(connection, now).policy.privacy.statement_consent_shows_all_partners:
        # An audit trail of consented lookups (member numbers are pseudonymous; no contact data here).
        log.info(
            "member statement shown network-wide with the member's consent",
            extra={"partner_id": viewer.partner_id, "member_number": member.member_number},
        )
        return VisibleMember(member, StatementScope.NETWORK, None)
    return VisibleMember(member, StatementScope.OWN_SHARE, viewer.partner_id)


def require_active_partner(connection: Connection, partner_id: int) -> None:
    """A suspended partner reads nothing, as at checkout."""
    partner = PartnerRepository(connection).by_id(partner_id)
    if partner is None:
        raise PartnerNotFound("partner not found")
    if not partner.is_active:
        raise PartnerSuspended(f"partner {partner.partner_code} is suspended")


def partner_filter(connection: Connection, viewer: Viewer, partner_code: str, *, sees_all: bool) -> int | None:
    """The partner id a filter names (None: no filter); permission is checked before existence."""
    if not partner_code:
        return None
    if not sees_all and partner_code != viewer.partner_code:
        raise OtherPartnersNotVisible("this lookup shows only your own transactions", partner_code=partner_code)
    partner = PartnerRepository(connection).by_code(partner_code)
    if partner is None:
        raise UnknownPartnerFilter(f"no partner has the id {partner_code}", field="partner_code")
    return partner.id
