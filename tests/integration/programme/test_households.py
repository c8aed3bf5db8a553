"""Households and point transfers on a real database: the bookkeeping, every limit, replays, what members
see, and the liability report. Each test's network balances its books when it ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from checkout.commands import HoldCommand, ReleaseCommand
from common.errors import CoalitionError
from common.idempotency import RequestKey
from ledger.errors import InsufficientPoints, RecipientHasDebt
from ledger.repository import LedgerRepository, lots, movements, transactions
from members.identifiers import MemberIdentifier
from members.services import MemberNotFound
from partners.rates import Billing
from programme.activity import ActivityFilter, list_member_activity
from programme.households import (
    AccountTooNew,
    AlreadyInHousehold,
    DailyTransferLimitExceeded,
    Households,
    HouseholdTooLarge,
    HouseholdView,
    InvalidHousehold,
    InvalidTransfer,
    MembershipTooNew,
    NotInHousehold,
    NotSameHousehold,
    TooManySenders,
    TransferCommand,
    TransfersDisabled,
    TransferToSelf,
    TransferView,
)
from programme.policy import NetworkPolicy, TransferPolicy
from programme.services import create_policy_version
from programme.visibility import OPERATOR_STAFF, MemberReadSettings, Viewer
from server.app import held_points
from settlement.liability import liability_report
from tests.factories import phone, request_key
from tests.integration.settlement.harness import SETTINGS, Brand, Network, own_network, utc

STAFF = "operator:support-alice"
ENROLLED = utc("2026-01-05T10:00:00")
FORMED = utc("2026-02-09T10:00:00")  # 35 days after enrolment: accounts old enough
TRANSFER_TIME = utc("2026-02-17T10:00:00")  # 8 days in the household: memberships old enough

SNAPSHOT = {
    "transactions": "SELECT COUNT(*) FROM journal_transactions",
    "lots": "SELECT COUNT(*) FROM lots",
    "remaining": "SELECT COALESCE(SUM(remaining_points), 0) FROM lots",
    "transfers": "SELECT COUNT(*) FROM point_transfers",
    "memberships": "SELECT COUNT(*) FROM household_memberships",
    "open memberships": "SELECT COUNT(*) FROM household_memberships WHERE left_at IS NULL",
}


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    with own_network(isolated_database_url, start=ENROLLED) as network:
        yield network


@pytest.fixture
def households(network: Network) -> Households:
    return Households(network.uow, identifier_pepper=SETTINGS.identifier_pepper, held_points=held_points)


def snapshot(network: Network) -> dict[str, int]:
    return {name: int(network.scalar(query)) for name, query in SNAPSHOT.items()}


def form(households: Households, *members: MemberIdentifier) -> HouseholdView:
    return households.create(RequestKey(STAFF, request_key().key), list(members), STAFF).result


def send(
    households: Households, sender: MemberIdentifier, recipient: MemberIdentifier, points: int,
    viewer: Viewer = OPERATOR_STAFF, key: str = "",
) -> TransferView:  # fmt: skip
    command = TransferCommand(sender, recipient, points)
    return households.transfer(RequestKey(STAFF, key or request_key().key), viewer, command).result


def available(network: Network, shop: Brand, member: MemberIdentifier) -> int:
    return network.checkout.get_balance(shop.ref, member).available_points


def family(network: Network, households: Households, shop: Brand, *points: int) -> list[MemberIdentifier]:
    """Members enrolled at ENROLLED with these points each, in one household formed at FORMED; the clock
    ends at TRANSFER_TIME."""
    network.clock.set(ENROLLED)
    members = [phone() for _ in points]
    for member, earned in zip(members, points, strict=True):
        network.earn(shop, member, earned)
    network.clock.set(FORMED)
    form(households, *members)
    network.clock.set(TRANSFER_TIME)
    return members


def refused(network: Network, error: type[CoalitionError], call: Any) -> CoalitionError:
    before = snapshot(network)
    with pytest.raises(error) as raised:
        call()
    assert snapshot(network) == before, f"a refused {error.__name__} wrote something"
    return raised.value


def set_transfer_policy(network: Network, **limits: int) -> None:
    policy = NetworkPolicy(transfers=TransferPolicy(**limits))
    create_policy_version(network.uow, request_key(), policy=policy, effective_from=None, created_by="tests")


def test_a_transfer_moves_points_first_to_expire_first_keeping_issuer_price_and_expiry(
    network: Network, households: Households
) -> None:
    issuer = network.partner(Billing.ON_REDEMPTION, issuance_price="0.011")
    shop = network.partner()
    sender, recipient = phone(), phone()
    network.earn(issuer, sender, 300)  # expires first
    network.clock.advance(timedelta(days=1))
    network.earn(shop, sender, 1_000)
    network.earn(shop, recipient, 10)
    network.clock.set(FORMED)
    household = form(households, sender, recipient)
    network.clock.set(TRANSFER_TIME)

    sent = send(households, sender, recipient, 500)

    assert (sent.household_id, sent.points, sent.transferred_at) == (household.household_id, 500, TRANSFER_TIME)
    assert (available(network, shop, sender), available(network, shop, recipient)) == (800, 510)
    rows = network.rows(
        "SELECT t.kind, t.partner_id, t.points, m.member_number FROM journal_transactions t "
        "JOIN members m ON m.id = t.member_id WHERE t.public_id = :id",
        id=sent.transaction_id,
    )
    assert rows == [("TRANSFER", None, 500, sent.sender_member_number)]
    new_lots, taken = lots_of_transfer(network, sent.transaction_id)
    assert [lot.points for lot in new_lots] == [300, 200]  # one per source lot: the issuer's first (expires first)
    for lot, (source, delta) in zip(new_lots, taken, strict=True):
        assert (lot.remaining_points, lot.available_at, -delta) == (lot.points, TRANSFER_TIME, lot.points)
        carried = ("issuer_partner_id", "contract_version_id", "issuance_price", "currency", "earned_at", "expires_at")
        assert [getattr(lot, name) for name in carried] == [getattr(source, name) for name in carried]
        assert (source.origin_lot_id, lot.origin_lot_id) == (None, source.id)  # the lot the points were earned in
    assert network.rows("SELECT kind FROM lot_movements WHERE kind = 'TRANSFERRED'") == [("TRANSFERRED",)] * 2

    network.clock.advance(timedelta(days=1))
    again = send(households, recipient, sender, 250)  # moved on: still named after the lot they were earned in
    back, _ = lots_of_transfer(network, again.transaction_id)
    assert [(lot.points, lot.origin_lot_id) for lot in back] == [(250, new_lots[0].origin_lot_id)]


def test_every_limit_refuses_and_writes_nothing(network: Network, households: Households) -> None:
    shop = network.partner()
    a, b, c, d = family(network, households, shop, 9_000, 9_000, 9_000, 10)
    outsider = phone()
    network.earn(shop, outsider, 100)

    refused(network, InvalidTransfer, lambda: send(households, a, b, 0))
    refused(network, TransferToSelf, lambda: send(households, a, a, 10))
    refused(network, NotSameHousehold, lambda: send(households, a, outsider, 10))
    refused(network, MemberNotFound, lambda: send(households, a, phone(), 10))
    refused(network, InsufficientPoints, lambda: send(households, d, a, 11))
    send(households, a, d, 4_000)
    error = refused(network, DailyTransferLimitExceeded, lambda: send(households, a, d, 1_001))
    assert error.metadata["remaining_points"] == "1000"
    send(households, b, d, 100)  # d's second sender in 30 days: the limit is two
    refused(network, TooManySenders, lambda: send(households, c, d, 100))
    send(households, b, d, 100)  # a sender already counted may send again
    network.clock.advance(timedelta(days=1))  # a new UTC day
    send(households, a, d, 5_000)
    network.clock.advance(timedelta(days=31))  # a's and b's transfers have left the 30-day window
    send(households, c, d, 100)


def test_new_accounts_and_new_memberships_cannot_transfer(network: Network, households: Households) -> None:
    shop = network.partner()
    c = phone()
    network.earn(shop, c, 500)  # enrolled at ENROLLED, in no household
    a, b = family(network, households, shop, 500, 500)
    newcomer = phone()
    network.earn(shop, newcomer, 500)  # enrolled now
    households.add_member(RequestKey(STAFF, request_key().key), form_id(households, a), newcomer)

    error = refused(network, AccountTooNew, lambda: send(households, newcomer, a, 10))
    assert error.metadata["member"] == "sender"
    assert refused(network, AccountTooNew, lambda: send(households, a, newcomer, 10)).metadata["member"] == "recipient"
    network.clock.advance(timedelta(days=30))
    send(households, newcomer, a, 10)

    # b leaves and forms a household with c: a fresh membership waits its 7 days, whatever b did before.
    households.remove_member(RequestKey(STAFF, request_key().key), form_id(households, a), b)
    other = households.create(RequestKey(STAFF, request_key().key), [c, b], STAFF).result
    assert sorted(member.member_number for member in other.members) == sorted(
        number_of(network, shop, member) for member in (b, c)
    )
    refused(network, NotSameHousehold, lambda: send(households, b, a, 10))
    error = refused(network, MembershipTooNew, lambda: send(households, b, c, 10))
    assert error.metadata["min_membership_days"] == "7"
    network.clock.advance(timedelta(days=7))
    send(households, b, c, 10)


def test_held_points_stay_and_a_recipient_in_debt_is_refused(network: Network, households: Households) -> None:
    shop = network.partner()
    sender, recipient = family(network, households, shop, 500, 0)
    hold = network.checkout.hold_points(shop.ref, request_key().key, HoldCommand(sender, 400, 600, "EUR")).result

    refused(network, InsufficientPoints, lambda: send(households, sender, recipient, 101))
    send(households, sender, recipient, 100)
    assert (available(network, shop, sender), available(network, shop, recipient)) == (0, 100)

    network.earn(shop, recipient, 300, receipt="R-debt")
    network.redeem(shop, recipient, 400)
    network.return_purchase(shop, "R-debt")  # takes back 300 the recipient no longer has: debt
    assert network.checkout.get_balance(shop.ref, recipient).debt_points == 300
    network.checkout.release_hold(shop.ref, request_key().key, ReleaseCommand(hold.hold_id))
    error = refused(network, RecipientHasDebt, lambda: send(households, sender, recipient, 10))
    assert error.metadata["debt_points"] == "300"


def test_transfers_off_and_the_size_of_households(network: Network, households: Households) -> None:
    shop = network.partner()
    a, b = family(network, households, shop, 500, 500)
    household_id = form_id(households, a)
    set_transfer_policy(network, daily_points_per_sender=0)
    refused(network, TransfersDisabled, lambda: send(households, a, b, 10))
    set_transfer_policy(network, max_household_members=3)
    send(households, a, b, 10)

    extra, too_many = phone(), phone()
    for member in (extra, too_many):
        network.earn(shop, member, 10)
    households.add_member(RequestKey(STAFF, request_key().key), household_id, extra)
    refused(network, HouseholdTooLarge, lambda: households.add_member(
        RequestKey(STAFF, request_key().key), household_id, too_many))  # fmt: skip
    refused(network, AlreadyInHousehold, lambda: form(households, too_many, extra))
    refused(network, InvalidHousehold, lambda: form(households, too_many))
    refused(network, InvalidHousehold, lambda: form(households, too_many, too_many))
    refused(network, NotInHousehold, lambda: households.remove_member(
        RequestKey(STAFF, request_key().key), household_id, too_many))  # fmt: skip
    set_transfer_policy(network, max_household_members=2)  # a policy that shrinks households stops transfers
    refused(network, HouseholdTooLarge, lambda: send(households, a, b, 10))


def test_replays_return_the_first_answer_and_refusals_stay_refused(network: Network, households: Households) -> None:
    shop = network.partner()
    sender, recipient = family(network, households, shop, 6_000, 0)
    command = TransferCommand(sender, recipient, 5_000)
    first = households.transfer(RequestKey(STAFF, "same-key"), OPERATOR_STAFF, command)
    again = households.transfer(RequestKey(STAFF, "same-key"), OPERATOR_STAFF, command)
    assert (first.is_replay, again.is_replay, again.result) == (False, True, first.result)

    over = TransferCommand(sender, recipient, 1)
    with pytest.raises(DailyTransferLimitExceeded):
        households.transfer(RequestKey(STAFF, "over"), OPERATOR_STAFF, over)
    network.clock.advance(timedelta(days=1))  # the allowance is back, but the stored refusal stands
    with pytest.raises(DailyTransferLimitExceeded) as replayed:
        households.transfer(RequestKey(STAFF, "over"), OPERATOR_STAFF, over)
    assert replayed.value.metadata["idempotent_replay"] == "true"
    assert available(network, shop, recipient) == 5_000


def test_concurrent_transfers_both_ways_never_pass_a_limit_together(network: Network, households: Households) -> None:
    shop = network.partner()
    a, b = family(network, households, shop, 5_000, 5_000)
    outcomes: list[str] = []

    def transfer(sender: MemberIdentifier, recipient: MemberIdentifier) -> None:
        try:
            send(households, sender, recipient, 3_000)
            outcomes.append("sent")
        except DailyTransferLimitExceeded:
            outcomes.append("over the limit")

    threads = [threading.Thread(target=transfer, args=pair) for pair in ((a, b), (b, a), (a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["over the limit", "over the limit", "sent", "sent"]
    assert available(network, shop, a) + available(network, shop, b) == 10_000


def test_partners_see_households_and_transfer_only_for_members_who_dealt_with_them(
    network: Network, households: Households
) -> None:
    shop, elsewhere = network.partner(), network.partner()
    a, b = family(network, households, shop, 500, 0)
    network.earn(elsewhere, b, 10)  # b dealt with both partners; a only with the shop
    partner = Viewer(elsewhere.ref.partner_id, elsewhere.code)

    refused(network, MemberNotFound, lambda: send(households, a, b, 10, viewer=partner))
    with pytest.raises(MemberNotFound):
        households.get(partner, member=a)
    seen = households.get(partner, member=b)
    assert [member.member_number for member in seen.members] == [number_of(network, shop, b)]
    assert len(households.get(OPERATOR_STAFF, household_id=seen.household_id).members) == 2
    send(households, a, b, 10, viewer=Viewer(shop.ref.partner_id, shop.code))


def test_both_members_see_the_transfer_in_their_activity(network: Network, households: Households) -> None:
    shop = network.partner()
    sender, recipient = family(network, households, shop, 500, 20)
    sent = send(households, sender, recipient, 120)
    settings = MemberReadSettings(identifier_pepper=SETTINGS.identifier_pepper, held_points=held_points)

    def transfers_of(member: MemberIdentifier) -> list[tuple[str, str | None, int]]:
        page = list_member_activity(
            network.uow, settings, OPERATOR_STAFF, member, member_consent=False,
            filters=ActivityFilter(kinds=("TRANSFER",)), page_size=10, page_token="",
        ).page  # fmt: skip
        return [(item.transaction_id, item.partner_code, item.points) for item in page.items]

    assert transfers_of(sender) == [(sent.transaction_id, None, -120)]
    assert transfers_of(recipient) == [(sent.transaction_id, None, 120)]
    everything = list_member_activity(
        network.uow, settings, OPERATOR_STAFF, recipient, member_consent=False, filters=ActivityFilter(),
        page_size=1, page_token="",
    ).page  # fmt: skip
    assert [item.kind for item in everything.items] == ["TRANSFER"]  # the newest of its earn and the transfer
    shop_view = list_member_activity(
        network.uow, settings, Viewer(shop.ref.partner_id, shop.code), recipient, member_consent=False,
        filters=ActivityFilter(), page_size=10, page_token="",
    ).page  # fmt: skip
    assert [item.kind for item in shop_view.items] == ["EARN"]  # a partner sees its own share: no transfers


def test_a_return_takes_transferred_points_back_from_the_recipient_as_far_as_they_are_free(
    network: Network, households: Households
) -> None:
    shop = network.partner()
    network.clock.set(ENROLLED)
    sender, recipient = phone(), phone()
    network.earn(shop, sender, 500, receipt="R-gift")
    network.earn(shop, recipient, 20)
    network.clock.set(FORMED)
    form(households, sender, recipient)
    network.clock.set(TRANSFER_TIME)
    send(households, sender, recipient, 500)
    hold = network.checkout.hold_points(shop.ref, request_key().key, HoldCommand(recipient, 150, 600, "EUR")).result

    returned = network.return_purchase(shop, "R-gift")

    # The recipient's 520 less the 150 an open hold reserves: 370 come back from them, 130 are owed.
    assert (returned.points_reversed, returned.debt_created_points) == (500, 130)
    sender_balance = network.checkout.get_balance(shop.ref, sender)
    assert (sender_balance.available_points, sender_balance.debt_points) == (0, 130)
    balance = network.checkout.get_balance(shop.ref, recipient)
    assert (balance.available_points, balance.held_points, balance.debt_points) == (0, 150, 0)
    network.checkout.release_hold(shop.ref, request_key().key, ReleaseCommand(hold.hold_id))
    assert available(network, shop, recipient) == 150
    # Both see the return in their activity, with the points it took from each (the sender's: owed).
    settings = MemberReadSettings(identifier_pepper=SETTINGS.identifier_pepper, held_points=held_points)
    for member, points in ((sender, -130), (recipient, -370)):
        page = list_member_activity(
            network.uow, settings, OPERATOR_STAFF, member, member_consent=False,
            filters=ActivityFilter(kinds=("EARN_REVERSAL",)), page_size=10, page_token="",
        ).page  # fmt: skip
        assert [(item.transaction_id, item.partner_code, item.points, item.receipt_id) for item in page.items] == [
            (returned.reversal_transaction_id, shop.code, points, "R-gift")
        ]


def test_returns_of_two_members_holding_each_others_points_run_concurrently(
    network: Network, households: Households
) -> None:
    shop = network.partner()
    network.clock.set(ENROLLED)
    a, b = phone(), phone()
    network.earn(shop, a, 300, receipt="R-a")
    network.earn(shop, b, 200, receipt="R-b")
    network.clock.set(FORMED)
    form(households, a, b)
    network.clock.set(TRANSFER_TIME)
    send(households, a, b, 300)
    send(households, b, a, 500)  # b's own 200 and the 300 from a: a holds both purchases' points now
    results: dict[str, tuple[int, int]] = {}

    def give_back(receipt: str) -> None:
        returned = network.return_purchase(shop, receipt)
        results[receipt] = (returned.points_reversed, returned.debt_created_points)

    threads = [threading.Thread(target=give_back, args=(receipt,)) for receipt in ("R-a", "R-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"R-a": (300, 0), "R-b": (200, 0)}
    assert (available(network, shop, a), available(network, shop, b)) == (0, 0)


@pytest.mark.postgres_only
def test_a_return_locks_a_member_given_the_points_while_it_waited_before_reading_their_lots(
    network: Network, households: Households, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = network.partner()
    network.clock.set(ENROLLED)
    sender, recipient, third = phone(), phone(), phone()
    network.earn(shop, sender, 300, receipt="R-moved")
    for member in (recipient, third):
        network.earn(shop, member, 0)
    network.clock.set(FORMED)
    form(households, sender, recipient, third)
    network.clock.set(TRANSFER_TIME)
    send(households, sender, recipient, 300)
    third_id = int(network.scalar("SELECT id FROM members WHERE member_number = :n", n=number_of(network, shop, third)))
    lock_members, lots_to_take_back = LedgerRepository.lock_members, LedgerRepository.lots_to_take_back
    steps: list[str] = []

    def transfer_first(repository: LedgerRepository, member_ids: Any) -> Any:
        """The return has read who has the points, not yet locked them: the recipient passes them on."""
        if threading.current_thread() is not threading.main_thread():
            return lock_members(repository, member_ids)
        if not steps:
            worker = threading.Thread(target=lambda: send(households, recipient, third, 300))
            worker.start()
            worker.join()
        steps.append("locks the third member" if third_id in set(member_ids) else "locks")
        return lock_members(repository, member_ids)

    def reading(repository: LedgerRepository, *arguments: Any) -> Any:
        steps.append("reads the lots")
        return lots_to_take_back(repository, *arguments)

    monkeypatch.setattr(LedgerRepository, "lock_members", transfer_first)
    monkeypatch.setattr(LedgerRepository, "lots_to_take_back", reading)
    returned = network.return_purchase(shop, "R-moved")

    # The third member's lot is read only under their lock, so nothing can spend it meanwhile.
    assert steps.index("locks the third member") < steps.index("reads the lots")
    assert (returned.points_reversed, returned.debt_created_points) == (300, 0)
    assert [available(network, shop, member) for member in (sender, recipient, third)] == [0, 0, 0]


def test_the_liability_report_counts_transferred_points_once(network: Network, households: Households) -> None:
    issuer = network.partner(Billing.ON_REDEMPTION)
    sender, recipient = family(network, households, issuer, 1_000, 0)
    network.clock.set(utc("2026-03-10T10:00:00"))
    send(households, sender, recipient, 400)
    network.clock.set(utc("2026-04-02T00:00:00"))

    def row(label: str) -> tuple[int, int, int, int]:
        report = liability_report(network.uow, network.policy, label)
        found = [line for line in report.rows if line.issuer_partner_id == issuer.code]
        assert len(found) == 1
        line = found[0]
        return line.opening_points, line.issued_points, line.adjustment_points, line.closing_points

    assert row("2026-01") == (0, 1_000, 0, 1_000)
    assert row("2026-02") == (1_000, 0, 0, 1_000)  # the transfer came later: February stays as it was
    assert row("2026-03") == (1_000, 0, 0, 1_000)


def lots_of_transfer(network: Network, public_id: str) -> tuple[list[Any], list[tuple[Any, int]]]:
    """The recipient's new lots, and the sender's lots with their TRANSFERRED movements, in lot order."""
    with network.engine.connect() as connection:
        transaction_id = connection.execute(
            select(transactions.c.id).where(transactions.c.public_id == public_id)
        ).scalar_one()
        new_lots = connection.execute(
            select(lots).where(lots.c.source_transaction_id == transaction_id).order_by(lots.c.id)
        ).all()
        taken = connection.execute(
            select(lots, movements.c.points_delta)
            .join(movements, movements.c.lot_id == lots.c.id)
            .where(movements.c.transaction_id == transaction_id, movements.c.kind == "TRANSFERRED")
            .order_by(movements.c.id)
        ).all()
    return list(new_lots), [(row, int(row.points_delta)) for row in taken]


def form_id(households: Households, member: MemberIdentifier) -> str:
    return households.get(OPERATOR_STAFF, member=member).household_id


def number_of(network: Network, shop: Brand, member: MemberIdentifier) -> str:
    return network.checkout.get_balance(shop.ref, member).member_number
