"""Points beyond a purchase's earn. Each bonus is a BONUS journal transaction and a lot funded by
whoever awards it, so settlement still bills every point to its issuer:

- the operator funds tier bonuses (programme/tiers.py), the sign-up bonus and referral bonuses
  (programme/referrals.py): lots without an issuer partner, at no price, like goodwill grants;
- a partner funds its activity points and its promotions' extra points: lots of that partner at its
  contract's issuance price, billed like its earns.

A ``bonus_awards`` row says why each BONUS transaction exists; bonuses that rode on a purchase name
its earn, so a return takes them back in proportion (``take_back_purchase_bonuses``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BindParameter, Connection, bindparam, func, select, union_all
from sqlalchemy.orm import aliased

from common.db import table_of
from ledger.posting import Ledger, NewLot, Posting
from ledger.repository import LedgerRepository, MemberAccounts, lots, transactions
from partners.rates import ContractVersionView, proportional_points
from programme.models import BonusAward
from programme.policy import NetworkPolicy, add_months

bonus_awards = table_of(BonusAward)

TIER, SIGN_UP, ACTIVITY, PROMOTION, REFERRAL = "TIER", "SIGN_UP", "ACTIVITY", "PROMOTION", "REFERRAL"
# Bonuses a return of the purchase takes back with its points. A referral bonus stays: it rewards
# bringing a member in, and the referrer's share is another member's points.
RETURNABLE_KINDS = (TIER, PROMOTION)

# Members owning a lot a transfer made of a purchase's points, from its earns' lots or from the lots of the
# bonuses that rode on them (a return takes both back). One statement, run before and after the locks;
# the credits are a union, not an OR, so that each finds its lot by index (an OR read every lot).
_EARNS: BindParameter[int] = bindparam("earns", expanding=True)
_CREDITS = union_all(
    select(transactions.c.id).where(transactions.c.id.in_(_EARNS)),
    select(bonus_awards.c.transaction_id).where(
        bonus_awards.c.earn_transaction_id.in_(_EARNS), bonus_awards.c.bonus_kind.in_(RETURNABLE_KINDS)
    ),
)
_ORIGIN = aliased(lots, name="origin")
_RECIPIENTS = (
    select(lots.c.member_id)
    .distinct()
    .join(_ORIGIN, _ORIGIN.c.id == lots.c.origin_lot_id)
    .where(_ORIGIN.c.source_transaction_id.in_(_CREDITS))
)


@dataclass(frozen=True)
class AwardedBonus:
    kind: str
    points: int
    detail: str  # the tier, the activity code, the promotion's id or the other member's number
    transaction_id: str  # the BONUS journal transaction's public id


def post_bonus(
    ledger: Ledger, member: MemberAccounts, *, kind: str, points: int, detail: str, lot: NewLot,
    partner_id: int | None, business_time: datetime, earn_transaction_id: int | None = None,
) -> AwardedBonus:  # fmt: skip
    """Credits a bonus lot (debt is repaid first, as with every credit) and records why."""
    member = ledger.repository.member_accounts(member.member_id)  # an earn just before may have repaid debt
    posting = Posting(
        kind="BONUS", member_id=member.member_id, partner_id=partner_id, contract_version_id=lot.contract_version_id,
        business_time=business_time, currency=lot.currency,
    )  # fmt: skip
    posted, _, _ = ledger.earn(member, posting, points, lot)
    ledger.repository.connection.execute(
        bonus_awards.insert().values(
            transaction_id=posted.transaction_id, bonus_kind=kind, member_id=member.member_id,
            earn_transaction_id=earn_transaction_id, detail=detail,
        )
    )  # fmt: skip
    return AwardedBonus(kind, points, detail, posted.public_id)


def operator_lot(policy: NetworkPolicy, *, earned_at: datetime, available_at: datetime, expires_at: datetime) -> NewLot:
    """A lot the operator funds: no issuer partner, no price; reported in the policy's operator currency."""
    return NewLot(
        issuer_partner_id=None, contract_version_id=None, issuance_price=Decimal(0),
        currency=policy.operator_currency, earned_at=earned_at, available_at=available_at, expires_at=expires_at,
    )  # fmt: skip


def partner_lot(
    version: ContractVersionView, *, earned_at: datetime, available_at: datetime, expires_at: datetime
) -> NewLot:
    """A lot a partner funds, at its contract version's issuance price."""
    return NewLot(
        issuer_partner_id=version.partner_id, contract_version_id=version.id,
        issuance_price=version.terms.issuance_price, currency=version.terms.currency, earned_at=earned_at,
        available_at=available_at, expires_at=expires_at,
    )  # fmt: skip


def award_sign_up_bonus(
    ledger: Ledger, member: MemberAccounts, policy: NetworkPolicy, now: datetime
) -> AwardedBonus | None:
    """The policy's sign-up bonus for a member enrolled in this transaction, spendable at once."""
    points = policy.bonuses.sign_up_points
    if points <= 0:
        return None
    expires_at = add_months(now, policy.expiry.lifetime_months)
    lot = operator_lot(policy, earned_at=now, available_at=now, expires_at=expires_at)
    return post_bonus(
        ledger, member, kind=SIGN_UP, points=points, detail="", lot=lot, partner_id=None, business_time=now
    )


@dataclass(frozen=True)
class BonusTakeBack:
    points: int
    debt_points: int


def take_back_purchase_bonuses(
    ledger: Ledger, member: MemberAccounts, *, earn_transaction_id: int, returned_minor_total: int, total_minor: int,
    held_points: Callable[[int], int], business_time: datetime,
) -> BonusTakeBack:  # fmt: skip
    """Reverses a purchase's tier and promotion bonuses down to the share of it still kept.

    Cumulative like the purchase's own points: each bonus's reversals come to exactly its points in
    proportion to the amount returned so far, whatever the number of partial returns. Points of the
    bonus lot that lapsed or support deducted count as already taken back. As with the purchase's
    points (``Ledger.reverse_earn``: the bonus lot, the lots a transfer moved its points into, the
    member's other lots), what cannot be taken without touching points open holds reserve
    (``held_points``, by member) becomes the member's debt.
    """
    repository = ledger.repository
    taken, debt = 0, 0
    for bonus in _purchase_bonuses(repository, earn_transaction_id):
        target = proportional_points(bonus.points, returned_minor_total, total_minor)
        reversed_before = repository.reversed_points(bonus.transaction_id)
        points = target - reversed_before
        lot_id = repository.lot_of_transaction(bonus.transaction_id)
        if lot_id is not None and points > 0:
            points -= min(points, repository.lost_unspent(bonus.transaction_id, lot_id, reversed_before))
        if points <= 0:
            continue
        posting = Posting(
            kind="EARN_REVERSAL", member_id=member.member_id, partner_id=bonus.partner_id,
            contract_version_id=bonus.contract_version_id, business_time=business_time, currency=bonus.currency,
            references_transaction_id=bonus.transaction_id,
        )  # fmt: skip
        _, owed = ledger.reverse_earn(
            member, posting, points, issuer_partner_id=bonus.partner_id, earn_lot_id=lot_id, held_points=held_points
        )
        taken, debt = taken + points - owed, debt + owed
        member = repository.member_accounts(member.member_id)
    return BonusTakeBack(taken + debt, debt)


def lock_for_return(
    repository: LedgerRepository, member_id: int, earn_transaction_ids: list[int]
) -> dict[int, MemberAccounts]:
    """Locks the member and every member a household transfer gave points of the purchase to
    (``purchase_recipients``), in member id order: a return takes those points back from whoever has
    them. Their accounts by member id."""
    connection = repository.connection
    return repository.lock_with_recipients(member_id, lambda: purchase_recipients(connection, earn_transaction_ids))


def purchase_recipients(connection: Connection, earn_transaction_ids: list[int]) -> set[int]:
    """Members a household transfer gave points of these earns' lots, or of their returnable bonuses'
    lots, to (spent or not)."""
    if not earn_transaction_ids:
        return set()
    return {int(member) for member in connection.execute(_RECIPIENTS, {"earns": earn_transaction_ids}).scalars()}


@dataclass(frozen=True)
class _PurchaseBonus:
    transaction_id: int
    points: int
    partner_id: int | None
    contract_version_id: int | None
    currency: str | None


def _purchase_bonuses(repository: LedgerRepository, earn_transaction_id: int) -> list[_PurchaseBonus]:
    rows = repository.connection.execute(
        select(
            transactions.c.id, transactions.c.points, transactions.c.partner_id, transactions.c.contract_version_id,
            transactions.c.currency,
        )
        .join(bonus_awards, bonus_awards.c.transaction_id == transactions.c.id)
        .where(
            bonus_awards.c.earn_transaction_id == earn_transaction_id,
            bonus_awards.c.bonus_kind.in_(RETURNABLE_KINDS),
        )
        .order_by(transactions.c.id)
    ).all()  # fmt: skip
    return [_PurchaseBonus(int(row[0]), int(row[1]), row[2], row[3], row[4]) for row in rows]


def earns_with_returnable_bonuses(connection: Connection, earn_transaction_ids: list[int]) -> set[int]:
    """Which of these earns carry a bonus that a return takes back with their points."""
    if not earn_transaction_ids:
        return set()
    found = connection.execute(
        select(bonus_awards.c.earn_transaction_id)
        .distinct()
        .where(
            bonus_awards.c.earn_transaction_id.in_(earn_transaction_ids),
            bonus_awards.c.bonus_kind.in_(RETURNABLE_KINDS),
        )
    ).scalars()
    return {int(earn) for earn in found}


def bonuses_of_earn(connection: Connection, earn_transaction_id: int) -> list[AwardedBonus]:
    """The bonuses that rode on a purchase's earn, as an idempotent replay of the earn reports them."""
    rows = connection.execute(
        select(bonus_awards.c.bonus_kind, transactions.c.points, bonus_awards.c.detail, transactions.c.public_id)
        .join(transactions, transactions.c.id == bonus_awards.c.transaction_id)
        .where(bonus_awards.c.earn_transaction_id == earn_transaction_id)
        .order_by(transactions.c.id)
    ).all()
    return [AwardedBonus(row[0], int(row[1]), row[2], row[3]) for row in rows]


def count_awards(
    connection: Connection, *, member_id: int, kind: str, detail: str, partner_id: int | None, since: datetime | None
) -> int:
    """How many bonuses of a kind and detail a member got from a funder since a moment (None: ever)."""
    query = (
        select(func.count())
        .select_from(bonus_awards.join(transactions, transactions.c.id == bonus_awards.c.transaction_id))
        .where(
            bonus_awards.c.member_id == member_id, bonus_awards.c.bonus_kind == kind, bonus_awards.c.detail == detail
        )
    )
    query = query.where(
        transactions.c.partner_id == partner_id if partner_id is not None else transactions.c.partner_id.is_(None)
    )
    if since is not None:
        query = query.where(transactions.c.business_time >= since)
    return int(connection.execute(query).scalar_one())
