"""CheckoutService use cases against a real database, on SQLite and PostgreSQL; invariants after each test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from checkout import errors
from checkout.commands import (
    Basket,
    BasketLine,
    CaptureCommand,
    EarnCommand,
    EarnResult,
    EnrollCommand,
    HoldCommand,
    HoldView,
    QuoteCommand,
    RedeemCommand,
    ReleaseCommand,
    ReturnCommand,
    ReturnResult,
)
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.clock import ManualClock
from common.errors import CoalitionError, FailedPrecondition, IdempotencyKeyReused
from common.uow import UnitOfWork
from members.identifiers import IdentifierKind, MemberIdentifier
from members.services import MemberNotFound
from partners.services import PartnerSuspended, set_partner_suspended
from tests.factories import create_partner, email, phone, request_key
from tests.invariants import assert_invariants

SETTINGS = CheckoutSettings(identifier_pepper=b"test")


@pytest.fixture(autouse=True)
def _ledger_invariants_hold_after_each_test(engine: Engine) -> Iterator[None]:
    yield
    assert_invariants(engine)


@pytest.fixture
def service(uow: UnitOfWork) -> CheckoutService:
    return CheckoutService(uow, SETTINGS)


def key() -> str:
    return uuid.uuid4().hex


def receipt() -> str:
    return f"R-{uuid.uuid4().hex[:12]}"


def earn(
    service: CheckoutService, partner: PartnerRef, member: MemberIdentifier, total_minor: int, **fields: Any
) -> EarnResult:
    defaults: dict[str, Any] = {"receipt_id": receipt(), "enroll_if_unknown": True}
    command = EarnCommand(member, basket=Basket("EUR", total_minor), **(defaults | fields))
    return service.earn_points(partner, key(), command).result


def hold(
    service: CheckoutService, partner: PartnerRef, member: MemberIdentifier, points: int, **fields: Any
) -> HoldView:
    command = HoldCommand(member, points, fields.pop("ttl_seconds", 60), "EUR", **fields)
    return service.hold_points(partner, key(), command).result


def redeem(service: CheckoutService, partner: PartnerRef, member: MemberIdentifier, points: int, **fields: Any) -> int:
    return service.redeem_points(partner, key(), RedeemCommand(member, points, "EUR", **fields)).result.points_redeemed


def give_back(service: CheckoutService, partner: PartnerRef, receipt_id: str, returned_minor: int = 0) -> ReturnResult:
    command = ReturnCommand(receipt_id, returned_minor, is_full_return=returned_minor == 0)
    return service.return_purchase(partner, key(), command).result


def balance(service: CheckoutService, partner: PartnerRef, member: MemberIdentifier) -> tuple[int, int, int, int]:
    """(available, pending, held, debt) as the partner sees them."""
    view = service.get_balance(partner, member)
    return view.available_points, view.pending_points, view.held_points, view.debt_points


def rejected(call: Callable[[], object], error: type[CoalitionError]) -> CoalitionError:
    with pytest.raises(error) as raised:
        call()
    return raised.value


def scalar(engine: Engine, query: str, **parameters: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(query), parameters).scalar_one()


LOT_OF_TRANSACTION = "SELECT l.id FROM lots l JOIN journal_transactions t ON t.id = l.source_transaction_id "


def lot_of(engine: Engine, transaction_public_id: str) -> int:
    return int(scalar(engine, LOT_OF_TRANSACTION + "WHERE t.public_id = :p", p=transaction_public_id))


def remaining(engine: Engine, *lot_ids: int) -> list[int]:
    return [int(scalar(engine, "SELECT remaining_points FROM lots WHERE id = :id", id=lot_id)) for lot_id in lot_ids]


def partner_code(partner: PartnerRef) -> str:
    return partner.idempotency_scope.removeprefix("partner:")


# Earning


def test_earn_counts_eligible_lines_less_what_points_paid(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    lines = (BasketLine("shoes", 6_000), BasketLine("gift-card", 3_000, is_excluded=True), BasketLine("socks", 1_050))
    basket = Basket("EUR", 10_050, lines, paid_with_points_minor=2_000)

    quoted = service.quote(partner, QuoteCommand(None, basket))
    earned = service.earn_points(partner, key(), EarnCommand(member, receipt(), basket, True)).result

    assert quoted.points_to_earn == earned.points_earned == 50  # (6000 + 1050 - 2000) / 100, rounded down
    assert earned.contract_version == 1 and earned.debt_repaid_points == 0
    assert balance(service, partner, member) == (50, 0, 0, 0)
    too_many_lines = Basket("EUR", 1_000, (BasketLine("a", 800), BasketLine("b", 300)))
    rejected(
        lambda: service.earn_points(partner, key(), EarnCommand(member, receipt(), too_many_lines)),
        errors.InvalidBasket,
    )


def test_an_in_store_earn_records_its_channel_and_store(
    uow: UnitOfWork, service: CheckoutService, engine: Engine
) -> None:
    partner, receipt_id = create_partner(uow, kind="STORE_CHAIN"), receipt()
    command = EarnCommand(phone(), receipt_id, Basket("EUR", 1_000), True, channel="IN_STORE", store_id="leeds-01")
    service.earn_points(partner, key(), command)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT channel, store_id FROM purchases WHERE partner_id = :p AND receipt_id = :r"),
            {"p": partner.partner_id, "r": receipt_id},
        ).one()
    assert tuple(stored) == ("IN_STORE", "leeds-01")


def test_unknown_member_earns_only_when_enrolment_is_asked_for(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), email()
    command = EarnCommand(member, receipt(), Basket("EUR", 2_500))

    rejected(lambda: service.earn_points(partner, key(), command), MemberNotFound)
    first = earn(service, partner, member, 2_500)
    second = earn(service, partner, member, 2_500, enroll_if_unknown=False)

    assert first.is_newly_enrolled and not second.is_newly_enrolled
    assert first.member_number == second.member_number and first.member_number.startswith("M")
    looked_up = service.lookup_member(partner, MemberIdentifier(IdentifierKind.MEMBER_NUMBER, first.member_number))
    assert looked_up.balance.available_points == 50
    assert looked_up.masked_identifiers[0][0] == "EMAIL" and "***@example.com" in looked_up.masked_identifiers[0][1]


def test_zero_point_earn_still_uses_up_the_receipt(uow: UnitOfWork, service: CheckoutService, engine: Engine) -> None:
    partner, member, receipt_id = create_partner(uow), phone(), receipt()

    earned = earn(service, partner, member, 99, receipt_id=receipt_id)
    again = EarnCommand(member, receipt_id, Basket("EUR", 99_999), True)
    error = rejected(lambda: service.earn_points(partner, key(), again), errors.ReceiptAlreadyEarned)

    assert (earned.points_earned, earned.transaction_id) == (0, "")
    assert error.reason == "RECEIPT_ALREADY_EARNED"
    assert scalar(engine, "SELECT COUNT(*) FROM journal_transactions WHERE receipt_id = :r", r=receipt_id) == 0
    assert balance(service, partner, member) == (0, 0, 0, 0)


def test_currency_other_than_the_contracts_is_refused(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 10_000)
    usd = Basket("USD", 1_000)

    for call in (
        lambda: service.earn_points(partner, key(), EarnCommand(member, receipt(), usd, True)),
        lambda: service.quote(partner, QuoteCommand(member, usd)),
        lambda: service.hold_points(partner, key(), HoldCommand(member, 10, 60, "USD")),
        lambda: service.redeem_points(partner, key(), RedeemCommand(member, 10, "")),
    ):
        assert rejected(call, errors.CurrencyMismatch).metadata == {"expected": "EUR"}
    assert balance(service, partner, member) == (100, 0, 0, 0)


# Holds


def test_partial_capture_spends_part_and_releases_the_rest(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)

    held = hold(service, partner, member, 100, receipt_id="W-1")
    assert (held.status, held.points, held.captured_points, held.value_minor) == ("HELD", 100, 0, 100)
    assert balance(service, partner, member) == (100, 0, 100, 0)

    captured = service.capture_hold(partner, key(), CaptureCommand(held.hold_id, 60)).result

    assert (captured.points_captured, captured.points_released, captured.value_minor) == (60, 40, 60)
    assert (captured.hold.status, captured.hold.points, captured.hold.captured_points) == ("CAPTURED", 100, 60)
    assert captured.hold.capture_transaction_id == captured.transaction_id != ""
    assert balance(service, partner, member) == (140, 0, 0, 0)


def test_release_gives_the_points_back(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)
    held = hold(service, partner, member, 150)

    released = service.release_hold(partner, key(), ReleaseCommand(held.hold_id)).result

    assert (released.status, released.captured_points, released.capture_transaction_id) == ("RELEASED", 0, "")
    assert balance(service, partner, member) == (200, 0, 0, 0)
    rejected(lambda: service.capture_hold(partner, key(), CaptureCommand(held.hold_id)), errors.HoldAlreadyResolved)


def test_expired_hold_cannot_be_captured_and_its_points_return_without_a_sweep(
    uow: UnitOfWork, service: CheckoutService, clock: ManualClock, engine: Engine
) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)
    held = hold(service, partner, member, 150, ttl_seconds=60)
    assert balance(service, partner, member) == (50, 0, 150, 0)

    clock.advance(timedelta(seconds=61))

    assert balance(service, partner, member) == (200, 0, 0, 0)
    assert scalar(engine, "SELECT status FROM holds WHERE public_id = :h", h=held.hold_id) == "HELD"
    rejected(lambda: service.capture_hold(partner, key(), CaptureCommand(held.hold_id)), errors.HoldExpired)
    rejected(lambda: service.release_hold(partner, key(), ReleaseCommand(held.hold_id)), errors.HoldExpired)
    assert redeem(service, partner, member, 200) == 200


def test_expire_holds_marks_lapsed_holds_once(
    uow: UnitOfWork, service: CheckoutService, clock: ManualClock, engine: Engine
) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)
    lapsing, lasting = (
        hold(service, partner, member, 40, ttl_seconds=60),
        hold(service, partner, member, 30, ttl_seconds=3_600),
    )
    clock.advance(timedelta(seconds=60))

    assert service.expire_holds() >= 1
    assert service.expire_holds() == 0

    status = "SELECT status FROM holds WHERE public_id = :h"
    assert (scalar(engine, status, h=lapsing.hold_id), scalar(engine, status, h=lasting.hold_id)) == ("EXPIRED", "HELD")
    # The same answer as before the sweep marked it: the reason never depends on the sweep's timing.
    rejected(lambda: service.capture_hold(partner, key(), CaptureCommand(lapsing.hold_id)), errors.HoldExpired)
    assert balance(service, partner, member) == (170, 0, 30, 0)


def test_a_hold_is_captured_once(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)
    held = hold(service, partner, member, 100)
    capture = CaptureCommand(held.hold_id)  # 0 points: the whole hold
    capture_key = key()

    first = service.capture_hold(partner, capture_key, capture)
    replay = service.capture_hold(partner, capture_key, capture)

    assert first.result.points_captured == 100 and replay.is_replay and replay.result == first.result
    rejected(lambda: service.capture_hold(partner, key(), capture), errors.HoldAlreadyResolved)
    assert balance(service, partner, member) == (100, 0, 0, 0)


def test_capture_cannot_exceed_the_hold(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)
    held = hold(service, partner, member, 50)

    rejected(lambda: service.capture_hold(partner, key(), CaptureCommand(held.hold_id, 51)), errors.CaptureExceedsHold)
    assert balance(service, partner, member) == (150, 0, 50, 0)
    assert service.capture_hold(partner, key(), CaptureCommand(held.hold_id, 50)).result.points_captured == 50


def test_held_points_are_not_available_to_spend(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 20_000)
    hold(service, partner, member, 150)

    error = rejected(lambda: redeem(service, partner, member, 51), errors.InsufficientPoints)
    rejected(lambda: hold(service, partner, member, 51), errors.InsufficientPoints)

    assert error.metadata["available"] == "50"
    assert redeem(service, partner, member, 50) == 50
    assert service.quote(partner, QuoteCommand(member, Basket("EUR", 10_000))).available_points == 0
    assert balance(service, partner, member) == (0, 0, 150, 0)


# Lots: pending, expiry and consumption order


def test_pending_points_are_not_spendable_until_available(
    uow: UnitOfWork, service: CheckoutService, clock: ManualClock
) -> None:
    partner, member = create_partner(uow, pending_days=14), phone()

    earned = earn(service, partner, member, 10_000)

    assert earned.available_at == clock.now() + timedelta(days=14)
    assert balance(service, partner, member) == (0, 100, 0, 0)
    rejected(lambda: redeem(service, partner, member, 1), errors.InsufficientPoints)
    clock.advance(timedelta(days=14) - timedelta(seconds=1))
    rejected(lambda: hold(service, partner, member, 1), errors.InsufficientPoints)
    clock.advance(timedelta(seconds=1))
    assert balance(service, partner, member) == (100, 0, 0, 0)
    assert redeem(service, partner, member, 100) == 100


def test_a_hold_is_backed_only_by_points_that_outlive_it(uow: UnitOfWork, clock: ManualClock) -> None:
    partner, member = create_partner(uow), phone()
    short_lived = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test", points_lifetime_days=1))
    earn(short_lived, partner, member, 10_000)  # 100 points that expire in a day
    clock.advance(timedelta(hours=23, minutes=55))
    # The points expire in five minutes: a fifteen-minute hold cannot count on them...
    command = HoldCommand(member, 50, 900, "EUR")
    rejected(lambda: short_lived.hold_points(partner, key(), command), errors.InsufficientPoints)
    # ...while a three-minute hold can, and its capture finds them still there.
    held = short_lived.hold_points(partner, key(), HoldCommand(member, 50, 180, "EUR")).result
    clock.advance(timedelta(minutes=2))
    assert short_lived.capture_hold(partner, key(), CaptureCommand(held.hold_id)).result.points_captured == 50


def test_points_past_their_expiry_are_not_spendable(uow: UnitOfWork, clock: ManualClock) -> None:
    service = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test", points_lifetime_days=1))
    partner, member = create_partner(uow), phone()

    earned = earn(service, partner, member, 10_000)
    soon = service.get_balance(partner, member)

    assert earned.expires_at == clock.now() + timedelta(days=1)
    assert (soon.available_points, soon.expiring_soon_points) == (100, 100)
    clock.advance(timedelta(days=1))
    assert balance(service, partner, member) == (0, 0, 0, 0)
    assert service.get_balance(partner, member).expiring_soon_points == 0
    rejected(lambda: redeem(service, partner, member, 1), errors.InsufficientPoints)
    rejected(lambda: hold(service, partner, member, 1), errors.InsufficientPoints)


def test_redeem_consumes_first_to_expire_first_across_partners(
    uow: UnitOfWork, clock: ManualClock, engine: Engine
) -> None:
    def lasting(days: int) -> CheckoutService:
        return CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test", points_lifetime_days=days))

    store, shop, charity = create_partner(uow), create_partner(uow), create_partner(uow, kind="CHARITY")
    member = phone()
    late = lot_of(engine, earn(lasting(730), store, member, 10_000).transaction_id)
    first = lot_of(engine, earn(lasting(366), shop, member, 10_000).transaction_id)
    clock.advance(timedelta(days=1))
    tied = lot_of(engine, earn(lasting(365), store, member, 10_000).transaction_id)  # same expiry, earned later

    spent = lasting(730).redeem_points(charity, key(), RedeemCommand(member, 150, "EUR")).result
    again = lasting(730).redeem_points(charity, key(), RedeemCommand(member, 100, "EUR")).result

    lineage = """
        SELECT m.lot_id, l.issuer_partner_id, m.kind, m.points_delta FROM lot_movements m
        JOIN lots l ON l.id = m.lot_id JOIN journal_transactions t ON t.id = m.transaction_id
        WHERE t.public_id = :p ORDER BY m.id"""
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(text(lineage), {"p": spent.transaction_id})]
        rows_again = [tuple(row) for row in connection.execute(text(lineage), {"p": again.transaction_id})]
    assert rows == [(first, shop.partner_id, "CONSUMED", -100), (tied, store.partner_id, "CONSUMED", -50)]
    assert rows_again == [(tied, store.partner_id, "CONSUMED", -50), (late, store.partner_id, "CONSUMED", -50)]
    assert remaining(engine, first, tied, late) == [0, 0, 50]


# Returns


def test_partial_returns_add_up_to_the_earned_points_and_never_exceed_the_purchase(
    uow: UnitOfWork, service: CheckoutService, engine: Engine
) -> None:
    partner, member, receipt_id = create_partner(uow), phone(), receipt()
    assert earn(service, partner, member, 10_001, receipt_id=receipt_id).points_earned == 100

    first = give_back(service, partner, receipt_id, 3_000)
    second = give_back(service, partner, receipt_id, 3_000)
    too_much = ReturnCommand(receipt_id, 4_002)
    error = rejected(lambda: service.return_purchase(partner, key(), too_much), errors.ReturnExceedsPurchase)
    rest = give_back(service, partner, receipt_id)

    assert [first.points_reversed, second.points_reversed, rest.points_reversed] == [29, 30, 41]
    assert [first.returned_minor_total, second.returned_minor_total, rest.returned_minor_total] == [
        3_000,
        6_000,
        10_001,
    ]
    assert error.metadata["remaining_minor"] == "4001"
    rejected(
        lambda: service.return_purchase(partner, key(), ReturnCommand(receipt_id, 1)), errors.ReturnExceedsPurchase
    )
    reversed_points = "SELECT SUM(points) FROM journal_transactions WHERE kind = 'EARN_REVERSAL' AND receipt_id = :r"
    assert scalar(engine, reversed_points, r=receipt_id) == 100
    assert balance(service, partner, member) == (0, 0, 0, 0)


def test_returning_a_purchase_paid_with_points_restores_the_original_lots(
    uow: UnitOfWork, service: CheckoutService, clock: ManualClock, engine: Engine
) -> None:
    store, shop, outlet = create_partner(uow), create_partner(uow), create_partner(uow)
    member, receipt_id = phone(), receipt()
    older = lot_of(engine, earn(service, store, member, 10_000).transaction_id)
    clock.advance(timedelta(days=1))
    newer = lot_of(engine, earn(service, shop, member, 10_000).transaction_id)
    assert redeem(service, outlet, member, 150, receipt_id=receipt_id) == 150
    assert remaining(engine, older, newer) == [0, 50]
    paid = Basket("EUR", 20_000, paid_with_points_minor=1_500)
    earned = service.earn_points(outlet, key(), EarnCommand(member, receipt_id, paid)).result
    assert earned.points_earned == 185
    own = lot_of(engine, earned.transaction_id)

    half = give_back(service, outlet, receipt_id, 10_000)
    assert (half.points_restored, half.points_reversed, half.debt_created_points) == (75, 92, 0)
    rest = give_back(service, outlet, receipt_id)

    assert (rest.points_restored, rest.points_reversed, rest.debt_created_points) == (75, 93, 0)
    assert remaining(engine, older, newer, own) == [100, 100, 0]
    restored = """
        SELECT m.lot_id, SUM(m.points_delta) FROM lot_movements m JOIN journal_transactions t ON t.id = m.transaction_id
        WHERE t.kind = 'REDEMPTION_REFUND' AND t.receipt_id = :r GROUP BY m.lot_id ORDER BY m.lot_id"""
    with engine.connect() as connection:
        assert [tuple(row) for row in connection.execute(text(restored), {"r": receipt_id})] == [
            (older, 100),
            (newer, 50),
        ]
    assert balance(service, outlet, member) == (200, 0, 0, 0)


def test_returning_points_already_spent_leaves_a_debt_the_next_earn_repays(
    uow: UnitOfWork, service: CheckoutService, engine: Engine
) -> None:
    store, shop = create_partner(uow), create_partner(uow)
    member, receipt_id = phone(), receipt()
    earn(service, store, member, 10_000, receipt_id=receipt_id)
    assert redeem(service, shop, member, 100) == 100

    returned = give_back(service, store, receipt_id)

    assert (returned.points_reversed, returned.debt_created_points) == (100, 100)
    assert balance(service, store, member) == (0, 0, 0, 100)
    member_row = "SELECT b.points_balance, b.debt_points FROM member_balances b JOIN members m ON m.id = b.member_id "
    with engine.connect() as connection:
        cached = connection.execute(text(member_row + "WHERE m.member_number = :n"), {"n": returned.member_number})
        assert tuple(cached.one()) == (0, 100)
    repaid = earn(service, shop, member, 15_000)
    assert (repaid.points_earned, repaid.debt_repaid_points) == (150, 100)
    assert balance(service, shop, member) == (50, 0, 0, 0)


# Contract limits


def test_daily_issuance_cap(uow: UnitOfWork, service: CheckoutService, clock: ManualClock) -> None:
    partner, member, receipt_id = create_partner(uow, daily_issuance_cap=150), phone(), receipt()
    earn(service, partner, member, 10_000)

    error = rejected(
        lambda: earn(service, partner, member, 6_000, receipt_id=receipt_id), errors.DailyIssuanceCapExceeded
    )
    earn(service, partner, member, 5_000)  # exactly up to the cap
    rejected(lambda: earn(service, partner, member, 100), errors.DailyIssuanceCapExceeded)
    clock.advance(timedelta(days=1))

    assert error.metadata["limit"] == "150"
    assert earn(service, partner, member, 6_000, receipt_id=receipt_id).points_earned == 60
    assert balance(service, partner, member) == (210, 0, 0, 0)


def test_max_points_per_transaction(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow, max_points_per_transaction=50), phone()

    error = rejected(lambda: earn(service, partner, member, 5_100), errors.TransactionLimitExceeded)
    earn(service, partner, member, 5_099)
    earn(service, partner, member, 5_000)

    assert error.metadata["limit"] == "50"
    assert rejected(lambda: redeem(service, partner, member, 51), FailedPrecondition).metadata["limit"] == "50"
    assert redeem(service, partner, member, 50) == 50
    assert balance(service, partner, member) == (50, 0, 0, 0)


def test_share_of_a_basket_payable_with_points(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow, max_points_share_of_basket=Decimal("0.5")), phone()
    earn(service, partner, member, 30_000)

    error = rejected(lambda: redeem(service, partner, member, 101, basket_total_minor=200), errors.BasketShareExceeded)
    rejected(lambda: hold(service, partner, member, 101, basket_total_minor=200), errors.BasketShareExceeded)
    rejected(lambda: redeem(service, partner, member, 10), errors.BasketRequired)

    assert error.metadata["limit"] == "100"
    quoted = service.quote(partner, QuoteCommand(member, Basket("EUR", 200)))
    assert (quoted.available_points, quoted.redeemable_points, quoted.redeemable_value_minor) == (300, 100, 100)
    assert redeem(service, partner, member, 100, basket_total_minor=200) == 100
    assert balance(service, partner, member) == (200, 0, 0, 0)


# Exactly once


def test_same_key_and_request_replays_the_original_result(
    uow: UnitOfWork, service: CheckoutService, engine: Engine
) -> None:
    partner, receipt_id = create_partner(uow), receipt()
    command, request_id = EarnCommand(phone(), receipt_id, Basket("EUR", 4_200), True), key()

    first = service.earn_points(partner, request_id, command)
    replay = service.earn_points(partner, request_id, command)

    assert not first.is_replay and replay.is_replay
    assert replay.result == first.result and first.result.points_earned == 42
    assert scalar(engine, "SELECT COUNT(*) FROM journal_transactions WHERE receipt_id = :r", r=receipt_id) == 1


def test_same_key_for_a_different_request_is_refused_and_writes_nothing(
    uow: UnitOfWork, service: CheckoutService, engine: Engine
) -> None:
    partner, member, request_id = create_partner(uow), phone(), key()
    service.earn_points(partner, request_id, EarnCommand(member, receipt(), Basket("EUR", 4_200), True))
    other_receipt = receipt()

    rejected(
        lambda: service.earn_points(partner, request_id, EarnCommand(member, other_receipt, Basket("EUR", 4_200))),
        IdempotencyKeyReused,
    )
    rejected(lambda: service.redeem_points(partner, request_id, RedeemCommand(member, 1, "EUR")), IdempotencyKeyReused)

    assert scalar(engine, "SELECT COUNT(*) FROM purchases WHERE receipt_id = :r", r=other_receipt) == 0
    assert balance(service, partner, member) == (42, 0, 0, 0)


def test_business_rejection_is_stored_so_a_retry_cannot_flip_it(uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 1_000)
    request_id, command = key(), RedeemCommand(member, 500, "EUR")

    rejected(lambda: service.redeem_points(partner, request_id, command), errors.InsufficientPoints)
    earn(service, partner, member, 100_000)
    replayed = rejected(lambda: service.redeem_points(partner, request_id, command), errors.InsufficientPoints)

    assert replayed.metadata["idempotent_replay"] == "true"
    assert balance(service, partner, member) == (1_010, 0, 0, 0)


def test_invalid_request_is_not_stored_and_the_key_stays_usable(
    uow: UnitOfWork, service: CheckoutService, engine: Engine
) -> None:
    partner, member = create_partner(uow), phone()
    earn(service, partner, member, 1_000)
    records = "SELECT COUNT(*) FROM idempotency_records WHERE principal = :s AND idempotency_key = :k"
    zero_points, wrong_currency = key(), key()

    rejected(lambda: service.hold_points(partner, zero_points, HoldCommand(member, 0, 60, "EUR")), errors.InvalidPoints)
    rejected(
        lambda: service.redeem_points(partner, zero_points, RedeemCommand(member, -1, "EUR")), errors.InvalidPoints
    )
    usd = EarnCommand(member, receipt(), Basket("USD", 1_000))
    rejected(lambda: service.earn_points(partner, wrong_currency, usd), errors.CurrencyMismatch)

    for request_id in (zero_points, wrong_currency):
        assert scalar(engine, records, s=partner.idempotency_scope, k=request_id) == 0
    fixed = service.earn_points(partner, wrong_currency, EarnCommand(member, usd.receipt_id, Basket("EUR", 1_000)))
    assert not fixed.is_replay and fixed.result.points_earned == 10
    assert scalar(engine, records, s=partner.idempotency_scope, k=wrong_currency) == 1


# Members and partners


def test_a_partner_sees_only_members_who_dealt_with_it(uow: UnitOfWork, service: CheckoutService) -> None:
    store, shop, member = create_partner(uow), create_partner(uow), phone()
    number = earn(service, store, member, 1_000).member_number
    by_number = MemberIdentifier(IdentifierKind.MEMBER_NUMBER, number)

    unlinked = rejected(lambda: service.get_balance(shop, member), MemberNotFound)
    unknown = rejected(lambda: service.get_balance(shop, phone()), MemberNotFound)
    rejected(lambda: service.lookup_member(shop, by_number), MemberNotFound)
    rejected(lambda: service.quote(shop, QuoteCommand(member, Basket("EUR", 100))), MemberNotFound)

    assert (unlinked.reason, unlinked.message) == (unknown.reason, unknown.message)
    assert service.lookup_member(store, by_number).balance.available_points == 10


def test_enrolling_twice_returns_the_same_member(uow: UnitOfWork, service: CheckoutService) -> None:
    store, shop, member = create_partner(uow), create_partner(uow), phone()

    first = service.enroll_member(store, key(), EnrollCommand(member)).result
    second = service.enroll_member(store, key(), EnrollCommand(member)).result
    elsewhere = service.enroll_member(shop, key(), EnrollCommand(member)).result

    assert first.is_newly_enrolled and not second.is_newly_enrolled and not elsewhere.is_newly_enrolled
    assert first.member_number == second.member_number == elsewhere.member_number
    assert second.masked_identifiers == first.masked_identifiers and len(first.masked_identifiers) == 1
    assert service.get_balance(shop, member).member_number == first.member_number


# Each call gets (service, partner, member, hold id, receipt id).
PartnerCall = Callable[[CheckoutService, PartnerRef, MemberIdentifier, str, str], object]
SUSPENDED_CALLS: dict[str, PartnerCall] = {
    "earn": lambda s, p, m, h, r: s.earn_points(p, key(), EarnCommand(m, receipt(), Basket("EUR", 1_000))),
    "quote": lambda s, p, m, h, r: s.quote(p, QuoteCommand(m, Basket("EUR", 1_000))),
    "hold": lambda s, p, m, h, r: s.hold_points(p, key(), HoldCommand(m, 10, 60, "EUR")),
    "capture": lambda s, p, m, h, r: s.capture_hold(p, key(), CaptureCommand(h)),
    "release": lambda s, p, m, h, r: s.release_hold(p, key(), ReleaseCommand(h)),
    "redeem": lambda s, p, m, h, r: s.redeem_points(p, key(), RedeemCommand(m, 10, "EUR")),
    "return": lambda s, p, m, h, r: s.return_purchase(p, key(), ReturnCommand(r, is_full_return=True)),
    "enroll": lambda s, p, m, h, r: s.enroll_member(p, key(), EnrollCommand(phone())),
    "balance": lambda s, p, m, h, r: s.get_balance(p, m),
    "lookup": lambda s, p, m, h, r: s.lookup_member(p, m),
}


@pytest.mark.parametrize("call", SUSPENDED_CALLS.values(), ids=SUSPENDED_CALLS.keys())
def test_a_suspended_partner_is_refused(call: PartnerCall, uow: UnitOfWork, service: CheckoutService) -> None:
    partner, member, receipt_id = create_partner(uow), phone(), receipt()
    earn(service, partner, member, 10_000, receipt_id=receipt_id)
    held = hold(service, partner, member, 20)
    set_partner_suspended(uow, request_key(), partner_code(partner), is_suspended=True)

    rejected(lambda: call(service, partner, member, held.hold_id, receipt_id), PartnerSuspended)

    set_partner_suspended(uow, request_key(), partner_code(partner), is_suspended=False)
    call(service, partner, member, held.hold_id, receipt_id)
