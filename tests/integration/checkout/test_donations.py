"""Donations: a member gives points to a charity partner through another partner; settlement reimburses
the charity like any redeeming partner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from checkout.commands import DonateCommand, DonationResult
from checkout.errors import InsufficientPoints, NotACharity
from common.errors import CoalitionError
from members.identifiers import MemberIdentifier
from members.services import MemberNotFound
from partners.services import PartnerNotFound, PartnerSuspended, set_partner_suspended
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import MARCH, Brand, Network, facts, own_network, utc


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network on a database of its own, whose books must balance when the test ends."""
    with own_network(isolated_database_url) as network:
        yield network


def donate(network: Network, through: Brand, member: MemberIdentifier, points: int, charity: str) -> DonationResult:
    command = DonateCommand(member, points, charity)
    return network.checkout.donate_points(through.ref, uuid.uuid4().hex, command).result


def test_a_donation_is_a_redemption_at_the_charity_and_settles_like_one(network: Network) -> None:
    shop = network.partner()
    charity = network.partner(kind="CHARITY", reimbursement_rate="0.008")
    member = phone()
    network.earn(shop, member, 1_000)

    donated = donate(network, shop, member, 400, charity.code)
    assert (donated.points_donated, donated.charity_partner_code, donated.value_minor, donated.currency) == (
        400, charity.code, 400, "EUR"
    )  # fmt: skip
    assert network.checkout.get_balance(shop.ref, member).available_points == 600
    with pytest.raises(MemberNotFound):  # the charity was given points, not the member's name
        network.checkout.get_balance(charity.ref, member)

    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)
    assert [(fact[0], fact[3], fact[4], fact[5]) for fact in facts(network.statement(MARCH, charity))] == [
        (LineType.REDEMPTION, 400, Decimal("0.008"), 320)  # 400 x 0.008 EUR = 3.20, paid to the charity
    ]


def test_refusals_write_nothing(network: Network) -> None:
    shop, charity, other_charity = network.partner(), network.partner(kind="CHARITY"), network.partner(kind="CHARITY")
    member = phone()
    network.earn(shop, member, 100)
    set_partner_suspended(network.uow, request_key(), other_charity.code, is_suspended=True)
    refusals: list[tuple[type[CoalitionError], int, str]] = [
        (NotACharity, 10, shop.code),
        (PartnerNotFound, 10, "no-such-charity"),
        (PartnerSuspended, 10, other_charity.code),
        (InsufficientPoints, 101, charity.code),
    ]
    for error, points, code in refusals:
        with pytest.raises(error):
            donate(network, shop, member, points, code)
    assert network.scalar("SELECT COUNT(*) FROM journal_transactions WHERE kind = 'REDEEM'") == 0
    assert network.checkout.get_balance(shop.ref, member).available_points == 100
