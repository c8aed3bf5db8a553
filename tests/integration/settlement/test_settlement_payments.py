"""Payments against closed statements: direction, limits, idempotence, PAID periods and carried positions."""

from __future__ import annotations

import pytest

from common.errors import IdempotencyKeyReused
from partners.rates import Billing
from settlement.services import InvalidPayment, NothingToPay, PaymentExceedsOutstanding, StatementNotFound
from tests.factories import phone, request_key
from tests.integration.settlement.harness import APRIL, MARCH, Network, play_worked_example, utc


def payment_count(network: Network, statement_id: str) -> int:
    return int(
        network.scalar(
            "SELECT COUNT(*) FROM settlement_payments p JOIN settlement_statements s ON s.id = p.statement_id "
            "WHERE s.statement_id = :statement_id",
            statement_id=statement_id,
        )
    )


def test_payments_settle_statements_and_carry_what_is_left_into_the_next_period(network: Network) -> None:
    d = network.partner(Billing.ON_REDEMPTION)
    network.earn(d, phone(), 500)  # D's points are never spent: its statement nets to zero
    example = play_worked_example(network)
    network.close(MARCH)
    a, b, c, d_id = (f"{MARCH}/{brand.code}/EUR" for brand in (example.a, example.b, example.c, d))
    network.clock.set(utc("2026-04-10T09:00:00"))

    half = network.pay(a, 50_000)
    with pytest.raises(PaymentExceedsOutstanding) as overpaid:
        network.pay(b, 26_001)
    key = request_key("operator:finance")
    paid_b = network.pay(b, 26_000, request=key)
    replayed = network.pay(b, 26_000, request=key)
    with pytest.raises(IdempotencyKeyReused):
        network.pay(b, 25_000, request=key)
    paid_c = network.pay(c, 19_800)
    with pytest.raises(NothingToPay) as nothing:
        network.pay(d_id, 1)

    assert (half.result.direction, half.result.amount_minor, half.is_replay) == ("INBOUND", 50_000, False)
    assert (overpaid.value.reason, overpaid.value.metadata) == (
        "PAYMENT_EXCEEDS_OUTSTANDING", {"outstanding_minor": "26000"}
    )  # fmt: skip
    assert (paid_b.result.direction, paid_b.is_replay, replayed.is_replay) == ("OUTBOUND", False, True)
    assert replayed.result == paid_b.result
    assert payment_count(network, b) == 1
    assert paid_c.result.direction == "OUTBOUND"
    assert nothing.value.reason == "NOTHING_TO_PAY"
    assert network.statement(MARCH, d).net_minor == 0
    statements = network.statements(MARCH)
    assert {code: (view.paid_minor, view.outstanding_minor, view.status) for code, view in statements.items()} == {
        example.a.code: (50_000, 50_000, "DUE"),
        example.b.code: (26_000, 0, "PAID"),
        example.c.code: (19_800, 0, "PAID"),
        d.code: (0, 0, "PAID"),
    }
    assert [payment.payment_id for payment in statements[example.b.code].payments] == [paid_b.result.payment_id]
    assert network.period(MARCH).status == "CLOSED"

    # April: no activity, but A still owes half of March, so A alone gets a statement that carries it.
    network.clock.set(utc("2026-05-01T00:00:00"))
    april = network.close(APRIL)
    april_statements = network.statements(APRIL)
    assert list(april_statements) == [example.a.code]
    carried = april_statements[example.a.code]
    assert (carried.opening_position_minor, carried.net_minor, carried.closing_position_minor) == (-50_000, 0, -50_000)
    assert carried.lines == []
    assert april.period.status == "PAID"  # nothing to pay for April itself: every net is zero
    with pytest.raises(NothingToPay):
        network.pay(carried.statement_id, 50_000)

    network.clock.set(utc("2026-05-03T09:00:00"))
    rest = network.pay(a, 50_000)
    assert rest.result.direction == "INBOUND"
    march = network.period(MARCH)
    assert (march.status, march.paid_at) == ("PAID", utc("2026-05-03T09:00:00"))
    with pytest.raises(PaymentExceedsOutstanding):
        network.pay(a, 1)
    assert network.scalar("SELECT COUNT(*) FROM settlement_payments") == 4


def test_payments_are_refused_for_unknown_statements_and_bad_amounts(network: Network) -> None:
    example = play_worked_example(network)
    network.close(MARCH)
    statement_id = f"{MARCH}/{example.b.code}/EUR"

    with pytest.raises(StatementNotFound):
        network.pay(f"{MARCH}/no-such-partner/EUR", 1)
    for amount_minor in (0, -5):
        with pytest.raises(InvalidPayment):
            network.pay(statement_id, amount_minor)
    with pytest.raises(InvalidPayment):
        network.pay(statement_id, 1, reference="  ")

    assert network.scalar("SELECT COUNT(*) FROM settlement_payments") == 0
    assert network.period(MARCH).status == "CLOSED"
