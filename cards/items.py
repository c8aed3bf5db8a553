"""What both ways of applying card items share: settings, validation, pricing reads, results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from cards.commands import CardItemCommand, CardItemResult, ItemStatus
from cards.errors import CardCurrencyMismatch, CardItemConflict, InvalidCardItem
from cards.repository import CardRepository, StoredItem
from cards.rules import CardEarn, card_earn
from common.pan import refuse_pan
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
class BatchReads:
    """What the items of one batch (one database transaction) look up again and again: read once each.

    A contract version or policy in force at a time stays so (versions never take effect in the
    past), and the merchant table is read inside the batch's transaction.
    """

    connection: Connection
    settings: CardSettings
    terms: dict[tuple[int, datetime], ContractVersionView] = field(default_factory=dict)
    merchant_partners: dict[str, int | None] = field(default_factory=dict)
    lifetimes_months: dict[datetime, int] = field(default_factory=dict)

    def terms_of(self, partner_id: int, at: datetime) -> ContractVersionView:
        key = (partner_id, at)
        if key not in self.terms:
            self.terms[key] = partner_terms_in_force(self.connection, partner_id, at)
        return self.terms[key]

    def merchant_partner(self, merchant_id: str) -> int | None:
        if merchant_id not in self.merchant_partners:
            self.merchant_partners[merchant_id] = CardRepository(self.connection).merchant_partner(merchant_id)
        return self.merchant_partners[merchant_id]

    def earn(self, issuer: int, item: CardItemCommand, amount_minor: int) -> tuple[int | None, CardEarn]:
        """The merchant's partner (if any) and the points the item's purchase earns for ``amount_minor``."""
        merchant_partner = self.merchant_partner(item.merchant_id)
        merchant_terms = None
        if merchant_partner is not None:
            merchant_terms = self.terms_of(merchant_partner, item.transaction_time).terms
            _require_currency(item.currency, merchant_terms.currency, "the merchant partner")
        bank_terms = self.terms_of(issuer, item.transaction_time).terms
        _require_currency(item.currency, bank_terms.currency, "the card issuer")
        return merchant_partner, card_earn(amount_minor, merchant_terms, bank_terms)

    def lot_expiry(self, earned_at: datetime) -> datetime:
        if self.settings.points_lifetime_days is not None:
            return earned_at + timedelta(days=self.settings.points_lifetime_days)
        if earned_at not in self.lifetimes_months:
            months = policy_in_force(self.connection, earned_at).policy.expiry.lifetime_months
            self.lifetimes_months[earned_at] = months
        return add_months(earned_at, self.lifetimes_months[earned_at])


def _require_currency(currency: str, expected: str, whose: str) -> None:
    if currency != expected:
        raise CardCurrencyMismatch(f"{whose} settles in {expected}, not {currency}", expected=expected)


def validate(item: CardItemCommand, now: datetime) -> None:
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


def fingerprint(item: CardItemCommand) -> str:
    """codec.fingerprint of the item without its token, byte for byte, written out for speed.

    The token enters the hash only through its keyed hash elsewhere. Stored items are matched by
    this hash, so it never changes: tests/unit/cards/test_card_fingerprint.py holds it to the
    generic one and to known values.
    """
    canonical = _CANONICAL_JSON.encode({
        "amount_minor": item.amount_minor, "bank_transaction_id": item.bank_transaction_id, "card_token": "",
        "currency": item.currency, "item_id": item.item_id, "item_type": item.item_type.value,
        "merchant_id": item.merchant_id, "transaction_time": item.transaction_time.isoformat(),
    })  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()


# codec.fingerprint's JSON settings, built once (json.dumps builds an encoder a call when given any).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def receipt(bank_transaction_id: str) -> str:
    return f"card:{bank_transaction_id}"


def result(item: CardItemCommand, status: ItemStatus, **values: object) -> CardItemResult:
    return CardItemResult(item.bank_transaction_id, item.item_type.value, item.item_id, status, **values)  # type: ignore[arg-type]


def replay(item: CardItemCommand, stored: StoredItem) -> CardItemResult:
    if stored.request_hash != fingerprint(item):
        raise CardItemConflict("this item was already received with different content; the first one stands")
    return CardItemResult(
        item.bank_transaction_id, stored.item_type, stored.item_id, ItemStatus(stored.status), reason=stored.reason,
        pending_points=stored.pending_points, points_earned=stored.points_earned,
        points_reversed=stored.points_reversed, debt_points=stored.debt_points, is_replay=True,
    )  # fmt: skip


def cleared_values(
    item: CardItemCommand, earn: CardEarn, merchant_partner: int | None, merchant_earn: int | None,
    bank_earn: int | None,
) -> dict[str, object]:  # fmt: skip
    """What a clearing writes on its card transaction, on either path (cards/feed.py, cards/batch.py)."""
    return {
        "cleared_minor": item.amount_minor, "cleared_at": item.transaction_time, "pending_points": 0,
        "merchant_points": earn.merchant_points, "bank_points": earn.bank_points,
        "merchant_earn_transaction_id": merchant_earn, "bank_earn_transaction_id": bank_earn,
        "merchant_partner_id": merchant_partner,
    }  # fmt: skip
