"""The checkout flows over a real server and the SDK, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from sqlalchemy import Engine

from tests.e2e.conftest import DEFAULT_TERMS, Partner, reason_of
from tests.factories import phone
from tests.invariants import assert_invariants


def new_phone() -> pb.MemberIdentifier:
    return pb.MemberIdentifier(phone_number=phone().value)


def earn(partner: Partner, member: pb.MemberIdentifier, total_minor: int, **fields: object) -> pb.EarnPointsResponse:
    request = pb.EarnPointsRequest(
        member=member, receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=total_minor), **fields,
    )  # fmt: skip
    response: pb.EarnPointsResponse = partner.client.checkout.EarnPoints(request)
    return response


def test_cross_brand_journey(onboard: Callable[..., Partner], engine: Engine) -> None:
    store, shop = onboard(kind=admin_pb.PARTNER_KIND_STORE_CHAIN), onboard()
    member = new_phone()
    enrolled = store.client.checkout.EnrollMember(pb.EnrollMemberRequest(member=member))
    assert enrolled.newly_enrolled and enrolled.member.member_number.startswith("M")
    earned = earn(store, member, 12_345)
    assert earned.points_earned == 123 and earned.member_number == enrolled.member.member_number

    hold = shop.client.checkout.HoldPoints(
        pb.HoldPointsRequest(member=member, points=100, currency_code="EUR", receipt_id="W-1", ttl_seconds=60)
    ).hold
    assert hold.state == pb.HOLD_STATE_HELD and hold.value_minor == 100
    balance = shop.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert (balance.available_points, balance.held_points) == (23, 100)

    captured = shop.client.checkout.CaptureHold(pb.CaptureHoldRequest(hold_id=hold.hold_id, points=60))
    assert (captured.points_captured, captured.points_released) == (60, 40)
    assert captured.hold.state == pb.HOLD_STATE_CAPTURED

    refund = shop.client.checkout.ReturnPurchase(pb.ReturnPurchaseRequest(receipt_id="W-1", full_return=True))
    assert refund.points_restored == 60
    balance = store.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert (balance.available_points, balance.held_points, balance.debt_points) == (123, 0, 0)
    assert_invariants(engine)


def test_retry_with_same_request_id_replays_and_different_request_is_refused(
    onboard: Callable[..., Partner], engine: Engine
) -> None:
    shop = onboard()
    member = new_phone()
    request = pb.EarnPointsRequest(
        request_id="pos-42-attempt", member=member, receipt_id="R-42", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=5_000),
    )  # fmt: skip
    first = shop.client.checkout.EarnPoints(request)
    again = shop.client.checkout.EarnPoints(request)
    assert not first.idempotent_replay and again.idempotent_replay
    assert again.transaction_id == first.transaction_id and again.points_earned == 50

    changed = pb.EarnPointsRequest()
    changed.CopyFrom(request)
    changed.basket.total_minor = 9_000
    assert reason_of(lambda: shop.client.checkout.EarnPoints(changed)) == (
        grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_REUSED",
    )  # fmt: skip
    other_key = pb.EarnPointsRequest()
    other_key.CopyFrom(request)
    other_key.request_id = "pos-42-new-key"
    assert reason_of(lambda: shop.client.checkout.EarnPoints(other_key)) == (
        grpc.StatusCode.ALREADY_EXISTS, "RECEIPT_ALREADY_EARNED",
    )  # fmt: skip
    assert_invariants(engine)


def test_insufficient_points_is_stored_so_a_retry_cannot_flip_it(onboard: Callable[..., Partner]) -> None:
    shop = onboard()
    member = new_phone()
    earn(shop, member, 1_000)
    redeem = pb.RedeemPointsRequest(request_id="r-1", member=member, points=500, currency_code="EUR")
    assert reason_of(lambda: shop.client.checkout.RedeemPoints(redeem)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS",
    )  # fmt: skip
    earn(shop, member, 100_000)  # now the member could afford it
    assert reason_of(lambda: shop.client.checkout.RedeemPoints(redeem)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS",
    )  # fmt: skip


def test_partner_sees_only_members_it_dealt_with_and_its_own_holds(onboard: Callable[..., Partner]) -> None:
    first, second = onboard(), onboard()
    member = new_phone()
    earn(first, member, 10_000)
    lookup = pb.LookupMemberRequest(member=member)
    assert reason_of(lambda: second.client.checkout.LookupMember(lookup)) == (
        grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND",
    )  # fmt: skip
    found = first.client.checkout.LookupMember(lookup).member
    assert found.identifiers[0].masked_value.startswith("+44") and "*" in found.identifiers[0].masked_value
    hold = first.client.checkout.HoldPoints(pb.HoldPointsRequest(member=member, points=10, currency_code="EUR"))
    capture = pb.CaptureHoldRequest(hold_id=hold.hold.hold_id)
    assert reason_of(lambda: second.client.checkout.CaptureHold(capture)) == (
        grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND",
    )  # fmt: skip


def test_contract_limits_are_enforced(onboard: Callable[..., Partner]) -> None:
    terms = admin_pb.ContractTerms()
    terms.CopyFrom(DEFAULT_TERMS)
    terms.max_points_per_transaction = 200
    terms.max_points_share_of_basket = "0.5"
    terms.pending_days = 14
    shop = onboard(terms=terms)
    member = new_phone()
    assert reason_of(lambda: earn(shop, member, 50_000)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "POINTS_PER_TRANSACTION_LIMIT_EXCEEDED",
    )  # fmt: skip
    earned = earn(shop, member, 15_000)
    balance = shop.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert (balance.available_points, balance.pending_points) == (0, earned.points_earned)
    redeem = pb.RedeemPointsRequest(member=member, points=10, currency_code="EUR")
    assert reason_of(lambda: shop.client.checkout.RedeemPoints(redeem)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "BASKET_REQUIRED",
    )  # fmt: skip


def test_a_card_number_in_any_field_is_refused_and_nothing_is_written(
    onboard: Callable[..., Partner], engine: Engine
) -> None:
    shop = onboard()
    request = pb.EarnPointsRequest(
        member=new_phone(), receipt_id="R-1", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=1_000, lines=[pb.BasketLine(sku="5555-5555-5555-4444")]),
    )  # fmt: skip
    with engine.connect() as connection:
        before = connection.exec_driver_sql("SELECT COUNT(*) FROM members").scalar()
    assert reason_of(lambda: shop.client.checkout.EarnPoints(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "PAN_NOT_ALLOWED",
    )  # fmt: skip
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM members").scalar() == before


def test_an_unknown_enum_value_is_invalid_argument_not_internal(onboard: Callable[..., Partner]) -> None:
    shop = onboard()
    request = pb.EarnPointsRequest(
        member=new_phone(), receipt_id="R-1", enroll_if_unknown=True, channel=7,  # type: ignore[arg-type]
        basket=pb.Basket(currency_code="EUR", total_minor=1_000),
    )  # fmt: skip
    assert reason_of(lambda: shop.client.checkout.EarnPoints(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ENUM_VALUE",
    )  # fmt: skip
