"""Returns of purchases whose points a member gave to a household member, and their settlement.

A return takes the purchase's still-unspent points back from wherever transfers moved them (the
purchase's own lot first, then the household members' lots its points went to, however many
transfers on), and only what is missing after that becomes the buyer's debt. Settlement counts those
lots as the purchase's own: points taken back from them were never spent, so an issuer billed on
redemption is neither billed nor credited for them; it is credited (CONSUMPTION_REVERSAL) only for
the points it was billed for because a household member spent them. Each network balances its books
and reconciles every closed period when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from checkout.session import CheckoutSettings
from common.idempotency import RequestKey
from members.identifiers import MemberIdentifier
from partners.rates import Billing
from programme.expiry import expire_lapsed_points
from programme.households import Households, TransferCommand
from programme.partner_programme import PartnerProgramme, PromotionCommand
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
SETTINGS = CheckoutSettings(identifier_pepper=b"t", points_lifetime_days=70)  # earned 2026-01-05: lapse 03-16


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    with own_network(isolated_database_url, start=utc("2026-01-05T10:00:00"), settings=SETTINGS) as network:
        yield network


@pytest.fixture
def households(network: Network) -> Households:
    return Households(network.uow, identifier_pepper=b"t", held_points=held_points)


def form(households: Households, network: Network, *members: MemberIdentifier) -> None:
    """One household of ``members`` (enrolled on 2026-01-05), old enough to transfer from 2026-02-17 on."""
    network.clock.set(utc("2026-02-09T10:00:00"))
    households.create(RequestKey(STAFF, request_key().key), list(members), STAFF)


def send(households: Households, sender: MemberIdentifier, recipient: MemberIdentifier, points: int) -> None:
    command = TransferCommand(sender, recipient, points)
    households.transfer(RequestKey(STAFF, request_key().key), OPERATOR_STAFF, command)


def test_an_issuer_is_not_paid_for_transferred_points_of_a_returned_purchase_that_lapse(
    network: Network, households: Households
) -> None:
    store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    sender, recipient, receipt = phone(), phone(), new_receipt()
    network.earn(store, sender, 500, receipt=receipt)  # lot expires 2026-03-16
    network.earn(store, recipient, 1)
    form(households, network, sender, recipient)
    network.clock.set(utc("2026-02-17T10:00:00"))
    send(households, sender, recipient, 500)
    network.clock.set(utc("2026-03-05T10:00:00"))

    returned = network.return_purchase(store, receipt)

    # The 500 come back from the recipient, who still had them: the sender owes nothing.
    assert (returned.points_reversed, returned.debt_created_points) == (500, 0)
    assert (position(network, store, sender), position(network, store, recipient)) == ((0, 0), (1, 0))
    network.clock.set(utc("2026-03-20T10:00:00"))
    assert expire_lapsed_points(network.uow, held_points).points_expired == 1  # the recipient's own point
    found = close_first_quarter(network)[store.code]
    # Nobody ever spent a point of this issuer: it neither pays nor is paid.
    assert (found[0].get(LineType.CONSUMPTION, 0), found[0].get(LineType.CONSUMPTION_REVERSAL, 0), found[1]) == (
        0, 0, 0,
    )  # fmt: skip


def test_points_a_household_member_spent_are_billed_then_credited_back_and_only_they_become_debt(
    network: Network, households: Households
) -> None:
    store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    other = network.partner(Billing.ON_REDEMPTION, issuance_price="0.011")
    redeemer = network.partner(reimbursement_rate="0.010")
    sender, recipient, receipt = phone(), phone(), new_receipt()
    network.earn(store, sender, 500, receipt=receipt)  # expires with the next, but was earned first
    network.earn(other, sender, 50)
    network.earn(redeemer, recipient, 0)  # enrols the recipient
    form(households, network, sender, recipient)
    network.clock.set(utc("2026-02-17T10:00:00"))
    send(households, sender, recipient, 500)  # all of the store's lot
    network.clock.set(utc("2026-03-02T10:00:00"))
    network.redeem(redeemer, recipient, 200)  # billed to the store: its points, spent
    network.clock.set(utc("2026-03-05T10:00:00"))

    returned = network.return_purchase(store, receipt)

    # 300 unspent come back from the recipient; then the sender's own 50 (the other issuer's, used up
    # covering the return); the 150 still missing are the sender's debt.
    assert (returned.points_reversed, returned.debt_created_points) == (500, 150)
    assert position(network, other, sender) == (0, 150)
    assert position(network, redeemer, recipient) == (0, 0)
    network.clock.set(utc("2026-03-10T10:00:00"))
    assert network.earn(store, sender, 150).debt_repaid_points == 150  # repaying is spending: billed

    found = close_first_quarter(network)
    # The store is billed for the 200 the recipient spent and credited them back with the return (the
    # purchase they came from is undone), then billed for the 150 its new points repaid: 150 x 0.012.
    assert found[store.code] == (
        {LineType.ISSUANCE: 650, LineType.CONSUMPTION: 350, LineType.ISSUANCE_REVERSAL: 500,
         LineType.CONSUMPTION_REVERSAL: 200},
        -180,
    )  # fmt: skip
    # The other issuer's 50 covered the return: spent, billed at its price (0.55 EUR).
    assert found[other.code] == ({LineType.ISSUANCE: 50, LineType.CONSUMPTION: 50}, -55)
    # The redeemer is reimbursed for the 200 its till took, whatever happened to the purchase since.
    assert found[redeemer.code] == ({LineType.REDEMPTION: 200}, 200)


def test_an_issuer_billed_on_issuance_gets_back_what_it_paid_and_a_chain_of_transfers_is_followed(
    network: Network, households: Households
) -> None:
    store = network.partner(issuance_price="0.012")  # billed on issuance
    redeemer = network.partner(issuance_price="0.012", reimbursement_rate="0.010")
    sender, recipient, third, receipt = phone(), phone(), phone(), new_receipt()
    network.earn(store, sender, 500, receipt=receipt)
    network.earn(redeemer, recipient, 0)
    network.earn(redeemer, third, 0)
    network.clock.set(utc("2026-01-20T10:00:00"))
    network.earn(redeemer, recipient, 30)  # the recipient's own, expiring after the transferred points
    form(households, network, sender, recipient, third)
    network.clock.set(utc("2026-02-17T10:00:00"))
    send(households, sender, recipient, 400)  # the sender keeps 100 of the purchase's lot
    network.clock.set(utc("2026-02-18T10:00:00"))
    send(households, recipient, third, 150)  # 150 of those 400 move on
    network.clock.set(utc("2026-03-02T10:00:00"))
    network.redeem(redeemer, recipient, 100)  # 100 of the 250 the recipient has left of them
    network.clock.set(utc("2026-03-05T10:00:00"))

    first = network.return_purchase(store, receipt, returned_minor=25_000)  # half: 250 points

    # The purchase's own lot first (100), then the recipient's (150): the recipient's own 30 stay.
    assert (first.points_reversed, first.debt_created_points) == (250, 0)
    assert [position(network, redeemer, member) for member in (recipient, third)] == [(30, 0), (150, 0)]
    assert position(network, store, sender) == (0, 0)

    second = network.return_purchase(store, receipt)  # the other half

    # Two transfers on, the third member's 150; the 100 the recipient spent are the sender's to owe.
    assert (second.points_reversed, second.debt_created_points) == (250, 100)
    assert [position(network, redeemer, member) for member in (recipient, third)] == [(30, 0), (0, 0)]
    assert position(network, store, sender) == (0, 100)
    found = close_first_quarter(network)
    # Billed 6.00 for the 500 it issued, credited 6.00 when they were all taken back.
    assert found[store.code] == ({LineType.ISSUANCE: 500, LineType.ISSUANCE_REVERSAL: 500}, 0)
    assert found[redeemer.code] == ({LineType.ISSUANCE: 30, LineType.REDEMPTION: 100}, 100 - 36)


def test_transferred_points_that_lapsed_before_the_return_count_as_taken_back(
    network: Network, households: Households
) -> None:
    store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    sender, recipient, receipt = phone(), phone(), new_receipt()
    network.earn(store, sender, 500, receipt=receipt)
    network.earn(store, recipient, 0)
    form(households, network, sender, recipient)
    network.clock.set(utc("2026-02-17T10:00:00"))
    send(households, sender, recipient, 500)
    network.clock.set(utc("2026-03-20T10:00:00"))
    assert expire_lapsed_points(network.uow, held_points).points_expired == 500  # unspent, with the recipient

    returned = network.return_purchase(store, receipt)

    # Already gone unspent: nothing left to take, nothing to owe, nothing to post.
    assert (returned.points_reversed, returned.debt_created_points, returned.reversal_transaction_id) == (500, 0, "")
    assert position(network, store, sender) == (0, 0)
    found = close_first_quarter(network)[store.code]
    assert found == ({LineType.ISSUANCE: 500, LineType.BREAKAGE: 500}, 0)


def test_a_promotions_bonus_points_are_taken_back_from_the_household_member_too(
    network: Network, households: Households
) -> None:
    store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    now = network.clock.now()
    PartnerProgramme(network.uow).create_promotion(
        request_key(), store.ref.partner_id, PromotionCommand("Half again", 50, now, now + timedelta(days=30))
    )
    sender, recipient, receipt = phone(), phone(), new_receipt()
    network.earn(store, sender, 200, receipt=receipt)  # +100 of the promotion: a lot of its own, the store's
    network.earn(store, recipient, 0)
    form(households, network, sender, recipient)
    network.clock.set(utc("2026-02-17T10:00:00"))
    send(households, sender, recipient, 300)  # both lots
    network.clock.set(utc("2026-03-05T10:00:00"))

    returned = network.return_purchase(store, receipt)

    assert (returned.points_reversed, returned.bonus_points_reversed, returned.debt_created_points) == (200, 100, 0)
    assert (position(network, store, sender), position(network, store, recipient)) == ((0, 0), (0, 0))
    found = close_first_quarter(network)[store.code]
    assert found == ({LineType.ISSUANCE: 300, LineType.ISSUANCE_REVERSAL: 300}, 0)


def test_points_given_back_to_the_buyer_are_still_the_purchases_own_lot(
    network: Network, households: Households
) -> None:
    store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    other = network.partner(Billing.ON_REDEMPTION, issuance_price="0.011")
    redeemer = network.partner(reimbursement_rate="0.010")
    sender, recipient, receipt = phone(), phone(), new_receipt()
    network.earn(store, sender, 500, receipt=receipt)
    network.clock.set(utc("2026-01-06T10:00:00"))
    network.earn(other, sender, 50)  # expires a day after the purchase's points
    network.earn(redeemer, recipient, 0)
    form(households, network, sender, recipient)
    network.clock.set(utc("2026-02-17T10:00:00"))
    send(households, sender, recipient, 500)
    network.clock.set(utc("2026-02-18T10:00:00"))
    send(households, recipient, sender, 300)  # back to the buyer, in a lot of theirs named after the purchase's
    network.clock.set(utc("2026-03-02T10:00:00"))
    network.redeem(redeemer, sender, 100)  # from the 300 given back: they expire first

    first = network.return_purchase(store, receipt, returned_minor=10_000)
    second = network.return_purchase(store, receipt)

    # The recipient's 200 go first, then the 200 the buyer has left of those given back; the other
    # issuer's 50 cover part of the 100 the buyer spent, and the last 50 are owed.
    assert [(first.points_reversed, first.debt_created_points), (second.points_reversed,
            second.debt_created_points)] == [(100, 0), (400, 50)]  # fmt: skip
    assert (position(network, store, sender), position(network, redeemer, recipient)) == ((0, 50), (0, 0))
    found = close_first_quarter(network)
    # The store is billed for the 100 the buyer spent and credited them back; nothing else of its moves.
    assert found[store.code] == (
        {LineType.ISSUANCE: 500, LineType.CONSUMPTION: 100, LineType.ISSUANCE_REVERSAL: 500,
         LineType.CONSUMPTION_REVERSAL: 100},
        0,
    )  # fmt: skip
    assert found[other.code] == ({LineType.ISSUANCE: 50, LineType.CONSUMPTION: 50}, -55)
