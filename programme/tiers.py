"""Tiers: status by qualifying points in a rolling window, with an operator-funded bonus on each earn.

Qualifying points are the points of a member's purchase earns (EARN transactions, at any partner,
card clearings included) whose business time falls in the policy's window, less the points returns
took back from them. Bonuses, goodwill and transfers never qualify, and the balance plays no part.

- **Promotion** happens inside the earn that reaches a higher tier, and that earn already gets the
  new tier's bonus (``tier_bonus_on_earn``).
- **Lapse:** a tier holds until ``grace_days`` after the moment the member's qualifying points would
  fall below it as old earns leave the window, if they earned nothing more. Every earn and return
  recomputes that date (``member_tiers.lapses_at``), so a member always sees when their tier ends.
- **Demotion** is the tier review's (``review_tiers``, from ``coalition jobs run`` and the server's
  timer): a member past their lapse date moves to the tier their points still reach. It locks each
  member and re-reads their row, so replicas may run it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, or_, select
from sqlalchemy.orm import aliased

from common.db import table_of
from common.uow import UnitOfWork
from ledger.posting import Ledger, NewLot, Posted
from ledger.repository import LedgerRepository, MemberAccounts, transactions
from programme.bonuses import TIER, AwardedBonus, operator_lot, post_bonus
from programme.models import MemberTier, TierChange, TierPointsWithdrawn
from programme.policy import NetworkPolicy, Tier, TierPolicy, add_months
from programme.services import policy_in_force

member_tiers = table_of(MemberTier)
tier_changes = table_of(TierChange)
points_withdrawn = table_of(TierPointsWithdrawn)
_earns = aliased(transactions)

REVIEW_BATCH = 500


@dataclass(frozen=True)
class TierStatus:
    tier: str
    bonus_percent: int
    qualifying_points: int
    next_tier: str  # "" at the top tier
    points_to_next_tier: int
    lapses_at: datetime | None  # None for the base tier, which never lapses
    window_months: int


def qualifying_events(connection: Connection, member_id: int, since: datetime) -> list[tuple[datetime, int]]:
    """The member's purchase earns (+) and what returns took back of them (-), oldest first, each at the
    time of its earn: a return lowers the points of its purchase, which leave the window together, and
    a return of a purchase already out of the window changes nothing."""
    earned_at = case((transactions.c.kind == "EARN", transactions.c.business_time), else_=_earns.c.business_time)
    rows = connection.execute(
        select(earned_at, transactions.c.kind, transactions.c.points)
        .outerjoin(_earns, _earns.c.id == transactions.c.references_transaction_id)
        .where(
            transactions.c.member_id == member_id,
            transactions.c.kind.in_(("EARN", "EARN_REVERSAL")),
            or_(transactions.c.kind == "EARN", _earns.c.kind == "EARN"),
            earned_at > since,
        )
        .order_by(earned_at, transactions.c.id)
    ).all()
    events = [(row[0], int(row[2]) if row[1] == "EARN" else -int(row[2])) for row in rows]
    withdrawn = connection.execute(
        select(_earns.c.business_time, points_withdrawn.c.points)
        .join(_earns, _earns.c.id == points_withdrawn.c.earn_transaction_id)
        .where(points_withdrawn.c.member_id == member_id, _earns.c.business_time > since)
    ).all()
    if not withdrawn:
        return events
    return sorted(events + [(row[0], -int(row[1])) for row in withdrawn], key=lambda event: event[0])


def withdraw_qualifying_points(
    connection: Connection, member_id: int, earn_transaction_id: int, points: int, now: datetime
) -> None:
    """A return set ``points`` of a purchase against points already gone (lapsed, deducted): nothing is
    reversed for them, yet the purchase stops qualifying them."""
    if points > 0:
        connection.execute(
            points_withdrawn.insert().values(
                member_id=member_id, earn_transaction_id=earn_transaction_id, points=points, recorded_at=now
            )
        )


def projected_lapse(
    events: Sequence[tuple[datetime, int]], tier: Tier, policy: TierPolicy, now: datetime
) -> datetime | None:
    """When the tier ends if the member earns nothing more: ``grace_days`` after their points in the
    window first drop below the tier's, as the oldest events leave it. None for the base tier."""
    if tier.qualifying_points <= 0:
        return None
    grace = timedelta(days=policy.grace_days)
    total = sum(points for _, points in events)
    if total < tier.qualifying_points:
        return now + grace
    for at, points in events:
        total -= points
        if total < tier.qualifying_points:
            return add_months(at, policy.window_months) + grace
    return now + grace  # unreachable with a positive threshold: the window empties


def window_start(now: datetime, policy: TierPolicy) -> datetime:
    return add_months(now, -policy.window_months)


def tier_status(connection: Connection, member_id: int, now: datetime, policy: TierPolicy) -> TierStatus | None:
    """The member's tier, progress to the next and when it lapses (None: no tier programme)."""
    if not policy.tiers:
        return None
    events = qualifying_events(connection, member_id, window_start(now, policy))
    qualifying = max(sum(points for _, points in events), 0)
    row = connection.execute(
        select(member_tiers.c.tier, member_tiers.c.lapses_at).where(member_tiers.c.member_id == member_id)
    ).first()
    rank = policy.rank(row.tier) if row is not None else 0
    tier = policy.tiers[rank]
    following = policy.tiers[rank + 1] if rank + 1 < len(policy.tiers) else None
    return TierStatus(
        tier=tier.name, bonus_percent=tier.bonus_percent, qualifying_points=qualifying,
        next_tier=following.name if following else "",
        points_to_next_tier=max(following.qualifying_points - qualifying, 0) if following else 0,
        lapses_at=row.lapses_at if row is not None and rank > 0 else None, window_months=policy.window_months,
    )  # fmt: skip


def tier_bonus_on_earn(
    ledger: Ledger, member: MemberAccounts, policy: NetworkPolicy, *, earn: Posted, earned_points: int,
    earn_lot: NewLot, business_time: datetime,
) -> AwardedBonus | None:  # fmt: skip
    """Promotes the member if this earn (already posted) qualifies them, extends their tier's lapse
    date, and credits their tier's bonus on the earn: an operator-funded lot that becomes spendable
    and expires with the earn's own lot, so a return within the pending period takes both back."""
    tiers = policy.tiers
    if not tiers.tiers or earned_points <= 0:
        return None
    connection, now = ledger.repository.connection, ledger.recorded_at
    tier = _settle_tier(connection, member.member_id, tiers, now, cause="EARN")
    bonus = earned_points * tier.bonus_percent // 100
    if bonus <= 0:
        return None
    lot = operator_lot(
        policy, earned_at=earn_lot.earned_at, available_at=earn_lot.available_at, expires_at=earn_lot.expires_at
    )
    return post_bonus(
        ledger, member, kind=TIER, points=bonus, detail=tier.name, lot=lot, partner_id=None,
        business_time=business_time, earn_transaction_id=earn.transaction_id,
    )  # fmt: skip


def refresh_after_return(connection: Connection, member_id: int, policy: TierPolicy, now: datetime) -> None:
    """A return lowers qualifying points: the tier's lapse date moves closer (never a demotion here)."""
    if policy.tiers:
        _settle_tier(connection, member_id, policy, now, cause=None)


def review_tiers(uow: UnitOfWork, *, batch: int = REVIEW_BATCH) -> int:
    """Moves members past their tier's lapse date to the tier their points still reach; returns how
    many changed tier. Each member in a transaction of their own, locked, re-read."""
    now = uow.clock.now()

    def due(connection: Connection) -> tuple[TierPolicy, list[int]]:
        policy = policy_in_force(connection, now).policy.tiers
        rows = connection.execute(
            select(member_tiers.c.member_id)
            .where(member_tiers.c.lapses_at <= now)
            .order_by(member_tiers.c.member_id)
            .limit(batch)
        ).all()
        return policy, [int(row[0]) for row in rows]

    policy, member_ids = uow.run(due)
    if not policy.tiers:
        return 0  # no tier programme: nothing lapses
    changed = 0
    for member_id in member_ids:

        def review(connection: Connection, member_id: int = member_id) -> bool:
            LedgerRepository(connection).lock_member(member_id)
            row = connection.execute(
                select(member_tiers.c.tier, member_tiers.c.lapses_at).where(member_tiers.c.member_id == member_id)
            ).first()
            if row is None or row.lapses_at is None or row.lapses_at > now:
                return False  # another replica got here first, or the member earned again
            return bool(_settle_tier(connection, member_id, policy, now, cause="REVIEW", lapsed=True).name != row.tier)

        changed += uow.run(review)
    return changed


def _settle_tier(
    connection: Connection, member_id: int, policy: TierPolicy, now: datetime, *, cause: str | None,
    lapsed: bool = False,
) -> Tier:  # fmt: skip
    """Brings the member's tier row up to date and returns their tier.

    Up when the points reach a higher tier (``cause`` EARN); down to what the points reach only when
    the tier has ``lapsed`` (the review); otherwise the tier stays and only its lapse date moves.
    """
    events = qualifying_events(connection, member_id, window_start(now, policy))
    qualifying = max(sum(points for _, points in events), 0)
    row = connection.execute(
        select(member_tiers.c.tier, member_tiers.c.since, member_tiers.c.lapses_at)
        .where(member_tiers.c.member_id == member_id)
    ).first()  # fmt: skip
    current = policy.tiers[policy.rank(row.tier) if row is not None else 0]
    reached = policy.tier_for(qualifying) or policy.tiers[0]
    goes_up = cause == "EARN" and policy.rank(reached.name) > policy.rank(current.name)
    goes_down = lapsed and policy.rank(reached.name) < policy.rank(current.name)
    tier = reached if goes_up or goes_down else current
    lapses_at = projected_lapse(events, tier, policy, now)
    if row is not None and row.tier == tier.name and row.lapses_at is not None and qualifying < tier.qualifying_points:
        # Already short of the tier: its grace runs from when the points first fell short, and an
        # earn that does not reach the tier again must not restart it.
        lapses_at = min(row.lapses_at, lapses_at) if lapses_at is not None else row.lapses_at
    if goes_up or goes_down:
        connection.execute(
            tier_changes.insert().values(
                member_id=member_id, from_tier=row.tier if row is not None else current.name, to_tier=tier.name,
                qualifying_points=qualifying, cause="EARN" if goes_up else "REVIEW", changed_at=now,
            )
        )  # fmt: skip
    values = {"tier": tier.name, "since": now if goes_up or goes_down or row is None else row.since,
              "lapses_at": lapses_at}  # fmt: skip
    if row is None:
        if tier.qualifying_points > 0:  # base-tier members need no row
            connection.execute(member_tiers.insert().values(member_id=member_id, **values))
    elif (row.tier, row.lapses_at) != (tier.name, lapses_at):
        connection.execute(member_tiers.update().where(member_tiers.c.member_id == member_id).values(**values))
    return tier
