"""Core statements on checkout tables: holds, purchases, daily issuance and idempotency records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    LABEL_STYLE_TABLENAME_PLUS_COL,
    Connection,
    and_,
    bindparam,
    exists,
    func,
    literal,
    select,
    true,
)

from checkout.models import Hold, OfflineRedemptionDay, PartnerDailyIssuance, Purchase
from common.db import table_of
from common.sql import Prebuilt, insert_ignoring_conflict
from ledger.repository import MemberAccounts, balances
from members.repository import MemberRow, identifiers, links, members
from partners.rates import ContractVersionView
from partners.repository import version_in_force_of, version_in_force_select
from programme.partner_programme import ActivePromotion, active_promotion_of, best_promotion_select
from programme.policy import PolicyVersionView
from programme.repository import in_force_select as policy_in_force_select
from programme.repository import version_of as policy_version_of

holds = table_of(Hold)
purchases = table_of(Purchase)
daily_issuance = table_of(PartnerDailyIssuance)
offline_days = table_of(OfflineRedemptionDay)


@dataclass(frozen=True)
class HoldRow:
    id: int
    public_id: str
    partner_id: int
    member_id: int
    contract_version_id: int
    points: int
    captured_points: int
    status: str
    receipt_id: str | None
    created_at: datetime
    expires_at: datetime
    capture_transaction_id: int | None


@dataclass(frozen=True)
class PurchaseRow:
    id: int
    partner_id: int
    receipt_id: str
    member_id: int
    currency: str
    total_minor: int
    contract_version_id: int
    earned_at: datetime | None
    earn_transaction_id: int | None
    points_earned: int
    points_redeemed: int
    returned_minor: int
    points_reversed: int
    points_restored: int


_HOLD_COLUMNS = [holds.c[name] for name in HoldRow.__dataclass_fields__]
_PURCHASE_COLUMNS = [purchases.c[name] for name in PurchaseRow.__dataclass_fields__]

# Hot-path statements, built once and run as Prebuilt (see ledger.repository).
_HELD = select(func.coalesce(func.sum(holds.c.points), 0)).where(
    holds.c.member_id == bindparam("member"), holds.c.status == "HELD", holds.c.expires_at > bindparam("now")
)
_HELD_POINTS = Prebuilt(_HELD)
_HELD_POINTS_EXCLUDING = Prebuilt(_HELD.where(holds.c.id != bindparam("excluded")))
_PURCHASE_FOR_UPDATE = Prebuilt(
    select(*_PURCHASE_COLUMNS)
    .where(purchases.c.partner_id == bindparam("partner"), purchases.c.receipt_id == bindparam("receipt"))
    .with_for_update()
)
_INSERT_PURCHASE = Prebuilt(purchases.insert().inline())
_PURCHASE_DEFAULTS = {"points_earned": 0, "points_redeemed": 0, "returned_minor": 0, "points_reversed": 0,
                      "points_restored": 0, "channel": "UNSPECIFIED"}  # fmt: skip
_INSERT_HOLD = Prebuilt(holds.insert().returning(holds.c.id))
_MEMBER = select(
    members.c.id,
    members.c.member_number,
    members.c.enrolled_at,
    balances.c.points_account_id,
    balances.c.debt_account_id,
    balances.c.points_balance,
    balances.c.debt_points,
    links.c.partner_id.is_not(None),
).select_from(
    members.join(balances, balances.c.member_id == members.c.id).outerjoin(
        links, and_(links.c.member_id == members.c.id, links.c.partner_id == bindparam("partner"))
    )
)
_BY_NUMBER = members.c.member_number == bindparam("number")
_BY_HASH = (
    members.c.id
    == select(identifiers.c.member_id)
    .where(identifiers.c.kind == bindparam("kind"), identifiers.c.lookup_hash == bindparam("hash"))
    .scalar_subquery()
)
# (by number?, skipping a locked row?) -> the statement. A lock read ahead skips a row another transaction
# holds rather than wait for it: the request may be a replay or a refusal, which must not wait on a member.
_MEMBER_FOR_UPDATE = {
    (by_number, skip_locked): Prebuilt(
        _MEMBER.where(_BY_NUMBER if by_number else _BY_HASH).with_for_update(of=balances, skip_locked=skip_locked)
    )
    for by_number in (True, False)
    for skip_locked in (True, False)
}


@dataclass(frozen=True)
class LockedMember:
    """A member found by identifier with their balance row locked, and whether the partner knows them."""

    member: MemberRow
    accounts: MemberAccounts
    is_linked: bool


@dataclass(frozen=True)
class EarnReads:
    """What every earn reads before it writes: the partner's contract version in force (with whether the
    partner is active), its best promotion running, the network policy version in force, and whether
    the partner has recorded a purchase with the receipt (an earlier earn, or a redemption on it)."""

    version: tuple[ContractVersionView, bool] | None
    promotion: ActivePromotion | None
    policy: PolicyVersionView | None
    receipt_known: bool


def _earn_reads() -> tuple[Prebuilt, tuple[int, int, int]]:
    """The reads as one statement, each its package's own query as a derived table outer-joined to one
    row (a read that finds nothing gives NULLs): one round trip where there were four. The contract and
    promotion are those at the business time, the policy the one in force now. Also the column counts
    after which the promotion's, the policy's and the receipt's columns start."""
    version = version_in_force_select(bindparam("partner"), bindparam("business_time")).subquery("version")
    promotion = best_promotion_select(bindparam("partner"), bindparam("business_time")).subquery("promotion")
    policy = policy_in_force_select(bindparam("now")).subquery("policy")
    receipt_known = exists().where(
        purchases.c.partner_id == bindparam("partner"), purchases.c.receipt_id == bindparam("receipt")
    )
    one_row = select(literal(1).label("one")).subquery("one_row")
    statement = (
        select(*version.c, *promotion.c, *policy.c, receipt_known.label("receipt_known"))
        .select_from(one_row.outerjoin(version, true()).outerjoin(promotion, true()).outerjoin(policy, true()))
        .set_label_style(LABEL_STYLE_TABLENAME_PLUS_COL)
    )
    promotion_at = len(version.c)
    policy_at = promotion_at + len(promotion.c)
    return Prebuilt(statement), (promotion_at, policy_at, policy_at + len(policy.c))


_EARN_READS, (_PROMOTION_AT, _POLICY_AT, _RECEIPT_AT) = _earn_reads()


def _earn_reads_parameters(partner_id: int, receipt_id: str, business_time: datetime, now: datetime) -> dict[str, Any]:
    return {"partner": partner_id, "receipt": receipt_id, "business_time": business_time, "now": now}


def earn_reads_of(rows: list[tuple[Any, ...]]) -> EarnReads:
    """What ``read_earn_reads_ahead``'s statement found."""
    (row,) = rows  # one row always: the reads are outer-joined to it
    version = row[:_PROMOTION_AT]
    return EarnReads(
        None if version[0] is None else version_in_force_of(version),
        active_promotion_of(row[_PROMOTION_AT:_POLICY_AT]),
        policy_version_of(row[_POLICY_AT:_RECEIPT_AT]),
        bool(row[_RECEIPT_AT]),
    )


def _member_lock(
    partner_id: int, number: str, kind: str, hashed: str, *, skip_locked: bool
) -> tuple[Prebuilt, dict[str, Any]]:
    if number:
        return _MEMBER_FOR_UPDATE[True, skip_locked], {"partner": partner_id, "number": number}
    return _MEMBER_FOR_UPDATE[False, skip_locked], {"partner": partner_id, "kind": kind, "hash": hashed}


def locked_member_of(rows: list[tuple[Any, ...]]) -> LockedMember | None:
    """What ``lock_member_ahead``'s statement found: the member, or None."""
    if not rows:
        return None
    row = rows[0]
    member = MemberRow(row[0], row[1], row[2])
    return LockedMember(member, MemberAccounts(row[0], row[3], row[4], row[5], row[6]), bool(row[7]))


class CheckoutRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def earn_reads(self, partner_id: int, receipt_id: str, business_time: datetime, now: datetime) -> EarnReads:
        parameters = _earn_reads_parameters(partner_id, receipt_id, business_time, now)
        return earn_reads_of(_EARN_READS.rows(self.connection, parameters))

    def read_earn_reads_ahead(
        self, partner_id: int, receipt_id: str, business_time: datetime, now: datetime
    ) -> Callable[[], list[tuple[Any, ...]]]:
        """``earn_reads``'s statement, queued (``Prebuilt.read_ahead``); ``earn_reads_of`` reads its rows."""
        parameters = _earn_reads_parameters(partner_id, receipt_id, business_time, now)
        return _EARN_READS.read_ahead(self.connection, parameters)

    def lock_member(
        self, partner_id: int, *, number: str = "", kind: str = "", hashed: str = ""
    ) -> LockedMember | None:
        """Finds a member by number or identifier hash and locks their balance row, in one statement."""
        statement, parameters = _member_lock(partner_id, number, kind, hashed, skip_locked=False)
        return locked_member_of(statement.rows(self.connection, parameters))

    def lock_member_ahead(
        self, partner_id: int, *, number: str = "", kind: str = "", hashed: str = ""
    ) -> Callable[[], list[tuple[Any, ...]]]:
        """``lock_member``'s statement, queued (``Prebuilt.read_ahead``), skipping the row if another
        transaction holds it: ``locked_member_of`` reads its rows, and no row means the member is
        unknown or was busy, which ``lock_member`` then tells apart, waiting for the lock if need be."""
        statement, parameters = _member_lock(partner_id, number, kind, hashed, skip_locked=True)
        return statement.read_ahead(self.connection, parameters)

    def held_points(self, member_id: int, now: datetime, *, excluding_hold_id: int | None = None) -> int:
        if excluding_hold_id is None:
            return int(_HELD_POINTS.scalar_one(self.connection, {"member": member_id, "now": now}))
        parameters = {"member": member_id, "now": now, "excluded": excluding_hold_id}
        return int(_HELD_POINTS_EXCLUDING.scalar_one(self.connection, parameters))

    def insert_hold(self, **values: Any) -> int:
        return int(_INSERT_HOLD.scalar_one(self.connection, values))

    def hold(self, public_id: str, partner_id: int) -> HoldRow | None:
        row = self.connection.execute(
            select(*_HOLD_COLUMNS).where(holds.c.public_id == public_id, holds.c.partner_id == partner_id)
        ).first()
        return HoldRow(*row) if row else None

    def hold_by_id(self, hold_id: int) -> HoldRow:
        return HoldRow(*self.connection.execute(select(*_HOLD_COLUMNS).where(holds.c.id == hold_id)).one())

    def resolve_hold(self, hold_id: int, *, status: str, now: datetime, **values: Any) -> bool:
        """Moves a hold out of HELD exactly once; False if something else resolved it first."""
        result = self.connection.execute(
            holds.update()
            .where(holds.c.id == hold_id, holds.c.status == "HELD")
            .values(status=status, resolved_at=now, **values)
        )
        return result.rowcount == 1

    def expire_holds(self, now: datetime, limit: int) -> int:
        due = select(holds.c.id).where(holds.c.status == "HELD", holds.c.expires_at <= now).limit(limit)
        ids = [hold_id for (hold_id,) in self.connection.execute(due)]
        if not ids:
            return 0
        result = self.connection.execute(
            holds.update()
            .where(holds.c.id.in_(ids), holds.c.status == "HELD")
            .values(status="EXPIRED", resolved_at=now)
        )
        return int(result.rowcount)

    def overdue_holds(self, now: datetime) -> int:
        """Holds past their time that no sweep has marked EXPIRED yet."""
        query = select(func.count()).select_from(holds).where(holds.c.status == "HELD", holds.c.expires_at <= now)
        return int(self.connection.execute(query).scalar_one())

    def purchase(self, partner_id: int, receipt_id: str) -> PurchaseRow | None:
        row = self.connection.execute(
            select(*_PURCHASE_COLUMNS).where(purchases.c.partner_id == partner_id, purchases.c.receipt_id == receipt_id)
        ).first()
        return PurchaseRow(*row) if row else None

    def purchase_for_update(self, partner_id: int, receipt_id: str) -> PurchaseRow | None:
        row = _PURCHASE_FOR_UPDATE.first(self.connection, {"partner": partner_id, "receipt": receipt_id})
        return PurchaseRow(*row) if row else None

    def insert_purchase(self, **values: Any) -> None:
        _INSERT_PURCHASE.run(self.connection, _PURCHASE_DEFAULTS | values)

    def queue_purchase(self, **values: Any) -> None:
        """Inserts the purchase with the transaction's next round trip (common.sql.Prebuilt.queue); a
        purchase already recorded with the receipt fails it, or the commit, as a unique violation."""
        _INSERT_PURCHASE.queue(self.connection, _PURCHASE_DEFAULTS | values)

    def update_purchase(self, purchase_id: int, **values: Any) -> None:
        self.connection.execute(purchases.update().where(purchases.c.id == purchase_id).values(**values))

    def add_daily_issuance(self, partner_id: int, day: str, points: int) -> int:
        """Adds to the partner's issuance for the day and returns the new total."""
        insert_ignoring_conflict(
            self.connection, daily_issuance, {"partner_id": partner_id, "day": day, "points_issued": 0}
        )
        key = (daily_issuance.c.partner_id == partner_id) & (daily_issuance.c.day == day)
        self.connection.execute(
            daily_issuance.update().where(key).values(points_issued=daily_issuance.c.points_issued + points)
        )
        return int(self.connection.execute(select(daily_issuance.c.points_issued).where(key)).scalar_one())

    def add_offline_redemption(self, kind: str, owner_id: int, store_id: str, day: str, points: int) -> int:
        """Adds to a member's or a store's offline redemptions of the day and returns the new total."""
        identity = {"kind": kind, "owner_id": owner_id, "store_id": store_id, "day": day}
        insert_ignoring_conflict(self.connection, offline_days, identity | {"points_redeemed": 0})
        key = and_(*(offline_days.c[name] == value for name, value in identity.items()))
        self.connection.execute(
            offline_days.update().where(key).values(points_redeemed=offline_days.c.points_redeemed + points)
        )
        return int(self.connection.execute(select(offline_days.c.points_redeemed).where(key)).scalar_one())
