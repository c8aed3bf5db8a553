"""The unit of work: one database transaction that commits only if the work returns."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from common.clock import Clock
from common.errors import TransactionContention

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL serialization_failure and deadlock_detected; SQLite reports a busy writer as "locked".
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable(error: DBAPIError) -> bool:
    if getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(error.orig)


def is_unique_violation(error: IntegrityError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate == "23505" or "UNIQUE constraint failed" in str(error.orig)


@dataclass
class FirstCommitWork:
    """Work that must commit with the first transaction of a request, ahead of anything else in it.

    The claim of a request's token id is such work: it must be spent by the time any effect of the
    request commits, and riding the request's own transaction costs no round trip of its own.
    """

    run: Callable[[Connection], None]
    committed: bool = False
    in_transaction: bool = False
    refusal: BaseException | None = None

    def refuse(self, error: BaseException) -> NoReturn:
        """Fails the transaction carrying this work with ``error``, even if the request's own work, whose
        statement may be the one that brings the answer in, catches it."""
        self.refusal = error
        raise error


_FIRST_COMMIT: ContextVar[FirstCommitWork | None] = ContextVar("first_commit_work", default=None)


@contextmanager
def first_commit_carries(work: FirstCommitWork) -> Iterator[FirstCommitWork]:
    """Inside the block, every transaction of this context (thread) begins with ``work`` until one of
    them commits: none commits without it. Work done in other threads does not see it."""
    token = _FIRST_COMMIT.set(work)
    try:
        yield work
    finally:
        _FIRST_COMMIT.reset(token)


def _pending_first_commit() -> FirstCommitWork | None:
    work = _FIRST_COMMIT.get()
    if work is None or work.committed:
        return None
    if work.in_transaction:
        # A unit of work opened inside the one carrying the work could neither carry it (it would wait
        # on the outer transaction's rows) nor commit without it (an effect before the token is spent).
        raise RuntimeError("a unit of work opened inside one that carries the request's first-commit work")
    return work


class UnitOfWork:
    """Runs a piece of work in one transaction, retrying the whole of it on contention."""

    def __init__(self, engine: Engine, clock: Clock, *, max_attempts: int = 5) -> None:
        self.engine = engine
        self.clock = clock
        self.max_attempts = max_attempts
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def run_statement(self, work: Callable[[Connection], T]) -> T:
        """Runs work that is a single statement and needs no transaction around it.

        On PostgreSQL it runs in autocommit: one round trip instead of BEGIN, statement, COMMIT.
        SQLite keeps its single-writer transaction.
        """
        if self.dialect != "postgresql" or _pending_first_commit() is not None:
            return self.run(work)
        with self._autocommit.connect() as connection:
            return work(connection)

    def run(self, work: Callable[[Connection], T]) -> T:
        first = _pending_first_commit()
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.engine.begin() as connection:
                    if first is None:
                        return work(connection)
                    first.in_transaction, first.refusal = True, None
                    try:
                        first.run(connection)
                        result = work(connection)
                        if first.refusal is not None:  # the work caught it: it still fails the transaction
                            raise first.refusal
                    finally:
                        first.in_transaction = False
                if first is not None:
                    first.committed = True
                return result
            except DBAPIError as error:
                # A unique violation means a concurrent transaction got there first: rerunning the work
                # sees its result (a replay, an existing member) instead of failing the caller.
                retryable = is_unique_violation(error) if isinstance(error, IntegrityError) else is_retryable(error)
                if not retryable:
                    raise
                if attempt == self.max_attempts:
                    raise TransactionContention("the ledger is busy; retry the request") from error
                log.info("retrying transaction after contention (attempt %d)", attempt)
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")
