"""Returns: take back points earned on the returned amount, give back points that paid for it."""

from __future__ import annotations

from checkout.commands import ReturnCommand, ReturnResult
from checkout.errors import InvalidBasket, PurchaseNotFound, ReturnExceedsPurchase
from checkout.repository import PurchaseRow
from checkout.session import CheckoutSession, PartnerRef
from ledger.posting import Posting
from ledger.repository import MemberAccounts
from members.repository import MemberRow
from partners.rates import proportional_points
from programme.bonuses import BonusTakeBack, lock_for_return, take_back_purchase_bonuses
from programme.tiers import refresh_after_return, withdraw_qualifying_points


def return_purchase(session: CheckoutSession, partner: PartnerRef, command: ReturnCommand) -> ReturnResult:
    """Cumulative returns never exceed the purchase; points follow the returned share exactly, and so
    do the purchase's tier and promotion bonuses (programme/bonuses.py)."""
    found = session.records.purchase(partner.partner_id, command.receipt_id)
    member = session.members.find_by_id(found.member_id) if found else None
    if found is None or member is None:
        raise PurchaseNotFound("no purchase with that receipt", receipt_id=command.receipt_id)
    earns = [] if found.earn_transaction_id is None else [found.earn_transaction_id]
    accounts = lock_for_return(session.ledger_records, member.id, earns)[member.id]
    purchase = session.records.purchase_for_update(partner.partner_id, command.receipt_id)
    assert purchase is not None
    returned_total = purchase.returned_minor + _returned_amount(purchase, command)
    # What the returned share calls for so far; never less than what earlier returns already moved.
    reversed_target = max(
        proportional_points(purchase.points_earned, returned_total, purchase.total_minor), purchase.points_reversed
    )
    restored_target = max(
        proportional_points(purchase.points_redeemed, returned_total, purchase.total_minor), purchase.points_restored
    )
    # Refund first, so that points given back can cover the points taken back.
    refund_id, restored = _refund(session, accounts, member, purchase, restored_target - purchase.points_restored)
    reversed_now = reversed_target - purchase.points_reversed
    reversal_id, debt = _reverse(session, accounts, member, purchase, reversed_now)
    bonuses = BonusTakeBack(0, 0)
    if purchase.earn_transaction_id is not None:
        bonuses = take_back_purchase_bonuses(
            session.ledger, accounts, earn_transaction_id=purchase.earn_transaction_id,
            returned_minor_total=returned_total, total_minor=purchase.total_minor,
            held_points=lambda member_id: session.records.held_points(member_id, session.now),
            business_time=session.business_time,
        )  # fmt: skip
        refresh_after_return(session.connection, member.id, session.policy().tiers, session.now)
    session.records.update_purchase(
        purchase.id,
        returned_minor=returned_total,
        points_reversed=reversed_target,
        points_restored=purchase.points_restored + restored,
    )
    return ReturnResult(
        member_number=member.member_number, returned_minor_total=returned_total, points_reversed=reversed_now,
        points_restored=restored, debt_created_points=debt + bonuses.debt_points, reversal_transaction_id=reversal_id,
        refund_transaction_id=refund_id, bonus_points_reversed=bonuses.points,
    )  # fmt: skip


def _returned_amount(purchase: PurchaseRow, command: ReturnCommand) -> int:
    remaining = purchase.total_minor - purchase.returned_minor
    if command.is_full_return:
        return remaining
    if command.returned_minor <= 0:
        raise InvalidBasket("returned_amount must be positive, or ask for a full return")
    if command.returned_minor > remaining:
        raise ReturnExceedsPurchase(f"only {remaining} of the purchase is left to return", remaining_minor=remaining)
    return command.returned_minor


def _posting(
    kind: str, session: CheckoutSession, member: MemberRow, purchase: PurchaseRow, references: int | None
) -> Posting:
    """A return is priced with the terms of what it undoes: settlement credits back exactly what it billed."""
    version = purchase.contract_version_id
    if references is not None:
        version = session.ledger_records.contract_version_of(references) or version
    return Posting(
        kind=kind, member_id=member.id, partner_id=purchase.partner_id, contract_version_id=version,
        business_time=session.business_time, receipt_id=purchase.receipt_id, currency=purchase.currency,
        references_transaction_id=references,
    )  # fmt: skip


def _refund(
    session: CheckoutSession, accounts: MemberAccounts, member: MemberRow, purchase: PurchaseRow, points: int
) -> tuple[str, int]:
    """Gives ``points`` back into the lots the receipt's redemptions used; returns (transaction, points)."""
    if points <= 0:
        return "", 0
    restore: list[tuple[int, int]] = []
    for lot_id, spent in session.ledger_records.restorable_lots(purchase.partner_id, purchase.receipt_id):
        given = min(spent, points - sum(part for _, part in restore))
        if given > 0:
            restore.append((lot_id, given))
    # Points redeemed on credit (an offline redemption the member's points no longer covered) come back
    # by cancelling that debt, as far as it is still owed: debt already repaid stays repaid.
    owed = points - sum(part for _, part in restore)
    debt_points, repaid = 0, []
    if owed > 0:
        records = session.ledger_records
        on_credit = records.receipt_debt_points(
            purchase.partner_id, purchase.receipt_id, accounts.debt_account_id
        ) - records.receipt_repayments_restored(purchase.partner_id, purchase.receipt_id)
        debt_points = max(min(owed, on_credit, accounts.debt_points), 0)
        # What the member repaid of that credit since comes back into the lots that repaid it.
        repaid = _take_up_to(records.repayment_lots(member.id), min(owed, on_credit) - debt_points)
    if not restore and debt_points == 0 and not repaid:
        return "", 0
    # The refund refers to the redemption it gives back, so settlement can label a late one.
    redemption = session.ledger_records.first_redemption(purchase.partner_id, purchase.receipt_id)
    posting = _posting("REDEMPTION_REFUND", session, member, purchase, redemption)
    posted = session.ledger.refund(accounts, posting, restore, debt_points, repaid)
    return posted.public_id, sum(part for _, part in restore + repaid) + debt_points


def _take_up_to(available: list[tuple[int, int]], points: int) -> list[tuple[int, int]]:
    taken: list[tuple[int, int]] = []
    for lot_id, room in available:
        part = min(room, points - sum(given for _, given in taken))
        if part <= 0:
            break
        taken.append((lot_id, part))
    return taken


def _reverse(
    session: CheckoutSession, accounts: MemberAccounts, member: MemberRow, purchase: PurchaseRow, points: int
) -> tuple[str, int]:
    if points <= 0:
        return "", 0
    earn_lot_id = None
    if purchase.earn_transaction_id is not None:
        earn_lot_id = session.ledger_records.lot_of_transaction(purchase.earn_transaction_id)
    if earn_lot_id is not None:
        assert purchase.earn_transaction_id is not None
        lost = session.ledger_records.lost_unspent(purchase.earn_transaction_id, earn_lot_id, purchase.points_reversed)
        already_gone = min(points, lost)  # already taken back (LedgerRepository.lost_unspent)
        withdraw_qualifying_points(
            session.connection, member.id, purchase.earn_transaction_id, already_gone, session.now
        )
        points -= already_gone
        if points == 0:
            return "", 0
    posting = _posting("EARN_REVERSAL", session, member, purchase, purchase.earn_transaction_id)
    posted, debt = session.ledger.reverse_earn(
        accounts, posting, points, issuer_partner_id=purchase.partner_id, earn_lot_id=earn_lot_id,
        held_points=lambda member_id: session.records.held_points(member_id, session.now),
    )  # fmt: skip
    return posted.public_id, debt
