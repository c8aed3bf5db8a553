"""How many SQL statements the checkout hot paths send, counted on SQLite (on PostgreSQL the prebuilt
ones bypass SQLAlchemy's events). A change that adds a round trip to an earn or a return shows here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine, event

from checkout.commands import Basket, EarnCommand, ReturnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import ManualClock
from common.db import create_engine
from common.uow import UnitOfWork
from tests.factories import create_partner, phone, request_key

SETTINGS = CheckoutSettings(identifier_pepper=b"test")


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlite_url, pool_size=1)
    yield engine
    engine.dispose()


def statements_of(engine: Engine, call: Callable[[], Any]) -> int:
    sent: list[str] = []

    def count(*_: Any) -> None:
        sent.append("")

    event.listen(engine, "before_cursor_execute", count)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent)


def test_an_earn_and_a_return_of_a_purchase_never_transferred_send_few_statements(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    uow = UnitOfWork(sqlite_engine, clock)
    service, shop, member = CheckoutService(uow, SETTINGS), create_partner(uow), phone()
    receipts = [f"R-{index}-{request_key().key[:8]}" for index in range(4)]

    def earn(receipt: str) -> None:
        command = EarnCommand(member, receipt, Basket("EUR", 10_000), enroll_if_unknown=True)
        service.earn_points(shop, request_key().key, command)

    def give_back(receipt: str) -> None:
        service.return_purchase(shop, request_key().key, ReturnCommand(receipt, is_full_return=True))

    for receipt in receipts[:2]:  # enrols the member, then caches the partner's accounts
        earn(receipt)
    # 12 before the contract, the promotion and the policy were read in one statement.
    assert [statements_of(sqlite_engine, partial(earn, receipt)) for receipt in receipts[2:]] == [10, 10]
    # The same return cost 22 before transferred points could be taken back (a return looks for the
    # members a household transfer gave the purchase's points to, before and after locking the buyer).
    assert [statements_of(sqlite_engine, partial(give_back, receipt)) for receipt in receipts[:2]] == [23, 23]
