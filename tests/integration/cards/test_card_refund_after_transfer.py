"""A card refund takes back points the cardholder gave to a household member, on either path of the feed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from cards.commands import CardItemCommand, CardItemResult, ItemType, LinkCommand
from cards.feed import CardFeed, CardSettings
from cards.services import CardService
from checkout.commands import EnrollCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.clock import ManualClock
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from ledger.repository import LedgerRepository, MemberAccounts
from members.identifiers import MemberIdentifier
from programme.goodwill import AdjustmentCommand, GoodwillDesk
from programme.households import Households, TransferCommand
from programme.visibility import OPERATOR_STAFF
from server.app import held_points
from tests.factories import create_partner, phone, request_key
from tests.invariants import assert_invariants

SUPPORT = "support:alice"
SETTINGS = CardSettings(identifier_pepper=b"t")


class Household:
    """A cardholder (a bank's card, a partner merchant) and a household member, old enough to transfer."""

    def __init__(self, uow: UnitOfWork, clock: ManualClock, *, is_set_based: bool) -> None:
        self.uow, self.clock = uow, clock
        cards = CardService(uow, SETTINGS)
        self.bank = create_partner(uow, kind="CARD_ISSUER", issuance_price=Decimal("0.010"))
        self.shop = create_partner(uow)
        self.merchant_id, self.token = f"mid-{uuid.uuid4().hex[:8]}", f"tok_{uuid.uuid4().hex}"
        self.cardholder, self.recipient = phone(), phone()
        cards.add_merchant(request_key(), self.merchant_id, self.shop.idempotency_scope.removeprefix("partner:"))
        cards.link_card(self.bank, uuid.uuid4().hex, LinkCommand(self.token, self.cardholder))
        self.checkout = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"t"))
        self.checkout.enroll_member(self.shop, uuid.uuid4().hex, EnrollCommand(self.recipient))
        self.feed = CardFeed(uow, SETTINGS, is_set_based=is_set_based)
        self.households = Households(uow, identifier_pepper=b"t", held_points=held_points)
        self.transaction = f"T{uuid.uuid4().hex[:10]}"

    def send(self, item_type: ItemType, amount_minor: int, item_id: str = "") -> CardItemResult:
        item = CardItemCommand(
            item_type=item_type, bank_transaction_id=self.transaction, item_id=item_id, card_token=self.token,
            merchant_id=self.merchant_id, currency="EUR", amount_minor=amount_minor, transaction_time=self.clock.now(),
        )  # fmt: skip
        return self.feed.apply_batch(self.bank.partner_id, [item])[0]

    def transfer(self, points: int) -> None:
        """Forms the household and transfers once the accounts and the membership are old enough."""
        self.clock.advance(timedelta(days=31))
        self.households.create(RequestKey(SUPPORT, request_key().key), [self.cardholder, self.recipient], SUPPORT)
        self.clock.advance(timedelta(days=8))
        command = TransferCommand(self.cardholder, self.recipient, points)
        self.households.transfer(RequestKey(SUPPORT, request_key().key), OPERATOR_STAFF, command)
        self.clock.advance(timedelta(days=1))

    def position(self, member: MemberIdentifier, partner: PartnerRef | None = None) -> tuple[int, int]:
        balance = self.checkout.get_balance(partner or self.shop, member)
        return balance.available_points, balance.debt_points


@pytest.fixture(params=[True, False], ids=["set-based", "item-by-item"])
def household(request: pytest.FixtureRequest, uow: UnitOfWork, clock: ManualClock) -> Household:
    return Household(uow, clock, is_set_based=request.param)


def test_a_refund_takes_back_the_points_from_the_household_member_who_has_them(household: Household) -> None:
    assert household.send(ItemType.CLEARING, 10_000).points_earned == 200  # 100 of the shop's lot, 100 of the bank's
    household.transfer(200)

    refunded = household.send(ItemType.REFUND, 10_000, "R1")

    assert (refunded.points_reversed, refunded.debt_points) == (200, 0)
    assert household.position(household.recipient) == (0, 0)
    assert household.position(household.cardholder) == (0, 0)
    assert_invariants(household.uow.engine)


def test_transferred_points_support_deducted_count_as_taken_back_on_both_paths(household: Household) -> None:
    assert household.send(ItemType.CLEARING, 10_000).points_earned == 200
    household.transfer(40)  # from the shop's lot (earned first)
    desk = GoodwillDesk(household.uow, identifier_pepper=b"t", held_points=held_points)
    command = AdjustmentCommand(household.recipient, "DEDUCT", 40, "CORRECTION", "duplicate card feed")
    desk.request(RequestKey(SUPPORT, uuid.uuid4().hex), command, SUPPORT)

    half = household.send(ItemType.REFUND, 5_000, "R1")

    # 50 of each lot go; 40 of the shop's had already left unspent, so only 10 more are taken from it.
    assert (half.points_reversed, half.debt_points) == (100, 0)
    assert household.position(household.cardholder) == (100, 0)
    rest = household.send(ItemType.REFUND, 5_000, "R2")
    assert (rest.points_reversed, rest.debt_points) == (100, 0)
    assert household.position(household.cardholder) == (0, 0)
    assert_invariants(household.uow.engine)


def test_a_batch_locks_the_household_member_given_the_points_with_its_own_members_in_one_go(
    uow: UnitOfWork, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    household = Household(uow, clock, is_set_based=True)
    household.send(ItemType.CLEARING, 10_000)
    household.transfer(200)
    number = household.checkout.get_balance(household.shop, household.recipient).member_number
    query = text("SELECT id FROM members WHERE member_number = :n")
    with uow.engine.connect() as connection:
        recipient_id = connection.execute(query, {"n": number}).scalar_one()
    lock_members, lock_member = LedgerRepository.lock_members, LedgerRepository.lock_member
    locked: list[set[int]] = []

    def recorded(repository: LedgerRepository, member_ids: Iterable[int]) -> dict[int, MemberAccounts]:
        member_ids = list(member_ids)
        locked.append(set(member_ids))
        return lock_members(repository, member_ids)

    def recorded_one(repository: LedgerRepository, member_id: int) -> MemberAccounts:
        locked.append({member_id})
        return lock_member(repository, member_id)

    monkeypatch.setattr(LedgerRepository, "lock_members", recorded)
    monkeypatch.setattr(LedgerRepository, "lock_member", recorded_one)
    refunded = household.send(ItemType.REFUND, 10_000, "R1")

    assert (refunded.points_reversed, refunded.debt_points) == (200, 0)
    # The batch locks every member its items may touch in one statement, in id order, the recipient
    # among them; the item path it hands the refund to locks nobody new, so nothing waits out of order.
    first, *later = locked
    assert recipient_id in first and all(members <= first for members in later)
