"""The liability report: each issuer's outstanding points rolled over a period, and their state at its end."""

from __future__ import annotations

from dataclasses import replace

import pytest

from checkout.session import CheckoutSettings
from settlement.liability import LiabilityRow, PeriodNotStarted, liability_report
from tests.factories import phone
from tests.integration.settlement.harness import (
    APRIL,
    MARCH,
    MAY,
    SETTINGS,
    Brand,
    Network,
    new_receipt,
    play_worked_example,
    utc,
)


def lifetime(days: int) -> CheckoutSettings:
    return replace(SETTINGS, points_lifetime_days=days)


def rows_by_issuer(network: Network, label: str) -> dict[str, LiabilityRow]:
    return {row.issuer_partner_id: row for row in liability_report(network.uow, network.policy, label).rows}


def outstanding_points(network: Network, brand: Brand) -> int:
    """What the issuer's lots still hold, read straight from the lots."""
    return int(
        network.scalar(
            "SELECT COALESCE(SUM(remaining_points), 0) FROM lots WHERE issuer_partner_id = :issuer",
            issuer=brand.ref.partner_id,
        )
    )


def test_liability_rolls_forward_and_splits_pending_available_and_expiring(network: Network) -> None:
    network.clock.set(utc("2026-02-01T00:00:00"))  # contracts in force from February
    a = network.partner()
    p = network.partner(pending_days=14)
    m, n = phone(), phone()
    # February: A's 1,000 points (two years to live), 200 spent before March opens.
    network.clock.set(utc("2026-02-10T10:00:00"))
    network.earn(a, m, 1_000)
    network.clock.set(utc("2026-02-20T10:00:00"))
    network.redeem(a, m, 200)
    # March: points with short lives, so that they fall into the 30, 60 and 90-day expiry windows.
    network.desk(utc("2026-03-05T10:00:00"), lifetime(45)).earn(a, m, 500)  # expires 19 April
    network.desk(utc("2026-03-05T10:00:00"), lifetime(75)).earn(p, n, 300)  # available 19 March, expires 19 May
    network.desk(utc("2026-03-25T10:00:00"), lifetime(80)).earn(p, n, 200)  # available 8 April, expires 13 June
    network.clock.set(utc("2026-03-10T10:00:00"))
    network.redeem(a, m, 400)  # from the lot that expires first: the 500 of 5 March
    returned = new_receipt()
    network.clock.set(utc("2026-03-12T10:00:00"))
    network.earn(a, m, 300, receipt=returned)
    network.clock.set(utc("2026-03-15T10:00:00"))
    network.return_purchase(a, returned)
    network.clock.set(utc("2026-04-10T12:00:00"))

    report = liability_report(network.uow, network.policy, MARCH)
    march = {row.issuer_partner_id: row for row in report.rows}

    assert (report.period, report.as_of) == (MARCH, utc("2026-04-01T00:00:00"))
    assert march[a.code] == LiabilityRow(
        issuer_partner_id=a.code, currency="EUR", opening_points=800, issued_points=800, redeemed_points=400,
        expired_points=0, adjustment_points=-300, closing_points=900, pending_points=0, available_points=900,
        expiring_within_30_days_points=100, expiring_within_60_days_points=100, expiring_within_90_days_points=100,
    )  # fmt: skip
    assert march[p.code] == LiabilityRow(
        issuer_partner_id=p.code, currency="EUR", opening_points=0, issued_points=500, redeemed_points=0,
        expired_points=0, adjustment_points=0, closing_points=500, pending_points=200, available_points=300,
        expiring_within_30_days_points=0, expiring_within_60_days_points=300, expiring_within_90_days_points=500,
    )  # fmt: skip
    for row, brand in ((march[a.code], a), (march[p.code], p)):
        assert row.opening_points + row.issued_points - row.redeemed_points - row.expired_points + (
            row.adjustment_points
        ) == row.closing_points  # fmt: skip
        assert row.pending_points + row.available_points == row.closing_points == outstanding_points(network, brand)

    # April is still open: it is reported as of now, opening where March closed.
    april = rows_by_issuer(network, APRIL)
    assert [(april[brand.code].opening_points, april[brand.code].closing_points) for brand in (a, p)] == [
        (900, 900), (500, 500)
    ]  # fmt: skip
    assert (april[p.code].pending_points, april[p.code].available_points) == (0, 500)  # available since 8 April
    assert liability_report(network.uow, network.policy, APRIL).as_of == utc("2026-04-10T12:00:00")
    with pytest.raises(PeriodNotStarted):
        liability_report(network.uow, network.policy, MAY)


def test_liability_agrees_with_a_closed_period_of_the_worked_example(network: Network) -> None:
    example = play_worked_example(network)
    network.close(MARCH)

    rows = rows_by_issuer(network, MARCH)

    assert {code: (row.issued_points, row.redeemed_points, row.closing_points) for code, row in rows.items()} == {
        example.a.code: (100_000, 80_000, 20_000),
        example.b.code: (40_000, 34_000, 6_000),
        example.c.code: (10_000, 6_000, 4_000),
    }
