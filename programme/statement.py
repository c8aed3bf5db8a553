"""A member's statement: balance breakdown, the next points to expire, lifetime points per partner."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection

from common.uow import UnitOfWork
from ledger.lots import LotBalance
from ledger.repository import LedgerRepository
from members.identifiers import MemberIdentifier
from programme.expiry import HeldPoints, member_last_activity
from programme.member_reads import LifetimeRow, MemberReadRepository
from programme.policy import ExpiryPolicy, TierPolicy, add_months
from programme.services import policy_in_force
from programme.tiers import TierStatus, tier_status
from programme.visibility import MemberReadSettings, PendingPoints, StatementScope, Viewer, visible_member

# How many expiry days a statement lists: the next few are what a member acts on.
NEXT_EXPIRY_DAYS = 5


@dataclass(frozen=True)
class BalanceBreakdown:
    available_points: int
    pending_points: int
    held_points: int
    debt_points: int
    expiring_soon_points: int
    expiring_soon_until: datetime
    tier: TierStatus | None = None


@dataclass(frozen=True)
class ExpiryDay:
    day: date  # UTC
    first_expires_at: datetime
    points: int


@dataclass(frozen=True)
class MemberStatement:
    member_number: str
    scope: StatementScope
    balance: BalanceBreakdown
    next_expiries: list[ExpiryDay]
    inactivity_expires_at: datetime | None
    lifetime: list[LifetimeRow]
    read_at: datetime


def get_member_statement(
    uow: UnitOfWork, settings: MemberReadSettings, viewer: Viewer, identifier: MemberIdentifier, *,
    member_consent: bool,
) -> MemberStatement:  # fmt: skip
    now = uow.clock.now()

    def work(connection: Connection) -> MemberStatement:
        member = visible_member(connection, settings, viewer, identifier, member_consent=member_consent, now=now)
        policy = policy_in_force(connection, now).policy
        expiry = policy.expiry
        ledger, reads = LedgerRepository(connection), MemberReadRepository(connection)
        return MemberStatement(
            member_number=member.row.member_number,
            scope=member.scope,
            balance=member_balance(
                connection,
                member.row.id,
                now,
                now + timedelta(days=expiry.expiring_soon_days),
                held_points=settings.held_points,
                pending_sources=settings.pending_sources,
                tiers=policy.tiers,
            ),
            next_expiries=next_expiries(ledger.lots_with_points(member.row.id), now),
            inactivity_expires_at=inactivity_expiry(member_last_activity(connection, member.row.id), expiry),
            lifetime=reads.lifetime_by_partner(member.row.id, member.only_partner_id),
            read_at=now,
        )

    return uow.run(work)


def member_balance(
    connection: Connection,
    member_id: int,
    now: datetime,
    soon: datetime,
    *,
    held_points: HeldPoints,
    pending_sources: Sequence[PendingPoints] = (),
    tiers: TierPolicy | None = None,
) -> BalanceBreakdown:
    """A member's balance at ``now``, points lapsing by ``soon`` counted as expiring soon: the one rule
    behind checkout's GetBalance and the member statement. Holds and points pending outside the ledger
    (card authorisations) come from the callers, which know them. With ``tiers``, the member's tier
    status too."""
    ledger = LedgerRepository(connection)
    summary = ledger.lot_summary(member_id, now, soon)
    held = held_points(connection, member_id, now)
    pending_elsewhere = sum(source(connection, member_id, now) for source in pending_sources)
    return BalanceBreakdown(
        available_points=max(summary.spendable - held, 0),
        pending_points=summary.pending + pending_elsewhere,
        held_points=held,
        debt_points=ledger.member_accounts(member_id).debt_points,
        expiring_soon_points=summary.expiring_soon,
        expiring_soon_until=soon,
        tier=tier_status(connection, member_id, now, tiers) if tiers is not None else None,
    )


def next_expiries(lots: Iterable[LotBalance], now: datetime, *, days: int = NEXT_EXPIRY_DAYS) -> list[ExpiryDay]:
    """Points of available lots by the UTC day they lapse, soonest first, for the next ``days`` days.

    Only available lots count, as in the expiring-soon figure: pending points cannot be spent yet.
    """
    by_day: dict[date, ExpiryDay] = {}
    for lot in sorted((lot for lot in lots if lot.is_spendable(now)), key=lambda lot: lot.expires_at):
        day = lot.expires_at.date()
        known = by_day.get(day)
        first = known.first_expires_at if known else lot.expires_at
        by_day[day] = ExpiryDay(day, first, (known.points if known else 0) + lot.remaining_points)
    return sorted(by_day.values(), key=lambda expiry: expiry.day)[:days]


def inactivity_expiry(last_activity: datetime | None, policy: ExpiryPolicy) -> datetime | None:
    """When every point lapses if the member stays inactive (programme/expiry.py's rule)."""
    if policy.inactivity_months is None or last_activity is None:
        return None
    return add_months(last_activity, policy.inactivity_months)
