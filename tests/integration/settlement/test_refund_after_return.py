"""Known defect, pinned and not yet fixed: a redemption refunded after the purchase that funded it was returned.

A member earns points at an issuer billed on redemption (A) and spends some at another partner (B):
A is billed CONSUMPTION for them. The purchase at A is returned: A is credited CONSUMPTION_REVERSAL for
the spent points, which become the member's debt. Then B's redemption is returned too, and its refund
gives the points back into A's lot and credits A a second time for the same points. Nothing was
consumed in the end, yet A comes out 200 x 0.012 = 2.40 EUR ahead (the operator's margin 2.40 behind),
while the member has the points to spend again and still owes as many as debt. Points are money: the
operator has paid A for points nobody consumed, and A keeps that money if they lapse (breakage of an
issuer billed on redemption stays with it, DESIGN.md section 6). The same happens when the points
were transferred to a household member who spent them: the refund goes to that member, the debt
stays with the buyer.

The reviewer's suggested fix, still to be worked out (the household case most of all, where the debt
and the refund belong to different members): the refund would have to repay the member's debt from
that return first, rather than credit the points back and credit the issuer again.

The tests are strict xfails that fail on an assertion (the issuer's money first): once the defect is
fixed they pass, the strict marker turns that into a failure, and the marker must go.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.idempotency import RequestKey
from partners.rates import Billing
from programme.households import Households, TransferCommand
from programme.visibility import OPERATOR_STAFF
from server.app import held_points
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import (
    Network,
    close_first_quarter,
    new_receipt,
    own_network,
    position,
    utc,
)

STAFF = "operator:support-alice"
DEFECT = "known defect: a redemption refunded after its issuer's purchase was returned credits the issuer twice"


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    with own_network(isolated_database_url, start=utc("2026-01-05T10:00:00")) as network:
        yield network


def consumption_billed(found: tuple[dict[LineType, int], int]) -> tuple[int, int]:
    """(points billed as consumed net of those credited back, net in minor units) of one partner."""
    lines, net_minor = found
    return lines.get(LineType.CONSUMPTION, 0) - lines.get(LineType.CONSUMPTION_REVERSAL, 0), net_minor


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEFECT)
def test_a_refunded_redemption_of_a_returned_purchases_points_does_not_credit_the_issuer_twice(
    network: Network,
) -> None:
    issuer = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    redeemer = network.partner(reimbursement_rate="0.010")
    member, purchase, redemption = phone(), new_receipt(), new_receipt()
    network.earn(issuer, member, 500, receipt=purchase)
    network.clock.set(utc("2026-03-02T10:00:00"))
    network.redeem(redeemer, member, 200, receipt=redemption)  # the issuer's points: it is billed 2.40
    network.clock.set(utc("2026-03-05T10:00:00"))
    returned = network.return_purchase(issuer, purchase)
    assert (returned.points_reversed, returned.debt_created_points) == (500, 200)  # credited 2.40 back
    network.clock.set(utc("2026-03-06T10:00:00"))

    refunded = network.return_purchase(redeemer, redemption)

    assert refunded.points_restored == 200
    after_refund = position(network, issuer, member)
    found = close_first_quarter(network)
    # Both the purchase and the redemption are undone: the issuer is billed for no point in the end.
    # Expected, with the suggested fix: CONSUMPTION 200 (-2.40), CONSUMPTION_REVERSAL 200 (+2.40), net
    # 0.00 (its ISSUANCE and ISSUANCE_REVERSAL of 500 are priced at 0, as it is billed on redemption).
    # Today: CONSUMPTION 200, CONSUMPTION_REVERSAL 400 (the refund credits the same 200 again), net +2.40.
    # Asserted net of each other, so a fix that bills the debt's repayment anew (400 and 400) passes too.
    assert consumption_billed(found[issuer.code]) == (0, 0)
    # The member has nothing left of the purchase and owes nothing (today: 200 to spend, 200 owed).
    assert after_refund == (0, 0)
    # The redeemer is reimbursed for the 200 its till took and gives that back with the refund.
    assert found[redeemer.code] == ({LineType.REDEMPTION: 200, LineType.REDEMPTION_REFUND: 200}, 0)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEFECT)
def test_a_refunded_redemption_of_transferred_points_of_a_returned_purchase_does_not_credit_the_issuer_twice(
    network: Network,
) -> None:
    households = Households(network.uow, identifier_pepper=b"t", held_points=held_points)
    issuer = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    redeemer = network.partner(reimbursement_rate="0.010")
    sender, recipient, purchase, redemption = phone(), phone(), new_receipt(), new_receipt()
    network.earn(issuer, sender, 500, receipt=purchase)
    network.earn(redeemer, recipient, 0)  # enrols the recipient
    network.clock.set(utc("2026-02-09T10:00:00"))  # both enrolled a month before: old enough to transfer
    households.create(RequestKey(STAFF, request_key().key), [sender, recipient], STAFF)
    network.clock.set(utc("2026-02-17T10:00:00"))
    transfer = TransferCommand(sender, recipient, 500)
    households.transfer(RequestKey(STAFF, request_key().key), OPERATOR_STAFF, transfer)
    network.clock.set(utc("2026-03-02T10:00:00"))
    network.redeem(redeemer, recipient, 200, receipt=redemption)  # the issuer's points: it is billed 2.40
    network.clock.set(utc("2026-03-05T10:00:00"))
    returned = network.return_purchase(issuer, purchase)
    # 300 come back from the recipient; the 200 the recipient spent are the sender's debt (credited 2.40).
    assert (returned.points_reversed, returned.debt_created_points) == (500, 200)
    network.clock.set(utc("2026-03-06T10:00:00"))

    refunded = network.return_purchase(redeemer, redemption)

    assert refunded.points_restored == 200
    after_refund = position(network, issuer, sender), position(network, redeemer, recipient)
    found = close_first_quarter(network)
    # As above: expected CONSUMPTION 200, CONSUMPTION_REVERSAL 200, net 0.00; today the refund into the
    # recipient's lot credits the issuer 200 again (CONSUMPTION_REVERSAL 400, net +2.40).
    assert consumption_billed(found[issuer.code]) == (0, 0)
    # Nobody has a point of the purchase left, and the sender owes nothing (today: the recipient has
    # 200 to spend and the sender owes 200).
    assert after_refund == ((0, 0), (0, 0))
    assert found[redeemer.code] == ({LineType.REDEMPTION: 200, LineType.REDEMPTION_REFUND: 200}, 0)
