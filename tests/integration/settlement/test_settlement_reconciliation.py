"""Reconciliation of a closed period: every check passes on honest books and names what tampering broke.

Every settlement test also reconciles each period it closed when it ends (the ``network`` fixture).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import text

from common.db import create_engine
from common.uow import UnitOfWork
from settlement.checks import reconcile
from settlement.services import PeriodNotClosed
from tests.conftest import POSTGRES_ADMIN_URL, drop_postgres_database
from tests.integration.settlement.harness import APRIL, MARCH, Network, play_worked_example

CHECKS = [
    "nets_and_margin_sum_to_zero",
    "lines_sum_to_net",
    "lines_match_itemised_entries",
    "every_transaction_in_one_period",
    "csv_hashes_reproduce",
    "matrix_agrees_with_statements",
    "positions_carry_over",
]


def test_reconciliation_of_the_worked_example_passes_every_check(network: Network) -> None:
    play_worked_example(network)
    network.close(MARCH)

    reconciliation = reconcile(network.uow, network.policy, MARCH)

    assert reconciliation.period == MARCH
    assert [(check.name, check.passed) for check in reconciliation.checks] == [(name, True) for name in CHECKS]
    assert reconciliation.passed
    assert "EUR margin 54200" in reconciliation.checks[0].detail


def test_an_open_period_cannot_be_reconciled(network: Network) -> None:
    with pytest.raises(PeriodNotClosed):
        reconcile(network.uow, network.policy, APRIL)


@contextmanager
def tampered_copy(network: Network, table: str, tampering: str) -> Iterator[UnitOfWork]:
    """A copy of the network's database in which ``tampering`` got past ``table``'s append-only guard."""
    url = network.engine.url
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        copy_url = f"sqlite:///{url.database}.tampered.db"
        with sqlite3.connect(url.database) as source, sqlite3.connect(f"{url.database}.tampered.db") as target:
            source.backup(target)
        unguard = [f"DROP TRIGGER {table}_no_update", f"DROP TRIGGER {table}_no_delete"]
    else:
        network.engine.dispose()  # a database is copied only while nobody is connected to it
        copy_name = f"{url.database}_tampered_{uuid.uuid4().hex[:6]}"
        admin = sa_create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{copy_name}" TEMPLATE "{url.database}"'))
        admin.dispose()
        copy_url = url.set(database=copy_name).render_as_string(hide_password=False)
        unguard = [f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"]
    engine = create_engine(copy_url, pool_size=2)
    try:
        with engine.begin() as connection:
            for statement in [*unguard, tampering]:
                connection.exec_driver_sql(statement)
        yield UnitOfWork(engine, network.clock)
    finally:
        engine.dispose()
        if url.get_backend_name() != "sqlite":
            drop_postgres_database(copy_url)


# What got past each table's guard ({table} and {first}, the row with the lowest key, are filled in).
TAMPERINGS = {
    "a line's amount": (
        "settlement_statement_lines",
        "UPDATE {table} SET amount_minor = amount_minor + 100 WHERE id = {first}",
        {"lines_sum_to_net", "lines_match_itemised_entries", "csv_hashes_reproduce"},
    ),
    "a statement's net": (
        "settlement_statements",
        "UPDATE {table} SET net_minor = net_minor + 1 WHERE id = {first}",
        {"nets_and_margin_sum_to_zero", "lines_sum_to_net", "csv_hashes_reproduce"},
    ),
    "the operator's margin": (
        "settlement_operator_margins",
        "UPDATE {table} SET margin_minor = margin_minor + 1",
        {"nets_and_margin_sum_to_zero"},
    ),
    "a matrix cell": (
        "settlement_matrix_cells",
        "UPDATE {table} SET points = points + 1 WHERE id = {first}",
        {"matrix_agrees_with_statements"},
    ),
    "an earn dropped from the period": (  # the first transaction is the first earn of the worked example
        "settlement_assignments",
        "DELETE FROM {table} WHERE transaction_id = {first}",
        {"lines_match_itemised_entries", "every_transaction_in_one_period"},
    ),
}


@pytest.mark.parametrize("tampered", list(TAMPERINGS))
def test_reconciliation_names_the_check_that_tampering_breaks(network: Network, tampered: str) -> None:
    table, template, broken = TAMPERINGS[tampered]
    key = "transaction_id" if table == "settlement_assignments" else "id"
    tampering = template.format(table=table, first=f"(SELECT MIN({key}) FROM {table})")
    play_worked_example(network)
    network.close(MARCH)

    with tampered_copy(network, table, tampering) as copy:
        reconciliation = reconcile(copy, network.policy, MARCH)

    failed = {check.name: check.detail for check in reconciliation.checks if not check.passed}
    assert not reconciliation.passed
    assert set(failed) == broken, failed
    assert all(detail for detail in failed.values())
    assert reconcile(network.uow, network.policy, MARCH).passed  # the original is untouched
