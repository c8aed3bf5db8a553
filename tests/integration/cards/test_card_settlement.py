"""A settlement period with card activity: the bank is billed for its card points, the merchant for its usual earn."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine

from cards.commands import CardItemCommand, CardItemResult, ItemStatus, ItemType, LinkCommand
from cards.feed import CardSettings
from cards.services import CardService
from common.clock import ManualClock
from settlement.netting import LineType
from tests.factories import create_partner, phone, request_key
from tests.integration.settlement.harness import MARCH, Brand, Network, assert_books_balance, facts, utc

IN_MARCH = utc("2026-03-10T12:00:00")
PARTNER_MERCHANT, ELSEWHERE = "mid-partner-shop", "mid-corner-cafe"


class CardNetwork(Network):
    """The settlement harness's network with a bank: one linked card, one mapped partner merchant."""

    def __init__(self, network: Network) -> None:
        super().__init__(network.engine, network.clock)
        self.cards = CardService(self.uow, CardSettings(identifier_pepper=b"t"))
        # The bank funds its card earn at its own price: 1 point per 1.00 EUR, 0.010 EUR a point.
        bank = create_partner(self.uow, kind="CARD_ISSUER", issuance_price=Decimal("0.010"))
        self.bank = Brand(bank, bank.idempotency_scope.removeprefix("partner:"))
        self.merchant = self.partner()  # its usual earn: 1 point per 1.00 EUR at 0.012 EUR a point
        self.cards.add_merchant(request_key(), PARTNER_MERCHANT, self.merchant.code)
        self.token, self.member = "tok_card_settlement", phone()
        self.cards.link_card(self.bank.ref, "link-1", LinkCommand(self.token, self.member))

    def send(self, item_type: ItemType, transaction: str, amount_minor: int, when: datetime, *,
             merchant_id: str = PARTNER_MERCHANT, item_id: str = "") -> CardItemResult:  # fmt: skip
        item = CardItemCommand(
            item_type=item_type, bank_transaction_id=transaction, item_id=item_id, card_token=self.token,
            merchant_id=merchant_id, currency="EUR", amount_minor=amount_minor, transaction_time=when,
        )  # fmt: skip
        return self.cards.apply_item(self.bank.ref, item)


@pytest.fixture
def cards(isolated_database_url: str) -> Iterator[CardNetwork]:
    engine = create_engine(isolated_database_url, pool_size=10)
    try:
        network = CardNetwork(Network(engine, ManualClock(utc("2026-03-02T09:00:00"))))
        yield network
        assert_books_balance(network)
    finally:
        engine.dispose()


def test_a_period_with_card_activity_bills_the_bank_for_its_points_and_the_merchant_for_its_earn(
    cards: CardNetwork,
) -> None:
    cards.clock.set(IN_MARCH)
    # At the partner merchant: authorised for 120.00, cleared for 100.00 (merchant 100 + bank 100 points).
    assert cards.send(ItemType.AUTHORISATION, "T1", 12_000, IN_MARCH).pending_points == 240
    assert cards.send(ItemType.CLEARING, "T1", 10_000, IN_MARCH).points_earned == 200
    # Elsewhere: the bank's base earn only.
    assert cards.send(ItemType.CLEARING, "T2", 5_000, IN_MARCH, merchant_id=ELSEWHERE).points_earned == 50
    # A refund of 20.00 of T1 takes back 20 points of each lot.
    refund = cards.send(ItemType.REFUND, "T1", 2_000, IN_MARCH, item_id="R1")
    assert (refund.status, refund.points_reversed) == (ItemStatus.APPLIED, 40)
    # Authorised, never cleared: pending points are not on the ledger, so nothing is billed for them.
    assert cards.send(ItemType.AUTHORISATION, "T3", 9_900, IN_MARCH).status is ItemStatus.APPLIED
    # The merchant's own checkout earn lands on the same statement as its card earn.
    cards.earn(cards.merchant, phone(), 300)

    cards.clock.set(utc("2026-04-01T00:05:00"))
    cards.close(MARCH)
    statements = cards.statements(MARCH)
    bank, merchant = statements[cards.bank.code], statements[cards.merchant.code]
    # The bank: 150 points its cards generated (100 at the partner, 50 elsewhere), 20 taken back; 1.30 EUR.
    assert facts(bank) == [
        (LineType.ISSUANCE, "", "", 150, Decimal("0.010"), -150),
        (LineType.ISSUANCE_REVERSAL, "", "", 20, Decimal("0.010"), 20),
    ]
    assert bank.net_minor == -130
    # The merchant: its usual earn on the card purchase (100) and at its till (300), less the refund's 20.
    assert facts(merchant) == [
        (LineType.ISSUANCE, "", "", 400, Decimal("0.012"), -480),
        (LineType.ISSUANCE_REVERSAL, "", "", 20, Decimal("0.012"), 24),
    ]
    assert merchant.net_minor == -456
    assert set(statements) == {cards.bank.code, cards.merchant.code}
