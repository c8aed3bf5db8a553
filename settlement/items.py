"""Itemisation: which statement line each ledger fact of a period becomes (DESIGN.md section 6).

- Entries on a partner's *issued* account: points it funded (ISSUANCE) or took back on returns
  (ISSUANCE_REVERSAL). ON_ISSUANCE partners are billed at the price of the contract version the
  transaction used; ON_REDEMPTION partners see the points at price 0 and are billed on spending.
- Entries on a partner's *redeemed* account: points redeemed at its tills (REDEMPTION) or given back on
  returns (REDEMPTION_REFUND), at the reimbursement rate of the transaction's contract version.
- Changes to lots of an ON_REDEMPTION issuer, from the lineage written at spend time: spent points
  (CONSUMPTION) at the price recorded on the lot, restored points (CONSUMPTION_REVERSAL), expired points
  (BREAKAGE, reported at 0). Points a return takes back from the returned purchase's own lot, or from
  the lots a household transfer moved them into (lots.origin_lot_id), were never spent, so they are
  not billed; points a return takes from other lots, or that repay a member's debt, were used up and
  are billed to that lot's issuer like any spending. In exchange, an ON_REDEMPTION issuer whose
  returned points had already been spent is credited for them (CONSUMPTION_REVERSAL): the reversal's
  points less those it took back from the purchase's own and transferred lots.
- BONUS transactions a partner funds (activity points, its promotions) are issuance like an earn;
  bonuses the operator funds (tiers, sign-up, referrals) sit on the operator's account, which has no
  statement, and are reimbursed to redeeming partners like goodwill grants.
- Points a household member transfers (TRANSFER, TRANSFERRED movements) change owner, not issuer.
- Expired points (EXPIRY transactions, programme/expiry.py) are BREAKAGE at 0 on their issuer's
  statement, whatever the billing: an ON_ISSUANCE issuer paid for them when they were issued and the
  operator keeps the breakage; an ON_REDEMPTION issuer never pays for them.

Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from common.errors import FailedPrecondition
from settlement.netting import LineType
from settlement.periods import Period, period_of
from settlement.repository import EntryItem, MovementItem

ZERO = Decimal(0)


class UnclassifiedLedgerFact(FailedPrecondition):
    """A ledger fact settlement has no rule for: closing must stop rather than drop it."""

    reason = "UNCLASSIFIED_LEDGER_FACT"


@dataclass(frozen=True)
class Item:
    """One itemised ledger fact on one statement."""

    key: str  # "E<entry id>" or "M<lot movement id>"
    partner_id: int
    currency: str
    line_type: LineType
    unit_price: Decimal
    points: int
    prior_period: str
    original_reference: str

    def canonical(self) -> str:
        """The item's line in the statement's itemised list, whose SHA-256 the statement stores."""
        # Fixed-point like the SQL close's text of the stored price: str() would give 1E-7 and another hash.
        price = format(self.unit_price, "f")
        return f"{self.key},{self.line_type.value},{self.points},{price},{self.original_reference}\n"


def items_of_entry(entry: EntryItem, period: Period) -> list[Item]:
    prior, reference = _prior_period(
        period, entry.business_time, entry.transaction_public_id, entry.original_time, entry.original_public_id
    )

    def item(line_type: LineType, price: Decimal, points: int) -> Item:
        return Item(f"E{entry.entry_id}", entry.partner_id, entry.currency, line_type, price, points, prior, reference)

    kind = (entry.account_kind, entry.transaction_kind)
    if entry.billing not in ("ON_ISSUANCE", "ON_REDEMPTION"):  # a transaction without contract terms
        raise UnclassifiedLedgerFact(
            f"no settlement rule for a {kind[1]} entry without contract terms",
            account_kind=kind[0], transaction_kind=kind[1],
        )  # fmt: skip
    on_issuance = entry.billing == "ON_ISSUANCE"
    if kind in (("PARTNER_ISSUED", "EARN"), ("PARTNER_ISSUED", "BONUS")):  # a bonus a partner funds, as an earn
        return [item(LineType.ISSUANCE, entry.issuance_price if on_issuance else ZERO, entry.points)]
    if kind == ("PARTNER_ISSUED", "EARN_REVERSAL"):
        if on_issuance:
            return [item(LineType.ISSUANCE_REVERSAL, entry.issuance_price, entry.points)]
        already_spent = entry.points - entry.own_lot_reversed
        found = [item(LineType.ISSUANCE_REVERSAL, ZERO, entry.points)]
        if already_spent > 0:
            found.append(item(LineType.CONSUMPTION_REVERSAL, entry.issuance_price, already_spent))
        return found
    if kind == ("PARTNER_ISSUED", "EXPIRY"):
        # ON_ISSUANCE: paid for at issuance, the operator keeps the breakage; the issuer sees it at 0.
        # ON_REDEMPTION: the lot's EXPIRED movement reports it (items_of_movement), so nothing here.
        return [item(LineType.BREAKAGE, ZERO, entry.points)] if on_issuance else []
    if kind == ("PARTNER_REDEEMED", "REDEEM"):
        return [item(LineType.REDEMPTION, entry.reimbursement_rate, entry.points)]
    if kind == ("PARTNER_REDEEMED", "REDEMPTION_REFUND"):
        return [item(LineType.REDEMPTION_REFUND, entry.reimbursement_rate, entry.points)]
    raise UnclassifiedLedgerFact(
        f"no settlement rule for a {kind[1]} entry on a {kind[0]} account",
        account_kind=kind[0], transaction_kind=kind[1],
    )  # fmt: skip


def items_of_movement(movement: MovementItem, period: Period) -> list[Item]:
    prior, reference = _prior_period(
        period, movement.business_time, movement.transaction_public_id, movement.original_time,
        movement.original_public_id,
    )  # fmt: skip
    points = abs(movement.points_delta)

    def item(line_type: LineType, price: Decimal) -> list[Item]:
        key = f"M{movement.movement_id}"
        return [Item(key, movement.issuer_partner_id, movement.currency, line_type, price, points, prior, reference)]

    if movement.kind in ("CONSUMED", "DEBT_REPAYMENT"):
        return item(LineType.CONSUMPTION, movement.issuance_price)
    if movement.kind in ("RESTORED", "REPAYMENT_RESTORED"):  # the second: a repayment, billed, given back
        return item(LineType.CONSUMPTION_REVERSAL, movement.issuance_price)
    if movement.kind == "REVERSED":
        return [] if movement.is_own_lot_reversal else item(LineType.CONSUMPTION, movement.issuance_price)
    if movement.kind == "EXPIRED":
        return item(LineType.BREAKAGE, ZERO)
    if movement.kind == "ADJUSTED":  # a support deduction (programme/goodwill.py): never spent, never billed
        return item(LineType.ADJUSTMENT, ZERO)
    if movement.kind == "TRANSFERRED":
        # Points moved to a household member's new lot of the same issuer and price: not spent, so not
        # billed; the issuer is billed when the recipient spends them (that lot's CONSUMED movement).
        return []
    raise UnclassifiedLedgerFact(f"no settlement rule for a {movement.kind} lot movement", movement_kind=movement.kind)


def _prior_period(
    period: Period, business_time: datetime, public_id: str, original_time: datetime | None, original_id: str | None
) -> tuple[str, str]:
    """("", "") for an item of this period; else the earlier period it belongs to and its reference.

    A late item (business time before the period) names itself; a return of a purchase from an
    earlier period names the original transaction.
    """
    if business_time < period.starts_at:
        return period_of(business_time, period.length).label, public_id
    if original_time is not None and original_id is not None and original_time < period.starts_at:
        return period_of(original_time, period.length).label, original_id
    return "", ""
