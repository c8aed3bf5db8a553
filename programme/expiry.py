"""Lot expiry: books points that lapsed under the network policy as EXPIRY journal transactions.

A lot lapses when its ``expires_at`` passes, or, when the policy sets ``inactivity_months``, when its
member has had no earn, spend or return for that long. Each lapsed lot gets one EXPIRY transaction
that returns its remaining points to the issuer's account, so settlement attributes the breakage to
the lot's issuer (settlement/items.py). Its business time is the moment the points lapsed, not the
moment the run noticed, so a late run still books the expiry in the right period.

The run is idempotent and safe from several replicas at once: each member is handled in its own
transaction under the member lock every change to a member's points takes, and a booked lot has no
remaining points left to book. Pending points (not yet available) are never touched. Held points are
never touched either: a hold only ever rests on lots that outlive it, so an expired lot backs no open
hold, and a member with an open hold is active, so inactivity never lapses points a hold reserved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, bindparam, case, func, select

from common.db import UtcDateTime, table_of
from common.uow import UnitOfWork
from ledger.posting import Ledger, Posting
from ledger.repository import LedgerRepository, lots, transactions
from programme.models import PointTransfer
from programme.policy import ExpiryPolicy, PolicyVersionView, add_months
from programme.services import policy_in_force

# A member's own earns, spends and returns at any partner: what churn signals count (programme/member_reads.py).
SHOPPING_KINDS = ("EARN", "REDEEM", "EARN_REVERSAL", "REDEMPTION_REFUND")
# What keeps points from lapsing for inactivity: shopping, support adjusting the member's points (they
# were in touch; a goodwill grant must not lapse at the next run), a bonus (an activity award, a sign-up)
# and a household transfer sent (one received counts too: see _latest_activity).
ACTIVITY_KINDS = (*SHOPPING_KINDS, "ADJUSTMENT", "BONUS", "TRANSFER")

point_transfers = table_of(PointTransfer)

# Open holds of a member at an instant (the checkout package knows holds; the server wires it in).
HeldPoints = Callable[[Connection, int, datetime], int]

_HAS_POINTS = and_(lots.c.remaining_points > 0, lots.c.available_at <= bindparam("now"))
_MEMBERS_WITH_EXPIRED_LOTS = (
    select(lots.c.member_id)
    .where(_HAS_POINTS, lots.c.expires_at <= bindparam("now"), lots.c.member_id > bindparam("after"))
    .group_by(lots.c.member_id)
    .order_by(lots.c.member_id)
    .limit(bindparam("limit"))
)


def _latest_activity(member_id: ColumnElement[Any]) -> ColumnElement[Any]:
    """The member's last own activity, or a household transfer they received if later: points a member
    is given are theirs to use from then, and must not lapse at the next run for an idle account."""
    own = (
        select(func.max(transactions.c.business_time))
        .where(transactions.c.member_id == member_id, transactions.c.kind.in_(ACTIVITY_KINDS))
        .scalar_subquery()
    )
    received = (
        select(func.max(point_transfers.c.transferred_at))
        .where(point_transfers.c.recipient_member_id == member_id)
        .scalar_subquery()
    )
    # Not GREATEST/max(a, b): PostgreSQL's skips NULLs, SQLite's returns NULL.
    return case((received.is_(None), own), (own.is_(None), received), (received > own, received), else_=own)


_LAST_ACTIVITY = _latest_activity(lots.c.member_id)
_INACTIVE_MEMBERS = (
    select(lots.c.member_id)
    .where(_HAS_POINTS, lots.c.member_id > bindparam("after"))
    .group_by(lots.c.member_id)
    # Typed: compared with a subquery, an untyped parameter would reach SQLite as another text format.
    .having(bindparam("inactive_since", type_=UtcDateTime()) >= _LAST_ACTIVITY)
    .order_by(lots.c.member_id)
    .limit(bindparam("limit"))
)
_MEMBER_LAST_ACTIVITY = select(_latest_activity(bindparam("member")))


@dataclass(frozen=True)
class ExpiryRun:
    members: int
    lots_expired: int
    points_expired: int

    def __add__(self, other: ExpiryRun) -> ExpiryRun:
        return ExpiryRun(
            self.members + other.members,
            self.lots_expired + other.lots_expired,
            self.points_expired + other.points_expired,
        )


NOTHING = ExpiryRun(0, 0, 0)


def expire_lapsed_points(uow: UnitOfWork, held_points: HeldPoints, *, batch_size: int = 500) -> ExpiryRun:
    """Books every lot lapsed by now under the policy in force now; returns what it booked."""
    now = uow.clock.now()
    in_force = uow.run(lambda connection: policy_in_force(connection, now))
    total = NOTHING
    for query, parameters in _candidate_queries(in_force.policy.expiry, now):
        after = 0
        while True:
            members = _member_ids(uow, query, {**parameters, "now": now, "after": after, "limit": batch_size})
            for member_id in members:
                total += uow.run(partial(_expire_member, member_id=member_id, now=now, in_force=in_force,
                                         held_points=held_points, recorded_at=uow.clock.now()))  # fmt: skip
            if len(members) < batch_size:
                break
            after = members[-1]
    return total


def _member_ids(uow: UnitOfWork, query: Select[Any], parameters: dict[str, object]) -> list[int]:
    def work(connection: Connection) -> list[int]:
        return [int(member_id) for member_id in connection.execute(query, parameters).scalars()]

    return uow.run(work)


def _candidate_queries(policy: ExpiryPolicy, now: datetime) -> list[tuple[Select[Any], dict[str, object]]]:
    found: list[tuple[Select[Any], dict[str, object]]] = [(_MEMBERS_WITH_EXPIRED_LOTS, {})]
    if policy.inactivity_months is not None:
        found.append((_INACTIVE_MEMBERS, {"inactive_since": add_months(now, -policy.inactivity_months)}))
    return found


def _expire_member(
    connection: Connection, *, member_id: int, now: datetime, in_force: PolicyVersionView, held_points: HeldPoints,
    recorded_at: datetime,
) -> ExpiryRun:  # fmt: skip
    """One member's lapsed lots, in one transaction under the member lock.

    ``now`` is the run's instant (what has lapsed by then); ``recorded_at`` when this member is booked, so
    a close that runs while a long run goes on sees each expiry recorded after it, as it was.
    """
    repository = LedgerRepository(connection)
    member = repository.lock_member(member_id)  # then re-read: another replica may have booked these already
    lapsed_at_inactivity = _inactivity_deadline(connection, member_id, now, in_force)
    if lapsed_at_inactivity is not None and held_points(connection, member_id, now) > 0:
        lapsed_at_inactivity = None  # an open hold is activity: its points stay
    query = select(
        lots.c.id, lots.c.remaining_points, lots.c.issuer_partner_id, lots.c.contract_version_id, lots.c.expires_at,
        lots.c.available_at,
    ).where(lots.c.member_id == member_id, lots.c.remaining_points > 0, lots.c.available_at <= now)  # fmt: skip
    if lapsed_at_inactivity is None:
        query = query.where(lots.c.expires_at <= now)
    rows = connection.execute(query.order_by(lots.c.id)).all()
    ledger = Ledger(repository, recorded_at=recorded_at)
    points = 0
    for lot_id, remaining, issuer_partner_id, contract_version_id, expires_at, available_at in rows:
        lapsed_at = expires_at
        if lapsed_at_inactivity is not None:
            # Never before the points could be spent: a lot that became available after the deadline
            # lapses as it does.
            lapsed_at = min(expires_at, max(lapsed_at_inactivity, available_at))
        posting = Posting(
            kind="EXPIRY", member_id=member_id, partner_id=issuer_partner_id,
            contract_version_id=contract_version_id, business_time=lapsed_at,
        )  # fmt: skip
        ledger.expire(member, posting, lot_id, int(remaining), issuer_partner_id)
        points += int(remaining)
    return ExpiryRun(1 if rows else 0, len(rows), points)


def _inactivity_deadline(
    connection: Connection, member_id: int, now: datetime, in_force: PolicyVersionView
) -> datetime | None:
    """When the member's points lapsed for inactivity, if they have by ``now``; else None.

    Never before the policy version that set the rule took effect: switching the rule on (or
    shortening it) does not reach back into the past.
    """
    months = in_force.policy.expiry.inactivity_months
    if months is None:
        return None
    last_activity = member_last_activity(connection, member_id)
    if last_activity is None:
        return None
    deadline = add_months(last_activity, months)
    if in_force.effective_from is not None:
        deadline = max(deadline, in_force.effective_from)
    return deadline if deadline <= now else None


def member_last_activity(connection: Connection, member_id: int) -> datetime | None:
    """The moment an inactivity rule counts from (ACTIVITY_KINDS, and transfers received)."""
    moment = connection.execute(_MEMBER_LAST_ACTIVITY, {"member": member_id}).scalar()
    return moment if isinstance(moment, datetime) else None
