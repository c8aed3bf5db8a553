"""Offline store items in settlement: late items as prior-period adjustments, redemptions on credit, the
store allowance. Each test's network reconciles every closed period when it ends (the ``network`` fixture)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from checkout.commands import Basket, EarnCommand, RedeemCommand
from checkout.offline import OfflineItem, OfflineItemResult
from checkout.session import PartnerRef
from members.identifiers import MemberIdentifier
from partners.rates import Billing
from programme.policy import NetworkPolicy, OfflinePolicy
from programme.services import create_policy_version
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import APRIL, MARCH, Network, facts, new_receipt, utc


def redemption(member: MemberIdentifier, points: int, business_time: datetime, receipt: str = "") -> OfflineItem:
    command = RedeemCommand(member, points, "EUR", receipt_id=receipt or new_receipt())
    return OfflineItem(uuid.uuid4().hex, business_time, command)


def earn(member: MemberIdentifier, points: int, business_time: datetime) -> OfflineItem:
    command = EarnCommand(member, new_receipt(), Basket("EUR", points * 100))
    return OfflineItem(uuid.uuid4().hex, business_time, command)


def submit(network: Network, partner: PartnerRef, items: list[OfflineItem], store: str) -> list[OfflineItemResult]:
    return network.checkout.submit_offline_batch(partner, store, list(items))


def test_items_from_a_closed_period_land_in_the_next_as_prior_period_adjustments(network: Network) -> None:
    shop = network.partner()
    member = phone()
    network.clock.set(utc("2026-03-20T10:00:00"))
    network.earn(shop, member, 300)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)

    network.clock.set(utc("2026-04-02T09:00:00"))  # the store comes back online
    late = utc("2026-03-31T18:00:00")
    redeemed, earned = submit(network, shop.ref, [redemption(member, 500, late), earn(member, 100, late)], "s-1")
    assert redeemed.redemption is not None and redeemed.redemption.debt_points == 200
    assert earned.earn is not None and earned.earn.debt_repaid_points == 100
    network.clock.set(utc("2026-05-01T00:00:00"))
    network.close(APRIL)

    assert facts(network.statement(APRIL, shop)) == sorted([
        (LineType.ISSUANCE, MARCH, earned.earn.transaction_id, 100, Decimal("0.012"), -120),
        (LineType.REDEMPTION, MARCH, redeemed.redemption.transaction_id, 500, Decimal("0.010"), 500),
    ])  # fmt: skip


def test_a_redemption_on_credit_settles_and_its_repayment_is_billed_to_the_repaying_issuer(network: Network) -> None:
    shop = network.partner()
    issuer = network.partner(Billing.ON_REDEMPTION)
    member = phone()
    network.clock.set(utc("2026-03-10T10:00:00"))
    network.earn(shop, member, 100)
    [redeemed] = submit(network, shop.ref, [redemption(member, 400, network.clock.now())], "s-1")
    assert redeemed.redemption is not None and redeemed.redemption.debt_points == 300
    network.earn(issuer, member, 1_000)  # repays the 300 first: points of the issuer's lot used up
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)

    statements = network.statements(MARCH)
    assert (LineType.REDEMPTION, "", "", 400, Decimal("0.010"), 400) in facts(statements[shop.code])
    assert (LineType.CONSUMPTION, "", "", 300, Decimal("0.012"), -360) in facts(statements[issuer.code])


def test_a_return_of_a_purchase_paid_on_credit_settles_and_reconciles(network: Network) -> None:
    shop = network.partner()
    member = phone()
    network.clock.set(utc("2026-03-10T10:00:00"))
    network.earn(shop, member, 100)
    [redeemed] = submit(network, shop.ref, [redemption(member, 400, network.clock.now(), "W-1")], "s-1")
    assert redeemed.redemption is not None and redeemed.redemption.debt_points == 300
    returned = network.return_purchase(shop, "W-1")
    assert returned.points_restored == 400  # 100 into the lot, 300 of debt cancelled
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)  # the fixture reconciles it

    lines = {fact[0]: fact[3:] for fact in facts(network.statement(MARCH, shop))}
    assert lines[LineType.REDEMPTION] == (400, Decimal("0.010"), 400)
    assert lines[LineType.REDEMPTION_REFUND] == (400, Decimal("0.010"), -400)


def test_a_return_gives_back_what_the_member_repaid_of_a_redemption_on_credit(network: Network) -> None:
    """The member's later points repaid the debt: a return gives those points back, into the lots that
    repaid it, and their issuer, billed for the repayment, is credited back; no point is lost."""
    shop = network.partner()
    issuer = network.partner(Billing.ON_REDEMPTION)
    member = phone()
    network.clock.set(utc("2026-03-10T10:00:00"))
    network.earn(shop, member, 100)
    [redeemed] = submit(network, shop.ref, [redemption(member, 400, network.clock.now(), "W-9")], "s-1")
    assert redeemed.redemption is not None and redeemed.redemption.debt_points == 300
    network.earn(issuer, member, 1_000)  # repays the 300 first
    returned = network.return_purchase(shop, "W-9")
    assert (returned.points_restored, returned.debt_created_points) == (400, 0)
    balance = network.checkout.get_balance(shop.ref, member)
    assert (balance.available_points, balance.debt_points) == (100 + 1_000, 0)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)  # the fixture reconciles it

    issuer_lines = {fact[0]: fact[3:] for fact in facts(network.statement(MARCH, issuer))}
    assert issuer_lines[LineType.CONSUMPTION] == (300, Decimal("0.012"), -360)
    assert issuer_lines[LineType.CONSUMPTION_REVERSAL] == (300, Decimal("0.012"), 360)


def test_the_store_allowance_bounds_all_members_of_a_store(network: Network) -> None:
    create_policy_version(
        network.uow, request_key(), created_by="tests", effective_from=None,
        policy=NetworkPolicy(offline=OfflinePolicy(member_daily_points=1_000, store_daily_points=1_500)),
    )  # fmt: skip
    shop = network.partner()
    network.clock.advance(timedelta(days=1))
    members = [phone() for _ in range(3)]
    for member in members:
        network.earn(shop, member, 1_000)
    now = network.clock.now()
    results = submit(network, shop.ref, [redemption(member, 600, now) for member in members], "s-1")
    other_store = submit(network, shop.ref, [redemption(members[2], 600, now)], "s-2")
    assert [result.error.reason if result.error else "OK" for result in results] == [
        "OK", "OK", "OFFLINE_ALLOWANCE_EXCEEDED"
    ]  # fmt: skip
    assert results[2].error is not None and results[2].error.metadata["scope"] == "STORE"
    assert other_store[0].redemption is not None and other_store[0].error is None
