"""A batch of card items in one transaction: each item keeps exactly one effect, a refused one only itself."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from cards.commands import CardItemCommand, ItemStatus, ItemType, LinkCommand
from cards.feed import CardSettings
from cards.services import CardService
from common.clock import ManualClock
from common.uow import UnitOfWork
from tests.factories import create_partner, phone, request_key


def test_a_refused_item_rolls_back_only_itself_and_a_batch_sent_again_is_all_replays(
    uow: UnitOfWork, clock: ManualClock
) -> None:
    cards = CardService(uow, CardSettings(identifier_pepper=b"t"))
    bank = create_partner(uow, kind="CARD_ISSUER", issuance_price=Decimal("0.010"))
    shop = create_partner(uow)
    merchant_id, token = f"mid-{uuid.uuid4().hex[:8]}", f"tok_{uuid.uuid4().hex}"
    cards.add_merchant(request_key(), merchant_id, shop.idempotency_scope.removeprefix("partner:"))
    cards.link_card(bank, uuid.uuid4().hex, LinkCommand(token, phone()))
    clock.advance(timedelta(minutes=1))  # after the contracts took effect
    when = clock.now()

    def item(
        item_type: ItemType, transaction: str, amount_minor: int, item_id: str = "", **changes: str
    ) -> CardItemCommand:
        values = {"card_token": token, "merchant_id": merchant_id, "currency": "EUR"} | changes
        return CardItemCommand(item_type=item_type, bank_transaction_id=transaction, item_id=item_id,
                               amount_minor=amount_minor, transaction_time=when, **values)  # fmt: skip

    first, second = f"T{uuid.uuid4().hex[:10]}", f"T{uuid.uuid4().hex[:10]}"
    batch = [
        item(ItemType.CLEARING, first, 10_000),
        item(ItemType.REFUND, first, 12_000, "R1"),  # more than cleared: refused, stored, nothing reversed
        item(ItemType.CLEARING, second, 5_000, currency="USD"),  # refused (and stored) before any write
        item(ItemType.REFUND, first, 2_500, "R2"),
        item(ItemType.CLEARING, second, 0),  # malformed: refused, not stored
        item(ItemType.REFUND, second, 1_000, "R1"),  # before its clearing: waits
        item(ItemType.CLEARING, first, 10_000),  # the same item again in the same batch
    ]
    results = cards.apply_items(bank, batch)
    assert [(result.status, result.reason) for result in results] == [
        (ItemStatus.APPLIED, ""), (ItemStatus.REJECTED, "REVERSAL_EXCEEDS_CLEARING"),
        (ItemStatus.REJECTED, "CARD_CURRENCY_MISMATCH"), (ItemStatus.APPLIED, ""),
        (ItemStatus.REJECTED, "INVALID_CARD_ITEM"), (ItemStatus.WAITING, "WAITING_FOR_CLEARING"),
        (ItemStatus.APPLIED, ""),
    ]  # fmt: skip
    assert (results[0].points_earned, results[3].points_reversed, results[6].is_replay) == (200, 50, True)

    again = cards.apply_items(bank, batch)
    assert [result.is_replay for result in again] == [True, True, True, True, False, True, True]
    assert [(result.status, result.points_earned, result.points_reversed) for result in again] == [
        (result.status, result.points_earned, result.points_reversed) for result in results
    ]
