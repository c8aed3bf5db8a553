"""A card purchase at a partner merchant earns the member's tier bonus like a checkout earn, and a refund
takes it back in the same proportion; with a tier programme the feed applies items one by one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from cards.commands import ItemStatus, ItemType
from common.clock import ManualClock
from programme.policy import NetworkPolicy, Tier, TierPolicy
from programme.services import create_policy_version
from settlement.netting import LineType
from tests.factories import request_key
from tests.integration.cards.test_card_settlement import ELSEWHERE, CardNetwork
from tests.integration.settlement.harness import MARCH, Network, assert_books_balance, utc

IN_MARCH = utc("2026-03-10T12:00:00")
TIERS = TierPolicy(tiers=(Tier("Base", 0, 0), Tier("Silver", 100, 100)))


@pytest.fixture
def cards(isolated_database_url: str) -> Iterator[CardNetwork]:
    engine = create_engine(isolated_database_url, pool_size=10)
    try:
        network = CardNetwork(Network(engine, ManualClock(utc("2026-03-02T09:00:00"))))
        create_policy_version(
            network.uow, request_key(), policy=NetworkPolicy(tiers=TIERS), effective_from=None, created_by="tests"
        )
        yield network
        assert_books_balance(network)
    finally:
        engine.dispose()


def tier_bonus_points(cards: CardNetwork) -> int:
    return int(cards.scalar(
        "SELECT COALESCE(SUM(t.points), 0) FROM bonus_awards b JOIN journal_transactions t ON t.id = b.transaction_id "
        "WHERE b.bonus_kind = 'TIER'"
    ))  # fmt: skip


def test_a_card_purchase_at_a_partner_earns_the_tier_bonus_and_a_refund_takes_it_back(cards: CardNetwork) -> None:
    cards.clock.set(IN_MARCH)
    # 100.00 at the partner merchant: its 100 points reach Silver, whose +100% rides on them; the bank's
    # card points are the bank's programme, not a purchase earn at a partner: no tier bonus on them.
    assert cards.send(ItemType.CLEARING, "T1", 10_000, IN_MARCH).points_earned == 200
    assert tier_bonus_points(cards) == 100
    # Elsewhere the bank's base earn only: no partner purchase, no tier bonus.
    cards.send(ItemType.CLEARING, "T2", 5_000, IN_MARCH, merchant_id=ELSEWHERE)
    assert tier_bonus_points(cards) == 100
    refund = cards.send(ItemType.REFUND, "T1", 2_500, IN_MARCH, item_id="R1")
    assert (refund.status, refund.points_reversed) == (ItemStatus.APPLIED, 50)
    reversed_bonus = cards.scalar(
        "SELECT COALESCE(SUM(r.points), 0) FROM journal_transactions r JOIN bonus_awards b "
        "ON b.transaction_id = r.references_transaction_id WHERE r.kind = 'EARN_REVERSAL'"
    )
    assert int(reversed_bonus) == 25  # a quarter of the purchase refunded: a quarter of its bonus
    # Qualifying points count both card earns (each is a purchase earn, the bank's too), net of the refund.
    balance = cards.checkout.get_balance(cards.merchant.ref, cards.member)
    assert balance.tier is not None and (balance.tier.tier, balance.tier.qualifying_points) == (
        "Silver",
        100 + 100 + 50 - 25 - 25,
    )

    cards.clock.set(utc("2026-04-01T00:05:00"))
    cards.close(MARCH)
    merchant = cards.statement(MARCH, cards.merchant)
    # The operator funds the tier bonus: the merchant's issuance is its own 100 points, nothing more.
    assert [(line.line_type, line.points) for line in merchant.lines if line.line_type == LineType.ISSUANCE] == [
        (LineType.ISSUANCE, 100)
    ]


def test_a_refund_after_the_tier_programme_ended_still_takes_back_the_purchases_tier_bonus(cards: CardNetwork) -> None:
    cards.clock.set(IN_MARCH)
    assert cards.send(ItemType.CLEARING, "T1", 10_000, IN_MARCH).points_earned == 200
    assert tier_bonus_points(cards) == 100
    create_policy_version(cards.uow, request_key(), policy=NetworkPolicy(), effective_from=None, created_by="tests")
    cards.clock.set(utc("2026-03-11T12:00:00"))  # no tiers any more: the feed applies items set-based again

    refund = cards.send(ItemType.REFUND, "T1", 10_000, utc("2026-03-11T12:00:00"), item_id="R1")

    assert (refund.status, refund.points_reversed) == (ItemStatus.APPLIED, 200)
    # The bonus rode on the purchase: it goes with it, whatever the programme says today.
    reversed_bonus = cards.scalar(
        "SELECT COALESCE(SUM(r.points), 0) FROM journal_transactions r JOIN bonus_awards b "
        "ON b.transaction_id = r.references_transaction_id WHERE r.kind = 'EARN_REVERSAL'"
    )
    assert int(reversed_bonus) == 100
    assert cards.checkout.get_balance(cards.merchant.ref, cards.member).available_points == 0
