"""The database itself refuses to change what a close and a payment wrote (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from settlement.models import APPEND_ONLY_TABLES
from tests.integration.settlement.harness import MARCH, Network, play_worked_example, utc

# A change per table that would rewrite a closed period's history.
TAMPERING = {
    "settlement_assignments": "period_id = period_id",
    "settlement_statements": "net_minor = net_minor + 1",
    "settlement_statement_lines": "amount_minor = amount_minor + 1",
    "settlement_matrix_cells": "points = points + 1",
    "settlement_operator_margins": "margin_minor = margin_minor + 1",
    "settlement_payments": "amount_minor = amount_minor + 1",
}


def refusal(network: Network, statement: str) -> str:
    """The database's error for ``statement``, run in a transaction that is rolled back either way."""
    with network.engine.connect() as connection, connection.begin() as transaction:
        try:
            with pytest.raises(DBAPIError) as raised:
                connection.exec_driver_sql(statement)
        finally:
            transaction.rollback()
    return str(raised.value.orig)


def snapshot(network: Network) -> dict[str, list[tuple[Any, ...]]]:
    return {table: network.rows(f"SELECT * FROM {table} ORDER BY 1, 2") for table in APPEND_ONLY_TABLES}


def test_closed_statements_and_payments_cannot_be_updated_or_deleted(network: Network) -> None:
    example = play_worked_example(network)
    network.close(MARCH)
    network.clock.set(utc("2026-04-10T09:00:00"))
    network.pay(f"{MARCH}/{example.b.code}/EUR", 26_000)
    before = snapshot(network)
    assert all(before.values()), {table: len(rows) for table, rows in before.items()}
    assert set(TAMPERING) == set(APPEND_ONLY_TABLES)

    errors = {}
    for table, change in TAMPERING.items():
        errors[f"UPDATE {table}"] = refusal(network, f"UPDATE {table} SET {change}")
        errors[f"DELETE {table}"] = refusal(network, f"DELETE FROM {table}")
        if network.engine.dialect.name == "postgresql":
            errors[f"TRUNCATE {table}"] = refusal(network, f"TRUNCATE {table} CASCADE")

    assert {attempt: "append-only" in error for attempt, error in errors.items()} == dict.fromkeys(errors, True)
    assert snapshot(network) == before
