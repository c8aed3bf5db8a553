"""Settlement tests get a migrated database each (a close reads the whole ledger) and a network on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.settlement.harness import Network, own_network


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network on a database of its own, whose books must balance when the test ends."""
    with own_network(isolated_database_url) as network:
        yield network
