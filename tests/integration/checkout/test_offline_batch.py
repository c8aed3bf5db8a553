"""Offline store batches (checkout/offline.py) on SQLite and PostgreSQL: resends, allowances, debt, business time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, select, text

from checkout.commands import Basket, EarnCommand, HoldCommand, RedeemCommand, ReturnCommand
from checkout.errors import InvalidOfflineBatch
from checkout.models import Purchase
from checkout.offline import OfflineItem, OfflineItemResult, OfflineOperation, RefusedItem
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.clock import ManualClock
from common.db import table_of
from common.errors import InvalidArgument, Unauthenticated
from common.uow import FirstCommitWork, UnitOfWork, first_commit_carries
from ledger.models import JournalTransaction, Lot
from members.identifiers import MemberIdentifier
from programme.policy import OfflinePolicy
from tests.factories import create_partner, phone
from tests.invariants import assert_invariants

SETTINGS = CheckoutSettings(identifier_pepper=b"test")
STORE = "store-0042"


@pytest.fixture(autouse=True)
def _ledger_invariants_hold_after_each_test(engine: Engine) -> Iterator[None]:
    yield
    assert_invariants(engine)


@pytest.fixture
def service(uow: UnitOfWork) -> CheckoutService:
    return CheckoutService(uow, SETTINGS)


@pytest.fixture
def shop(uow: UnitOfWork, clock: ManualClock) -> PartnerRef:
    """A partner whose contract has been in force for a while, so items from the last days find it."""
    partner = create_partner(uow)
    clock.advance(timedelta(days=30))
    return partner


def receipt() -> str:
    return f"R-{uuid.uuid4().hex[:12]}"


def item(operation: OfflineOperation, business_time: datetime | None) -> OfflineItem:
    return OfflineItem(uuid.uuid4().hex, business_time, operation)


def earn(member: MemberIdentifier, points: int, business_time: datetime, receipt_id: str = "") -> OfflineItem:
    command = EarnCommand(member, receipt_id or receipt(), Basket("EUR", points * 100), enroll_if_unknown=True)
    return item(command, business_time)


def redemption(member: MemberIdentifier, points: int, business_time: datetime, receipt_id: str = "") -> OfflineItem:
    return item(RedeemCommand(member, points, "EUR", receipt_id=receipt_id), business_time)


def submit(
    service: CheckoutService, partner: PartnerRef, items: list[OfflineItem], store: str = STORE
) -> list[OfflineItemResult]:
    results = service.submit_offline_batch(partner, store, list(items))
    assert [result.request_id for result in results] == [item.request_id for item in items]
    return results


def reasons(results: list[OfflineItemResult]) -> list[str]:
    return [result.error.reason if result.error else "OK" for result in results]


def balance(service: CheckoutService, partner: PartnerRef, member: MemberIdentifier) -> tuple[int, int]:
    view = service.get_balance(partner, member)
    return view.available_points, view.debt_points


def a_day_of_offline_trading(member: MemberIdentifier, clock: ManualClock) -> list[OfflineItem]:
    """Earn 1,000; redeem 300 on a receipt; earn 200; return half of the first purchase."""
    morning = clock.now() - timedelta(hours=6)
    first = receipt()
    return [
        earn(member, 1_000, morning, first),
        redemption(member, 300, morning + timedelta(hours=1), receipt()),
        earn(member, 200, morning + timedelta(hours=2)),
        item(ReturnCommand(first, returned_minor=50_000), morning + timedelta(hours=3)),
    ]


def test_resending_the_whole_batch_replays_every_item(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member = phone()
    items = a_day_of_offline_trading(member, clock)
    first = submit(service, shop, items)
    assert reasons(first) == ["OK"] * 4 and not any(result.is_replay for result in first)
    assert first[0].earn is not None and first[0].earn.points_earned == 1_000
    assert first[1].redemption is not None and first[1].redemption.debt_points == 0
    assert first[3].purchase_return is not None and first[3].purchase_return.points_reversed == 500
    assert balance(service, shop, member) == (400, 0)

    clock.advance(timedelta(minutes=30))
    again = submit(service, shop, items)
    assert all(result.is_replay for result in again)
    assert [(r.earn, r.redemption, r.purchase_return) for r in again] == [
        (r.earn, r.redemption, r.purchase_return) for r in first
    ]
    assert balance(service, shop, member) == (400, 0)


def test_resending_half_a_batch_applies_only_the_items_not_yet_applied(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member = phone()
    items = a_day_of_offline_trading(member, clock)
    submit(service, shop, items[:2])  # the connection dropped after the first two
    assert balance(service, shop, member) == (700, 0)

    results = submit(service, shop, items)
    assert [result.is_replay for result in results] == [True, True, False, False]
    assert reasons(results) == ["OK"] * 4
    assert balance(service, shop, member) == (400, 0)


def test_an_item_resent_with_other_content_is_refused_and_the_first_stands(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member = phone()
    original = earn(member, 100, clock.now())
    submit(service, shop, [original])
    changed = OfflineItem(original.request_id, original.business_time, earn(member, 999, clock.now()).operation)
    assert reasons(submit(service, shop, [changed])) == ["IDEMPOTENCY_KEY_REUSED"]
    assert balance(service, shop, member) == (100, 0)


def test_redemptions_beyond_the_member_allowance_are_refused_and_write_nothing(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member, now = phone(), clock.now()
    submit(service, shop, [earn(member, 5_000, now - timedelta(days=2))])
    allowance = OfflinePolicy().member_daily_points  # the default policy: 2,000 points a day
    today = [redemption(member, allowance - 500, now), redemption(member, 600, now), redemption(member, 500, now)]
    yesterday = redemption(member, 600, now - timedelta(days=1))
    results = submit(service, shop, [*today, yesterday])

    assert reasons(results) == ["OK", "OFFLINE_ALLOWANCE_EXCEEDED", "OK", "OK"]
    refused = results[1].error
    assert refused is not None and refused.metadata["scope"] == "MEMBER" and refused.metadata["limit"] == str(allowance)
    assert balance(service, shop, member) == (5_000 - allowance - 600, 0)
    # The refusal is the item's outcome: a resend gets it again, even though nothing was written.
    again = submit(service, shop, [today[1]])
    assert reasons(again) == ["OFFLINE_ALLOWANCE_EXCEEDED"] and again[0].is_replay


def test_a_redemption_the_balance_no_longer_covers_becomes_debt_that_a_later_earn_repays(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock, engine: Engine
) -> None:
    member, now = phone(), clock.now()
    submit(service, shop, [earn(member, 300, now - timedelta(hours=5))])
    # Meanwhile, online, the member spent 200 of those at another till.
    service.redeem_points(shop, uuid.uuid4().hex, RedeemCommand(member, 200, "EUR"))

    results = submit(service, shop, [redemption(member, 500, now - timedelta(hours=1), receipt())])
    assert results[0].redemption is not None
    assert (results[0].redemption.points_redeemed, results[0].redemption.debt_points) == (500, 400)
    assert balance(service, shop, member) == (0, 400)
    with engine.connect() as connection:
        entries = connection.execute(text("""
            SELECT a.kind, e.side, e.amount_points FROM journal_entries e
            JOIN ledger_accounts a ON a.id = e.account_id JOIN journal_transactions t ON t.id = e.transaction_id
            WHERE t.public_id = :id ORDER BY a.kind"""),
            {"id": results[0].redemption.transaction_id}).all()  # fmt: skip
    assert [tuple(row) for row in entries] == [
        ("MEMBER_DEBT", "D", 400), ("MEMBER_POINTS", "D", 100), ("PARTNER_REDEEMED", "C", 500)
    ]  # fmt: skip

    later = submit(service, shop, [earn(member, 1_000, clock.now())])
    assert later[0].earn is not None and later[0].earn.debt_repaid_points == 400
    assert balance(service, shop, member) == (600, 0)


def test_returning_a_purchase_paid_on_credit_cancels_the_debt_still_owed(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    """A return gives back the lots' points and cancels the debt the redemption created, not more."""
    member, now, receipt_id = phone(), clock.now(), receipt()
    submit(service, shop, [earn(member, 100, now - timedelta(hours=5))])
    results = submit(service, shop, [redemption(member, 500, now - timedelta(hours=1), receipt_id)])
    assert results[0].redemption is not None and results[0].redemption.debt_points == 400
    assert balance(service, shop, member) == (0, 400)

    half = service.return_purchase(shop, uuid.uuid4().hex, ReturnCommand(receipt_id, is_full_return=True)).result

    assert (half.points_restored, half.debt_created_points) == (500, 0)
    assert balance(service, shop, member) == (100, 0)


def test_open_holds_stay_reserved_and_the_shortfall_goes_to_debt(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member = phone()
    submit(service, shop, [earn(member, 500, clock.now() - timedelta(hours=2))])
    service.hold_points(shop, uuid.uuid4().hex, HoldCommand(member, 400, 600, "EUR"))
    results = submit(service, shop, [redemption(member, 300, clock.now())])
    assert results[0].redemption is not None and results[0].redemption.debt_points == 200
    assert service.get_balance(shop, member).held_points == 400


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(timedelta(minutes=10), "INVALID_BUSINESS_TIME"), (-timedelta(days=31), "INVALID_BUSINESS_TIME"),
     (timedelta(minutes=4), "OK"), (-timedelta(days=29), "OK")],
)  # fmt: skip
def test_business_times_are_bounded(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock, offset: timedelta, reason: str
) -> None:
    assert reasons(submit(service, shop, [earn(phone(), 10, clock.now() + offset)])) == [reason]


def test_every_item_needs_a_business_time_and_a_bad_item_never_fails_the_batch(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member = phone()
    items: list[OfflineItem | RefusedItem] = [
        earn(member, 10, clock.now()),
        item(EarnCommand(member, receipt(), Basket("EUR", 100), enroll_if_unknown=True), None),
        RefusedItem("unreadable", InvalidArgument("an item is one of earn, purchase_return or redemption")),
        redemption(phone(), 10, clock.now()),  # an unknown member
        earn(member, 20, clock.now()),
    ]
    results = service.submit_offline_batch(shop, STORE, items)
    assert reasons(results) == ["OK", "INVALID_BUSINESS_TIME", "INVALID_ARGUMENT", "MEMBER_NOT_FOUND", "OK"]
    assert balance(service, shop, member) == (30, 0)


def test_offline_points_are_dated_by_their_business_time_and_recorded_now(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock, engine: Engine
) -> None:
    member, business_time = phone(), clock.now() - timedelta(days=3)
    results = submit(service, shop, [earn(member, 100, business_time)])
    assert results[0].earn is not None
    assert results[0].earn.expires_at == business_time.replace(year=business_time.year + 2)  # 24 months
    transactions, lots, purchases = table_of(JournalTransaction), table_of(Lot), table_of(Purchase)
    query = (
        select(transactions.c.business_time, transactions.c.recorded_at, lots.c.earned_at, lots.c.available_at,
               purchases.c.store_id, purchases.c.channel)
        .join(lots, lots.c.source_transaction_id == transactions.c.id)
        .join(purchases, purchases.c.earn_transaction_id == transactions.c.id)
        .where(transactions.c.public_id == results[0].earn.transaction_id)
    )  # fmt: skip
    with engine.connect() as connection:
        row = tuple(connection.execute(query).one())
    assert row == (business_time, clock.now(), business_time, business_time, STORE, "IN_STORE")


def test_a_batch_needs_a_store_and_at_most_500_items(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    member = phone()
    for store, items in (("", [earn(member, 1, clock.now())]), (STORE, []),
                         (STORE, [earn(member, 1, clock.now()) for _ in range(501)])):  # fmt: skip
        with pytest.raises(InvalidOfflineBatch):
            service.submit_offline_batch(shop, store, items)


def test_a_caller_refused_in_the_first_transaction_fails_the_batch_not_each_item(
    service: CheckoutService, shop: PartnerRef, clock: ManualClock
) -> None:
    """A call whose token id rides its first transaction (common.uow.first_commit_carries) and is refused
    there, replayed or its key revoked, is refused whole: every later item would open transactions only
    to be refused again, hundreds of them for a replayed batch."""
    refusals: list[int] = []

    def refuse(connection: Connection) -> None:
        refusals.append(1)
        raise Unauthenticated("the token has already been used")

    items = [earn(phone(), 10, clock.now() - timedelta(hours=1)) for _ in range(5)]
    with first_commit_carries(FirstCommitWork(refuse)), pytest.raises(Unauthenticated):
        service.submit_offline_batch(shop, STORE, items)
    assert len(refusals) <= 2  # the first item's transaction, and its look for a concurrent duplicate
