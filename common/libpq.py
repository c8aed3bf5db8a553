"""Prebuilt statements straight on libpq, for PostgreSQL's hot path (used by ``common.sql.Prebuilt``).

psycopg's cursor costs about 50 us of Python a statement (cursor and adapter set-up, query conversion,
description objects, its wait loop) where libpq itself costs about 15, and a checkout request runs a
dozen statements. This path keeps what matters of psycopg and skips the rest:

- values are adapted both ways by psycopg's own ``Transformer`` (the C one of psycopg-binary): the
  same dumpers and loaders a cursor would use, so values read and written are the same;
- errors are psycopg's (``error_from_result``), so callers see the same exception classes and sqlstates;
- the connection and its transaction stay psycopg's: a transaction is opened here with the very BEGIN
  psycopg would send (in one round trip with the transaction's first statement, ``_exchange``),
  and psycopg's commit and rollback act on libpq's transaction status, so SQLAlchemy commits or
  rolls back these statements like any other.

Each statement is prepared once per connection and set of parameter types (psycopg prepares a query
it has seen five times the same way), so the server plans it once. A value's size picks its type
(smallint, integer, bigint) and a NULL has none, so one statement's variants multiply, a multi-row
INSERT's most of all: a connection prepares at most ``MAX_PREPARED_STATEMENTS`` of them, the first it
meets (the hot path's), and runs any other unprepared, or a pooled connection, which lives as long as
the process, would hold ever more plans in the server's memory. Prepared statements outlive
rollbacks, but psycopg answers a rollback by deallocating every statement of the session once it has
prepared any of its own: ``common.db.create_engine`` therefore turns psycopg's preparing off.
libpq's blocking calls release the GIL, as psycopg's waiting does. Inside a pipeline
(``common.sql.pipelined``) the cursor path is used.

A write whose result nobody needs at once can be queued (``queue``): it is sent with the next
statement, or with the COMMIT, in one round trip, instead of costing one of its own. ``common.sql``
flushes the queue before anything else reaches the connection and drops it on a rollback, or on a
rollback to a savepoint (which flushed the queue when it was taken).
"""

from __future__ import annotations

import functools
import operator
import re
import select
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection as DriverConnection
from psycopg import IsolationLevel, Pipeline, abc, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import OperationalError, error_from_result

_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s|%%")
_NUMBER = re.compile(rb"\$(\d+)")
_STATE_KEY = "coalition.libpq"
_DONE = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
# libpq's pipeline mode (14 and later) and poll(2) send a transaction's BEGIN with its first statement.
_PIPELINES = Pipeline.is_supported() and hasattr(select, "poll")
#: Each holds its plans in the server (16 kB for a small SELECT, more for a multi-row INSERT); psycopg keeps 100.
MAX_PREPARED_STATEMENTS = 256


@dataclass(frozen=True)
class NumberedQuery:
    """A statement compiled for psycopg (``%(name)s`` placeholders) rewritten for libpq (``$1``)."""

    text: bytes
    names: tuple[str, ...]  # the parameter behind $1, $2...

    @classmethod
    def of(cls, sql: str) -> NumberedQuery:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "%"  # "%%" is a literal percent sign
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        return cls(_PLACEHOLDER.sub(number, sql).encode(), tuple(names))

    def for_rows(self, count: int) -> NumberedQuery | None:
        """This INSERT for ``count`` rows in one statement (``VALUES (...), (...)``), the parameters of row
        ``i`` named ``name#i``; None unless the statement is a plain ``INSERT ... VALUES (...)``."""
        head, values_clause, row = self.text.rpartition(b" VALUES (")
        if not head.startswith(b"INSERT ") or not values_clause or not row.endswith(b")") or b"(" in row:
            return None
        if _NUMBER.findall(head) or len(_NUMBER.findall(row)) != len(self.names):
            return None  # a parameter outside the row

        def row_of(index: int) -> bytes:
            offset = index * len(self.names)
            return b"(" + _NUMBER.sub(lambda found: b"$%d" % (int(found.group(1)) + offset), row)

        text = head + b" VALUES " + b", ".join(row_of(index) for index in range(count))
        return NumberedQuery(text, tuple(f"{name}#{index}" for index in range(count) for name in self.names))


@dataclass(slots=True)  # not frozen: built for every statement, and a frozen dataclass is slower to build
class _Statement:
    """A statement with its values dumped, ready to send: prepared (``name``) or not."""

    text: bytes
    name: bytes | None
    parameters: Sequence[Any]
    types: tuple[int, ...]
    formats: Sequence[Any]

    def run(self, pgconn: Any) -> Any:
        """Sends it and waits for its result (outside pipeline mode)."""
        if self.name is None:  # parsed and planned for this execution only, as psycopg's cursor does
            return pgconn.exec_params(self.text, self.parameters, self.types, self.formats)
        return pgconn.exec_prepared(self.name, self.parameters, self.formats)  # None stands for NULL

    def send(self, pgconn: Any) -> None:
        """Sends it without waiting (in pipeline mode)."""
        if self.name is None:
            pgconn.send_query_params(self.text, self.parameters, self.types, self.formats)
        else:
            pgconn.send_query_prepared(self.name, self.parameters, self.formats)


_COMMIT = _Statement(b"COMMIT", None, (), (), ())


@dataclass(slots=True)
class _Queued:
    statement: _Statement
    then: Callable[[Found], None] | None  # given the statement's result once it is in


@dataclass
class _ConnectionState:
    """What one database connection has set up: its transformer, its prepared statements, and the
    statements queued to go with the next round trip."""

    pgconn: Any
    transformer: abc.Transformer
    prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = field(default_factory=dict)
    queued: list[_Queued] = field(default_factory=list)
    _begin: tuple[tuple[Any, ...], bytes] = ((), b"")

    def begin_command(self, driver: DriverConnection[Any]) -> bytes:
        """The BEGIN psycopg itself would send for this connection's settings (built once per settings)."""
        settings = (driver.isolation_level, driver.read_only, driver.deferrable)
        if self._begin[0] != settings:
            self._begin = (settings, _begin_command(*settings))
        return self._begin[1]


@dataclass(slots=True)  # built for every statement: a frozen dataclass costs several times as much to build
class Found:  # (so it is mutable and unhashable; callers read it once)
    """The rows a statement returned (as the database's types load them) and the rows it touched."""

    rows: list[tuple[Any, ...]]
    rowcount: int


def applies(driver: DriverConnection[Any]) -> bool:
    """Whether statements can run here: not while a pipeline queues them, nor on a connection where
    psycopg prepares statements itself (it would deallocate ours); the cursor's path serves those."""
    return driver.prepare_threshold is None and bool(driver.pgconn.pipeline_status == pq.PipelineStatus.OFF)


def execute(
    driver: DriverConnection[Any], info: MutableMapping[str, Any], query: NumberedQuery, values: Mapping[str, Any]
) -> Found:
    """Runs the statement on the connection (where ``applies``), after any queued ahead of it.

    ``info`` is the pool's dictionary of this database connection (SQLAlchemy clears it when the
    connection is replaced), where the connection's prepared statements are remembered.
    """
    state = _state_of(driver, info)
    statement = _statement(driver, state, query, values)
    queued, state.queued = state.queued, []
    begins = not driver.autocommit and driver.pgconn.transaction_status == pq.TransactionStatus.IDLE
    if begins or queued:  # queued implies pipelines: without them nothing is queued
        statements = [*(each.statement for each in queued), statement]
        results = _exchange(driver, state, statements, begins=begins, queued=len(queued))
        _hand_over(state, queued, results)
        return _found(state, results[-1])
    return _found(state, _checked(statement.run(driver.pgconn), driver))


def queue(
    driver: DriverConnection[Any],
    info: MutableMapping[str, Any],
    query: NumberedQuery,
    values: Mapping[str, Any],
    then: Callable[[Found], None] | None = None,
) -> None:
    """Queues the statement (where ``applies``) to go with the connection's next round trip; ``then``
    is given its result when that returns (and may raise to fail the statement that carried it).

    Its error, too, is raised by whatever carries it: the next statement (``execute``), ``flush`` or
    ``commit``. Without a transaction to defer to (autocommit) or pipelines, it runs at once."""
    if driver.autocommit or not _PIPELINES:
        found = execute(driver, info, query, values)
        if then is not None:
            then(found)
        return
    state = _state_of(driver, info)
    state.queued.append(_Queued(_statement(driver, state, query, values), then))


def flush(driver: DriverConnection[Any], info: MutableMapping[str, Any]) -> None:
    """Sends the queued statements now, in one round trip, for something else to follow them."""
    state = info.get(_STATE_KEY)
    if state is None or state.pgconn is not driver.pgconn or not state.queued:
        return
    queued, state.queued = state.queued, []
    begins = not driver.autocommit and driver.pgconn.transaction_status == pq.TransactionStatus.IDLE
    statements = [each.statement for each in queued]
    _hand_over(state, queued, _exchange(driver, state, statements, begins=begins, queued=len(queued)))


def commit(driver: DriverConnection[Any], info: MutableMapping[str, Any]) -> None:
    """Commits the transaction together with the statements queued in it, in one round trip. If one
    of them waits for its result (``then``, which may refuse), they go first and the COMMIT after, in
    two: a refusal must come before the COMMIT is sent. (The token claim, the one such statement, is
    nearly always carried by an earlier statement.)"""
    state = info.get(_STATE_KEY)
    if state is None or state.pgconn is not driver.pgconn or not state.queued:
        return  # the driver's own commit does it
    if any(each.then is not None for each in state.queued):
        flush(driver, info)
        return
    queued, state.queued = state.queued, []
    begins = driver.pgconn.transaction_status == pq.TransactionStatus.IDLE
    _exchange(driver, state, [*(each.statement for each in queued), _COMMIT], begins=begins, queued=len(queued))


def outside_transaction(driver: DriverConnection[Any]) -> bool:
    """Whether the connection is in no transaction and no pipeline. psycopg's commit and rollback then
    send nothing, but take its lock and run its generator machinery to find that out: after a COMMIT
    sent with the queue, and on every return to the pool, that cost an earn about 2% of its CPU."""
    pgconn = driver.pgconn
    idle = pgconn.transaction_status == pq.TransactionStatus.IDLE
    return bool(idle and pgconn.pipeline_status == pq.PipelineStatus.OFF)


def discard(info: MutableMapping[str, Any]) -> None:
    """Forgets the queued statements: their transaction rolls back."""
    state = info.get(_STATE_KEY)
    if state is not None:
        state.queued.clear()


def _state_of(driver: DriverConnection[Any], info: MutableMapping[str, Any]) -> _ConnectionState:
    state = info.get(_STATE_KEY)
    if state is None or state.pgconn is not driver.pgconn:
        state = info[_STATE_KEY] = _ConnectionState(driver.pgconn, Transformer(driver))
    return state


def _statement(
    driver: DriverConnection[Any], state: _ConnectionState, query: NumberedQuery, values: Mapping[str, Any]
) -> _Statement:
    """The statement with its values dumped, prepared first if it is new and the connection has room."""
    transformer = state.transformer
    parameters = transformer.dump_sequence([values[name] for name in query.names], [PyFormat.AUTO] * len(query.names))
    types = tuple(transformer.types or ())
    name = state.prepared.get((query.text, types))
    if name is None and len(state.prepared) < MAX_PREPARED_STATEMENTS:
        name = f"_coalition_{len(state.prepared)}".encode()  # prepared for the session, in or out of a transaction
        _checked(driver.pgconn.prepare(name, query.text, types), driver)
        state.prepared[(query.text, types)] = name
    return _Statement(query.text, name, parameters, types, transformer.formats or ())


def _found(state: _ConnectionState, result: Any) -> Found:
    rows: list[tuple[Any, ...]] = []
    if result.status == pq.ExecStatus.TUPLES_OK:
        transformer = state.transformer
        transformer.set_pgresult(result)
        rows = transformer.load_rows(0, result.ntuples, tuple)
        transformer.set_pgresult(None)  # the result's memory goes with it
    touched = result.command_tuples
    return Found(rows, -1 if touched is None else touched)


def _hand_over(state: _ConnectionState, queued: list[_Queued], results: list[Any]) -> None:
    for each, result in zip(queued, results, strict=False):
        if each.then is not None:
            each.then(_found(state, result))


def _exchange(
    driver: DriverConnection[Any], state: _ConnectionState, statements: list[_Statement], *, begins: bool, queued: int
) -> list[Any]:
    """Sends the statements, after the BEGIN when ``begins``, in one round trip (libpq's pipeline
    mode): they and a sync go together, and their results come back together. On a busy server a
    round trip costs more than libpq's work: a thread switch each way and the GIL to win back.

    Sent as one sync group: once one fails, the rest are skipped (PIPELINE_ABORTED) and the transaction
    is left failed, as after an ordinary failed statement, for the unit of work to roll back (or ended,
    if it was the COMMIT that failed). The statements' results are returned; the first error raised,
    with a note naming the statement when it was one of the first ``queued``, which callers raise
    under the SQL of the statement that carried them."""
    pgconn = driver.pgconn
    if not _PIPELINES:  # one after the other; nothing is queued without pipelines
        if begins:
            _checked(pgconn.exec_(state.begin_command(driver)), driver)
        return [_checked(statement.run(pgconn), driver) for statement in statements]
    pgconn.enter_pipeline_mode()
    try:
        if begins:
            pgconn.send_query_params(state.begin_command(driver), None)
        for statement in statements:
            statement.send(pgconn)
        pgconn.pipeline_sync()
        _flush(pgconn)
        began = _result_of_one_query(pgconn) if begins else None
        results = [_result_of_one_query(pgconn) for _ in statements]
        synced = _next_result(pgconn)
        if synced is None or synced.status != pq.ExecStatus.PIPELINE_SYNC:
            raise OperationalError("the database connection was lost")
        pgconn.exit_pipeline_mode()
    except BaseException:
        # Results may be left unread, so the pipeline cannot end: the connection is closed instead (a
        # connection left in pipeline mode would hang psycopg's next statement). SQLAlchemy sees it
        # broken and replaces it: at once for a database error, or, for anything else raised while
        # waiting (a KeyboardInterrupt), when the failed rollback returns it to the pool.
        pgconn.finish()
        raise
    if began is not None:
        _checked(began, driver)
    for index, (statement, result) in enumerate(zip(statements, results, strict=True)):
        try:
            _checked(result, driver)
        except Exception as error:
            if index < queued:  # raised under the SQL of the statement that carried it: say which failed
                error.add_note(f"raised by a queued statement: {statement.text.decode(errors='replace')[:200]}")
            raise
    return results


def _result_of_one_query(pgconn: Any) -> Any:
    """A query's result in pipeline mode; each query's results end with a None."""
    result = _next_result(pgconn)
    if result is None or _next_result(pgconn) is not None:
        raise OperationalError("the database connection was lost")
    return result


def _next_result(pgconn: Any) -> Any:
    """The next result, waiting for the server without the GIL (psycopg's connections are nonblocking,
    so libpq's own calls would not wait)."""
    while pgconn.is_busy():
        _wait(pgconn.socket, select.POLLIN)
        pgconn.consume_input()
    return pgconn.get_result()


def _flush(pgconn: Any) -> None:
    """Sends what libpq buffered. While the socket takes no more, the server's replies are read in
    the meantime, as libpq asks, so neither side waits on the other."""
    while pgconn.flush() == 1:
        if _wait(pgconn.socket, select.POLLIN | select.POLLOUT) & select.POLLIN:
            pgconn.consume_input()


def _wait(socket: int, events: int) -> int:
    """Waits (without the GIL) until the socket is ready for one of ``events``; the events that happened."""
    poller = select.poll()
    poller.register(socket, events | select.POLLERR | select.POLLHUP)
    return functools.reduce(operator.or_, (happened for _, happened in poller.poll()), 0)


def _begin_command(isolation_level: Any, read_only: bool | None, deferrable: bool | None) -> bytes:
    parts = [b"BEGIN"]
    if isolation_level is not None:
        parts += [b"ISOLATION LEVEL", IsolationLevel(isolation_level).name.replace("_", " ").encode()]
    if read_only is not None:
        parts.append(b"READ ONLY" if read_only else b"READ WRITE")
    if deferrable is not None:
        parts.append(b"DEFERRABLE" if deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def _checked(result: Any, driver: DriverConnection[Any]) -> Any:
    if result.status in _DONE:
        return result
    if driver.pgconn.status == pq.ConnStatus.BAD:  # as psycopg reports a lost connection
        raise OperationalError(result.get_error_message(driver.info.encoding) or "the connection was lost")
    raise error_from_result(result, encoding=driver.info.encoding)
