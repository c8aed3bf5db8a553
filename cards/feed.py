"""A bank's card transactions: each item has exactly one effect, whatever the order or number of deliveries.

An authorisation records pending points (shown in the balance, not spendable, not on the ledger:
nothing is billed for a purchase that may never clear). A clearing posts the earn on the cleared
amount: the merchant partner's lot (its contract) and the bank's lot (the bank's contract), two
journal transactions that settlement bills to each issuer. A refund or chargeback reverses both
lots in proportion to the amount; one that arrives before its clearing waits for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from cards.commands import CardItemCommand, CardItemResult, ItemStatus, ItemType
from cards.errors import (
    CardCurrencyMismatch,
    CardItemConflict,
    CardNotLinked,
    InvalidCardItem,
    ReversalExceedsClearing,
    ReversalWindowClosed,
)
from cards.links import CardToken, require_card_issuer
from cards.repository import CardRepository, StoredItem, TransactionRow
from cards.rules import CardEarn, card_earn, points_to_reverse
from checkout.repository import CheckoutRepository
from common import codec
from common.errors import CoalitionError
from common.pan import refuse_pan
from common.uow import UnitOfWork
from ledger.posting import Ledger, NewLot, Posting
from ledger.repository import LedgerRepository, MemberAccounts
from members.repository import MemberRepository
from partners.rates import ContractVersionView
from partners.services import partner_terms_in_force
from programme.policy import add_months
from programme.services import policy_in_force

MAX_KEY_LENGTH = 64
# A bank's clock may run a little ahead of ours; further ahead is a mistake, not a purchase.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class CardSettings:
    identifier_pepper: bytes
    points_lifetime_days: int | None = None  # None: the network policy's, as for every earn
    reversal_window_days: int = 180
    # An authorisation no clearing confirmed stops showing as pending after this long.
    authorisation_ttl_days: int = 30


@dataclass
class _BatchReads:
    """What the items of one batch (one database transaction) look up again and again: read once each."""

    terms: dict[tuple[int, datetime], ContractVersionView] = field(default_factory=dict)
    merchant_partners: dict[str, int | None] = field(default_factory=dict)


class CardFeed:
    """Applies a card-issuer's items; every outcome, rejection included, is a per-item result."""

    def __init__(self, uow: UnitOfWork, settings: CardSettings) -> None:
        self.uow = uow
        self.settings = settings

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
        reads = _BatchReads()
        return [self._apply_one(connection, issuer, item, reads) for item in items]

    def _apply_one(
        self, connection: Connection, issuer: int, item: CardItemCommand, reads: _BatchReads
    ) -> CardItemResult:
        try:
            _validate(item, self.uow.clock.now())
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

    def _apply(self, connection: Connection, issuer: int, item: CardItemCommand, reads: _BatchReads) -> CardItemResult:
        step = _Step(connection, self.settings, self.uow.clock.now(), issuer, item, reads)
        stored = step.cards.item(issuer, item.bank_transaction_id, item.item_type, item.item_id)
        if stored is not None:
            return _replay(item, stored)
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
            return _replay(item, stored)
        result = _result(item, ItemStatus.REJECTED, reason=error.reason, message=error.message)
        _Step(connection, self.settings, self.uow.clock.now(), issuer, item, _BatchReads()).record(result)
        return None


class _Step:
    """One item inside its transaction."""

    def __init__(
        self, connection: Connection, settings: CardSettings, now: datetime, issuer: int, item: CardItemCommand,
        reads: _BatchReads,
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
        if earn.bank_points > 0:
            bank_posted = self._post_earn(self.ledger_records.lock_member(member_id), self.issuer, earn.bank_points)
        cleared = {
            "cleared_minor": item.amount_minor, "cleared_at": item.transaction_time, "pending_points": 0,
            "merchant_points": earn.merchant_points, "bank_points": earn.bank_points,
            "merchant_earn_transaction_id": merchant_posted, "bank_earn_transaction_id": bank_posted,
            "merchant_partner_id": merchant_partner,
        }  # fmt: skip
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
            item_type=item.item_type.value, item_id=item.item_id, request_hash=_fingerprint(item),
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
        for earn_id, points, issuer in lots:
            take = points_to_reverse(points, transaction.cleared_minor, transaction.reversed_minor, after)
            if earn_id is None or take <= 0:
                continue
            shares_before = points_to_reverse(points, transaction.cleared_minor, 0, transaction.reversed_minor)
            to_post = take - min(take, self._lost_unspent(earn_id, shares_before))
            if to_post > 0:
                debt += self._post_reversal(transaction, earn_id, issuer, to_post, amount_minor, business_time)
            reversed_points += take
        self.cards.update_transaction(transaction.id, reversed_minor=after)
        return reversed_points, debt

    def _lost_unspent(self, earn_id: int, shares_before: int) -> int:
        lot_id = self.ledger_records.lot_of_transaction(earn_id)
        return 0 if lot_id is None else self.ledger_records.lost_unspent(earn_id, lot_id, shares_before)

    def _post_reversal(
        self, transaction: TransactionRow, earn_id: int, issuer: int | None, points: int, amount_minor: int,
        business_time: datetime,
    ) -> int:  # fmt: skip
        records = self.ledger_records
        accounts = records.lock_member(transaction.member_id)
        held = CheckoutRepository(self.connection).held_points(transaction.member_id, self.now)
        posting = Posting(
            kind="EARN_REVERSAL", member_id=transaction.member_id, partner_id=issuer,
            contract_version_id=records.contract_version_of(earn_id), business_time=business_time,
            receipt_id=_receipt(self.item.bank_transaction_id), amount_minor=amount_minor,
            currency=transaction.currency, references_transaction_id=earn_id,
        )  # fmt: skip
        _, debt = self.ledger.reverse_earn(
            accounts, posting, points, issuer_partner_id=issuer, earn_lot_id=records.lot_of_transaction(earn_id),
            lots=records.lots_with_points(transaction.member_id),
            spendable_budget=max(records.spendable(transaction.member_id, self.now, self.now) - held, 0),
        )  # fmt: skip
        return debt

    def _post_earn(self, accounts: MemberAccounts, partner_id: int, points: int) -> int:
        item, version = self.item, self._terms(partner_id)
        time = item.transaction_time
        posting = Posting(
            kind="EARN", member_id=accounts.member_id, partner_id=partner_id, contract_version_id=version.id,
            business_time=time, receipt_id=_receipt(item.bank_transaction_id), amount_minor=item.amount_minor,
            currency=version.terms.currency,
        )  # fmt: skip
        lot = NewLot(
            issuer_partner_id=partner_id, contract_version_id=version.id, issuance_price=version.terms.issuance_price,
            currency=version.terms.currency, earned_at=time,
            available_at=max(time + timedelta(days=version.terms.pending_days), time),
            expires_at=self._lot_expiry(time),
        )  # fmt: skip
        posted, _, _ = self.ledger.earn(accounts, posting, points, lot)
        return posted.transaction_id

    def _lot_expiry(self, earned_at: datetime) -> datetime:
        if self.settings.points_lifetime_days is not None:
            return earned_at + timedelta(days=self.settings.points_lifetime_days)
        months = policy_in_force(self.connection, earned_at).policy.expiry.lifetime_months
        return add_months(earned_at, months)

    def _linked_member(self) -> int:
        token = CardToken.of(self.item.card_token, self.settings.identifier_pepper)
        link = self.cards.active_link(token.lookup_hash)
        if link is None or link.issuer_partner_id != self.issuer:
            raise CardNotLinked("no member has this card linked")
        return link.member_id

    def _earn(self, amount_minor: int) -> tuple[int | None, CardEarn]:
        merchants = self.reads.merchant_partners
        if self.item.merchant_id not in merchants:
            merchants[self.item.merchant_id] = self.cards.merchant_partner(self.item.merchant_id)
        merchant_partner = merchants[self.item.merchant_id]
        merchant_terms = None
        if merchant_partner is not None:
            merchant_terms = self._terms(merchant_partner).terms
            _require_currency(self.item.currency, merchant_terms.currency, "the merchant partner")
        bank_terms = self._terms(self.issuer).terms
        _require_currency(self.item.currency, bank_terms.currency, "the card issuer")
        return merchant_partner, card_earn(amount_minor, merchant_terms, bank_terms)

    def _terms(self, partner_id: int) -> ContractVersionView:
        # A version in force at a time stays so: versions never take effect in the past.
        key = (partner_id, self.item.transaction_time)
        if key not in self.reads.terms:
            self.reads.terms[key] = partner_terms_in_force(self.connection, partner_id, self.item.transaction_time)
        return self.reads.terms[key]


def _require_currency(currency: str, expected: str, whose: str) -> None:
    if currency != expected:
        raise CardCurrencyMismatch(f"{whose} settles in {expected}, not {currency}", expected=expected)


def _validate(item: CardItemCommand, now: datetime) -> None:
    for name in ("bank_transaction_id", "item_id", "card_token", "merchant_id", "currency"):
        refuse_pan(name, getattr(item, name))
    keys = (item.bank_transaction_id, item.item_id, item.merchant_id)
    if not item.bank_transaction_id or any(len(key) > MAX_KEY_LENGTH or not key.isprintable() for key in keys):
        raise InvalidCardItem(f"bank_transaction_id is required; ids are at most {MAX_KEY_LENGTH} printable characters")
    if item.item_type.is_reversal != bool(item.item_id):
        raise InvalidCardItem("refunds and chargebacks carry an item_id; authorisations and clearings do not")
    if item.amount_minor <= 0:
        raise InvalidCardItem("amount_minor must be positive")
    if not item.item_type.is_reversal and not (item.merchant_id and item.card_token):
        raise InvalidCardItem("authorisations and clearings name the card_token and the merchant_id")
    if item.transaction_time > now + CLOCK_SKEW:
        raise InvalidCardItem("transaction_time is in the future")


def _fingerprint(item: CardItemCommand) -> str:
    # The token enters the hash only through its keyed hash elsewhere: hash the item without it.
    return codec.fingerprint(replace(item, card_token=""))


def _receipt(bank_transaction_id: str) -> str:
    return f"card:{bank_transaction_id}"


def _result(item: CardItemCommand, status: ItemStatus, **values: object) -> CardItemResult:
    return CardItemResult(item.bank_transaction_id, item.item_type.value, item.item_id, status, **values)  # type: ignore[arg-type]


def _replay(item: CardItemCommand, stored: StoredItem) -> CardItemResult:
    if stored.request_hash != _fingerprint(item):
        raise CardItemConflict("this item was already received with different content; the first one stands")
    return CardItemResult(
        item.bank_transaction_id, stored.item_type, stored.item_id, ItemStatus(stored.status), reason=stored.reason,
        pending_points=stored.pending_points, points_earned=stored.points_earned,
        points_reversed=stored.points_reversed, debt_points=stored.debt_points, is_replay=True,
    )  # fmt: skip
