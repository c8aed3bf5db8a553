"""Bookkeeping operations: each posts one balanced journal transaction and its lot lineage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from common.ids import new_id
from ledger.earn_statement import EarnIds
from ledger.errors import RecipientHasDebt
from ledger.lots import plan_take_back
from ledger.repository import LedgerRepository, MemberAccounts

DEBIT, CREDIT = "D", "C"


@dataclass(frozen=True)
class Posting:
    """What a journal transaction says about the business event it records."""

    kind: str
    member_id: int
    partner_id: int | None
    contract_version_id: int | None
    business_time: datetime
    receipt_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    references_transaction_id: int | None = None


@dataclass(frozen=True)
class Posted:
    transaction_id: int
    public_id: str


@dataclass(frozen=True)
class NewLot:
    issuer_partner_id: int | None
    contract_version_id: int | None
    issuance_price: Decimal
    currency: str
    earned_at: datetime
    available_at: datetime
    expires_at: datetime


class Ledger:
    """Double-entry postings for one member, inside the caller's transaction (member already locked)."""

    def __init__(self, repository: LedgerRepository, recorded_at: datetime) -> None:
        self.repository = repository
        self.recorded_at = recorded_at
        self._has_posted = False

    def earn(
        self, member: MemberAccounts, posting: Posting, points: int, lot: NewLot, ids: EarnIds | None = None
    ) -> tuple[Posted, int, int]:
        """Credits ``points`` funded by the lot's issuer; existing debt is repaid first. With ``ids``
        reserved ahead, the transaction and the lot take them and their rows may wait for the COMMIT
        (``LedgerRepository.insert_earn``), unless this ledger has posted already: ids keep the order
        of a transaction's postings, which decides between lots of one age (``consumption_order``), and
        ids drawn before an earlier posting would put the earn before it.

        Returns the posted transaction, the new lot's id and the points that went to repay debt.
        """
        if self._has_posted:
            ids = None
        issued_account = self.repository.account_id("PARTNER_ISSUED", _owner(lot.issuer_partner_id))
        repaid = min(member.debt_points, points)
        credited = points - repaid
        lines = _balanced(
            points,
            [(issued_account, DEBIT, points), (member.points_account_id, CREDIT, credited),
             (member.debt_account_id, CREDIT, repaid)],
        )  # fmt: skip
        public_id = new_id()
        transaction_id, lot_id = self.repository.insert_earn(
            {"public_id": public_id, "points": points, "recorded_at": self.recorded_at, **vars(posting)},
            lines,
            {
                "member_id": member.member_id, "issuer_partner_id": lot.issuer_partner_id,
                "contract_version_id": lot.contract_version_id, "points": points, "remaining_points": credited,
                "issuance_price": lot.issuance_price, "currency": lot.currency, "earned_at": lot.earned_at,
                "available_at": lot.available_at, "expires_at": lot.expires_at,
            },
            points_delta=credited, debt_delta=-repaid, ids=ids,
        )  # fmt: skip
        self._has_posted = True
        posted = Posted(transaction_id, public_id)
        self._movements(posted, "DEBT_REPAYMENT", [(lot_id, -repaid)])
        return posted, lot_id, repaid

    def spend(self, member: MemberAccounts, posting: Posting, plan: list[tuple[int, int]]) -> Posted:
        """Debits the member for the planned lots and credits the redeeming partner."""
        points = sum(taken for _, taken in plan)
        redeemed_account = self.repository.account_id("PARTNER_REDEEMED", _owner(posting.partner_id))
        posted = self._post(
            posting, points, [(member.points_account_id, DEBIT, points), (redeemed_account, CREDIT, points)]
        )
        self.repository.change_lots([(lot_id, -taken) for lot_id, taken in plan])
        self._movements(posted, "CONSUMED", [(lot_id, -taken) for lot_id, taken in plan])
        self.repository.change_member_balance(member.member_id, -points, 0)
        return posted

    def spend_into_debt(
        self, member: MemberAccounts, posting: Posting, plan: list[tuple[int, int]], debt_points: int
    ) -> Posted:
        """A spend the member's lots cannot fully cover: the planned lots, and ``debt_points`` owed.

        For a redemption that was already granted (an offline till gave the discount): the redeeming
        partner is credited in full, the member's points account is debited what the lots supply (with
        their lineage) and the member's debt account the shortfall, which later earnings repay first.
        """
        from_lots = sum(taken for _, taken in plan)
        points = from_lots + debt_points
        redeemed_account = self.repository.account_id("PARTNER_REDEEMED", _owner(posting.partner_id))
        posted = self._post(
            posting,
            points,
            [(member.points_account_id, DEBIT, from_lots), (member.debt_account_id, DEBIT, debt_points),
             (redeemed_account, CREDIT, points)],
        )  # fmt: skip
        self.repository.change_lots([(lot_id, -taken) for lot_id, taken in plan])
        self._movements(posted, "CONSUMED", [(lot_id, -taken) for lot_id, taken in plan])
        self.repository.change_member_balance(member.member_id, -from_lots, debt_points)
        return posted

    def refund(
        self, member: MemberAccounts, posting: Posting, restore: list[tuple[int, int]], debt_points: int = 0,
        repaid: list[tuple[int, int]] | None = None,
    ) -> Posted:  # fmt: skip
        """Gives back points that paid for a returned purchase: into the lots they came from; for a
        redemption the member's points did not cover (``spend_into_debt``), by cancelling that debt as
        far as it is still owed, and, as far as the member has repaid it since, into the lots whose
        points repaid it (``repaid``, REPAYMENT_RESTORED: their issuers were billed for the repayment)."""
        repaid = repaid or []
        from_lots = sum(given for _, given in restore) + sum(given for _, given in repaid)
        points = from_lots + debt_points
        redeemed_account = self.repository.account_id("PARTNER_REDEEMED", _owner(posting.partner_id))
        posted = self._post(
            posting,
            points,
            [(redeemed_account, DEBIT, points), (member.points_account_id, CREDIT, from_lots),
             (member.debt_account_id, CREDIT, debt_points)],
        )  # fmt: skip
        self.repository.change_lots(restore + repaid)
        self._movements(posted, "RESTORED", restore)
        self._movements(posted, "REPAYMENT_RESTORED", repaid)
        self.repository.change_member_balance(member.member_id, from_lots, -debt_points)
        return posted

    def reverse_earn(
        self,
        member: MemberAccounts,
        posting: Posting,
        points: int,
        *,
        issuer_partner_id: int | None,
        earn_lot_id: int | None,
        held_points: Callable[[int], int],
    ) -> tuple[Posted, int]:
        """Takes back earned points; what the member cannot cover becomes an explicit debt.

        The earn's own lot goes first, then the lots its points were transferred into (a household
        member's, whose points account the posting debits: they have points of a purchase that was
        returned), then the member's other lots (``plan_take_back``). Points that cannot be spent now
        are taken freely; spendable ones only as far as each owner's open holds (``held_points``, by
        member) leave them free. Returns the posting and the member's debt.

        The caller has locked the member and the owners of the earn's transferred points already
        (``LedgerRepository.lock_with_recipients``: in member id order, before anything is read), so
        the lots read here stay as they are until the posting; locking the owners again here only
        reads their accounts.
        """
        taken, owners = self._take_back_plan(member, earn_lot_id, points, held_points)
        by_owner = dict.fromkeys(owners, 0)
        for owner, _, part in taken:
            by_owner[owner] += part
        debt = points - sum(by_owner.values())
        issued_account = self.repository.account_id("PARTNER_ISSUED", _owner(issuer_partner_id))
        posted = self._post(
            posting,
            points,
            [*((owners[owner].points_account_id, DEBIT, part) for owner, part in by_owner.items()),
             (member.debt_account_id, DEBIT, debt), (issued_account, CREDIT, points)],
        )  # fmt: skip
        self.repository.change_lots([(lot_id, -part) for _, lot_id, part in taken])
        self._movements(posted, "REVERSED", [(lot_id, -part) for _, lot_id, part in taken])
        self.repository.change_member_balance(member.member_id, -by_owner[member.member_id], debt)
        for owner, part in by_owner.items():
            if owner != member.member_id and part > 0:
                self.repository.change_member_balance(owner, -part, 0)
        return posted, debt

    def _take_back_plan(
        self, member: MemberAccounts, earn_lot_id: int | None, points: int, held_points: Callable[[int], int]
    ) -> tuple[list[tuple[int, int, int]], dict[int, MemberAccounts]]:
        """``plan_take_back`` on what the member and the owners of the earn lot's transferred points have
        now; the owners' accounts (the member's among them), locked."""
        repository, now = self.repository, self.recorded_at
        lots, family = repository.lots_to_take_back(member.member_id, earn_lot_id)
        others = {owned.member_id for owned in family} - {member.member_id}
        owners = {member.member_id: member} | repository.lock_members(others)
        budgets = {other: repository.spendable(other, now, now) - held_points(other) for other in others}
        spendable = sum(lot.remaining_points for lot in lots if lot.is_spendable(now))
        budgets[member.member_id] = spendable - held_points(member.member_id)
        return plan_take_back(family, lots, member.member_id, points, budgets, now), owners

    def expire(
        self, member: MemberAccounts, posting: Posting, lot_id: int, points: int, issuer_partner_id: int | None
    ) -> Posted:
        """Books the lapse of a lot's remaining points: they go back to the issuer's account as breakage."""
        issued_account = self.repository.account_id("PARTNER_ISSUED", _owner(issuer_partner_id))
        posted = self._post(
            posting, points, [(member.points_account_id, DEBIT, points), (issued_account, CREDIT, points)]
        )
        self.repository.change_lots([(lot_id, -points)])
        self._movements(posted, "EXPIRED", [(lot_id, -points)])
        self.repository.change_member_balance(member.member_id, -points, 0)
        return posted

    def deduct(self, member: MemberAccounts, posting: Posting, plan: list[tuple[int, int]]) -> Posted:
        """Takes the planned lots' points away from the member to the operator (a support adjustment)."""
        points = sum(taken for _, taken in plan)
        operator_account = self.repository.account_id("PARTNER_ISSUED", _owner(None))
        posted = self._post(
            posting, points, [(member.points_account_id, DEBIT, points), (operator_account, CREDIT, points)]
        )
        self.repository.change_lots([(lot_id, -taken) for lot_id, taken in plan])
        self._movements(posted, "ADJUSTED", [(lot_id, -taken) for lot_id, taken in plan])
        self.repository.change_member_balance(member.member_id, -points, 0)
        return posted

    def transfer(
        self, sender: MemberAccounts, recipient: MemberAccounts, posting: Posting, plan: list[tuple[int, int]]
    ) -> tuple[Posted, list[int]]:
        """Moves the planned points of the sender's lots to the recipient (both already locked).

        The points change owner, not issuer: each source lot gives the recipient a new lot of the same
        issuer, contract version, price, currency, earning and expiry time, spendable at once, so
        settlement bills an issuer on redemption when the recipient spends them (items.py). The new lot
        names the lot the points were first credited into (``origin_lot_id``), so that a return of that
        purchase finds them however often they moved on (``reverse_earn``). A recipient
        in debt is refused: a credit repays debt first, and a transfer must not turn into a repayment.
        Returns the posting and the recipient's new lots.
        """
        if recipient.debt_points > 0:
            raise RecipientHasDebt(
                f"the recipient owes {recipient.debt_points} points; transfers resume once the debt is repaid",
                debt_points=str(recipient.debt_points),
            )
        points = sum(taken for _, taken in plan)
        posted = self._post(
            posting, points,
            [(sender.points_account_id, DEBIT, points), (recipient.points_account_id, CREDIT, points)],
        )  # fmt: skip
        self.repository.change_lots([(lot_id, -taken) for lot_id, taken in plan])
        self._movements(posted, "TRANSFERRED", [(lot_id, -taken) for lot_id, taken in plan])
        terms = self.repository.lot_terms([lot_id for lot_id, _ in plan])
        new_lots = []
        for lot_id, taken in plan:
            source = terms[lot_id]
            new_lots.append(self.repository.insert_lot(
                member_id=recipient.member_id, issuer_partner_id=source.issuer_partner_id,
                source_transaction_id=posted.transaction_id, contract_version_id=source.contract_version_id,
                points=taken, remaining_points=taken, issuance_price=source.issuance_price, currency=source.currency,
                earned_at=source.earned_at, available_at=self.recorded_at, expires_at=source.expires_at,
                origin_lot_id=lot_id if source.origin_lot_id is None else source.origin_lot_id,
            ))  # fmt: skip
        self.repository.change_member_balance(sender.member_id, -points, 0)
        self.repository.change_member_balance(recipient.member_id, points, 0)
        return posted, new_lots

    def _post(self, posting: Posting, points: int, lines: list[tuple[int, str, int]]) -> Posted:
        lines = _balanced(points, lines)
        public_id = new_id()
        self._has_posted = True
        transaction_id = self.repository.insert_posting(
            {"public_id": public_id, "points": points, "recorded_at": self.recorded_at, **vars(posting)}, lines
        )
        return Posted(transaction_id, public_id)

    def _movements(self, posted: Posted, kind: str, changes: list[tuple[int, int]]) -> None:
        self.repository.insert_movements(
            [
                {
                    "lot_id": lot_id,
                    "transaction_id": posted.transaction_id,
                    "kind": kind,
                    "points_delta": delta,
                }
                for lot_id, delta in changes
                if delta != 0
            ]
        )


def _balanced(points: int, lines: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    """The posting's lines (account, side, amount) without the empty ones; debits and credits must
    both come to ``points``."""
    lines = [line for line in lines if line[2] > 0]
    debits = sum(amount for _, side, amount in lines if side == DEBIT)
    credits = sum(amount for _, side, amount in lines if side == CREDIT)
    if debits != credits or debits != points:
        raise AssertionError(f"unbalanced posting: {debits} debit, {credits} credit, {points} points")
    return lines


def _owner(partner_id: int | None) -> int:
    """Partner accounts are owned by the partner; points the operator funds sit on owner 0."""
    return partner_id if partner_id is not None else 0
