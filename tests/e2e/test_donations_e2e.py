"""DonatePoints over a real server: a partner gives a member's points to a charity partner."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from tests.e2e.conftest import Partner, reason_of
from tests.factories import phone


def test_a_member_gives_points_to_a_charity_through_a_partner(onboard: Callable[..., Partner]) -> None:
    shop, charity = onboard(), onboard(kind=admin_pb.PARTNER_KIND_CHARITY)
    member = pb.MemberIdentifier(phone_number=phone().value)
    shop.client.checkout.EarnPoints(pb.EarnPointsRequest(
        member=member, receipt_id="R-1", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=50_000),
    ))  # fmt: skip
    request = pb.DonatePointsRequest(
        request_id=uuid.uuid4().hex, member=member, points=200, charity_partner_id=charity.partner_id
    )

    first, again = shop.client.checkout.DonatePoints(request), shop.client.checkout.DonatePoints(request)

    assert (first.points_donated, first.charity_partner_id, first.value_minor, first.idempotent_replay) == (
        200, charity.partner_id, 200, False
    )  # fmt: skip
    assert (again.transaction_id, again.idempotent_replay) == (first.transaction_id, True)
    balance = shop.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert balance.available_points == 300
    assert reason_of(lambda: shop.client.checkout.DonatePoints(pb.DonatePointsRequest(
        request_id=uuid.uuid4().hex, member=member, points=10, charity_partner_id=shop.partner_id,
    ))) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_CHARITY")  # fmt: skip
    assert reason_of(lambda: shop.client.checkout.DonatePoints(pb.DonatePointsRequest(
        request_id=uuid.uuid4().hex, member=member, points=301, charity_partner_id=charity.partner_id,
    ))) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")  # fmt: skip
    assert reason_of(lambda: shop.client.checkout.DonatePoints(pb.DonatePointsRequest(
        request_id=uuid.uuid4().hex, member=member, points=10, charity_partner_id="",
    ))) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD")  # fmt: skip
