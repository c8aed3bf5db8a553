"""Support goodwill on a real database: thresholds, the second person, the audit trail, the books and
settlement."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from checkout.commands import HoldCommand
from common.errors import CoalitionError
from common.idempotency import RequestKey
from members.identifiers import IdentifierKind, MemberIdentifier
from members.services import MemberNotFound
from partners.rates import Billing
from programme.goodwill import (
    AdjustmentAlreadyDecided,
    AdjustmentCommand,
    AdjustmentView,
    ApproverIsRequester,
    GoodwillDesk,
    InsufficientPoints,
    InvalidAdjustment,
    UnknownReasonCode,
)
from server.app import held_points
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import MARCH, SETTINGS, Network, facts, own_network, utc

ALICE, BOB = "support:alice", "support:bob"


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network on a database of its own, whose books must balance when the test ends."""
    with own_network(isolated_database_url) as network:
        yield network


@pytest.fixture
def desk(network: Network) -> GoodwillDesk:
    return GoodwillDesk(network.uow, identifier_pepper=SETTINGS.identifier_pepper, held_points=held_points)


def ask(desk: GoodwillDesk, member: MemberIdentifier, direction: str, points: int, by: str = ALICE,
        reason: str = "SERVICE_RECOVERY") -> AdjustmentView:  # fmt: skip
    command = AdjustmentCommand(member, direction, points, reason, "parcel lost, customer called")
    return desk.request(RequestKey(by, request_key().key), command, by).result


def available(network: Network, shop: object, member: MemberIdentifier) -> int:
    return network.checkout.get_balance(shop, member).available_points  # type: ignore[arg-type]


def test_small_adjustments_apply_at_once_and_large_ones_wait_for_a_second_person(
    network: Network, desk: GoodwillDesk
) -> None:
    shop = network.partner()
    member = phone()
    earned = network.earn(shop, member, 2_000)
    number = MemberIdentifier(IdentifierKind.MEMBER_NUMBER, earned.member_number)

    small = ask(desk, number, "GRANT", 1_000)  # the threshold itself needs no approval
    assert (small.status, small.needs_approval, small.decided_by, small.transaction_id != "") == (
        "APPLIED", False, ALICE, True
    )  # fmt: skip
    assert available(network, shop.ref, member) == 3_000

    large = ask(desk, member, "DEDUCT", 1_500)
    assert (large.status, large.needs_approval, large.transaction_id) == ("PENDING", True, "")
    assert available(network, shop.ref, member) == 3_000

    with pytest.raises(ApproverIsRequester):
        desk.approve(RequestKey(ALICE, request_key().key), large.adjustment_id, ALICE, "")
    approved = desk.approve(RequestKey(BOB, request_key().key), large.adjustment_id, BOB, "checked the order").result
    assert (approved.status, approved.requested_by, approved.decided_by, approved.decision_note) == (
        "APPLIED", ALICE, BOB, "checked the order"
    )  # fmt: skip
    assert available(network, shop.ref, member) == 1_500
    with pytest.raises(AdjustmentAlreadyDecided):
        desk.reject(RequestKey(BOB, request_key().key), large.adjustment_id, BOB, "")

    trail = desk.list(status="", member_number=earned.member_number, page_size=10, page_token="").items
    assert [(view.direction, view.points, view.requested_by, view.decided_by) for view in trail] == [
        ("GRANT", 1_000, ALICE, ALICE), ("DEDUCT", 1_500, ALICE, BOB)
    ]  # fmt: skip
    rows = network.rows("SELECT kind, points FROM journal_transactions WHERE kind = 'ADJUSTMENT' ORDER BY id")
    assert [(kind, int(points)) for kind, points in rows] == [("ADJUSTMENT", 1_000), ("ADJUSTMENT", 1_500)]


def test_rejected_and_refused_adjustments_write_nothing_to_the_books(network: Network, desk: GoodwillDesk) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 300)
    pending = ask(desk, member, "GRANT", 5_000)
    rejected = desk.reject(RequestKey(BOB, request_key().key), pending.adjustment_id, BOB, "no evidence").result
    assert (rejected.status, rejected.decided_by, rejected.transaction_id) == ("REJECTED", BOB, "")

    refusals: list[tuple[type[CoalitionError], object]] = [
        (InsufficientPoints, lambda: ask(desk, member, "DEDUCT", 301)),
        (UnknownReasonCode, lambda: ask(desk, member, "GRANT", 10, reason="BIRTHDAY")),
        (InvalidAdjustment, lambda: ask(desk, member, "GRANT", 0)),
        (InvalidAdjustment, lambda: ask(desk, member, "TAKE", 10)),
        (MemberNotFound, lambda: ask(desk, phone(), "GRANT", 10)),
    ]
    for error, call in refusals:
        with pytest.raises(error):
            call()  # type: ignore[operator]
    assert network.scalar("SELECT COUNT(*) FROM journal_transactions WHERE kind = 'ADJUSTMENT'") == 0
    assert desk.list(status="PENDING", member_number="", page_size=10, page_token="").items == []
    assert available(network, shop.ref, member) == 300


def test_a_deduction_never_takes_held_points(network: Network, desk: GoodwillDesk) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 500)
    network.checkout.hold_points(shop.ref, request_key().key, HoldCommand(member, 400, 300, "EUR"))

    with pytest.raises(InsufficientPoints):
        ask(desk, member, "DEDUCT", 101)
    assert ask(desk, member, "DEDUCT", 100).status == "APPLIED"


def test_two_approvers_at_once_apply_an_adjustment_once(network: Network, desk: GoodwillDesk) -> None:
    member = phone()
    network.earn(network.partner(), member, 10)
    pending = ask(desk, member, "GRANT", 2_000)

    outcomes: list[str] = []

    def approve(who: str) -> None:
        try:
            desk.approve(RequestKey(who, request_key().key), pending.adjustment_id, who, "")
            outcomes.append("applied")
        except AdjustmentAlreadyDecided:
            outcomes.append("already decided")

    threads = [threading.Thread(target=approve, args=(who,)) for who in (BOB, "support:carol", "support:dan")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already decided", "already decided", "applied"]
    assert network.scalar("SELECT COUNT(*) FROM journal_transactions WHERE kind = 'ADJUSTMENT'") == 1


def test_settlement_reports_deducted_points_of_on_redemption_lots_and_the_operator_pays_for_grants(
    network: Network, desk: GoodwillDesk
) -> None:
    issuer = network.partner(billing=Billing.ON_REDEMPTION)
    redeemer = network.partner()
    member = phone()
    network.earn(issuer, member, 1_000)
    ask(desk, member, "DEDUCT", 200)  # from the issuer's lot: never spent, never billed
    ask(desk, member, "GRANT", 500)  # the operator's lot
    network.redeem(redeemer, member, 1_300)  # 800 of the issuer's lot, then 500 of the operator's

    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)
    issuer_lines = {fact[0]: (fact[3], fact[4], fact[5]) for fact in facts(network.statement(MARCH, issuer))}
    assert issuer_lines == {
        LineType.ISSUANCE: (1_000, 0, 0),  # billed on redemption: shown at 0
        LineType.CONSUMPTION: (800, Decimal("0.012"), -960),
        LineType.ADJUSTMENT: (200, 0, 0),  # deducted, never spent: reported, not billed
    }
    assert [fact[:4] for fact in facts(network.statement(MARCH, redeemer))] == [
        (LineType.REDEMPTION, "", "", 1_300)
    ]  # the operator reimburses all of it, its own 500 points included


def test_a_return_does_not_take_back_points_support_already_deducted(network: Network, desk: GoodwillDesk) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 800, receipt="R-1")
    ask(desk, member, "DEDUCT", 500)  # from the purchase's own lot

    returned = network.return_purchase(shop, "R-1")

    assert (returned.points_reversed, returned.debt_created_points) == (800, 0)
    assert available(network, shop.ref, member) == 0  # 300 taken back, 500 already gone
