"""SubmitOfflineBatch over a real server and the SDK, on both databases: resends, allowances, debt."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from sqlalchemy import Engine

from tests.e2e.conftest import Partner
from tests.e2e.test_checkout_journey import earn, new_phone, reason_of
from tests.invariants import assert_invariants

APPLIED, REJECTED = pb.OFFLINE_ITEM_STATUS_APPLIED, pb.OFFLINE_ITEM_STATUS_REJECTED


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def offline_earn(member: pb.MemberIdentifier, total_minor: int, moment: datetime) -> pb.OfflineItem:
    earned = pb.OfflineEarn(
        member=member, receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=total_minor),
    )  # fmt: skip
    return pb.OfflineItem(request_id=uuid.uuid4().hex, business_time=at(moment), earn=earned)


def offline_redemption(member: pb.MemberIdentifier, points: int, moment: datetime) -> pb.OfflineItem:
    redeemed = pb.OfflineRedemption(
        member=member, points=points, currency_code="EUR", receipt_id=f"R-{uuid.uuid4().hex[:8]}"
    )
    return pb.OfflineItem(request_id=uuid.uuid4().hex, business_time=at(moment), redemption=redeemed)


def submit(store: Partner, items: list[pb.OfflineItem], store_id: str = "store-1") -> list[pb.OfflineItemResult]:
    response = store.client.checkout.SubmitOfflineBatch(pb.SubmitOfflineBatchRequest(store_id=store_id, items=items))
    assert [result.request_id for result in response.results] == [item.request_id for item in items]
    return list(response.results)


def outcomes(results: list[pb.OfflineItemResult]) -> list[tuple[int, str, str]]:
    return [(result.status, result.error_code, result.reason) for result in results]


@pytest.fixture
def store(onboard: Callable[..., Partner]) -> Partner:
    return onboard(kind=admin_pb.PARTNER_KIND_STORE_CHAIN)


def test_a_batch_answers_each_item_and_resending_it_whole_or_in_half_is_safe(store: Partner, engine: Engine) -> None:
    member, unknown = new_phone(), new_phone()
    now = datetime.now(UTC)  # after the store's contract took effect: items are priced at their own time
    items = [
        offline_earn(member, 150_000, now),
        offline_redemption(member, 400, now + timedelta(seconds=1)),
        offline_redemption(member, 1_700, now + timedelta(seconds=2)),  # beyond the 2,000 a day default
        pb.OfflineItem(request_id=uuid.uuid4().hex, business_time=at(now)),  # no operation
        offline_earn(member, 1_000, now + timedelta(hours=1)),  # from the future
        offline_redemption(unknown, 10, now),
    ]
    expected = [
        (APPLIED, "", ""), (APPLIED, "", ""),
        (REJECTED, "FAILED_PRECONDITION", "OFFLINE_ALLOWANCE_EXCEEDED"),
        (REJECTED, "INVALID_ARGUMENT", "MISSING_FIELD"),
        (REJECTED, "INVALID_ARGUMENT", "INVALID_BUSINESS_TIME"),
        (REJECTED, "NOT_FOUND", "MEMBER_NOT_FOUND"),
    ]  # fmt: skip
    first = submit(store, items[:2])  # the connection dropped after two items
    assert outcomes(first) == expected[:2]
    assert first[0].earn.points_earned == 1_500 and first[0].earn.member_number
    assert (first[1].redemption.points_redeemed, first[1].redemption.debt_points) == (400, 0)
    assert first[1].redemption.value_minor == 400

    whole = submit(store, items)
    assert outcomes(whole) == expected
    assert [result.idempotent_replay for result in whole] == [True, True, False, False, False, False]
    assert whole[0].earn == first[0].earn and whole[1].redemption == first[1].redemption
    assert whole[2].metadata["scope"] == "MEMBER" and whole[2].metadata["limit"] == "2000"

    again = submit(store, items)
    assert outcomes(again) == expected
    assert again[2].idempotent_replay  # a business refusal is stored: a resend cannot flip it
    balance = store.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert (balance.available_points, balance.debt_points) == (1_100, 0)
    assert_invariants(engine)


def test_a_redemption_the_balance_no_longer_covers_syncs_into_debt_and_a_later_earn_repays_it(
    store: Partner, engine: Engine
) -> None:
    member = new_phone()
    earn(store, member, 10_000)  # 100 points, online
    [synced] = submit(store, [offline_redemption(member, 400, datetime.now(UTC))])
    assert synced.status == APPLIED
    assert (synced.redemption.points_redeemed, synced.redemption.debt_points) == (400, 300)
    balance = store.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert (balance.available_points, balance.debt_points) == (0, 300)

    repaid = earn(store, member, 50_000)
    assert (repaid.points_earned, repaid.debt_repaid_points) == (500, 300)
    balance = store.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
    assert (balance.available_points, balance.debt_points) == (200, 0)
    assert_invariants(engine)


def test_a_batch_without_a_store_or_items_is_refused_whole(store: Partner) -> None:
    item = offline_earn(new_phone(), 100, datetime.now(UTC))
    for request in (pb.SubmitOfflineBatchRequest(items=[item]), pb.SubmitOfflineBatchRequest(store_id="store-1")):
        code, reason = reason_of(lambda: store.client.checkout.SubmitOfflineBatch(request))  # noqa: B023
        assert (code.name, reason) == ("INVALID_ARGUMENT", "INVALID_OFFLINE_BATCH")
