"""Queries behind member statements, activity history and churn signals (read only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, case, func, literal, or_, select, union_all

from common.db import table_of
from ledger.repository import entries, lots, movements, transactions
from members.models import Member, MemberPartnerLink
from partners.models import Partner
from programme.expiry import SHOPPING_KINDS
from programme.household_repository import transfers

members = table_of(Member)
links = table_of(MemberPartnerLink)
partners = table_of(Partner)

# A member's transactions newest first, and their last activity, are one descent of the index
# ix_journal_transactions_member_id_business_time (ledger/models.py) away.
_ACTIVITY = transactions.c.kind.in_(SHOPPING_KINDS)


@dataclass(frozen=True)
class LifetimeRow:
    partner_code: str | None  # None: the network operator funded it
    earned_points: int
    spent_points: int


@dataclass(frozen=True)
class ActivityRow:
    id: int
    public_id: str
    kind: str
    partner_code: str | None
    business_time: datetime
    receipt_id: str | None


@dataclass(frozen=True)
class InactiveRow:
    member_id: int
    member_number: str
    last_activity_at: datetime
    last_partner_id: int | None


class MemberReadRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def lifetime_by_partner(self, member_id: int, only_partner_id: int | None) -> list[LifetimeRow]:
        kind, points = transactions.c.kind, transactions.c.points
        earned = func.sum(case((kind == "EARN", points), (kind == "EARN_REVERSAL", -points), else_=0))
        spent = func.sum(case((kind == "REDEEM", points), (kind == "REDEMPTION_REFUND", -points), else_=0))
        query = (
            select(partners.c.partner_code, earned, spent)
            .select_from(transactions.outerjoin(partners, partners.c.id == transactions.c.partner_id))
            .where(transactions.c.member_id == member_id, _ACTIVITY)
            .group_by(partners.c.partner_code)
        )
        if only_partner_id is not None:
            query = query.where(transactions.c.partner_id == only_partner_id)
        rows = [LifetimeRow(code, int(earned), int(spent)) for code, earned, spent in self.connection.execute(query)]
        return sorted(rows, key=lambda row: (row.partner_code is not None, row.partner_code or ""))

    def activity_page(
        self,
        member_id: int,
        *,
        partner_id: int | None,
        kinds: Sequence[str],
        before: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ActivityRow]:
        """The member's transactions newest first (business time, then id), after the cursor ``before``:
        their own, transfers they received from another member of their household, and returns of
        that member's purchases that took points of them back from the member."""
        own = _activity_rows(partner_id, kinds, before, limit).where(transactions.c.member_id == member_id)
        received = (
            _activity_rows(partner_id, kinds, before, limit)
            .join(transfers, transfers.c.transaction_id == transactions.c.id)
            .where(transfers.c.recipient_member_id == member_id)
        )
        taken_back = (
            select(movements.c.transaction_id)
            .join(lots, lots.c.id == movements.c.lot_id)
            .where(lots.c.member_id == member_id, lots.c.origin_lot_id.is_not(None), movements.c.kind == "REVERSED")
        )
        returned = _activity_rows(partner_id, kinds, before, limit).where(
            transactions.c.id.in_(taken_back), transactions.c.member_id != member_id
        )
        # A union, not an OR: the member's own history still walks its index newest first, and the
        # transfers a member receives are few (the transfer policy limits them), so are their lots.
        every = union_all(select(own.subquery()), select(received.subquery()), select(returned.subquery())).subquery()
        query = select(every).order_by(every.c.business_time.desc(), every.c.id.desc()).limit(limit)
        return [ActivityRow(*row) for row in self.connection.execute(query)]

    def member_side_points(self, transaction_ids: Sequence[int], account_ids: Sequence[int]) -> dict[int, int]:
        """Per transaction, the points it moved on the member's accounts: credits gained, debits lost.

        Read from the entries rather than inferred from the kind, so an earn that repaid debt, a return
        that left debt, or an adjustment either way is shown as the books have it.
        """
        if not transaction_ids:
            return {}
        signed = case((entries.c.side == "C", entries.c.amount_points), else_=-entries.c.amount_points)
        rows = self.connection.execute(
            select(entries.c.transaction_id, func.sum(signed))
            .where(entries.c.transaction_id.in_(transaction_ids), entries.c.account_id.in_(account_ids))
            .group_by(entries.c.transaction_id)
        )
        return {int(transaction_id): int(points) for transaction_id, points in rows}

    def inactive_page(
        self, *, inactive_since: datetime, last_partner_id: int | None, after_member_id: int, limit: int
    ) -> list[InactiveRow]:
        """Members last active at or before ``inactive_since``, by member id after ``after_member_id``.

        The scan walks members in id order and probes each one's last activity through the member
        history index (one descent per member), so a page costs about the members it passes, never the
        whole journal. With a partner, it walks only the members linked to that partner.
        """
        candidates = select(members.c.id, members.c.member_number).where(members.c.id > after_member_id)
        if last_partner_id is not None:
            candidates = candidates.join(
                links, and_(links.c.member_id == members.c.id, links.c.partner_id == last_partner_id)
            )
        scanned = candidates.add_columns(_last_activity_of(members.c.id).label("last_activity_at")).subquery()
        last_partner = _last_partner_of(scanned.c.id)
        query = (
            select(scanned.c.id, scanned.c.member_number, scanned.c.last_activity_at, last_partner)
            .where(scanned.c.last_activity_at <= inactive_since)
            .order_by(scanned.c.id)
            .limit(limit)
        )
        if last_partner_id is not None:
            query = query.where(last_partner == last_partner_id)
        return [InactiveRow(*row) for row in self.connection.execute(query)]

    def spendable_by_member(self, member_ids: Sequence[int], now: datetime) -> dict[int, int]:
        """Points of available, unexpired lots per member (before holds)."""
        if not member_ids:
            return {}
        rows = self.connection.execute(
            select(lots.c.member_id, func.sum(lots.c.remaining_points))
            .where(lots.c.member_id.in_(member_ids), lots.c.remaining_points > 0)
            .where(lots.c.available_at <= now, lots.c.expires_at > now)
            .group_by(lots.c.member_id)
        )
        return {int(member_id): int(points) for member_id, points in rows}

    def partner_codes(self, partner_ids: Sequence[int]) -> dict[int, str]:
        if not partner_ids:
            return {}
        rows = self.connection.execute(
            select(partners.c.id, partners.c.partner_code).where(partners.c.id.in_(partner_ids))
        )
        return {int(partner_id): code for partner_id, code in rows}


def _activity_rows(
    partner_id: int | None, kinds: Sequence[str], before: tuple[datetime, int] | None, limit: int
) -> Select[Any]:
    query = (
        select(
            transactions.c.id, transactions.c.public_id, transactions.c.kind, partners.c.partner_code,
            transactions.c.business_time, transactions.c.receipt_id,
        )
        .select_from(transactions.outerjoin(partners, partners.c.id == transactions.c.partner_id))
        .order_by(transactions.c.business_time.desc(), transactions.c.id.desc())
        .limit(limit)
    )  # fmt: skip
    if partner_id is not None:
        query = query.where(transactions.c.partner_id == partner_id)
    if kinds:
        query = query.where(transactions.c.kind.in_(kinds))
    if before is not None:
        moment, transaction_id = before
        query = query.where(
            or_(
                transactions.c.business_time < moment,
                and_(transactions.c.business_time == moment, transactions.c.id < transaction_id),
            )
        )
    return query


def _last_activity_of(member_id: Any) -> Any:
    return (
        select(transactions.c.business_time)
        .where(transactions.c.member_id == member_id, _ACTIVITY)
        .order_by(transactions.c.business_time.desc())
        .limit(1)
        .correlate_except(transactions)
        .scalar_subquery()
    )


def _last_partner_of(member_id: Any) -> Any:
    # Ties on business time go to the later transaction; an operator activity has no partner (NULL).
    return (
        select(func.coalesce(transactions.c.partner_id, literal(0)))
        .where(transactions.c.member_id == member_id, _ACTIVITY)
        .order_by(transactions.c.business_time.desc(), transactions.c.id.desc())
        .limit(1)
        .correlate_except(transactions)
        .scalar_subquery()
    )
