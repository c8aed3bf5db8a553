"""Queued statements (``Prebuilt.queue``): on PostgreSQL they travel with the transaction's next round
trip (common/libpq.py); everywhere they behave as if run where they were queued.

What must hold: a queued write is seen by whatever follows it in its transaction, however that is sent;
it commits with its transaction and never without it; its error, or its ``then``'s, fails the transaction
before anything commits; a rollback drops it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, exc, select, text
from sqlalchemy import create_engine as sa_create_engine

from common import libpq
from common.db import create_engine
from common.idempotency import records
from common.sql import Prebuilt, pipelined

INSERT = Prebuilt(records.insert())
FIND = Prebuilt(
    select(records.c.operation).where(records.c.principal == "tests", records.c.idempotency_key == bindparam("key"))
)
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Refused(Exception):
    pass


@pytest.fixture
def engine(isolated_database_url: str) -> Iterator[Engine]:
    engine = create_engine(isolated_database_url, pool_size=1)  # one connection: what one leaves, the next sees
    yield engine
    engine.dispose()


def record(key: str, operation: str = "Op") -> dict[str, object]:
    return {"principal": "tests", "idempotency_key": key, "operation": operation, "request_hash": "h",
            "outcome": "OK", "response_json": "{}", "created_at": WHEN}  # fmt: skip


def stored(engine: Engine, key: str) -> str | None:
    with engine.connect() as connection:
        found = FIND.first(connection, {"key": key})
    return None if found is None else str(found[0])


def test_a_queued_write_is_seen_by_the_next_prebuilt_statement_and_commits_with_the_transaction(
    engine: Engine,
) -> None:
    key = uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.queue(connection, record(key))
        assert FIND.one(connection, {"key": key}) == ("Op",)
    assert stored(engine, key) == "Op"


def test_a_queued_write_is_seen_by_sqlalchemys_own_execute(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.queue(connection, record(key))
        assert connection.execute(records.select().where(records.c.idempotency_key == key)).one()
    assert stored(engine, key) == "Op"


def test_a_rollback_to_a_savepoint_drops_what_was_queued_after_it_and_keeps_what_was_queued_before(
    engine: Engine,
) -> None:
    """As cards/feed.py rolls back a refused item: a write queued in the savepoint, even one that would
    fail, is dropped, and the transaction goes on (found in review)."""
    existing, before, dropped, after = (uuid.uuid4().hex for _ in range(4))
    with engine.begin() as connection:
        INSERT.run(connection, record(existing))
    with engine.begin() as connection:
        INSERT.queue(connection, record(before))
        savepoint = connection.begin_nested()
        INSERT.queue(connection, record(dropped))
        if engine.dialect.name == "postgresql":  # SQLite runs it at once, and would fail here
            INSERT.queue(connection, record(existing, "Duplicate"))
        savepoint.rollback()
        INSERT.queue(connection, record(after))
        released = connection.begin_nested()
        released.commit()
    assert [stored(engine, key) for key in (existing, before, dropped, after)] == ["Op", "Op", None, "Op"]


def test_a_queued_write_alone_commits_with_the_commit(engine: Engine) -> None:
    keys = [uuid.uuid4().hex for _ in range(3)]
    with engine.begin() as connection:  # nothing else runs: BEGIN, the writes and the COMMIT go together
        for key in keys:
            INSERT.queue(connection, record(key))
    assert [stored(engine, key) for key in keys] == ["Op", "Op", "Op"]


def test_a_rollback_drops_queued_writes_and_the_connection_sends_them_never(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.connect() as connection:
        INSERT.queue(connection, record(key))
        connection.rollback()
        INSERT.queue(connection, record(key, "Again"))
        connection.commit()
    with pytest.raises(RuntimeError), engine.begin() as connection:
        INSERT.queue(connection, record(uuid.uuid4().hex))
        raise RuntimeError("the work failed")
    with engine.connect() as connection:  # returned to the pool uncommitted: the pool's reset drops it
        INSERT.queue(connection, record(uuid.uuid4().hex))
    with engine.begin() as connection:  # the same pooled connection
        assert FIND.first(connection, {"key": key}) == ("Again",)
        assert connection.execute(text("SELECT count(*) FROM idempotency_records")).scalar_one() == 1


def test_a_queued_write_that_fails_fails_the_statement_that_carries_it(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.run(connection, record(key))
    other = uuid.uuid4().hex
    with pytest.raises(exc.IntegrityError), engine.begin() as connection:
        INSERT.run(connection, record(other))
        INSERT.queue(connection, record(key, "Duplicate"))
        FIND.first(connection, {"key": key})
    assert stored(engine, key) == "Op" and stored(engine, other) is None


def test_a_queued_write_that_fails_at_the_commit_commits_nothing_and_can_be_retried(engine: Engine) -> None:
    """As the unit of work expects: SQLAlchemy's IntegrityError, the transaction's other writes undone,
    and the connection ready for the retry."""
    key, other = uuid.uuid4().hex, uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.run(connection, record(key))
    with pytest.raises(exc.IntegrityError) as raised, engine.begin() as connection:
        INSERT.run(connection, record(other))
        INSERT.queue(connection, record(key, "Duplicate"))
    assert getattr(raised.value.orig, "sqlstate", "23505") == "23505"
    if engine.dialect.name == "postgresql":  # raised with the COMMIT that carried it: the note says which failed
        notes = getattr(raised.value.orig, "__notes__", [])
        assert any(note.startswith("raised by a queued statement: INSERT INTO idempotency_records") for note in notes)
    assert stored(engine, key) == "Op" and stored(engine, other) is None
    with engine.begin() as connection:
        INSERT.queue(connection, record(other))
    assert stored(engine, other) == "Op"


@pytest.mark.parametrize("followed", [True, False], ids=["by-a-statement", "by-the-commit"])
def test_a_refusal_from_then_commits_nothing(engine: Engine, followed: bool) -> None:
    """``then`` sees the rows before anything commits: followed by a statement it raises from that one;
    followed only by the commit, the queued statements go first and the COMMIT after, never together."""
    key, other = uuid.uuid4().hex, uuid.uuid4().hex
    seen: list[list[tuple[Any, ...]]] = []

    def refuse(rows: list[tuple[Any, ...]]) -> None:
        seen.append(rows)
        raise Refused

    with pytest.raises(Refused), engine.begin() as connection:
        INSERT.queue(connection, record(other))
        FIND.queue(connection, {"key": other}, then=refuse)
        if followed:
            FIND.first(connection, {"key": key})
    assert seen == [[("Op",)]]
    assert stored(engine, other) is None


@pytest.mark.postgres_only  # SQLite's connections always write in a transaction (common/db.py)
def test_outside_a_transaction_a_queued_statement_runs_at_once(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        INSERT.queue(connection, record(key))
    assert stored(engine, key) == "Op"


@pytest.mark.postgres_only
def test_on_an_engine_not_built_by_create_engine_a_queued_statement_runs_at_once(isolated_database_url: str) -> None:
    """Only common.db.create_engine's dialect sends queued statements on: elsewhere nothing would."""
    key = uuid.uuid4().hex
    plain = sa_create_engine(isolated_database_url, pool_size=1, connect_args={"prepare_threshold": None})
    try:
        with plain.begin() as connection:
            INSERT.queue(connection, record(key))
            assert connection.execute(records.select().where(records.c.idempotency_key == key)).one()
    finally:
        plain.dispose()


def test_inside_a_pipeline_a_queued_statement_runs_at_once(engine: Engine) -> None:
    pipelined_key = uuid.uuid4().hex
    found: list[list[tuple[Any, ...]]] = []
    with engine.begin() as connection:
        with pipelined(connection):
            INSERT.queue(connection, record(pipelined_key))
        FIND.queue(connection, {"key": pipelined_key}, then=found.append)
        connection.execute(text("SELECT 1"))
    assert found == [[("Op",)]]


@pytest.mark.postgres_only
def test_queued_writes_and_the_commit_take_one_round_trip(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[bytes]] = []
    exchange = libpq._exchange

    def counted(driver: Any, state: Any, statements: list[Any], *, begins: bool, queued: int) -> list[Any]:
        sent.append([b"BEGIN"] * begins + [statement.text.split(b" ")[0] for statement in statements])
        return exchange(driver, state, statements, begins=begins, queued=queued)

    monkeypatch.setattr(libpq, "_exchange", counted)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.queue(connection, record(first))
        assert FIND.one(connection, {"key": first}) == ("Op",)
        INSERT.queue(connection, record(second))
    assert sent == [[b"BEGIN", b"INSERT", b"SELECT"], [b"INSERT", b"COMMIT"]]
    assert stored(engine, second) == "Op"


@pytest.mark.postgres_only
def test_a_connection_lost_before_the_commit_fails_the_transaction_and_the_pool_recovers(
    engine: Engine, isolated_database_url: str
) -> None:
    key = uuid.uuid4().hex
    admin = create_engine(isolated_database_url, pool_size=1)
    try:
        with pytest.raises(exc.OperationalError) as raised, engine.begin() as connection:
            backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            INSERT.queue(connection, record(key))
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        assert raised.value.connection_invalidated
    finally:
        admin.dispose()
    assert stored(engine, key) is None
    with engine.begin() as connection:
        INSERT.queue(connection, record(key))
    assert stored(engine, key) == "Op"


def test_rows_read_ahead_come_with_the_next_statement_or_when_asked_for(engine: Engine) -> None:
    key = uuid.uuid4().hex
    with engine.begin() as connection:
        INSERT.run(connection, record(key))
        asked, missing = FIND.read_ahead(connection, {"key": key}), FIND.read_ahead(connection, {"key": "none"})
        assert asked() == [("Op",)]  # asked for before any statement went: the queue is sent then
        carried = FIND.read_ahead(connection, {"key": key})
        connection.execute(text("SELECT 1"))
        assert carried() == [("Op",)] and missing() == []
