"""An earn's first two reads (its read statement and the member's lock) go with the idempotency lookup
(CheckoutSession.read_ahead_for_earn): one round trip on PostgreSQL where there were three. So does the
reservation of its ledger ids, and its ledger writes then go with the COMMIT. What must not change:
which error an earn answers when several apply, replays, and the offline path."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from checkout.commands import Basket, EarnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common import libpq
from common.clock import ManualClock
from common.db import create_engine
from common.errors import CoalitionError
from common.uow import UnitOfWork
from members.identifiers import IdentifierKind, MemberIdentifier
from partners import services as partner_services
from partners.services import PartnerSuspended
from tests.factories import create_partner, phone, request_key

SETTINGS = CheckoutSettings(identifier_pepper=b"test")


def earn(member: MemberIdentifier, *, enroll: bool = False) -> EarnCommand:
    return EarnCommand(member, f"R-{uuid.uuid4().hex[:12]}", Basket("EUR", 10_000), enroll_if_unknown=enroll)


def reason_of(call: Any) -> str:
    with pytest.raises(CoalitionError) as raised:
        call()
    return raised.value.reason


def suspend(uow: UnitOfWork, partner: PartnerRef) -> None:
    with uow.engine.connect() as connection:
        code = connection.execute(text("SELECT partner_code FROM partners WHERE id = :id"), {"id": partner.partner_id})
        partner_code = code.scalar_one()
    partner_services.set_partner_suspended(uow, request_key(), partner_code, is_suspended=True)


def test_the_partners_refusal_still_comes_before_the_members(uow: UnitOfWork) -> None:
    service, shop = CheckoutService(uow, SETTINGS), create_partner(uow)
    suspend(uow, shop)
    assert reason_of(lambda: service.earn_points(shop, uuid.uuid4().hex, earn(phone()))) == PartnerSuspended.reason
    unknown = PartnerRef(shop.partner_id + 100_000, "partner:nobody")
    assert reason_of(lambda: service.earn_points(unknown, uuid.uuid4().hex, earn(phone()))) == "PARTNER_NOT_FOUND"


def test_an_unknown_member_and_a_malformed_identifier_answer_as_before_and_again_when_retried(
    uow: UnitOfWork,
) -> None:
    service, shop = CheckoutService(uow, SETTINGS), create_partner(uow)
    malformed = MemberIdentifier(IdentifierKind.PHONE, "not a phone")
    for member, reason in ((phone(), "MEMBER_NOT_FOUND"), (malformed, "INVALID_MEMBER_IDENTIFIER")):
        request_id, command = uuid.uuid4().hex, earn(member)
        for _ in range(2):
            assert reason_of(lambda: service.earn_points(shop, request_id, command)) == reason  # noqa: B023


def test_a_replay_answers_the_stored_earn_and_leaves_the_member_free(uow: UnitOfWork) -> None:
    """A replay reads ahead too, its member's lock included, and drops both with its transaction."""
    service, shop, member = CheckoutService(uow, SETTINGS), create_partner(uow), phone()
    request_id, command = uuid.uuid4().hex, earn(member, enroll=True)
    first = service.earn_points(shop, request_id, command)
    again = service.earn_points(shop, request_id, command)
    assert again.is_replay and again.result == first.result
    other = service.earn_points(shop, uuid.uuid4().hex, replace(earn(member), receipt_id="R-other"))
    assert other.result.points_earned == first.result.points_earned
    assert service.get_balance(shop, member).available_points == 2 * first.result.points_earned


@pytest.mark.postgres_only
def test_an_earn_of_a_known_member_takes_two_round_trips(uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch) -> None:
    """BEGIN, token claim, read statement, member's lock, the ledger ids' reservation and the lookup; the
    ledger's writes, the purchase, the stored answer and the COMMIT (the claim here is a stand-in: any
    first-commit work rides along)."""
    service, shop, member = CheckoutService(uow, SETTINGS), create_partner(uow), phone()
    service.earn_points(shop, uuid.uuid4().hex, earn(member, enroll=True))
    service.earn_points(shop, uuid.uuid4().hex, earn(member))  # every statement prepared on this connection
    trips: list[str] = []
    exchange, run = libpq._exchange, libpq._Statement.run

    def counted_exchange(*arguments: Any, **options: Any) -> list[Any]:
        trips.append("pipeline")
        return exchange(*arguments, **options)

    def counted_run(statement: Any, pgconn: Any) -> Any:
        trips.append("statement")
        return run(statement, pgconn)

    monkeypatch.setattr(libpq, "_exchange", counted_exchange)
    monkeypatch.setattr(libpq._Statement, "run", counted_run)
    service.earn_points(shop, uuid.uuid4().hex, earn(member))
    assert trips == ["pipeline", "pipeline"]


@pytest.mark.postgres_only
def test_a_replay_and_a_refusal_do_not_wait_for_a_member_another_transaction_holds(
    database_url: str, clock: ManualClock
) -> None:
    """The lock read ahead skips a busy row (found in review): a replay answers its stored earn and a
    refusal its reason while a card batch, say, holds the member, not a lock timeout (1 s here)."""
    engine = create_engine(database_url, pool_size=2, statement_timeout_ms=1_000)
    try:
        uow = UnitOfWork(engine, clock)
        service, shop, member = CheckoutService(uow, SETTINGS), create_partner(uow), phone()
        request_id, command = uuid.uuid4().hex, earn(member, enroll=True)
        first = service.earn_points(shop, request_id, command)
        number = first.result.member_number
        with engine.connect() as holder:  # holds the member's balance row until it rolls back
            holder.execute(
                text(
                    "SELECT 1 FROM member_balances JOIN members ON members.id = member_balances.member_id "
                    "WHERE members.member_number = :number FOR UPDATE OF member_balances"
                ),
                {"number": number},
            )
            assert service.earn_points(shop, request_id, command).is_replay
            by_number = MemberIdentifier(IdentifierKind.MEMBER_NUMBER, number)
            wrong_currency = replace(earn(by_number), basket=Basket("GBP", 10_000))
            assert reason_of(lambda: service.earn_points(shop, uuid.uuid4().hex, wrong_currency)) == "CURRENCY_MISMATCH"
            holder.rollback()
        assert service.earn_points(shop, uuid.uuid4().hex, earn(by_number)).result.points_earned > 0
    finally:
        engine.dispose()


@pytest.mark.postgres_only
def test_a_ledger_write_failing_with_the_commit_leaves_nothing_behind_and_the_request_can_be_retried(
    database_url: str, clock: ManualClock
) -> None:
    """The earn's ledger statement goes with the COMMIT: when it fails there (here, a lock held on the
    lots past the statement timeout), the purchase and the stored answer that went with it fail too."""
    engine = create_engine(database_url, pool_size=1, statement_timeout_ms=1_000)
    other = create_engine(database_url, pool_size=1)
    try:
        uow = UnitOfWork(engine, clock)
        service, shop, member = CheckoutService(uow, SETTINGS), create_partner(uow), phone()
        service.earn_points(shop, uuid.uuid4().hex, earn(member, enroll=True))
        service.earn_points(shop, uuid.uuid4().hex, earn(member))  # every statement prepared on the connection
        request_id, command = uuid.uuid4().hex, earn(member)
        with other.connect() as holder:
            holder.execute(text("LOCK TABLE lots IN EXCLUSIVE MODE"))
            with pytest.raises(DBAPIError) as raised:
                service.earn_points(shop, request_id, command)
            assert raised.value.orig is not None and raised.value.orig.sqlstate == "57014"  # statement timeout
            notes = getattr(raised.value.orig, "__notes__", [])
            assert any("queued statement" in note and "INSERT INTO journal_transactions" in note for note in notes)
            holder.rollback()
            written = holder.execute(
                text("SELECT count(*) FROM purchases WHERE receipt_id = :receipt"), {"receipt": command.receipt_id}
            ).scalar_one()
        assert written == 0
        retried = service.earn_points(shop, request_id, command)
        assert not retried.is_replay and retried.result.points_earned > 0
    finally:
        engine.dispose()
        other.dispose()
