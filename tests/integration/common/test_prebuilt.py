"""Prebuilt statements (common/sql.py) behave as Connection.execute does: values, transactions, outages.

On PostgreSQL they run straight on libpq (common/libpq.py), or on the psycopg cursor inside a pipeline;
these pin the behaviour a reviewer checked against SQLAlchemy's own path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import BigInteger, Engine, Numeric, String, bindparam, cast, exc, func, literal_column, select, text
from sqlalchemy import create_engine as sa_create_engine

from common import libpq
from common.db import create_engine
from common.idempotency import records
from common.sql import Prebuilt, insert_many_ignoring_conflict
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
@pytest.mark.parametrize("prepared", [False, True], ids=["unprepared", "prepared"])
def test_after_a_database_restart_one_request_fails_not_one_per_pooled_connection(
    engine: Engine, isolated_database_url: str, prepared: bool
) -> None:
    """Unprepared, the first request fails preparing; prepared, it fails in the round trip that sends the
    BEGIN with the statement."""
    connections = [engine.connect() for _ in range(3)]  # fill the pool, then give them back
    pids = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in connections]
    if prepared:
        for connection in connections:
            FIND.first(connection, {"scope": "tests", "key": "x"})
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


# --- on PostgreSQL, prebuilt statements run straight on libpq (common/libpq.py) ------------------------

SAME_NAME_TWICE = Prebuilt(
    select(bindparam("n", type_=BigInteger) + bindparam("n", type_=BigInteger), literal_column("'100%'").label("pct"))
)
# Read back as text: the psycopg dialect's Numeric result processor needs the column's type from a cursor.
ANY_VALUE = Prebuilt(
    select(cast(cast(bindparam("value", type_=Numeric(30, 6)), Numeric(30, 6)), String).label("value"))
)


def test_a_statement_prepared_in_a_rolled_back_transaction_still_runs(engine: Engine) -> None:
    """Prepared statements outlive rollbacks, and nothing (psycopg included) deallocates them."""
    with engine.connect() as connection:
        assert FIND.first(connection, {"scope": "tests", "key": "none"}) is None
        connection.rollback()
        with pytest.raises(exc.IntegrityError):
            INSERT.run(connection, record("same"))
            INSERT.run(connection, record("same"))
        connection.rollback()
        savepoint = connection.begin_nested()
        INSERT.run(connection, record(uuid.uuid4().hex))
        savepoint.rollback()
        assert FIND.first(connection, {"scope": "tests", "key": "none"}) is None
        INSERT.run(connection, record("after"))
        connection.commit()
    with engine.connect() as connection:
        assert FIND.first(connection, {"scope": "tests", "key": "after"}) is not None


def test_a_parameter_used_twice_and_a_percent_sign_reach_the_database_as_written(engine: Engine) -> None:
    with engine.connect() as connection:
        assert SAME_NAME_TWICE.one(connection, {"n": 21}) == (42, "100%")


@pytest.mark.postgres_only  # SQLite keeps a NUMERIC as a float
@pytest.mark.parametrize(
    "value", [None, 0, 7, 2**31, -(2**62), Decimal("0.000001"), Decimal("123456789012345678901234.5")]
)
def test_values_of_every_size_and_null_round_trip_through_one_statement(engine: Engine, value: object) -> None:
    """A value's size or absence changes its parameter type, and with it the statement prepared for it."""
    with engine.connect() as connection:
        for _ in range(2):  # prepared on the first run, reused on the second
            found = ANY_VALUE.scalar_one(connection, {"value": value})
            assert (found if found is None else Decimal(found)) == value


def test_a_small_batch_of_inserts_writes_every_row_with_its_own_values(engine: Engine) -> None:
    """On PostgreSQL one multi-row INSERT; an INSERT ... ON CONFLICT goes row by row, with the same result."""
    keys = [uuid.uuid4().hex for _ in range(3)]
    with engine.begin() as connection:
        INSERT.run_many(connection, [record(key) | {"operation": f"Op{index}"} for index, key in enumerate(keys)])
    with engine.begin() as connection:
        insert_many_ignoring_conflict(connection, records, [record(keys[0]), record("ignoring-" + keys[1])])
    with engine.connect() as connection:
        found = [FIND.first(connection, {"scope": "tests", "key": key}) for key in keys]
        ignored = FIND.first(connection, {"scope": "tests", "key": "ignoring-" + keys[1]})
    assert found == [("Op0", WHEN), ("Op1", WHEN), ("Op2", WHEN)] and ignored == ("Op", WHEN)


ISOLATION = Prebuilt(select(func.current_setting("transaction_isolation", type_=String).label("level")))


@pytest.mark.postgres_only
def test_a_transaction_begins_with_the_connections_own_isolation_level(engine: Engine) -> None:
    """libpq's BEGIN is the one psycopg would send, for each setting the pool's connections take in turn."""
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    for expected in ("read committed", "serializable", "read committed"):
        chosen = serializable if expected == "serializable" else engine
        with chosen.begin() as connection:
            assert ISOLATION.scalar_one(connection, {}) == expected


@pytest.mark.postgres_only
def test_an_engine_where_psycopg_prepares_statements_itself_keeps_them_working(isolated_database_url: str) -> None:
    """psycopg deallocates every prepared statement after a rollback once it prepared any of its own:
    on such an engine prebuilt statements take the cursor's path."""
    engine = sa_create_engine(isolated_database_url)  # psycopg's default: prepare a query seen five times
    try:
        with engine.connect() as connection:
            for _ in range(3):
                assert FIND.first(connection, {"scope": "tests", "key": "none"}) is None
                for _ in range(6):  # psycopg prepares it on the sixth run
                    connection.execute(text("SELECT 1"))
                connection.rollback()  # and so deallocates everything
    finally:
        engine.dispose()


THREE_NUMBERS = Prebuilt(
    select(
        func.coalesce(bindparam("a", type_=BigInteger), 0)
        + func.coalesce(bindparam("b", type_=BigInteger), 0)
        + func.coalesce(bindparam("c", type_=BigInteger), 0)
    )
)


@pytest.mark.postgres_only
def test_a_connection_prepares_a_bounded_number_of_statements(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each size of integer (smallint, integer, bigint) and each NULL is a parameter type of its own, so one
    statement's variants multiply (a multi-row INSERT's most of all): past the bound a pooled connection,
    which lives as long as the process, runs them unprepared rather than fill the server's memory."""
    monkeypatch.setattr(libpq, "MAX_PREPARED_STATEMENTS", 8)
    sizes = (None, 1, 40_000, 2**40)
    with engine.connect() as connection:
        for a in sizes:
            for b in sizes:
                for c in sizes:
                    total = THREE_NUMBERS.scalar_one(connection, {"a": a, "b": b, "c": c})
                    assert total == (a or 0) + (b or 0) + (c or 0)
        prepared = connection.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
    assert prepared <= 8


@pytest.mark.postgres_only
@pytest.mark.parametrize("pipelines", [True, False], ids=["pipelined", "without-pipelines"])
def test_a_transactions_first_statement_goes_with_its_begin_prepared_or_not_failing_or_not(
    isolated_database_url: str, monkeypatch: pytest.MonkeyPatch, pipelines: bool
) -> None:
    """The BEGIN and the first statement share one round trip (libpq's pipeline mode; a libpq before 14
    sends the BEGIN alone). A first statement that fails leaves a failed transaction to roll back, and
    the connection serves on, whether the statement was prepared or, past the bound, runs unprepared."""
    monkeypatch.setattr(libpq, "_PIPELINES", pipelines)
    engine = create_engine(isolated_database_url, pool_size=1)
    try:
        for bound in (libpq.MAX_PREPARED_STATEMENTS, 0):
            monkeypatch.setattr(libpq, "MAX_PREPARED_STATEMENTS", bound)
            key = uuid.uuid4().hex
            with engine.begin() as connection:
                INSERT.run(connection, record(key))
                backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with pytest.raises(exc.IntegrityError), engine.begin() as connection:
                INSERT.run(connection, record(key))
            with engine.begin() as connection:
                assert FIND.one(connection, {"scope": "tests", "key": key}) == ("Op", WHEN)
                assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == backend
                assert connection.connection.driver_connection.pgconn.pipeline_status == 0  # type: ignore[union-attr]
    finally:
        engine.dispose()
