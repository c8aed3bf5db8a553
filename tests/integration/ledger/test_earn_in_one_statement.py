"""On PostgreSQL an earn's journal transaction, entries, lot and balance change go as one statement of
data-modifying CTEs (LedgerRepository.insert_earn, ledger/earn_statement.py); it must write exactly what
the four statements write, with the ids the database chose or with ids reserved ahead (then queued).

The rows written here are not a real earn (no balanced posting, a receipt twice), so the test has a
database of its own: the shared one is checked against the ledger's invariants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.dialects import postgresql

import ledger.earn_statement
from checkout.commands import Basket, EarnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import ManualClock
from common.db import create_engine
from common.uow import UnitOfWork
from ledger.earn_statement import RESERVE_EARN_IDS
from ledger.repository import LedgerRepository, balances, entries, lots, transactions
from members.repository import members
from tests.factories import create_partner, phone

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _member(connection: Connection, member_number: str) -> tuple[int, int, int, int, int]:
    row = connection.execute(
        select(balances.c.member_id, balances.c.points_account_id, balances.c.debt_account_id,
               balances.c.points_balance, balances.c.debt_points)
        .join(members, members.c.id == balances.c.member_id)
        .where(members.c.member_number == member_number)
    ).one()  # fmt: skip
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def _written(connection: Connection, transaction_id: int, lot_id: int) -> dict[str, Any]:
    """What an earn wrote, without the ids the database or the caller chose."""
    transaction = connection.execute(select(transactions).where(transactions.c.id == transaction_id)).one()
    lines = connection.execute(
        select(entries.c.account_id, entries.c.side, entries.c.amount_points)
        .where(entries.c.transaction_id == transaction_id)
        .order_by(entries.c.id)
    ).all()
    lot = connection.execute(select(lots).where(lots.c.id == lot_id)).one()
    assert lot.source_transaction_id == transaction_id
    return {
        "transaction": transaction._asdict() | {"id": None, "public_id": None},
        "entries": [tuple(line) for line in lines],
        "lot": lot._asdict() | {"id": None, "source_transaction_id": None},
    }


@pytest.fixture
def uow(isolated_database_url: str, clock: ManualClock) -> Iterator[UnitOfWork]:
    engine = create_engine(isolated_database_url, pool_size=1)
    yield UnitOfWork(engine, clock)
    engine.dispose()


@pytest.mark.parametrize("reserved", [False, True], ids=["ids-returned", "ids-reserved"])
@pytest.mark.parametrize("line_count", [1, 2, 3])
def test_one_statement_writes_what_four_statements_write(
    uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch, line_count: int, reserved: bool
) -> None:
    shop = create_partner(uow)
    service = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test"))
    command = EarnCommand(phone(), uuid.uuid4().hex, Basket("EUR", 1_000), enroll_if_unknown=True)
    member_number = service.earn_points(shop, uuid.uuid4().hex, command).result.member_number

    def earn(connection: Connection) -> tuple[dict[str, Any], tuple[int, int]]:
        member_id, points_account, debt_account, points_before, debt_before = _member(connection, member_number)
        # The sides need not balance here: the repository writes what the Ledger (which checks them) gives.
        lines = [(points_account, "C", 4), (debt_account, "C", 3), (points_account, "D", 7)][:line_count]
        transaction = {
            "public_id": uuid.uuid4().hex, "kind": "EARN", "partner_id": shop.partner_id, "member_id": member_id,
            "contract_version_id": None, "points": 7, "receipt_id": "R-1", "amount_minor": 700, "currency": "EUR",
            "references_transaction_id": None, "business_time": AT, "recorded_at": AT,
        }  # fmt: skip
        lot = {
            "member_id": member_id, "issuer_partner_id": shop.partner_id, "contract_version_id": None, "points": 7,
            "remaining_points": 4, "issuance_price": Decimal("0.012"), "currency": "EUR", "earned_at": AT,
            "available_at": AT, "expires_at": datetime(2028, 3, 1, tzinfo=UTC),
        }  # fmt: skip
        repository = LedgerRepository(connection)
        ahead = repository.reserve_earn_ids_ahead() if reserved else None  # None on SQLite
        ids = None if ahead is None else ahead()
        transaction_id, lot_id = repository.insert_earn(transaction, lines, lot, points_delta=4, debt_delta=2,
                                                        ids=ids)  # fmt: skip
        if ids is not None:
            assert (transaction_id, lot_id) == (ids.transaction_id, ids.lot_id)
        after = _member(connection, member_number)
        return _written(connection, transaction_id, lot_id), (after[3] - points_before, after[4] - debt_before)

    together = uow.run(earn)
    monkeypatch.setattr(ledger.earn_statement, "_EARNS", {})
    apart = uow.run(earn)
    assert together == apart
    assert together[1] == (4, 2)


@pytest.mark.postgres_only
def test_the_reserved_ids_are_drawn_from_the_sequences_the_tables_own(uow: UnitOfWork) -> None:
    """The reservation names the sequences (PostgreSQL's names for a serial id): a migration that
    renamed or rebuilt a table must not leave it drawing from a sequence the table no longer uses."""
    reserving = str(RESERVE_EARN_IDS.statement.compile(dialect=postgresql.dialect()))
    with uow.engine.connect() as connection:
        for table in (transactions, lots):
            owned = connection.execute(text("SELECT pg_get_serial_sequence(:name, 'id')"), {"name": table.name})
            assert f"nextval('{owned.scalar_one().removeprefix('public.')}')" in reserving
