"""A card refund never takes back points of its own lots that already left the member unspent."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from cards.commands import CardItemCommand, ItemType, LinkCommand
from cards.feed import CardSettings
from cards.services import CardService
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import ManualClock
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from programme.goodwill import AdjustmentCommand, GoodwillDesk
from server.app import held_points
from tests.factories import create_partner, phone, request_key
from tests.invariants import assert_invariants


def test_a_refund_after_support_deducted_card_points_takes_back_only_what_is_left(
    uow: UnitOfWork, clock: ManualClock
) -> None:
    cards = CardService(uow, CardSettings(identifier_pepper=b"t"))
    bank = create_partner(uow, kind="CARD_ISSUER", issuance_price=Decimal("0.010"))
    shop = create_partner(uow)
    merchant_id, token, member = f"mid-{uuid.uuid4().hex[:8]}", f"tok_{uuid.uuid4().hex}", phone()
    cards.add_merchant(request_key(), merchant_id, shop.idempotency_scope.removeprefix("partner:"))
    cards.link_card(bank, uuid.uuid4().hex, LinkCommand(token, member))
    clock.advance(timedelta(minutes=1))
    transaction = f"T{uuid.uuid4().hex[:10]}"

    def item(item_type: ItemType, item_id: str = "") -> CardItemCommand:
        return CardItemCommand(item_type=item_type, bank_transaction_id=transaction, item_id=item_id,
                               amount_minor=10_000, transaction_time=clock.now(), card_token=token,
                               merchant_id=merchant_id, currency="EUR")  # fmt: skip

    [cleared] = cards.apply_items(bank, [item(ItemType.CLEARING)])
    assert cleared.points_earned == 200  # 100 of the shop's lot, 100 of the bank's
    desk = GoodwillDesk(uow, identifier_pepper=b"t", held_points=held_points)
    command = AdjustmentCommand(member, "DEDUCT", 150, "CORRECTION", "duplicate card feed")
    desk.request(RequestKey("support:alice", uuid.uuid4().hex), command, "support:alice")

    [refunded] = cards.apply_items(bank, [item(ItemType.REFUND, "R1")])

    assert (refunded.points_reversed, refunded.debt_points) == (200, 0)  # 150 of them were already gone
    balance = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"t")).get_balance(shop, member)
    assert (balance.available_points, balance.debt_points) == (0, 0)
    assert_invariants(uow.engine)
