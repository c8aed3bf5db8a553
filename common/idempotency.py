"""Exactly-once writes (DESIGN.md section 5): the outcome is stored with the effect, in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, String, Text, bindparam, select
from sqlalchemy.orm import Mapped, mapped_column

from common import codec
from common.db import Base, UtcDateTime, table_of
from common.errors import CoalitionError, IdempotencyKeyReused, InvalidArgument
from common.sql import Prebuilt, insert_ignoring_conflict
from common.uow import UnitOfWork

R = TypeVar("R")

MAX_KEY_LENGTH = 128


class InvalidIdempotencyKey(InvalidArgument):
    reason = "INVALID_IDEMPOTENCY_KEY"


class IdempotencyRecord(Base):
    """The stored outcome of a write, committed in the same transaction as its effect."""

    __tablename__ = "idempotency_records"

    principal: Mapped[str] = mapped_column(String(120), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation: Mapped[str] = mapped_column(String(60))
    request_hash: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(10))
    response_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


records = table_of(IdempotencyRecord)
# Every write runs these two, so they are built once and run as Prebuilt (on PostgreSQL on the driver).
_FIND = Prebuilt(
    select(records.c.operation, records.c.request_hash, records.c.outcome, records.c.response_json).where(
        records.c.principal == bindparam("scope"), records.c.idempotency_key == bindparam("key")
    )
)
_INSERT = Prebuilt(records.insert().inline())


@dataclass(frozen=True)
class RequestKey:
    """Who asks (the scope their keys live in) and the idempotency key they chose."""

    scope: str
    key: str


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """A write's result, and whether it is the stored answer to an earlier identical request."""

    result: R
    is_replay: bool


@dataclass(frozen=True)
class _Stored:
    operation: str
    request_hash: str
    outcome: str
    response_json: str


def run_once(
    uow: UnitOfWork,
    request: RequestKey,
    operation: str,
    command: Any,
    result_type: type[R],
    work: Callable[[Connection], R],
    *,
    read_ahead: Callable[[Connection], None] | None = None,
) -> Outcome[R]:
    """Runs ``work`` at most once per request key; a retry gets the stored result or error back.

    ``command`` is what the caller asked for (hashed to tell a retry from a different request) and
    ``result_type`` the dataclass the stored answer is read back into. ``read_ahead`` may queue the
    work's first reads (``Prebuilt.read_ahead``) to go with the lookup of a stored answer, in its
    round trip; it must raise nothing and write nothing, as a replay discards what it read (ids drawn
    from a sequence are fine: a replay leaves a gap, as a rollback does).
    """
    scope, key = request.scope, request.key
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidIdempotencyKey(f"request_id is required: 1 to {MAX_KEY_LENGTH} printable characters")
    request_hash = codec.fingerprint([operation, command])
    identity = {"principal": scope, "idempotency_key": key, "operation": operation, "request_hash": request_hash}

    def attempt(connection: Connection) -> Outcome[R]:
        if read_ahead is not None:
            read_ahead(connection)
        stored = _find(connection, scope, key)
        if stored is not None:
            return _replay(stored, operation, request_hash, result_type)
        result = work(connection)
        response = codec.dumps(result)
        # Sent with the COMMIT: a concurrent duplicate's record fails it, and the retry replays that one.
        succeeded = {"outcome": "OK", "response_json": response, "created_at": uow.clock.now()}
        _INSERT.queue(connection, identity | succeeded)
        return Outcome(result, is_replay=False)

    try:
        return uow.run(attempt)
    except CoalitionError as error:
        # A concurrent duplicate may have committed first (its effect is why this one failed, e.g.
        # the receipt now looks earned): the caller gets that request's answer, as a replay.
        concurrent = uow.run(lambda connection: _replay_if_stored(connection, scope, key, operation, request_hash,
                                                                  result_type))  # fmt: skip
        if concurrent is not None:
            return concurrent
        if not error.is_business_outcome:
            raise
        # The rejection is an outcome too: store it so that a retry cannot flip it into a success.
        rejection = json.dumps({"reason": error.reason, "message": error.message, "metadata": error.metadata})

        def store_rejection(connection: Connection) -> Outcome[R] | None:
            values = identity | {"outcome": "ERROR", "response_json": rejection, "created_at": uow.clock.now()}
            if insert_ignoring_conflict(connection, records, values):
                return None
            return _replay_if_stored(connection, scope, key, operation, request_hash, result_type)

        concurrent = uow.run(store_rejection)
        if concurrent is not None:
            return concurrent
        raise


def _replay_if_stored(
    connection: Connection, scope: str, key: str, operation: str, request_hash: str, result_type: type[R]
) -> Outcome[R] | None:
    stored = _find(connection, scope, key)
    return None if stored is None else _replay(stored, operation, request_hash, result_type)


def _find(connection: Connection, scope: str, key: str) -> _Stored | None:
    row = _FIND.first(connection, {"scope": scope, "key": key})
    return _Stored(*row) if row else None


def _replay(stored: _Stored, operation: str, request_hash: str, result_type: type[R]) -> Outcome[R]:
    if stored.operation != operation or stored.request_hash != request_hash:
        raise IdempotencyKeyReused("this request_id was already used for a different request")
    if stored.outcome == "ERROR":
        data = json.loads(stored.response_json)
        error = CoalitionError.from_stored(data["reason"], data["message"], data["metadata"])
        error.metadata["idempotent_replay"] = "true"
        raise error
    return Outcome(codec.loads(result_type, stored.response_json), is_replay=True)
