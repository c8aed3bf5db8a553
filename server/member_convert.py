"""Conversions for MemberService messages. No rules live here."""

from __future__ import annotations

from collections.abc import Iterable

from loyalty.v1 import checkout_service_pb2 as checkout_pb
from loyalty.v1 import member_service_pb2 as pb

from programme.activity import (
    Activity,
    ActivityFilter,
    ActivityPage,
    InactiveMember,
    InactiveMembers,
    InvalidActivityKind,
)
from programme.statement import ExpiryDay, MemberStatement
from programme.visibility import StatementScope
from server.convert import tier_status, timestamp

_SCOPES = {StatementScope.OWN_SHARE: pb.STATEMENT_SCOPE_OWN_SHARE, StatementScope.NETWORK: pb.STATEMENT_SCOPE_NETWORK}
_KINDS = {
    "EARN": pb.ACTIVITY_KIND_EARN,
    "REDEEM": pb.ACTIVITY_KIND_REDEEM,
    "EARN_REVERSAL": pb.ACTIVITY_KIND_EARN_REVERSAL,
    "REDEMPTION_REFUND": pb.ACTIVITY_KIND_REDEMPTION_REFUND,
    "EXPIRY": pb.ACTIVITY_KIND_EXPIRY,
    "ADJUSTMENT": pb.ACTIVITY_KIND_ADJUSTMENT,
    "BONUS": pb.ACTIVITY_KIND_BONUS,
    "TRANSFER": pb.ACTIVITY_KIND_TRANSFER,
}
_KIND_NAMES: dict[int, str] = {value: name for name, value in _KINDS.items()}


def activity_filter(partner_code: str, kinds: Iterable[int]) -> ActivityFilter:
    names: list[str] = []
    for kind in kinds:
        if kind not in _KIND_NAMES:
            raise InvalidActivityKind(f"kinds: {kind} is not an activity kind", field="kinds")
        names.append(_KIND_NAMES[kind])
    return ActivityFilter(partner_code=partner_code.strip(), kinds=tuple(dict.fromkeys(names)))


def statement(view: MemberStatement) -> pb.MemberStatement:
    balance = view.balance
    message = pb.MemberStatement(
        member_number=view.member_number,
        scope=_SCOPES[view.scope],
        balance=checkout_pb.Balance(
            member_number=view.member_number, available_points=balance.available_points,
            pending_points=balance.pending_points, held_points=balance.held_points, debt_points=balance.debt_points,
            expiring_soon_points=balance.expiring_soon_points,
            expiring_soon_until_time=timestamp(balance.expiring_soon_until),
        ),
        next_expiries=[_expiry(day) for day in view.next_expiries],
        lifetime_points=[
            pb.PartnerLifetimePoints(
                partner_code=row.partner_code or "", earned_points=row.earned_points, spent_points=row.spent_points
            )
            for row in view.lifetime
        ],
        read_time=timestamp(view.read_at),
    )  # fmt: skip
    if balance.tier is not None:
        message.balance.tier.CopyFrom(tier_status(balance.tier))
    if view.inactivity_expires_at is not None:
        message.inactivity_expire_time.CopyFrom(timestamp(view.inactivity_expires_at))
    return message


def _expiry(day: ExpiryDay) -> pb.ExpiringPoints:
    return pb.ExpiringPoints(
        expire_date=day.day.isoformat(), expire_time=timestamp(day.first_expires_at), points=day.points
    )


def activity_response(result: ActivityPage) -> pb.ListMemberActivityResponse:
    return pb.ListMemberActivityResponse(
        activities=[_activity(item) for item in result.page.items],
        next_page_token=result.page.next_page_token,
        member_number=result.member_number,
        scope=_SCOPES[result.scope],
    )


def _activity(item: Activity) -> pb.MemberActivity:
    # Every journal kind has a value; one added later without one reads as unspecified rather than
    # failing the whole page.
    kind = _KINDS.get(item.kind, pb.ACTIVITY_KIND_UNSPECIFIED)
    return pb.MemberActivity(
        transaction_id=item.transaction_id, kind=kind, partner_code=item.partner_code or "",
        points=item.points, business_time=timestamp(item.business_time), receipt_id=item.receipt_id or "",
    )  # fmt: skip


def inactive_response(result: InactiveMembers) -> pb.ListInactiveMembersResponse:
    return pb.ListInactiveMembersResponse(
        members=[_inactive(member) for member in result.page.items],
        next_page_token=result.page.next_page_token,
        inactive_since_time=timestamp(result.inactive_since),
    )


def _inactive(member: InactiveMember) -> pb.InactiveMember:
    return pb.InactiveMember(
        member_number=member.member_number, last_activity_time=timestamp(member.last_activity_at),
        last_partner_code=member.last_partner_code or "", available_points=member.available_points,
    )  # fmt: skip
