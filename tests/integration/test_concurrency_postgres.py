"""Concurrent checkout calls on PostgreSQL: row locks and unique keys keep every write exactly once.

Each test starts its threads together at a barrier, so the calls really overlap; the unit of work
retries contention, and only business outcomes (such as insufficient points) may reach a caller.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import text

from checkout.commands import Basket, CaptureCommand, EarnCommand, EnrollCommand, HoldCommand, RedeemCommand
from checkout.errors import InsufficientPoints, ReceiptAlreadyEarned
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.uow import UnitOfWork
from members.identifiers import MemberIdentifier
from tests.factories import create_partner, email, phone
from tests.invariants import assert_invariants

pytestmark = pytest.mark.postgres_only

T = TypeVar("T")
SETTINGS = CheckoutSettings(identifier_pepper=b"concurrency-pepper")


def run_together(count: int, task: Callable[[int], T]) -> list[T | Exception]:
    """Runs ``task(0..count-1)`` on ``count`` threads released at once; each result or raised error."""
    barrier = threading.Barrier(count)

    def call(index: int) -> T | Exception:
        barrier.wait()
        try:
            return task(index)
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def unexpected(results: Sequence[object], *allowed: type[Exception]) -> dict[str, int]:
    """How many callers got each error other than the ``allowed`` ones."""
    errors = [result for result in results if isinstance(result, Exception) and not isinstance(result, allowed)]
    return dict(Counter(f"{type(error).__name__}: {error}" for error in errors))


def earn(service: CheckoutService, partner: PartnerRef, member: MemberIdentifier, total_minor: int) -> str:
    command = EarnCommand(member, f"R-{uuid.uuid4().hex[:12]}", Basket("EUR", total_minor), enroll_if_unknown=True)
    return service.earn_points(partner, uuid.uuid4().hex, command).result.transaction_id


def points_balance(uow: UnitOfWork, member_number: str) -> int:
    with uow.engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT b.points_balance FROM member_balances b JOIN members m ON m.id = b.member_id"
                    " WHERE m.member_number = :number"
                ),
                {"number": member_number},
            ).scalar_one()
        )


def test_thirty_two_redemptions_of_a_hundred_from_a_thousand_points_let_exactly_ten_through(uow: UnitOfWork) -> None:
    service, partner, member = CheckoutService(uow, SETTINGS), create_partner(uow), email()
    earn(service, partner, member, 100_000)
    member_number = service.get_balance(partner, member).member_number
    lowest_seen: list[int] = []
    redeeming = threading.Event()

    def watch() -> None:
        while not redeeming.is_set():
            lowest_seen.append(points_balance(uow, member_number))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = run_together(
            32, lambda _: service.redeem_points(partner, uuid.uuid4().hex, RedeemCommand(member, 100, "EUR"))
        )
    finally:
        redeeming.set()
        watcher.join()

    assert not unexpected(results, InsufficientPoints), unexpected(results, InsufficientPoints)
    assert sum(not isinstance(result, Exception) for result in results) == 10
    assert sum(isinstance(result, InsufficientPoints) for result in results) == 22
    balance = service.get_balance(partner, member)
    assert (balance.available_points, balance.held_points, balance.debt_points) == (0, 0, 0)
    assert points_balance(uow, member_number) == 0
    assert lowest_seen and min(lowest_seen) >= 0
    assert_invariants(uow.engine)


def test_one_earn_sent_sixteen_times_at_once_with_one_key_has_one_effect(uow: UnitOfWork) -> None:
    service, partner, member = CheckoutService(uow, SETTINGS), create_partner(uow), email()
    service.enroll_member(partner, uuid.uuid4().hex, EnrollCommand(member))
    receipt_id, request_id = f"R-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    command = EarnCommand(member, receipt_id, Basket("EUR", 12_345))

    results = run_together(16, lambda _: service.earn_points(partner, request_id, command))

    assert not unexpected(results), unexpected(results)
    outcomes = [result for result in results if not isinstance(result, Exception)]
    assert len({outcome.result.transaction_id for outcome in outcomes}) == 1
    assert sum(not outcome.is_replay for outcome in outcomes) == 1
    assert {outcome.result.points_earned for outcome in outcomes} == {123}
    with uow.engine.connect() as connection:
        earned = connection.execute(
            text("SELECT COUNT(*) FROM journal_transactions WHERE partner_id = :partner AND receipt_id = :receipt"),
            {"partner": partner.partner_id, "receipt": receipt_id},
        ).scalar_one()
    assert earned == 1
    assert service.get_balance(partner, member).available_points == 123
    assert_invariants(uow.engine)


@pytest.mark.parametrize("members", [1, 16], ids=["one-member", "sixteen-members"])
def test_one_receipt_earned_sixteen_times_at_once_with_sixteen_keys_earns_once(uow: UnitOfWork, members: int) -> None:
    """A new receipt's purchase row goes with the COMMIT: the earns that lose the race fail it with a
    unique violation, and their retry finds the receipt earned."""
    service, partner = CheckoutService(uow, SETTINGS), create_partner(uow)
    people = [email() for _ in range(members)]
    for person in people:
        service.enroll_member(partner, uuid.uuid4().hex, EnrollCommand(person))
    receipt_id = f"R-{uuid.uuid4().hex[:12]}"

    def earn_receipt(index: int) -> object:
        command = EarnCommand(people[index % members], receipt_id, Basket("EUR", 12_345))
        return service.earn_points(partner, uuid.uuid4().hex, command)

    results = run_together(16, earn_receipt)

    assert not unexpected(results, ReceiptAlreadyEarned), unexpected(results, ReceiptAlreadyEarned)
    assert sum(not isinstance(result, Exception) for result in results) == 1
    assert sum(service.get_balance(partner, person).available_points for person in people) == 123
    assert_invariants(uow.engine)


def test_concurrent_earns_for_many_members_of_one_partner_all_land(uow: UnitOfWork) -> None:
    service, partner = CheckoutService(uow, SETTINGS), create_partner(uow)
    members = [email() for _ in range(12)]

    # Three earns per member, all at once: new members are enrolled on the spot by whichever comes first.
    results = run_together(36, lambda index: earn(service, partner, members[index % 12], 1_000 * (1 + index // 12)))

    assert not unexpected(results), unexpected(results)
    assert len(set(results)) == 36
    for member in members:
        assert service.get_balance(partner, member).available_points == 10 + 20 + 30
    assert_invariants(uow.engine)


def test_concurrent_holds_and_captures_on_one_member_spend_each_point_once(uow: UnitOfWork) -> None:
    service, partner, member = CheckoutService(uow, SETTINGS), create_partner(uow), email()
    earn(service, partner, member, 100_000)

    def hold_and_capture(_: int) -> int:
        hold = service.hold_points(partner, uuid.uuid4().hex, HoldCommand(member, 100, 600, "EUR")).result
        return service.capture_hold(partner, uuid.uuid4().hex, CaptureCommand(hold.hold_id)).result.points_captured

    results = run_together(16, hold_and_capture)

    assert not unexpected(results, InsufficientPoints), unexpected(results, InsufficientPoints)
    assert results.count(100) == 10
    balance = service.get_balance(partner, member)
    assert (balance.available_points, balance.held_points, balance.debt_points) == (0, 0, 0)
    assert_invariants(uow.engine)


def test_sixteen_enrolments_of_one_new_phone_number_create_one_member(uow: UnitOfWork) -> None:
    service, partner, member = CheckoutService(uow, SETTINGS), create_partner(uow), phone()
    with uow.engine.connect() as connection:
        members_before = connection.execute(text("SELECT COUNT(*) FROM members")).scalar_one()

    results = run_together(16, lambda _: service.enroll_member(partner, uuid.uuid4().hex, EnrollCommand(member)))

    assert not unexpected(results), unexpected(results)
    outcomes = [result for result in results if not isinstance(result, Exception)]
    assert len({outcome.result.member_number for outcome in outcomes}) == 1
    assert sum(outcome.result.is_newly_enrolled for outcome in outcomes) == 1
    with uow.engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM members")).scalar_one() == members_before + 1
    assert_invariants(uow.engine)
