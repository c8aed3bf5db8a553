"""Returns and late items after a close, and returns of points billed on redemption, end to end."""

from __future__ import annotations

from decimal import Decimal

import pytest

from checkout.commands import Basket
from partners.rates import Billing
from settlement.netting import LineType
from tests.factories import phone
from tests.integration.settlement.harness import (
    APRIL,
    MARCH,
    Brand,
    LineFact,
    Network,
    facts,
    nets_plus_margin,
    new_receipt,
    utc,
)

ISSUANCE = LineType.ISSUANCE
ISSUANCE_REVERSAL = LineType.ISSUANCE_REVERSAL
CONSUMPTION = LineType.CONSUMPTION
CONSUMPTION_REVERSAL = LineType.CONSUMPTION_REVERSAL
REDEMPTION = LineType.REDEMPTION
REDEMPTION_REFUND = LineType.REDEMPTION_REFUND


def fact(kind: LineType, points: int, price: str, amount_minor: int, prior: str = "", reference: str = "") -> LineFact:
    return (kind, prior, reference, points, Decimal(price), amount_minor)


def march_purchase_paid_partly_with_points(network: Network, brand: Brand) -> tuple[str, str, str]:
    """A member earns 2,000 points, then pays 10.00 of a 1,000.00 receipt with 1,000 of them and earns 900.

    Returns the receipt and the public ids of its redemption and its earn.
    """
    member, receipt = phone(), new_receipt()
    network.earn(brand, member, 2_000)
    redeemed = network.redeem(brand, member, 1_000, receipt=receipt)
    earned = network.earn_basket(brand, member, Basket("EUR", 100_000, paid_with_points_minor=10_000), receipt=receipt)
    assert earned.points_earned == 900
    return receipt, redeemed.transaction_id, earned.transaction_id


def test_returns_after_close_land_in_the_next_period_as_labelled_adjustments(network: Network) -> None:
    a = network.partner()
    c = network.partner(Billing.ON_REDEMPTION, reimbursement_rate="0.009")
    network.clock.set(utc("2026-03-10T10:00:00"))
    a_receipt, a_redemption, a_earn = march_purchase_paid_partly_with_points(network, a)
    c_receipt, c_redemption, c_earn = march_purchase_paid_partly_with_points(network, c)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)
    march = network.statements(MARCH)
    march_exports = {view.statement_id: network.csv(view.statement_id) for view in march.values()}
    march_rows = network.frozen_rows(MARCH)

    network.clock.set(utc("2026-04-05T12:00:00"))
    returned = [network.return_purchase(brand, receipt, returned_minor=50_000) for brand, receipt in
                ((a, a_receipt), (c, c_receipt))]  # fmt: skip
    network.clock.set(utc("2026-05-01T00:00:00"))
    network.close(APRIL)

    assert [(result.points_reversed, result.points_restored, result.debt_created_points) for result in returned] == [
        (450, 500, 0)
    ] * 2
    assert facts(march[a.code]) == sorted([
        fact(ISSUANCE, 2_900, "0.012", -3_480), fact(REDEMPTION, 1_000, "0.010", 1_000),
    ])  # fmt: skip
    assert facts(march[c.code]) == sorted([
        fact(ISSUANCE, 2_900, "0", 0), fact(CONSUMPTION, 1_000, "0.012", -1_200), fact(REDEMPTION, 1_000, "0.009", 900),
    ])  # fmt: skip
    april = network.statements(APRIL)
    assert facts(april[a.code]) == sorted([
        fact(ISSUANCE_REVERSAL, 450, "0.012", 540, MARCH, a_earn),
        fact(REDEMPTION_REFUND, 500, "0.010", -500, MARCH, a_redemption),
    ])  # fmt: skip
    # C is billed on redemption: the 500 points given back into its lot are credited, the 450 taken back
    # from the returned purchase's own lot were never spent and cost nothing.
    assert facts(april[c.code]) == sorted([
        fact(ISSUANCE_REVERSAL, 450, "0", 0, MARCH, c_earn),
        fact(CONSUMPTION_REVERSAL, 500, "0.012", 600, MARCH, c_redemption),
        fact(REDEMPTION_REFUND, 500, "0.009", -450, MARCH, c_redemption),
    ])  # fmt: skip
    assert all("prior-period adjustment for 2026-03" in line.description for line in april[a.code].lines)
    assert [(view.opening_position_minor, view.net_minor, view.closing_position_minor)
            for view in (april[a.code], april[c.code])] == [(-2_480, 40, -2_440), (-300, 150, -150)]  # fmt: skip
    assert network.statements(MARCH) == march
    assert {statement_id: network.csv(statement_id) for statement_id in march_exports} == march_exports
    assert network.frozen_rows(MARCH) == march_rows


def test_an_item_arriving_late_for_a_closed_period_lands_in_the_next_one(network: Network) -> None:
    a = network.partner()
    member = phone()
    network.clock.set(utc("2026-03-10T10:00:00"))
    network.earn(a, member, 1_000)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)
    march = network.statements(MARCH)
    march_rows = network.frozen_rows(MARCH)

    # A terminal that was offline on the evening of 31 March sends its sales after March closed.
    offline = network.desk(utc("2026-03-31T18:00:00"))
    late_earn = offline.earn(a, member, 300).transaction_id
    late_redemption = offline.redeem(a, member, 100).transaction_id
    network.clock.set(utc("2026-04-02T09:00:00"))
    on_time_earn = network.earn(a, member, 50)
    rerun = network.close(MARCH)
    network.clock.set(utc("2026-05-01T00:00:00"))
    network.close(APRIL)

    business_time = network.scalar(
        "SELECT business_time FROM journal_transactions WHERE public_id = :id", id=late_earn
    )  # fmt: skip
    assert str(business_time).startswith("2026-03-31 18:00:00")
    assert not rerun.newly_closed
    assert network.statements(MARCH) == march
    assert network.frozen_rows(MARCH) == march_rows
    assert on_time_earn.points_earned == 50
    assert facts(network.statement(APRIL, a)) == sorted([
        fact(ISSUANCE, 50, "0.012", -60),
        fact(ISSUANCE, 300, "0.012", -360, MARCH, late_earn),
        fact(REDEMPTION, 100, "0.010", 100, MARCH, late_redemption),
    ])  # fmt: skip
    assert network.rows(
        "SELECT p.label FROM settlement_assignments s JOIN settlement_periods p ON p.id = s.period_id "
        "JOIN journal_transactions t ON t.id = s.transaction_id WHERE t.public_id IN (:earn, :redemption)",
        earn=late_earn, redemption=late_redemption,
    ) == [(APRIL,), (APRIL,)]  # fmt: skip


def lot_movements(network: Network, kind: str) -> list[tuple[int, int]]:
    """(issuer partner id, points delta) of every lot movement of ``kind``."""
    return network.rows(
        "SELECT l.issuer_partner_id, m.points_delta FROM lot_movements m JOIN lots l ON l.id = m.lot_id "
        "WHERE m.kind = :kind ORDER BY m.id",
        kind=kind,
    )


@pytest.mark.parametrize("a_billing", list(Billing))
def test_a_return_that_takes_another_issuers_points_bills_them_as_spent(network: Network, a_billing: Billing) -> None:
    a, b = network.partner(a_billing), network.partner()
    c = network.partner(Billing.ON_REDEMPTION, reimbursement_rate="0.009")
    member, c_receipt = phone(), new_receipt()
    network.clock.set(utc("2026-03-05T10:00:00"))
    network.earn(c, member, 1_000, receipt=c_receipt)  # C's lot expires first, so it is spent first
    network.clock.set(utc("2026-03-06T10:00:00"))
    network.earn(a, member, 1_000)
    network.clock.set(utc("2026-03-10T10:00:00"))
    network.redeem(b, member, 1_000)
    network.clock.set(utc("2026-03-12T10:00:00"))
    returned = network.return_purchase(c, c_receipt)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)

    assert (returned.points_reversed, returned.debt_created_points) == (1_000, 0)
    assert lot_movements(network, "CONSUMED") == [(c.ref.partner_id, -1_000)]
    assert lot_movements(network, "REVERSED") == [(a.ref.partner_id, -1_000)]
    statements = network.statements(MARCH)
    # C's points were spent at B, so taking them back credits C what spending them cost it.
    assert facts(statements[c.code]) == sorted([
        fact(ISSUANCE, 1_000, "0", 0), fact(ISSUANCE_REVERSAL, 1_000, "0", 0),
        fact(CONSUMPTION, 1_000, "0.012", -1_200), fact(CONSUMPTION_REVERSAL, 1_000, "0.012", 1_200),
    ])  # fmt: skip
    # The reversal used A's points up: billed to A if A pays on redemption (it paid on issuance otherwise).
    expected_a = {
        Billing.ON_ISSUANCE: [fact(ISSUANCE, 1_000, "0.012", -1_200)],
        Billing.ON_REDEMPTION: [fact(CONSUMPTION, 1_000, "0.012", -1_200), fact(ISSUANCE, 1_000, "0", 0)],
    }
    assert facts(statements[a.code]) == sorted(expected_a[a_billing])
    assert facts(statements[b.code]) == [fact(REDEMPTION, 1_000, "0.010", 1_000)]
    assert {code: view.net_minor for code, view in statements.items()} == {a.code: -1_200, b.code: 1_000, c.code: 0}
    assert network.period(MARCH).margins[0].margin_minor == 200
    assert nets_plus_margin(network, MARCH) == {"EUR": 0}


@pytest.mark.parametrize("a_billing", list(Billing))
def test_a_debt_left_by_a_return_is_billed_to_the_issuer_whose_points_repay_it(
    network: Network, a_billing: Billing
) -> None:
    a, b = network.partner(a_billing), network.partner()
    c = network.partner(Billing.ON_REDEMPTION, reimbursement_rate="0.009")
    member, c_receipt = phone(), new_receipt()
    network.clock.set(utc("2026-03-05T10:00:00"))
    network.earn(c, member, 1_000, receipt=c_receipt)
    network.redeem(b, member, 1_000)
    returned = network.return_purchase(c, c_receipt)
    network.clock.set(utc("2026-03-08T10:00:00"))
    repaid = network.earn(a, member, 1_500)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)

    assert (returned.points_reversed, returned.debt_created_points, repaid.debt_repaid_points) == (1_000, 1_000, 1_000)
    assert lot_movements(network, "DEBT_REPAYMENT") == [(a.ref.partner_id, -1_000)]
    statements = network.statements(MARCH)
    assert facts(statements[c.code]) == sorted([
        fact(ISSUANCE, 1_000, "0", 0), fact(ISSUANCE_REVERSAL, 1_000, "0", 0),
        fact(CONSUMPTION, 1_000, "0.012", -1_200), fact(CONSUMPTION_REVERSAL, 1_000, "0.012", 1_200),
    ])  # fmt: skip
    expected_a = {
        Billing.ON_ISSUANCE: [fact(ISSUANCE, 1_500, "0.012", -1_800)],
        Billing.ON_REDEMPTION: [fact(CONSUMPTION, 1_000, "0.012", -1_200), fact(ISSUANCE, 1_500, "0", 0)],
    }
    assert facts(statements[a.code]) == sorted(expected_a[a_billing])
    expected_margin = {Billing.ON_ISSUANCE: 800, Billing.ON_REDEMPTION: 200}
    assert network.period(MARCH).margins[0].margin_minor == expected_margin[a_billing]
    assert nets_plus_margin(network, MARCH) == {"EUR": 0}


def test_returning_a_partly_spent_purchase_credits_only_the_spent_points(network: Network) -> None:
    b = network.partner()
    c = network.partner(Billing.ON_REDEMPTION, reimbursement_rate="0.009")
    member, c_receipt = phone(), new_receipt()
    network.clock.set(utc("2026-03-05T10:00:00"))
    network.earn(c, member, 1_000, receipt=c_receipt)
    network.redeem(b, member, 600)
    returned = network.return_purchase(c, c_receipt)
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)

    # 400 points come back from the purchase's own lot (never spent, never billed); 600 become a debt.
    assert (returned.points_reversed, returned.debt_created_points) == (1_000, 600)
    assert facts(network.statement(MARCH, c)) == sorted([
        fact(ISSUANCE, 1_000, "0", 0), fact(ISSUANCE_REVERSAL, 1_000, "0", 0),
        fact(CONSUMPTION, 600, "0.012", -720), fact(CONSUMPTION_REVERSAL, 600, "0.012", 720),
    ])  # fmt: skip
    assert network.statement(MARCH, b).net_minor == 600
    assert nets_plus_margin(network, MARCH) == {"EUR": 0}
