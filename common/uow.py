"""The unit of work: one database transaction that commits only if the work returns."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

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
        if self.dialect != "postgresql":
            return self.run(work)
        with self._autocommit.connect() as connection:
            return work(connection)

    def run(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.engine.begin() as connection:
                    return work(connection)
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
