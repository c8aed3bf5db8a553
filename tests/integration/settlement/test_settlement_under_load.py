"""Closing concurrently, and closing while checkout keeps writing: PostgreSQL, where writers truly overlap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from partners.rates import Billing
from settlement.netting import LineType
from settlement.services import ClosedPeriod
from tests.factories import phone
from tests.integration.settlement.harness import APRIL, MARCH, Network, play_worked_example, utc

T = TypeVar("T")


def all_at_once(workers: int, work: Callable[[], T]) -> list[T]:
    """Runs ``work`` on ``workers`` threads released together; re-raises the first error."""
    start = threading.Barrier(workers)

    def released() -> T:
        start.wait()
        return work()

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(released) for _ in range(workers)]
        return [future.result(timeout=60) for future in futures]


@pytest.mark.postgres_only
def test_concurrent_closes_produce_one_set_of_statements(network: Network) -> None:
    example = play_worked_example(network)

    results: list[ClosedPeriod] = all_at_once(4, lambda: network.close(MARCH))

    assert sorted(result.newly_closed for result in results) == [False, False, False, True]
    assert all(result.period == results[0].period for result in results)
    assert network.scalar("SELECT COUNT(*) FROM settlement_periods") == 1
    assert network.scalar("SELECT COUNT(*) FROM settlement_statements") == 3
    assert network.scalar("SELECT COUNT(*) FROM settlement_operator_margins") == 1
    assert network.scalar("SELECT COUNT(*) FROM settlement_assignments") == example.transaction_count
    assert {view.partner_id: view.net_minor for view in network.statements(MARCH).values()} == {
        example.a.code: -100_000,
        example.b.code: 26_000,
        example.c.code: 19_800,
    }


WRITERS = 4
ROUNDS_AFTER_CLOSE = 3


@pytest.mark.postgres_only
def test_close_under_checkout_traffic_assigns_every_transaction_once(network: Network) -> None:
    a = network.partner()
    c = network.partner(Billing.ON_REDEMPTION, reimbursement_rate="0.009")
    # Writers book the last half second of March; finance closes half a second into April.
    writers = network.desk(utc("2026-03-31T23:59:59.5"))
    finance = network.desk(utc("2026-04-01T00:00:00.5"))
    members = [phone() for _ in range(WRITERS)]
    for member in members:
        writers.earn(a, member, 1_000)
    warmed_up = threading.Barrier(WRITERS + 1)
    closed = threading.Event()

    def write(member_index: int) -> int:
        member, rounds, after_close = members[member_index], 0, 0
        while after_close < ROUNDS_AFTER_CLOSE:  # rounds that start after the close are surely late
            after_close += closed.is_set()
            writers.earn(c if rounds % 2 else a, member, 100)
            writers.redeem(a if rounds % 2 else c, member, 70)
            rounds += 1
            if rounds == 2:
                warmed_up.wait(timeout=30)
        return rounds

    def close_march() -> ClosedPeriod:
        warmed_up.wait(timeout=30)
        try:
            return finance.close(MARCH)
        finally:
            closed.set()

    with ThreadPoolExecutor(WRITERS + 1) as pool:
        rounds = [pool.submit(write, index) for index in range(WRITERS)]
        march = pool.submit(close_march)
        assert march.result(timeout=60).newly_closed
        assert all(future.result(timeout=60) >= 2 + ROUNDS_AFTER_CLOSE for future in rounds)
    finance.clock.set(utc("2026-05-01T00:00:00"))
    april = finance.close(APRIL)

    assert network.scalar(
        "SELECT COUNT(*) FROM journal_transactions t WHERE NOT EXISTS "
        "(SELECT 1 FROM settlement_assignments s WHERE s.transaction_id = t.id)"
    ) == 0  # fmt: skip
    counts = network.rows(
        "SELECT p.label, COUNT(*), MIN(t.business_time) < :march_end, MAX(t.business_time) < :march_end "
        "FROM settlement_assignments s JOIN settlement_periods p ON p.id = s.period_id "
        "JOIN journal_transactions t ON t.id = s.transaction_id GROUP BY p.label ORDER BY p.label",
        march_end=utc("2026-04-01T00:00:00"),
    )
    total = network.scalar("SELECT COUNT(*) FROM journal_transactions")
    late = [count for label, count, *_ in counts if label == APRIL]
    assert [(label, all_march) for label, _, all_march, _ in counts] == [(MARCH, True), (APRIL, True)]
    assert late and late[0] >= WRITERS * ROUNDS_AFTER_CLOSE * 2
    assert [row[:2] for row in counts] == [
        (MARCH, network.period(MARCH).transaction_count),
        (APRIL, april.period.transaction_count),
    ]
    assert network.period(MARCH).transaction_count + april.period.transaction_count == total
    # Every April item is a late March one: labelled, and naming the transaction itself.
    late_ids = {
        public_id
        for (public_id,) in network.rows(
            "SELECT t.public_id FROM settlement_assignments s JOIN settlement_periods p ON p.id = s.period_id "
            "JOIN journal_transactions t ON t.id = s.transaction_id WHERE p.label = :april",
            april=APRIL,
        )
    }
    april_lines = [line for view in network.statements(APRIL).values() for line in view.lines]
    assert april_lines
    assert {line.prior_period for line in april_lines if line.line_type is not LineType.ROUNDING} == {MARCH}
    assert {line.original_reference for line in april_lines if line.line_type is not LineType.ROUNDING} == late_ids
    both = [line for label in (MARCH, APRIL) for view in network.statements(label).values() for line in view.lines]
    for line_type, kind in ((LineType.ISSUANCE, "EARN"), (LineType.REDEMPTION, "REDEEM")):
        booked = network.scalar("SELECT SUM(points) FROM journal_transactions WHERE kind = :kind", kind=kind)
        assert sum(line.points for line in both if line.line_type is line_type) == booked, line_type
