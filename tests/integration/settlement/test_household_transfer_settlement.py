"""Settlement of a period with household transfers: points change owner, not issuer, so an issuer billed on
redemption pays once, when the recipient spends them, and the period closes, balances and reconciles
(the fixture checks the books and reconciles every closed period when the test ends)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from common.idempotency import RequestKey
from partners.rates import Billing
from programme.households import Households, TransferCommand
from programme.visibility import OPERATOR_STAFF
from server.app import held_points
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import MARCH, SETTINGS, Network, facts, own_network, utc

FEBRUARY = "2026-02"
STAFF = "operator:support-alice"


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    with own_network(isolated_database_url, start=utc("2026-02-02T10:00:00")) as network:
        yield network


def test_transferred_points_spent_elsewhere_bill_their_issuer_once(network: Network) -> None:
    households = Households(network.uow, identifier_pepper=SETTINGS.identifier_pepper, held_points=held_points)
    issuer = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012", reimbursement_rate="0.009")
    shop = network.partner()  # billed on issuance
    redeemer = network.partner(reimbursement_rate="0.010")
    sender, recipient = phone(), phone()
    network.earn(issuer, sender, 1_000)  # expires first: transferred first
    network.clock.set(utc("2026-02-03T10:00:00"))
    network.earn(shop, sender, 500)
    network.earn(shop, recipient, 0)  # enrols the recipient
    network.clock.set(utc("2026-03-01T00:00:00"))
    network.close(FEBRUARY)

    network.clock.set(utc("2026-03-05T10:00:00"))
    households.create(RequestKey(STAFF, request_key().key), [sender, recipient], STAFF)
    network.clock.set(utc("2026-03-13T10:00:00"))
    command = TransferCommand(sender, recipient, 1_200)  # the issuer's 1,000, then 200 of the shop's
    households.transfer(RequestKey(STAFF, request_key().key), OPERATOR_STAFF, command)
    network.clock.set(utc("2026-03-20T10:00:00"))
    network.redeem(redeemer, recipient, 1_100)  # the issuer's 1,000, then 100 of the shop's
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)

    statements = network.statements(MARCH)
    assert facts(statements[issuer.code]) == [
        (LineType.CONSUMPTION, "", "", 1_000, Decimal("0.012"), -1_200)  # billed once, on the recipient's spend
    ]
    assert facts(statements[redeemer.code]) == [(LineType.REDEMPTION, "", "", 1_100, Decimal("0.010"), 1_100)]
    assert shop.code not in statements or facts(statements[shop.code]) == []  # paid in February on issuance
    matrix = network.rows(
        "SELECT p.partner_code, c.points FROM settlement_matrix_cells c "
        "JOIN settlement_periods s ON s.id = c.period_id JOIN partners p ON p.id = c.issuer_partner_id "
        "WHERE s.label = :label ORDER BY p.partner_code",
        label=MARCH,
    )
    assert sorted((code, int(points)) for code, points in matrix) == sorted([(issuer.code, 1_000), (shop.code, 100)])
    assert network.checkout.get_balance(shop.ref, sender).available_points == 300
    assert network.checkout.get_balance(shop.ref, recipient).available_points == 100
