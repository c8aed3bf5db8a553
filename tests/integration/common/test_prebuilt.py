"""Prebuilt statements (common/sql.py) behave as Connection.execute does: values, transactions, outages.

On PostgreSQL they run straight on the psycopg cursor; these pin the behaviour a reviewer checked
against SQLAlchemy's own path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, bindparam, exc, select, text

from common.db import create_engine
from common.idempotency import records
from common.sql import Prebuilt
from ledger.repository import accounts

INSERT = Prebuilt(records.insert())
FIND = Prebuilt(
    select(records.c.operation, records.c.created_at).where(
        records.c.principal == bindparam("scope"), records.c.idempotency_key == bindparam("key")
    )
)
WHEN = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def engine(isolated_database_url: str) -> Iterator[Engine]:
    engine = create_engine(isolated_database_url, pool_size=3)
    yield engine
    engine.dispose()


def record(key: str) -> dict[str, object]:
    return {"principal": "tests", "idempotency_key": key, "operation": "Op", "request_hash": "h", "outcome": "OK",
            "response_json": "{}", "created_at": WHEN}  # fmt: skip


def test_values_round_trip_like_connection_execute(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.run(connection, record(key))
    with engine.connect() as connection:
        prebuilt = FIND.one(connection, {"scope": "tests", "key": key})
        executed = tuple(connection.execute(FIND.statement, {"scope": "tests", "key": key}).one())
    assert prebuilt == executed == ("Op", WHEN)


def test_writes_on_a_plain_connection_are_committed_by_commit(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.connect() as connection:
        INSERT.run(connection, record(key))
        connection.commit()
    with engine.connect() as connection:
        assert FIND.first(connection, {"scope": "tests", "key": key}) is not None


def test_a_duplicate_raises_sqlalchemys_integrity_error(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.run(connection, record(key))
    with pytest.raises(exc.IntegrityError), engine.begin() as connection:
        INSERT.run(connection, record(key))


@pytest.mark.postgres_only
def test_after_a_database_restart_one_request_fails_not_one_per_pooled_connection(
    engine: Engine, isolated_database_url: str
) -> None:
    connections = [engine.connect() for _ in range(3)]  # fill the pool, then give them back
    pids = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in connections]
    for connection in connections:
        connection.close()
    admin = create_engine(isolated_database_url, pool_size=1)
    with admin.connect() as connection:  # what a restart does to every pooled connection
        for pid in pids:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()

    failures = 0
    for _ in range(3):
        try:
            with engine.begin() as connection:
                FIND.first(connection, {"scope": "tests", "key": "x"})
        except exc.OperationalError as error:
            assert error.connection_invalidated
            failures += 1
    assert failures == 1


def test_many_rows_inserted_with_their_ids_in_order_and_the_sequence_moves_on(engine: Engine) -> None:
    insert = Prebuilt(accounts.insert().returning(accounts.c.id))
    owner = uuid.uuid4().int % 1_000_000_000
    rows = [{"kind": kind, "owner_id": owner} for kind in ("PARTNER_ISSUED", "PARTNER_REDEEMED", "MEMBER_DEBT")]
    with engine.begin() as connection:
        ids = insert.copy_rows_returning_ids(connection, rows)
        after = insert.scalar_one(connection, {"kind": "MEMBER_POINTS", "owner_id": owner})
    assert ids == sorted(ids) and len(set(ids)) == 3 and after > ids[-1]
    with engine.connect() as connection:
        found = connection.execute(select(accounts.c.id, accounts.c.kind).where(accounts.c.owner_id == owner))
        kinds = {row.id: row.kind for row in found if row.id in ids}
    assert kinds == dict(zip(ids, [row["kind"] for row in rows], strict=True))
