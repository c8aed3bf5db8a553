"""Work that rides a request's first committed transaction (common.uow.first_commit_carries): how the
checkout API spends a token id without a transaction of its own."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from sqlalchemy import Connection

from common.errors import InvalidArgument
from common.uow import FirstCommitWork, UnitOfWork, first_commit_carries
from tests.integration.common.test_prebuilt import FIND, INSERT, record


def recorded(uow: UnitOfWork, key: str) -> bool:
    return uow.run(lambda connection: FIND.first(connection, {"scope": "tests", "key": key})) is not None


def carrying(key: str, runs: list[str]) -> FirstCommitWork:
    def run(connection: Connection) -> None:
        runs.append(key)
        INSERT.run(connection, record(key))

    return FirstCommitWork(run)


def test_every_transaction_begins_with_the_work_until_one_commits(uow: UnitOfWork) -> None:
    key, runs = uuid.uuid4().hex, []

    def refused(connection: Connection) -> None:
        raise InvalidArgument("refused")

    with first_commit_carries(carrying(key, runs)) as carried:
        with pytest.raises(InvalidArgument):
            uow.run(refused)
        assert not carried.committed and runs == [key]
        uow.run(lambda connection: None)
        assert carried.committed and runs == [key, key]
        uow.run(lambda connection: None)
        assert runs == [key, key], "once committed, it is not run again"
    assert recorded(uow, key)


def test_a_single_statement_waits_for_a_transaction_that_carries_the_work(uow: UnitOfWork) -> None:
    key, runs = uuid.uuid4().hex, []
    with first_commit_carries(carrying(key, runs)) as carried:
        uow.run_statement(lambda connection: None)
    assert carried.committed and runs == [key] and recorded(uow, key)


def test_a_unit_of_work_opened_inside_one_that_carries_the_work_is_refused(uow: UnitOfWork) -> None:
    """It could neither carry the work (it would wait on the outer transaction's rows) nor commit without
    it: a programming error, refused before it opens a transaction."""
    key, runs = uuid.uuid4().hex, []

    def outer(connection: Connection) -> None:
        uow.run(lambda inner: None)

    with first_commit_carries(carrying(key, runs)) as carried, pytest.raises(RuntimeError, match="inside one"):
        uow.run(outer)
    assert not carried.committed and not recorded(uow, key)


def test_outside_the_block_nothing_is_carried(uow: UnitOfWork) -> None:
    key, runs = uuid.uuid4().hex, []
    with first_commit_carries(carrying(key, runs)):
        pass
    uow.run(lambda connection: None)
    assert runs == [] and not recorded(uow, key)


class Refusal(Exception):
    pass


def test_a_refusal_the_work_swallows_still_fails_the_transaction(uow: UnitOfWork) -> None:
    """On PostgreSQL the work's first statement brings the refusal in (the claim rides it), inside the
    work's own code: work that catches errors around a read must not commit past it (found in review)."""
    first_key, effect = uuid.uuid4().hex, uuid.uuid4().hex

    def run(connection: Connection) -> None:
        INSERT.queue(connection, record(first_key), then=lambda rows: carried.refuse(Refusal()))

    carried = FirstCommitWork(run)

    def work(connection: Connection) -> None:
        with contextlib.suppress(Refusal):  # as work that answers a refused read itself would
            FIND.first(connection, {"scope": "tests", "key": "anything"})
        INSERT.run(connection, record(effect))

    with first_commit_carries(carried), pytest.raises(Refusal):
        uow.run(work)
    assert not carried.committed
    assert not recorded(uow, effect) and not recorded(uow, first_key)
