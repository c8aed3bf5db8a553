"""Closing a period through the service functions: the worked example, idempotence, crash safety, order."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from settlement import documents, services
from settlement.documents import LineView, MatrixCellView
from settlement.netting import LineType
from settlement.services import PeriodNotEnded, PreviousPeriodOpen
from tests.factories import phone
from tests.integration.settlement.harness import APRIL, MARCH, Network, play_worked_example, utc


def line(number: int, kind: LineType, points: int, price: str, amount_minor: int, items: int) -> LineView:
    exact = Decimal(amount_minor) / 100
    return LineView(number, kind, "", "", points, Decimal(price), exact, amount_minor, items)


def test_worked_example_closes_to_the_design_figures(network: Network) -> None:
    example = play_worked_example(network)

    closed = network.close(MARCH)

    assert closed.newly_closed
    period = closed.period
    assert (period.period, period.status, period.closed_by) == (MARCH, "CLOSED", "finance@tests")
    assert (period.statement_count, period.transaction_count) == (3, example.transaction_count)
    assert [(margin.currency, margin.margin_minor, margin.margin_exact) for margin in period.margins] == [
        ("EUR", 54_200, Decimal(542))
    ]
    statements = network.statements(MARCH)
    a, b, c = (statements[brand.code] for brand in (example.a, example.b, example.c))
    assert a.lines == [
        line(1, LineType.ISSUANCE, 100_000, "0.012", -120_000, 1),
        line(2, LineType.REDEMPTION, 20_000, "0.010", 20_000, 1),
    ]
    assert b.lines == [
        line(1, LineType.ISSUANCE, 40_000, "0.011", -44_000, 1),
        line(2, LineType.REDEMPTION, 70_000, "0.010", 70_000, 2),
    ]
    # C is billed on redemption: its issued points are reported at 0, the 6,000 spent ones billed.
    assert c.lines == [
        line(1, LineType.ISSUANCE, 10_000, "0", 0, 1),
        line(2, LineType.CONSUMPTION, 6_000, "0.012", -7_200, 1),
        line(3, LineType.REDEMPTION, 30_000, "0.009", 27_000, 2),
    ]
    assert [(view.net_minor, view.net_exact) for view in (a, b, c)] == [
        (-100_000, Decimal(-1000)),
        (26_000, Decimal(260)),
        (19_800, Decimal(198)),
    ]
    for view in (a, b, c):
        assert (view.opening_position_minor, view.closing_position_minor) == (0, view.net_minor)
        assert (view.payment_direction, view.status) == ("INBOUND" if view.net_minor < 0 else "OUTBOUND", "DUE")
        assert view.due_date.isoformat() == "2026-04-15"
        assert hashlib.sha256(documents.statement_csv(view)).hexdigest() == view.csv_sha256
        assert hashlib.sha256(network.csv(view.statement_id)).hexdigest() == view.csv_sha256
    assert sorted(services.cross_brand_matrix(network.uow, network.policy, MARCH).cells, key=str) == sorted(
        [
            MatrixCellView("EUR", example.a.code, example.a.code, 20_000, Decimal(240), 24_000),
            MatrixCellView("EUR", example.a.code, example.b.code, 60_000, Decimal(720), 72_000),
            MatrixCellView("EUR", example.b.code, example.b.code, 10_000, Decimal(110), 11_000),
            MatrixCellView("EUR", example.b.code, example.c.code, 24_000, Decimal(264), 26_400),
            MatrixCellView("EUR", example.c.code, example.c.code, 6_000, Decimal(72), 7_200),
        ],
        key=str,
    )


def test_closing_again_returns_the_same_statements(network: Network) -> None:
    play_worked_example(network)
    first = network.close(MARCH)
    statements = network.statements(MARCH)
    exports = {view.statement_id: network.csv(view.statement_id) for view in statements.values()}
    frozen = network.frozen_rows(MARCH)
    network.clock.set(utc("2026-04-03T08:00:00"))  # a later rerun, by someone else

    again = services.close_period(network.uow, network.policy, MARCH, closed_by="someone-else@tests")

    assert (first.newly_closed, again.newly_closed) == (True, False)
    assert again.period == first.period
    assert network.statements(MARCH) == statements
    assert {statement_id: network.csv(statement_id) for statement_id in exports} == exports
    assert network.frozen_rows(MARCH) == frozen


def test_a_close_that_fails_midway_leaves_nothing_and_can_be_rerun(network: Network) -> None:
    example = play_worked_example(network)

    class Crash(Exception):
        pass

    def crash_after_first_statement(stage: str, done: int, total: int) -> None:
        if stage == "writing statements" and done == 1:
            raise Crash

    with pytest.raises(Crash):
        services.close_period(
            network.uow, network.policy, MARCH, closed_by="finance@tests", progress=crash_after_first_statement
        )

    assert network.period(MARCH).status == "OPEN"
    written = ("settlement_periods", "settlement_assignments", "settlement_statements", "settlement_statement_lines")
    assert {table: network.scalar(f"SELECT COUNT(*) FROM {table}") for table in written} == dict.fromkeys(written, 0)
    rerun = network.close(MARCH)
    assert rerun.newly_closed
    assert (rerun.period.statement_count, rerun.period.transaction_count) == (3, example.transaction_count)
    assert {view.partner_id: view.net_minor for view in network.statements(MARCH).values()} == {
        example.a.code: -100_000,
        example.b.code: 26_000,
        example.c.code: 19_800,
    }


def test_periods_close_in_order_and_only_once_ended(network: Network) -> None:
    a = network.partner()
    network.earn(a, phone(), 1_000)  # March has activity
    network.clock.set(utc("2026-04-30T23:59:59.999999"))

    with pytest.raises(PeriodNotEnded) as not_ended:
        network.close(APRIL)
    network.clock.set(utc("2026-05-02T00:00:00"))
    with pytest.raises(PreviousPeriodOpen) as previous_open:
        network.close(APRIL)

    assert not_ended.value.reason == "PERIOD_NOT_ENDED"
    assert previous_open.value.reason == "PREVIOUS_PERIOD_OPEN"
    assert previous_open.value.metadata == {"open_period": MARCH}
    assert [period.period for period in network.closed_periods()] == []
    assert network.close(MARCH).newly_closed
    assert network.close(APRIL).newly_closed
    assert [period.period for period in network.closed_periods()] == [MARCH, APRIL]


def test_a_period_cannot_close_at_its_last_instant(network: Network) -> None:
    network.earn(network.partner(), phone(), 1_000)
    network.clock.set(utc("2026-03-31T23:59:59.999999"))

    with pytest.raises(PeriodNotEnded):
        network.close(MARCH)

    network.clock.set(utc("2026-04-01T00:00:00"))
    assert network.close(MARCH).newly_closed
