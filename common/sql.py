"""Small portable SQL helpers shared by the repositories."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, CursorResult, Dialect, Table
from sqlalchemy.dialects import postgresql, registry, sqlite
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, StatementError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from common import libpq
from common.errors import InvalidArgument


class InvalidPageToken(InvalidArgument):
    reason = "INVALID_PAGE_TOKEN"


T = TypeVar("T")

MAX_PAGE_SIZE = 1000
MAX_ID = 2**63 - 1  # the largest signed 64-bit integer, the largest id a table holds
DEFAULT_PAGE_SIZE = 50


# A batch this small runs on libpq, as one multi-row INSERT (or statement by statement): cheaper than
# the driver's executemany, which opens a pipeline for it.
_ONE_STATEMENT_MAX = 8

_insert_ignoring: dict[tuple[str, str], Prebuilt] = {}


def insert_ignoring_conflict(connection: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either backend; True if a row was inserted."""
    return insert_ignoring_conflict_statement(connection, table).first(connection, values) is not None


def insert_ignoring_conflict_statement(connection: Connection, table: Table) -> Prebuilt:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING the key, for the connection's backend: a row comes back
    only when one was inserted (rowcount is not reliable here on every driver)."""
    key = (connection.dialect.name, table.name)
    statement = _insert_ignoring.get(key)
    if statement is None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = Prebuilt(dialect.insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns))
        _insert_ignoring[key] = statement  # built once: building statements costs more than running them
    return statement


_insert_many_ignoring: dict[tuple[str, str], Prebuilt] = {}


def insert_many_ignoring_conflict(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of many rows in one batch, on either backend."""
    if not rows:
        return
    key = (connection.dialect.name, table.name)
    statement = _insert_many_ignoring.get(key)
    if statement is None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = Prebuilt(dialect.insert(table).on_conflict_do_nothing())
        _insert_many_ignoring[key] = statement
    statement.run_many(connection, rows)


class Prebuilt:
    """A Core statement built once and run many times; on PostgreSQL straight on the psycopg cursor.

    The checkout hot path runs about ten statements a request, and for each SQLAlchemy's execution
    machinery (execution context, compiled-cache lookup, result wrapping) costs as much client CPU as
    psycopg itself. On PostgreSQL a prebuilt statement therefore skips it: the SQL is compiled once per
    set of parameter names, bound values and results still go through the column types' own
    processors, and driver errors are raised as SQLAlchemy's, as the unit of work expects. Other
    backends (SQLite) run the statement through SQLAlchemy. Bound values are the statement's plain
    ``bindparam``s or, for an INSERT, its column names; expanding (IN) parameters are not supported.
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, str, frozenset[str]], _CompiledStatement] = {}
        self._lock = threading.Lock()

    def rows(self, connection: Connection, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row the statement returns."""
        if connection.dialect.name != "postgresql":
            return [tuple(row) for row in connection.execute(self.statement, parameters)]
        return self._raw(connection, parameters).rows

    def first(self, connection: Connection, parameters: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rows = self.rows(connection, parameters)
        return rows[0] if rows else None

    def one(self, connection: Connection, parameters: Mapping[str, Any]) -> tuple[Any, ...]:
        rows = self.rows(connection, parameters)
        if not rows:
            raise NoResultFound("no row was found when one was required")
        if len(rows) > 1:
            raise MultipleResultsFound("multiple rows were found when exactly one was required")
        return rows[0]

    def scalar_one(self, connection: Connection, parameters: Mapping[str, Any]) -> Any:
        return self.one(connection, parameters)[0]

    def run(self, connection: Connection, parameters: Mapping[str, Any]) -> int:
        """Runs an INSERT, UPDATE or DELETE without RETURNING; the number of rows it touched."""
        if connection.dialect.name != "postgresql":
            return int(connection.execute(self.statement, parameters).rowcount)
        return self._raw(connection, parameters).rowcount

    def queue(
        self,
        connection: Connection,
        parameters: Mapping[str, Any],
        then: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> None:
        """Runs the statement in the transaction's next round trip instead of one of its own: for a write
        whose result is not needed at once (on PostgreSQL, common/libpq.py). ``then`` is given the rows
        it returns and may raise; that, or the statement's own error, is raised by whatever statement
        carries it, or by the commit, which goes with the statements queued before it (a note on the
        error names the queued statement). A rollback drops them, as does a rollback to a savepoint taken
        before them. The first time a connection meets the statement, preparing it takes a round trip.
        Elsewhere (SQLite, inside a pipeline, an engine not built by ``common.db.create_engine``) the
        statement runs at once."""
        if connection.dialect.name == "postgresql":
            compiled = self._compiled_for(connection.dialect, parameters.keys())
            driver = _driver(connection)
            if isinstance(connection.dialect, QueueKeepingDialect) and libpq.applies(driver):
                processed = None if then is None else (lambda found: then(compiled.processed(found.rows)))
                try:
                    libpq.queue(driver, connection.connection.info, compiled.numbered, compiled.values(parameters),
                                processed)  # fmt: skip
                except connection.dialect.loaded_dbapi.Error as error:
                    raise _as_sqlalchemy_error(connection, compiled.sql, error) from error
                return
            rows = self._raw(connection, parameters).rows
        else:
            result = connection.execute(self.statement, parameters)
            rows = [tuple(row) for row in result] if result.returns_rows else []
        if then is not None:
            then(rows)

    def read_ahead(self, connection: Connection, parameters: Mapping[str, Any]) -> Callable[[], list[tuple[Any, ...]]]:
        """Queues the statement, a read whose rows are wanted later, and returns what gives them: they come
        in with the transaction's next round trip, or, asked for before one went, the queue is sent then.
        Its error is raised by the statement that carries it, as any queued statement's."""
        arrived: list[list[tuple[Any, ...]]] = []
        self.queue(connection, parameters, then=arrived.append)

        def rows() -> list[tuple[Any, ...]]:
            if not arrived:
                flush_queued(connection)
            if not arrived:  # dropped unsent: a rollback to a savepoint, or a refusal that went unheeded
                raise RuntimeError("a statement read ahead was dropped before its rows came in")
            return arrived[0]

        return rows

    def run_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Runs an INSERT or UPDATE once per parameter set (in one batch)."""
        if not rows:
            return
        if connection.dialect.name != "postgresql":
            connection.execute(self.statement, list(rows))
            return
        compiled = self._compiled_for(connection.dialect, rows[0].keys())
        values = [compiled.values(row) for row in rows]
        with _driver_errors(connection, compiled.sql) as driver:
            if len(values) <= _ONE_STATEMENT_MAX and libpq.applies(driver):
                together = compiled.for_rows(len(values))
                if together is None:
                    for each in values:
                        libpq.execute(driver, connection.connection.info, compiled.numbered, each)
                else:
                    merged = {
                        f"{name}#{index}": value for index, each in enumerate(values) for name, value in each.items()
                    }
                    libpq.execute(driver, connection.connection.info, together, merged)
                return
            with driver.cursor() as cursor:
                cursor.executemany(compiled.sql, values)

    def rows_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[list[tuple[Any, ...]]]:
        """Runs a statement with RETURNING once per parameter set, in one batch: each set's rows, in order.

        On PostgreSQL the driver pipelines the executions (one round trip for the lot), which is what
        makes a multi-row insert whose generated ids are needed cheap.
        """
        if not rows:
            return []
        if connection.dialect.name != "postgresql":
            return [[tuple(row) for row in connection.execute(self.statement, values)] for values in rows]
        compiled = self._compiled_for(connection.dialect, rows[0].keys())
        values = [compiled.values(row) for row in rows]

        def execute(cursor: Any) -> list[list[tuple[Any, ...]]]:
            cursor.executemany(compiled.sql, values, returning=True)
            found = [compiled.processed(cursor.fetchall())]
            while cursor.nextset():
                found.append(compiled.processed(cursor.fetchall()))
            return found

        return _on_driver(connection, compiled.sql, execute)

    def copy_rows(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Runs an INSERT of many rows as one COPY on PostgreSQL; elsewhere as run_many does.

        For large batches: executemany costs the driver tens of microseconds of Python a row, COPY a
        few. Values go through the columns' bind processors as for any prebuilt statement.
        """
        if not rows:
            return
        if connection.dialect.name != "postgresql":
            connection.execute(self.statement, list(rows))
            return
        table = getattr(self.statement, "table", None)
        if table is None or not getattr(self.statement, "is_insert", False):
            raise ValueError("copy_rows runs INSERT statements only")
        names = list(rows[0].keys())
        compiled = self._compiled_for(connection.dialect, names)
        preparer = connection.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(name) for name in names)
        sql = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN"

        def copy_in(cursor: Any) -> None:
            with cursor.copy(sql) as copy:
                for row in rows:
                    values = compiled.values(row)
                    copy.write_row([values[name] for name in names])

        _on_driver(connection, sql, copy_in)

    def copy_rows_returning_ids(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Inserts many rows and returns their new ids, in order (the statement: INSERT ... RETURNING id).

        On PostgreSQL the ids are drawn from the ``id`` column's sequence in one statement and written
        with the rows in one COPY: executemany ... RETURNING costs the database a statement a row. The
        ids ascend in row order, as one insert after the other would give them. Elsewhere: rows_many.
        """
        if not rows:
            return []
        if connection.dialect.name != "postgresql":
            return [int(found[0][0]) for found in self.rows_many(connection, rows)]
        table = getattr(self.statement, "table", None)
        if table is None:
            raise ValueError("copy_rows_returning_ids runs INSERT statements only")
        sql = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"
        drawn = _on_driver(connection, sql, lambda cursor: cursor.execute(sql, (table.name, len(rows))).fetchall())
        ids = sorted(int(found) for (found,) in drawn)
        self.copy_rows(connection, [{"id": new_id} | dict(row) for new_id, row in zip(ids, rows, strict=True)])
        return ids

    def _raw(self, connection: Connection, parameters: Mapping[str, Any]) -> _RawResult:
        compiled = self._compiled_for(connection.dialect, parameters.keys())
        values = compiled.values(parameters)
        driver = _driver(connection)
        try:  # not _driver_errors: a context manager costs a tenth of a statement here
            if libpq.applies(driver):
                found = libpq.execute(driver, connection.connection.info, compiled.numbered, values)
                return _RawResult(compiled.processed(found.rows), found.rowcount)
            with driver.cursor() as cursor:
                cursor.execute(compiled.sql, values)
                rows = [] if cursor.description is None else compiled.processed(cursor.fetchall())
                return _RawResult(rows, cursor.rowcount)
        except connection.dialect.loaded_dbapi.Error as error:
            raise _as_sqlalchemy_error(connection, compiled.sql, error) from error

    def _compiled_for(self, dialect: Dialect, names: Iterable[str]) -> _CompiledStatement:
        parameter_names = frozenset(names)
        key = (dialect.name, dialect.driver, parameter_names)  # SQL text and processors are the driver's
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = _CompiledStatement.of(self.statement, dialect, parameter_names)
            with self._lock:
                self._compiled[key] = compiled
        return compiled


@dataclass(slots=True)  # built for every statement: a frozen dataclass costs several times as much to build
class _RawResult:  # (so it is mutable and unhashable; nothing keeps or compares one)
    rows: list[tuple[Any, ...]]
    rowcount: int


@dataclass(frozen=True)
class _CompiledStatement:
    sql: str
    literals: dict[str, Any]  # values written into the statement itself (status == "HELD")
    bind_processors: dict[str, Callable[[Any], Any]]
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column, processor), where a column has one
    width: int  # the columns a row has
    numbered: libpq.NumberedQuery  # the SQL as libpq takes it (PostgreSQL)
    _for_rows: dict[int, libpq.NumberedQuery | None] = field(default_factory=dict, compare=False)

    def for_rows(self, count: int) -> libpq.NumberedQuery | None:
        """This INSERT for ``count`` rows in one statement, if it is a plain INSERT ... VALUES."""
        if count not in self._for_rows:
            self._for_rows[count] = self.numbered.for_rows(count)
        return self._for_rows[count]

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect, names: frozenset[str]) -> _CompiledStatement:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect, column_keys=sorted(names))
        assert isinstance(compiled, SQLCompiler)
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("expanding (IN) parameters are not supported by a prebuilt statement")
        every_value = compiled.construct_params(dict.fromkeys(names))
        unknown = names - every_value.keys()
        if unknown:
            raise ValueError(f"the statement has no parameters named {sorted(unknown)}")
        processors: dict[str, Callable[[Any], Any]] = {}
        for name in every_value:
            processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        columns = list(getattr(statement, "exported_columns", ()))
        results = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        active = tuple((index, process) for index, process in enumerate(results) if process is not None)
        literals = {name: value for name, value in every_value.items() if name not in names}
        numbered = libpq.NumberedQuery.of(compiled.string)
        return cls(compiled.string, literals, processors, active, len(columns), numbered)

    def values(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        values = {**self.literals, **parameters}
        for name, process in self.bind_processors.items():
            values[name] = process(values[name])
        return values

    def processed(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows with each column's result processor applied (only the columns that have one: a
        checkout statement's row has a few dozen columns, and most need none)."""
        active = self.result_processors
        if not active:
            return rows
        done = []
        for row in rows:
            values = list(row)
            if len(values) != self.width:
                raise ValueError(f"a row of {len(values)} columns where the statement has {self.width}")
            for index, process in active:
                values[index] = process(values[index])
            done.append(tuple(values))
        return done


def _on_driver(connection: Connection, sql: str, work: Callable[[Any], T]) -> T:
    """Runs ``work`` on a psycopg cursor of the connection, raising driver errors as SQLAlchemy's."""
    with _driver_errors(connection, sql) as driver, driver.cursor() as cursor:
        return work(cursor)


@contextmanager
def _driver_errors(connection: Connection, sql: str) -> Iterator[Any]:
    """The connection's psycopg connection, in SQLAlchemy's transaction; driver errors raised inside come
    out as SQLAlchemy's (IntegrityError, OperationalError...) exactly as Connection.execute raises them."""
    driver = _driver(connection)
    try:
        libpq.flush(driver, connection.connection.info)  # the cursor's statements come after queued ones
        yield driver
    except connection.dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemy_error(connection, sql, error) from error


class QueueKeepingDialect(PGDialect_psycopg):
    """PostgreSQL through psycopg, keeping the statements queued on a connection (``Prebuilt.queue``) in
    order: they reach the database before any other statement on it, go with its COMMIT, and are dropped
    by its rollback (the pool's reset included) or by a rollback to a savepoint taken before them.
    ``common.db.create_engine`` builds PostgreSQL engines on it.

    Hooks on the dialect rather than engine events: SQLAlchemy joins an engine's event dispatch into
    every Connection it opens, which cost an earn more CPU than the round trips the queue saves."""

    supports_statement_cache = True  # as its parent: the SQL it compiles is the same

    def do_execute(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        _flush_before(context)
        super().do_execute(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_execute_no_params(self, cursor: Any, statement: Any, context: Any = None) -> None:
        _flush_before(context)
        super().do_execute_no_params(cursor, statement, context)  # type: ignore[no-untyped-call]

    def do_executemany(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        _flush_before(context)
        super().do_executemany(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_commit(self, dbapi_connection: Any) -> None:
        # The driver's commit that follows finds the transaction over, and sends nothing, when the queued
        # statements took the COMMIT with them. SQLAlchemy raises a driver error as its own, as ever.
        info = _pool_info(dbapi_connection)
        if info is not None:
            libpq.commit(dbapi_connection.driver_connection, info)
        if not _outside_transaction(dbapi_connection):
            super().do_commit(dbapi_connection)  # type: ignore[no-untyped-call]

    def do_rollback(self, dbapi_connection: Any) -> None:
        info = _pool_info(dbapi_connection)
        if info is not None:
            libpq.discard(info)
        if not _outside_transaction(dbapi_connection):
            super().do_rollback(dbapi_connection)  # type: ignore[no-untyped-call]

    def do_rollback_to_savepoint(self, connection: Any, name: str) -> None:
        # The SAVEPOINT flushed the queue: what is queued now was queued after it, and is undone with it.
        info = _pool_info(connection.connection)
        if info is not None:
            libpq.discard(info)
        super().do_rollback_to_savepoint(connection, name)  # type: ignore[no-untyped-call]


def flush_queued(connection: Connection) -> None:
    """Sends the statements queued on the connection now (``Prebuilt.queue``); nothing elsewhere."""
    if not isinstance(connection.dialect, QueueKeepingDialect):
        return  # nothing is queued: statements ran as they came
    driver = _driver(connection)
    try:
        libpq.flush(driver, connection.connection.info)
    except connection.dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemy_error(connection, "(queued statements)", error) from error


def _flush_before(context: Any) -> None:
    # Without a context (a sequence fetched ahead of its statement) nothing that reads queued rows runs.
    if context is not None:
        pooled = context.root_connection.connection
        info = _pool_info(pooled)
        if info is not None:
            libpq.flush(pooled.driver_connection, info)


def _outside_transaction(dbapi_connection: Any) -> bool:
    """Whether the driver's own commit or rollback would do nothing here (``libpq.outside_transaction``)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    return driver is not None and libpq.outside_transaction(driver)


def _pool_info(pooled: Any) -> dict[str, Any] | None:
    """The pool's dictionary of a pooled connection, where its queue lives; None for the connection
    SQLAlchemy lends the dialect once to initialise (it has none, and nothing is queued on it)."""
    if not isinstance(pooled, PoolProxiedConnection):
        return None
    try:
        return pooled.info
    except NotImplementedError:
        return None


#: The URL driver name of PostgreSQL engines built on QueueKeepingDialect.
QUEUE_KEEPING_DRIVERNAME = "postgresql+coalition"
registry.register(QUEUE_KEEPING_DRIVERNAME.replace("+", "."), __name__, QueueKeepingDialect.__name__)


def _driver(connection: Connection) -> Any:
    """The psycopg connection under ``connection``, inside SQLAlchemy's transaction."""
    if not connection.in_transaction():
        connection.begin()  # as Connection.execute autobegins: else commit() would not commit these writes
    return _driver_of(connection)


def _driver_of(connection: Connection) -> Any:
    driver = connection.connection.driver_connection
    assert driver is not None, "the connection is closed"
    return driver


def _as_sqlalchemy_error(connection: Connection, sql: str, error: Any) -> StatementError:
    """A driver error as SQLAlchemy raises it (IntegrityError, OperationalError...), the connection
    invalidated when it was lost."""
    dialect = connection.dialect
    is_disconnect = dialect.is_disconnect(error, connection.connection.dbapi_connection, None)
    if is_disconnect:
        # As SQLAlchemy does: the other pooled connections predate the outage too, so none is reused
        # (each would fail one request after a database restart or failover).
        connection.engine.dispose(close=False)
        connection.invalidate(error)
    translated: StatementError = DBAPIError.instance(
        sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True,
        connection_invalidated=is_disconnect, dialect=dialect,
    )  # fmt: skip
    return translated


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """Prebuilt statements inside this block reach PostgreSQL together, in one round trip up to each read.

    For a batch of writes nobody reads the result of: the driver queues them and waits once, at the
    end (or when a statement's rows are fetched). A failure of any is raised as SQLAlchemy's, as
    Prebuilt raises it. Other backends (SQLite) run the statements as they come.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    with _driver_errors(connection, "(pipelined statements)") as driver, driver.pipeline():
        yield


def page_size_or_default(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def decode_page_token(token: str) -> int:
    """The id after which the next page starts (0 for the first page)."""
    if not token:
        return 0
    try:
        prefix, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix != "after":
            raise ValueError(prefix)
        after = int(value)
        # Ids are positive and fit a signed 64-bit integer: any other number would reach the database as a
        # bind it rejects (SQLite raises OverflowError) instead of being refused as a token we never issued.
        if not 0 <= after <= MAX_ID:
            raise ValueError(value)
        return after
    except ValueError:
        raise InvalidPageToken("page_token is not one this service issued") from None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def paginate(
    page_size: int, page_token: str, fetch: Callable[[int, int], list[T]], cursor: Callable[[T], int]
) -> Page[T]:
    """AIP-158 pagination: ``fetch(after, limit)`` reads one row more than a page to know if more remain."""
    limit, after = page_size_or_default(page_size), decode_page_token(page_token)
    rows = fetch(after, limit + 1)
    items = rows[:limit]
    return Page(items, encode_page_token(cursor(items[-1])) if len(rows) > limit else "")


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT generated."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
