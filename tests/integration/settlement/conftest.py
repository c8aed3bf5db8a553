"""Settlement tests get a migrated database each (a close reads the whole ledger) and a network on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.clock import ManualClock
from common.db import create_engine
from tests.integration.settlement.harness import Network, assert_books_balance, utc


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network whose clock starts early in March 2026; its books must balance when the test ends."""
    engine = create_engine(isolated_database_url, pool_size=10)
    try:
        network = Network(engine, ManualClock(utc("2026-03-02T09:00:00")))
        yield network
        assert_books_balance(network)
    finally:
        engine.dispose()
