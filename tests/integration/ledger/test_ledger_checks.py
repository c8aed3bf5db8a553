"""The ledger invariants as the operations job runs them: all hold on honest books, a broken one is named
and exported as a metric (loyalty_ledger_check_failures) for the alert."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from checkout.commands import Basket, EarnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import ManualClock
from common.db import create_engine
from common.uow import UnitOfWork
from ledger.checks import LEDGER_CHECKS, check_ledger
from server.app import check_ledger_and_report
from tests.factories import create_partner, phone, request_key


@pytest.fixture
def engine(isolated_database_url: str) -> Iterator[Engine]:
    engine = create_engine(isolated_database_url, pool_size=2)
    yield engine
    engine.dispose()


def test_every_invariant_holds_on_honest_books_and_a_broken_one_is_named(engine: Engine) -> None:
    uow = UnitOfWork(engine, ManualClock())
    partner = create_partner(uow)
    service = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"t"))
    service.earn_points(partner, request_key().key, EarnCommand(phone(), "R-1", Basket("EUR", 5000), True))

    results = check_ledger_and_report(uow)
    assert [result.name for result in results] == list(LEDGER_CHECKS)
    assert all(result.passed for result in results)
    assert REGISTRY.get_sample_value("loyalty_ledger_check_failures") == 0

    with engine.begin() as connection:  # a cached balance drifting from its entries
        connection.execute(text("UPDATE member_balances SET points_balance = points_balance + 1"))
    broken = [result for result in check_ledger(uow) if not result.passed]
    assert {result.name for result in broken} == {
        "2. cached member balances equal their entries",
        "2. member balances equal the remaining points of their lots",
    }
    assert all("offending rows" in result.detail for result in broken)
    check_ledger_and_report(uow)
    assert REGISTRY.get_sample_value("loyalty_ledger_check_failures") == 2
