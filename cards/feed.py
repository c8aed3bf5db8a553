"""A bank's card transactions: each item has exactly one effect, whatever the order or number of deliveries.

An authorisation records pending points (shown in the balance, not spendable, not on the ledger:
nothing is billed for a purchase that may never clear). A clearing posts the earn on the cleared
amount: the merchant partner's lot (its contract) and the bank's lot (the bank's contract), two
journal transactions that settlement bills to each issuer. A refund or chargeback reverses both
lots in proportion to the amount; one that arrives before its clearing waits for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from cards.batch import CardBatch
from cards.commands import CardItemCommand, CardItemResult, ItemStatus, ItemType
from cards.errors import CardNotLinked, ReversalExceedsClearing, ReversalWindowClosed
from cards.items import BatchReads, cleared_values, fingerprint, receipt, replay, validate
from cards.items import CardSettings as CardSettings
from cards.items import result as _result
from cards.links import CardToken, require_card_issuer
from cards.repository import CardRepository, TransactionRow
from cards.rules import CardEarn, points_to_reverse
from checkout.repository import CheckoutRepository
from common.errors import CoalitionError
from common.uow import UnitOfWork
from ledger.posting import Ledger, NewLot, Posted, Posting
from ledger.repository import LedgerRepository, MemberAccounts
from members.repository import MemberRepository
from programme.bonuses import lock_for_return, take_back_purchase_bonuses
from programme.services import policy_in_force
from programme.tiers import refresh_after_return, tier_bonus_on_earn


class CardFeed:
    """Applies a card-issuer's items; every outcome, rejection included, is a per-item result."""

    def __init__(self, uow: UnitOfWork, settings: CardSettings, *, is_set_based: bool = True) -> None:
        self.uow = uow
        self.settings = settings
        # Set-based (cards/batch.py) unless told otherwise: tests compare it with the item-by-item path.
        self.is_set_based = is_set_based

    def check_issuer(self, issuer_partner_id: int) -> None:
        self.uow.run(lambda connection: require_card_issuer(connection, issuer_partner_id))

    def apply(self, issuer_partner_id: int, item: CardItemCommand) -> CardItemResult:
        return self.apply_batch(issuer_partner_id, [item])[0]

    def apply_batch(self, issuer_partner_id: int, items: Sequence[CardItemCommand]) -> list[CardItemResult]:
        """Applies the items in order in one database transaction, each inside a savepoint of its own.

        One commit for many items is what makes a busy stream fast. An item that is refused rolls back
        its savepoint only; the others keep their effect. Results are answered after the commit, so an
        answered item is a committed one. Contention reruns the whole batch (the unit of work does); a
        database failure that is not contention reruns the items one transaction each, so it fails
        only the item that causes it.
        """
        try:
            return self.uow.run(lambda connection: self._apply_all(connection, issuer_partner_id, items))
        except CoalitionError as error:  # no transaction could be had (the ledger is busy): nothing was written
            return [_result(item, ItemStatus.REJECTED, reason=error.reason, message=error.message) for item in items]
        except DBAPIError:
            if len(items) == 1:
                raise
            return [self.apply_batch(issuer_partner_id, [item])[0] for item in items]

    def _apply_all(self, connection: Connection, issuer: int, items: Sequence[CardItemCommand]) -> list[CardItemResult]:
        try:
            require_card_issuer(connection, issuer)
        except CoalitionError as error:
            return [_result(item, ItemStatus.REJECTED, reason=error.reason, message=error.message) for item in items]
        reads = BatchReads(connection, self.settings)
        # A tier programme's bonus lots, promotions and lapse dates are the item-by-item path's alone.
        if not self.is_set_based or policy_in_force(connection, self.uow.clock.now()).policy.tiers.tiers:
            return [self._apply_one(connection, issuer, item, reads) for item in items]
        results: list[CardItemResult] = []
        while len(results) < len(items):
            batch = CardBatch(connection, self.settings, self.uow.clock.now(), issuer, reads)
            results += batch.apply(items[len(results) :])
            if len(results) < len(items):  # the batch stopped before an item it does not decide alone
                results.append(self._apply_one(connection, issuer, items[len(results)], reads))
        return results

    def _apply_one(
        self, connection: Connection, issuer: int, item: CardItemCommand, reads: BatchReads
    ) -> CardItemResult:
        try:
            validate(item, self.uow.clock.now())
        except CoalitionError as error:
            return self._rejected(connection, issuer, item, error)
        savepoint = connection.begin_nested()
        try:
            result = self._apply(connection, issuer, item, reads)
        except CoalitionError as error:
            savepoint.rollback()
            return self._rejected(connection, issuer, item, error)
        savepoint.commit()
        return result

    def _rejected(
        self, connection: Connection, issuer: int, item: CardItemCommand, error: CoalitionError
    ) -> CardItemResult:
        if error.is_business_outcome:
            stored = self._store_rejection(connection, issuer, item, error)
            if stored is not None:
                return stored
        return _result(item, ItemStatus.REJECTED, reason=error.reason, message=error.message)

    def pending_points(self, connection: Connection, member_id: int, now: datetime) -> int:
        """Points of open authorisations: the card part of a member's pending balance."""
        since = now - timedelta(days=self.settings.authorisation_ttl_days)
        return CardRepository(connection).pending_points(member_id, since)

    def _apply(self, connection: Connection, issuer: int, item: CardItemCommand, reads: BatchReads) -> CardItemResult:
        step = _Step(connection, self.settings, self.uow.clock.now(), issuer, item, reads)
        stored = step.cards.item(issuer, item.bank_transaction_id, item.item_type, item.item_id)
        if stored is not None:
            return replay(item, stored)
        if item.item_type is ItemType.AUTHORISATION:
            result = step.authorise()
        elif item.item_type is ItemType.CLEARING:
            result = step.clear()
        else:
            result = step.reverse_or_wait()
        step.record(result)
        return result

    def _store_rejection(
        self, connection: Connection, issuer: int, item: CardItemCommand, error: CoalitionError
    ) -> CardItemResult | None:
        """A business rejection is an outcome too: a redelivery gets it back rather than a new try.

        Returns the stored result when the item was already recorded, None when its rejection is now.
        """
        cards = CardRepository(connection)
        stored = cards.item(issuer, item.bank_transaction_id, item.item_type, item.item_id)
        if stored is not None:
            return replay(item, stored)
        result = _result(item, ItemStatus.REJECTED, reason=error.reason, message=error.message)
        reads = BatchReads(connection, self.settings)
        _Step(connection, self.settings, self.uow.clock.now(), issuer, item, reads).record(result)
        return None


class _Step:
    """One item inside its transaction."""

    def __init__(
        self, connection: Connection, settings: CardSettings, now: datetime, issuer: int, item: CardItemCommand,
        reads: BatchReads,
    ) -> None:  # fmt: skip
        self.connection, self.settings, self.now, self.issuer, self.item = connection, settings, now, issuer, item
        self.reads = reads
        self.cards = CardRepository(connection)
        self.ledger_records = LedgerRepository(connection)
        self.ledger = Ledger(self.ledger_records, now)

    def authorise(self) -> CardItemResult:
        item = self.item
        existing = self.cards.transaction_for_update(self.issuer, item.bank_transaction_id)
        if existing is not None:  # its clearing came first and already earned
            return _result(item, ItemStatus.IGNORED, reason="ALREADY_CLEARED")
        member_id = self._linked_member()
        merchant_partner, earn = self._earn(item.amount_minor)
        self.cards.insert_transaction(
            issuer_partner_id=self.issuer, bank_transaction_id=item.bank_transaction_id, member_id=member_id,
            merchant_id=item.merchant_id, merchant_partner_id=merchant_partner, currency=item.currency,
            authorised_minor=item.amount_minor, pending_points=earn.total, authorised_at=item.transaction_time,
            cleared_minor=None, cleared_at=None, merchant_points=0, bank_points=0,
            merchant_earn_transaction_id=None, bank_earn_transaction_id=None, reversed_minor=0,
        )  # fmt: skip
        return _result(item, ItemStatus.APPLIED, pending_points=earn.total)

    def clear(self) -> CardItemResult:
        item = self.item
        existing = self.cards.transaction_for_update(self.issuer, item.bank_transaction_id)
        # The card that authorised the purchase earns for it, even if it was unlinked since.
        member_id = existing.member_id if existing is not None else self._linked_member()
        merchant_partner, earn = self._earn(item.amount_minor)
        accounts = self.ledger_records.lock_member(member_id)
        merchant_posted = bank_posted = None
        if merchant_partner is not None and earn.merchant_points > 0:
            merchant_posted = self._post_earn(accounts, merchant_partner, earn.merchant_points)
            MemberRepository(self.connection).link_partner(member_id, merchant_partner, self.now)
            # A purchase at a partner: the member's tier bonus rides on the merchant's earn, as at checkout.
            tier_bonus_on_earn(
                self.ledger, accounts, policy_in_force(self.connection, self.now).policy,
                earn=Posted(merchant_posted, ""), earned_points=earn.merchant_points,
                earn_lot=self._earn_lot(merchant_partner), business_time=item.transaction_time,
            )  # fmt: skip
        if earn.bank_points > 0:
            bank_posted = self._post_earn(self.ledger_records.lock_member(member_id), self.issuer, earn.bank_points)
        cleared = cleared_values(item, earn, merchant_partner, merchant_posted, bank_posted)
        if existing is None:
            self.cards.insert_transaction(
                issuer_partner_id=self.issuer, bank_transaction_id=item.bank_transaction_id, member_id=member_id,
                merchant_id=item.merchant_id, currency=item.currency, authorised_minor=None, authorised_at=None,
                reversed_minor=0, **cleared,
            )  # fmt: skip
        else:
            self.cards.update_transaction(existing.id, **cleared)
        self._apply_waiting()
        return _result(item, ItemStatus.APPLIED, points_earned=earn.total)

    def reverse_or_wait(self) -> CardItemResult:
        item = self.item
        transaction = self.cards.transaction_for_update(self.issuer, item.bank_transaction_id)
        if transaction is None or transaction.cleared_at is None:
            return _result(item, ItemStatus.WAITING, reason="WAITING_FOR_CLEARING")
        reversed_points, debt = self._reverse(transaction, item.amount_minor, item.transaction_time)
        return _result(item, ItemStatus.APPLIED, points_reversed=reversed_points, debt_points=debt)

    def record(self, result: CardItemResult) -> None:
        item = self.item
        self.cards.insert_item(
            issuer_partner_id=self.issuer, bank_transaction_id=item.bank_transaction_id,
            item_type=item.item_type.value, item_id=item.item_id, request_hash=fingerprint(item),
            status=result.status.value, reason=result.reason, amount_minor=item.amount_minor,
            transaction_time=item.transaction_time, pending_points=result.pending_points,
            points_earned=result.points_earned, points_reversed=result.points_reversed,
            debt_points=result.debt_points, recorded_at=self.now,
            applied_at=self.now if result.status is ItemStatus.APPLIED else None,
        )  # fmt: skip

    def _apply_waiting(self) -> None:
        """Reversals that arrived before this clearing take effect now, in the order they arrived."""
        for waiting in self.cards.waiting_items(self.issuer, self.item.bank_transaction_id):
            transaction = self.cards.transaction_for_update(self.issuer, self.item.bank_transaction_id)
            assert transaction is not None
            try:
                reversed_points, debt = self._reverse(transaction, waiting.amount_minor, waiting.transaction_time)
            except (ReversalWindowClosed, ReversalExceedsClearing) as error:
                self.cards.mark_item(waiting.id, status="REJECTED", reason=error.reason)
                continue
            self.cards.mark_item(waiting.id, status="APPLIED", reason="", points_reversed=reversed_points,
                                 debt_points=debt, applied_at=self.now)  # fmt: skip

    def _reverse(self, transaction: TransactionRow, amount_minor: int, business_time: datetime) -> tuple[int, int]:
        assert transaction.cleared_at is not None and transaction.cleared_minor is not None
        if business_time > transaction.cleared_at + timedelta(days=self.settings.reversal_window_days):
            raise ReversalWindowClosed(
                f"refunds and chargebacks reverse points up to {self.settings.reversal_window_days} days after clearing"
            )
        after = transaction.reversed_minor + amount_minor
        if after > transaction.cleared_minor:
            raise ReversalExceedsClearing(
                f"reversals would total {after}, more than the {transaction.cleared_minor} cleared",
                remaining_minor=transaction.cleared_minor - transaction.reversed_minor,
            )
        reversed_points = debt = 0
        lots = (
            (transaction.merchant_earn_transaction_id, transaction.merchant_points, transaction.merchant_partner_id),
            (transaction.bank_earn_transaction_id, transaction.bank_points, self.issuer),
        )
        earns = [earn_id for earn_id, _, _ in lots if earn_id is not None]
        lock_for_return(self.ledger_records, transaction.member_id, earns)
        for earn_id, points, issuer in lots:
            take = points_to_reverse(points, transaction.cleared_minor, transaction.reversed_minor, after)
            if earn_id is None or take <= 0:
                continue
            shares_before = points_to_reverse(points, transaction.cleared_minor, 0, transaction.reversed_minor)
            to_post = take - min(take, self._lost_unspent(earn_id, shares_before))
            if to_post > 0:
                debt += self._post_reversal(transaction, earn_id, issuer, to_post, amount_minor, business_time)
            reversed_points += take
        if transaction.merchant_earn_transaction_id is not None:
            debt += self._take_back_bonuses(transaction, after, business_time)
        self.cards.update_transaction(transaction.id, reversed_minor=after)
        return reversed_points, debt

    def _take_back_bonuses(self, transaction: TransactionRow, reversed_minor: int, business_time: datetime) -> int:
        """The merchant earn's tier bonus goes in the same proportion as its points; the debt it leaves."""
        assert transaction.merchant_earn_transaction_id is not None and transaction.cleared_minor is not None
        member_id = transaction.member_id
        taken = take_back_purchase_bonuses(
            self.ledger, self.ledger_records.lock_member(member_id),
            earn_transaction_id=transaction.merchant_earn_transaction_id, returned_minor_total=reversed_minor,
            total_minor=transaction.cleared_minor, held_points=self._held_points, business_time=business_time,
        )  # fmt: skip
        refresh_after_return(self.connection, member_id, policy_in_force(self.connection, self.now).policy.tiers,
                             self.now)  # fmt: skip
        return taken.debt_points

    def _lost_unspent(self, earn_id: int, shares_before: int) -> int:
        lot_id = self.ledger_records.lot_of_transaction(earn_id)
        return 0 if lot_id is None else self.ledger_records.lost_unspent(earn_id, lot_id, shares_before)

    def _post_reversal(
        self, transaction: TransactionRow, earn_id: int, issuer: int | None, points: int, amount_minor: int,
        business_time: datetime,
    ) -> int:  # fmt: skip
        records = self.ledger_records
        accounts = records.lock_member(transaction.member_id)
        posting = Posting(
            kind="EARN_REVERSAL", member_id=transaction.member_id, partner_id=issuer,
            contract_version_id=records.contract_version_of(earn_id), business_time=business_time,
            receipt_id=receipt(self.item.bank_transaction_id), amount_minor=amount_minor,
            currency=transaction.currency, references_transaction_id=earn_id,
        )  # fmt: skip
        _, debt = self.ledger.reverse_earn(
            accounts, posting, points, issuer_partner_id=issuer, earn_lot_id=records.lot_of_transaction(earn_id),
            held_points=self._held_points,
        )  # fmt: skip
        return debt

    def _held_points(self, member_id: int) -> int:
        """Points the member's open holds reserve: a reversal leaves them alone."""
        return CheckoutRepository(self.connection).held_points(member_id, self.now)

    def _post_earn(self, accounts: MemberAccounts, partner_id: int, points: int) -> int:
        item, version = self.item, self.reads.terms_of(partner_id, self.item.transaction_time)
        posting = Posting(
            kind="EARN", member_id=accounts.member_id, partner_id=partner_id, contract_version_id=version.id,
            business_time=item.transaction_time, receipt_id=receipt(item.bank_transaction_id),
            amount_minor=item.amount_minor, currency=version.terms.currency,
        )  # fmt: skip
        posted, _, _ = self.ledger.earn(accounts, posting, points, self._earn_lot(partner_id))
        return posted.transaction_id

    def _earn_lot(self, partner_id: int) -> NewLot:
        """The lot a clearing earns at a partner: its contract's price and pending period."""
        version, time = self.reads.terms_of(partner_id, self.item.transaction_time), self.item.transaction_time
        return NewLot(
            issuer_partner_id=partner_id, contract_version_id=version.id, issuance_price=version.terms.issuance_price,
            currency=version.terms.currency, earned_at=time,
            available_at=max(time + timedelta(days=version.terms.pending_days), time),
            expires_at=self.reads.lot_expiry(time),
        )  # fmt: skip

    def _linked_member(self) -> int:
        token = CardToken.of(self.item.card_token, self.settings.identifier_pepper)
        link = self.cards.active_link(token.lookup_hash)
        if link is None or link.issuer_partner_id != self.issuer:
            raise CardNotLinked("no member has this card linked")
        return link.member_id

    def _earn(self, amount_minor: int) -> tuple[int | None, CardEarn]:
        return self.reads.earn(self.issuer, self.item, amount_minor)
