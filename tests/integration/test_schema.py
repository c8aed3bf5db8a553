"""The migrated schema: it matches the models, migrates down and up again, and guards the ledger itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from checkout.commands import Basket, EarnCommand, RedeemCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.db import create_engine
from common.uow import UnitOfWork
from migrations import schema
from migrations.runner import alembic_config, upgrade
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.factories import create_partner, phone, unique
from tests.invariants import assert_invariants

APPEND_ONLY_TABLES = ("journal_transactions", "journal_entries", "lot_movements", "contract_versions")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet, dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


def schema_differences(url: str) -> list[Any]:
    engine = create_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, schema.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_models(empty_database_url: str) -> None:
    upgrade(empty_database_url)

    assert schema_differences(empty_database_url) == []


def trigger_names(url: str) -> set[str]:
    """User-defined triggers (the append-only guards) and, on PostgreSQL, the function they call."""
    engine = create_engine(url, pool_size=1)
    queries = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
        "UNION SELECT proname FROM pg_proc WHERE proname = 'refuse_ledger_change'",
    }
    try:
        with engine.connect() as connection:
            return {str(name) for (name,) in connection.execute(text(queries[engine.dialect.name]))}
    finally:
        engine.dispose()


def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    guards = trigger_names(empty_database_url)
    command.downgrade(alembic_config(empty_database_url), "base")

    assert table_names(empty_database_url) <= {"alembic_version"}
    assert trigger_names(empty_database_url) == set()

    upgrade(empty_database_url)
    assert set(schema.metadata.tables) <= table_names(empty_database_url)
    assert schema_differences(empty_database_url) == []
    assert trigger_names(empty_database_url) == guards
    assert {f"{table}_no_update" for table in APPEND_ONLY_TABLES} <= guards or {
        f"{table}_append_only" for table in APPEND_ONLY_TABLES
    } <= guards


# One column per append-only table and a change that would rewrite history.
TAMPERING = {
    "journal_transactions": "receipt_id = 'tampered'",
    "journal_entries": "amount_points = amount_points + 1",
    "lot_movements": "points_delta = points_delta - 1",
    "contract_versions": "created_by = 'tampered'",
}
ROW_OF_TRANSACTION = {
    "journal_transactions": "id = :tid",
    "journal_entries": "transaction_id = :tid",
    "lot_movements": "transaction_id = :tid",
    "contract_versions": "id = (SELECT contract_version_id FROM journal_transactions WHERE id = :tid)",
}


@dataclass(frozen=True)
class Spent:
    """A member who earned 123 points at a partner and spent 20 of them there."""

    member_id: int
    earn_transaction_id: int
    redeem_transaction_id: int


def internal_id(engine: Engine, public_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT id FROM journal_transactions WHERE public_id = :public_id"), {"public_id": public_id}
            ).scalar_one()
        )


@pytest.fixture
def spent(uow: UnitOfWork, engine: Engine) -> Spent:
    partner = create_partner(uow)
    service = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test"))
    member = phone()
    earn = EarnCommand(member, unique("R"), Basket("EUR", 12_345), enroll_if_unknown=True)
    earned = service.earn_points(partner, unique("req"), earn).result
    redeemed = service.redeem_points(partner, unique("req"), RedeemCommand(member, 20, "EUR")).result
    earn_id = internal_id(engine, earned.transaction_id)
    with engine.connect() as connection:
        member_id = connection.execute(
            text("SELECT member_id FROM journal_transactions WHERE id = :tid"), {"tid": earn_id}
        ).scalar_one()
    return Spent(int(member_id), earn_id, internal_id(engine, redeemed.transaction_id))


def refused(engine: Engine, statement: str, parameters: dict[str, Any]) -> str:
    """Runs ``statement`` in a transaction that is always rolled back; returns the database's error text."""
    with engine.connect() as connection, connection.begin() as transaction:
        try:
            with pytest.raises(DBAPIError) as raised:
                connection.execute(text(statement), parameters)
        finally:
            transaction.rollback()
    return str(raised.value.orig)


def rows_of(engine: Engine, table: str, transaction_id: int) -> list[tuple[Any, ...]]:
    query = f"SELECT * FROM {table} WHERE {ROW_OF_TRANSACTION[table]} ORDER BY id"
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query), {"tid": transaction_id})]


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_database_refuses_update_of_ledger_rows(table: str, engine: Engine, spent: Spent) -> None:
    before = rows_of(engine, table, spent.redeem_transaction_id)
    assert before, f"the redemption wrote no {table} row"

    error = refused(
        engine, f"UPDATE {table} SET {TAMPERING[table]} WHERE {ROW_OF_TRANSACTION[table]}",
        {"tid": spent.redeem_transaction_id},
    )  # fmt: skip

    assert "append-only" in error
    assert rows_of(engine, table, spent.redeem_transaction_id) == before
    assert_invariants(engine)


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_database_refuses_delete_of_ledger_rows(table: str, engine: Engine, spent: Spent) -> None:
    before = rows_of(engine, table, spent.redeem_transaction_id)
    assert before, f"the redemption wrote no {table} row"

    error = refused(
        engine, f"DELETE FROM {table} WHERE {ROW_OF_TRANSACTION[table]}", {"tid": spent.redeem_transaction_id}
    )

    assert "append-only" in error
    assert rows_of(engine, table, spent.redeem_transaction_id) == before
    assert_invariants(engine)


def test_check_constraint_refuses_negative_member_balance(engine: Engine, spent: Spent) -> None:
    query = "SELECT points_balance, debt_points FROM member_balances WHERE member_id = :m"
    with engine.connect() as connection:
        before = tuple(connection.execute(text(query), {"m": spent.member_id}).one())

    error = refused(
        engine, "UPDATE member_balances SET points_balance = -1 WHERE member_id = :m", {"m": spent.member_id}
    )

    assert "points_balance_not_negative" in error
    with engine.connect() as connection:
        assert tuple(connection.execute(text(query), {"m": spent.member_id}).one()) == before == (103, 0)
    assert_invariants(engine)


def test_check_constraint_refuses_negative_lot_remaining_points(engine: Engine, spent: Spent) -> None:
    query = "SELECT id, remaining_points FROM lots WHERE source_transaction_id = :tid"
    with engine.connect() as connection:
        lot_id, remaining = connection.execute(text(query), {"tid": spent.earn_transaction_id}).one()

    error = refused(engine, "UPDATE lots SET remaining_points = -5 WHERE id = :id", {"id": lot_id})

    assert "remaining_not_negative" in error
    with engine.connect() as connection:
        assert tuple(connection.execute(text(query), {"tid": spent.earn_transaction_id}).one()) == (lot_id, 103)
    assert remaining == 103
    assert_invariants(engine)
