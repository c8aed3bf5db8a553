"""The expiry run on a real database: what lapses, when it is booked, what it never touches, and how
settlement attributes the breakage to each lot's issuer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from checkout.commands import CaptureCommand, HoldCommand
from checkout.session import CheckoutSettings
from ledger.repository import transactions
from partners.rates import Billing
from programme.expiry import ExpiryRun, expire_lapsed_points
from programme.policy import ExpiryPolicy, NetworkPolicy
from programme.services import create_policy_version
from server.app import held_points
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import APRIL, MARCH, Network, facts, own_network, utc

LIFETIME_DAYS = 20
ZERO = Decimal(0)
SETTINGS = CheckoutSettings(identifier_pepper=b"t", points_lifetime_days=LIFETIME_DAYS)


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network on a database of its own, whose books must balance when the test ends."""
    with own_network(isolated_database_url, settings=SETTINGS) as network:
        yield network


def expire(network: Network) -> ExpiryRun:
    return expire_lapsed_points(network.uow, held_points)


def expiries(network: Network) -> list[tuple[int, datetime]]:
    query = select(transactions.c.points, transactions.c.business_time).where(transactions.c.kind == "EXPIRY")
    with network.engine.connect() as connection:
        return [(int(points), moment) for points, moment in connection.execute(query.order_by(transactions.c.id))]


def available(network: Network, brand_ref: object, member: object) -> int:
    return network.checkout.get_balance(brand_ref, member).available_points  # type: ignore[arg-type]


def test_a_lot_lapses_at_its_expiry_and_is_booked_once_at_that_time(network: Network) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 500)
    expires_at = utc("2026-03-02T09:00:00") + timedelta(days=LIFETIME_DAYS)

    network.clock.set(expires_at - timedelta(seconds=1))
    assert expire(network) == ExpiryRun(0, 0, 0)
    assert available(network, shop.ref, member) == 500

    network.clock.set(expires_at + timedelta(days=3))  # a run that comes late books the true lapse time
    assert expire(network) == ExpiryRun(1, 1, 500)
    assert expire(network) == ExpiryRun(0, 0, 0)
    assert expiries(network) == [(500, expires_at)]
    assert available(network, shop.ref, member) == 0
    assert network.scalar("SELECT remaining_points FROM lots") == 0


def test_pending_points_are_never_expired(network: Network) -> None:
    """A lot still in its issuer's pending period stays, even past its expiry; it lapses once available."""
    shop = network.partner(pending_days=30)  # longer than the points live
    member = phone()
    network.earn(shop, member, 300)

    network.clock.set(utc("2026-03-02T09:00:00") + timedelta(days=LIFETIME_DAYS + 1))
    assert expire(network).lots_expired == 0

    network.clock.set(utc("2026-03-02T09:00:00") + timedelta(days=31))
    assert expire(network).points_expired == 300


def test_held_points_are_never_expired(network: Network) -> None:
    """A hold rests only on lots that outlive it: an older lot lapsing under an open hold leaves it whole."""
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 100)  # lapses first
    network.clock.set(utc("2026-03-05T09:00:00"))
    network.earn(shop, member, 100)
    lapse = utc("2026-03-02T09:00:00") + timedelta(days=LIFETIME_DAYS)

    network.clock.set(lapse - timedelta(seconds=30))
    held = network.checkout.hold_points(shop.ref, request_key().key, HoldCommand(member, 80, 120, "EUR")).result
    network.clock.set(lapse + timedelta(seconds=1))
    assert expire(network) == ExpiryRun(1, 1, 100)

    captured = network.checkout.capture_hold(shop.ref, request_key().key, CaptureCommand(held.hold_id, 80)).result
    assert captured.points_captured == 80
    assert available(network, shop.ref, member) == 20


def test_inactivity_lapses_every_point_at_the_deadline_but_not_under_an_open_hold(network: Network) -> None:
    create_policy_version(
        network.uow, request_key(), policy=NetworkPolicy(ExpiryPolicy(lifetime_months=24, inactivity_months=1)),
        effective_from=None, created_by="tests",
    )  # fmt: skip
    long_lived = Network(network.engine, network.clock, CheckoutSettings(identifier_pepper=b"t"))
    shop = long_lived.partner()
    dormant, active, holding = phone(), phone(), phone()
    long_lived.earn(shop, dormant, 400)
    long_lived.earn(shop, holding, 250)
    network.clock.set(utc("2026-03-20T09:00:00"))
    long_lived.earn(shop, active, 100)

    network.clock.set(utc("2026-04-02T10:00:00"))  # one month after the dormant member's only earn
    hold = HoldCommand(holding, 50, 300, "EUR")
    long_lived.checkout.hold_points(shop.ref, request_key().key, hold)
    assert expire(network) == ExpiryRun(1, 1, 400)
    assert expiries(network) == [(400, utc("2026-04-02T09:00:00"))]
    assert available(long_lived, shop.ref, active) == 100
    assert available(long_lived, shop.ref, holding) == 200  # 250 less the 50 held: an open hold is activity


def test_replicas_running_at_once_book_each_lot_once(network: Network) -> None:
    shop = network.partner()
    for _ in range(12):
        network.earn(shop, phone(), 10)
    network.clock.set(utc("2026-04-30T00:00:00"))

    runs: list[ExpiryRun] = []
    threads = [threading.Thread(target=lambda: runs.append(expire(network))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(run.lots_expired for run in runs) == 12
    assert sum(run.points_expired for run in runs) == 120
    assert network.scalar("SELECT COUNT(*) FROM journal_transactions WHERE kind = 'EXPIRY'") == 12


def test_settlement_attributes_breakage_to_each_issuer_without_billing_it(network: Network) -> None:
    """On issuance: paid already, the operator keeps the breakage. On redemption: never billed. Both at 0."""
    on_issuance = network.partner()
    on_redemption = network.partner(billing=Billing.ON_REDEMPTION)
    member = phone()
    network.earn(on_issuance, member, 1_000)
    network.earn(on_redemption, member, 600)
    network.redeem(on_issuance, member, 700)  # from the older lot first: 300 of it left

    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)
    network.clock.set(utc("2026-04-03T00:00:00"))  # both lots lapsed on 2026-03-22, after March closed
    assert expire(network) == ExpiryRun(1, 2, 900)
    network.clock.set(utc("2026-05-01T00:00:00"))
    network.close(APRIL)

    lapsed = {int(points): str(public_id) for points, public_id in network.rows(
        "SELECT points, public_id FROM journal_transactions WHERE kind = 'EXPIRY'")}  # fmt: skip
    assert facts(network.statement(APRIL, on_issuance)) == [(LineType.BREAKAGE, MARCH, lapsed[300], 300, ZERO, 0)]
    assert facts(network.statement(APRIL, on_redemption)) == [(LineType.BREAKAGE, MARCH, lapsed[600], 600, ZERO, 0)]


def test_inactivity_lapses_points_at_the_deadline_to_the_microsecond(network: Network) -> None:
    """Found by the stateful test: at exactly a month after the last activity, SQLite compared the
    deadline as text in another format and missed it."""
    create_policy_version(
        network.uow, request_key(), policy=NetworkPolicy(ExpiryPolicy(lifetime_months=24, inactivity_months=1)),
        effective_from=None, created_by="tests",
    )  # fmt: skip
    long_lived = Network(network.engine, network.clock, CheckoutSettings(identifier_pepper=b"t"))
    long_lived.earn(long_lived.partner(), phone(), 10)

    network.clock.set(utc("2026-04-02T09:00:00") - timedelta(microseconds=1))
    assert expire(network).lots_expired == 0
    network.clock.set(utc("2026-04-02T09:00:00"))
    assert expire(network) == ExpiryRun(1, 1, 10)


def test_a_return_does_not_take_back_points_that_already_lapsed(network: Network) -> None:
    """Found in review: the lapsed points were taken again from the member's other points, and an issuer
    billed on redemption was credited for points it never paid for."""
    issuer = network.partner(billing=Billing.ON_REDEMPTION)
    other = network.partner()
    member = phone()
    network.earn(issuer, member, 1_000, receipt="R-1")
    network.clock.set(utc("2026-03-10T09:00:00"))
    network.earn(other, member, 1_000)
    network.clock.set(utc("2026-03-23T00:00:00"))  # the first lot lapsed on 2026-03-22
    assert expire(network) == ExpiryRun(1, 1, 1_000)

    returned = network.return_purchase(issuer, "R-1")

    assert (returned.points_reversed, returned.debt_created_points, returned.reversal_transaction_id) == (1_000, 0, "")
    assert available(network, other.ref, member) == 1_000
    network.clock.set(utc("2026-04-01T00:00:00"))
    network.close(MARCH)
    lines = {fact[0]: fact[3:] for fact in facts(network.statement(MARCH, issuer))}
    assert lines == {LineType.ISSUANCE: (1_000, ZERO, 0), LineType.BREAKAGE: (1_000, ZERO, 0)}


def test_a_partial_return_sets_lapsed_points_against_its_share_once(network: Network) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 1_000, receipt="R-1")
    network.redeem(shop, member, 600)  # from the purchase's own lot: 400 left in it
    network.clock.set(utc("2026-03-10T09:00:00"))
    network.earn(shop, member, 2_000)
    network.clock.set(utc("2026-03-23T00:00:00"))
    assert expire(network).points_expired == 400

    first = network.return_purchase(shop, "R-1", returned_minor=30_000)  # 300 points: the lapsed 400 cover them
    second = network.return_purchase(shop, "R-1")  # the other 700: 100 lapsed, 600 were spent

    assert (first.points_reversed, first.reversal_transaction_id) == (300, "")
    assert (second.points_reversed, second.debt_created_points) == (700, 0)
    assert available(network, shop.ref, member) == 2_000 - 600


def test_a_new_inactivity_rule_never_backdates_a_lapse_before_it_took_effect(network: Network) -> None:
    """Found in review: switching the rule on dated the lapse months back, into closed periods."""
    long_lived = Network(network.engine, network.clock, CheckoutSettings(identifier_pepper=b"t"))
    long_lived.earn(long_lived.partner(), phone(), 70)
    network.clock.set(utc("2026-09-01T00:00:00"))
    create_policy_version(
        network.uow, request_key(), policy=NetworkPolicy(ExpiryPolicy(lifetime_months=24, inactivity_months=1)),
        effective_from=None, created_by="tests",
    )  # fmt: skip

    assert expire(network) == ExpiryRun(1, 1, 70)
    assert expiries(network) == [(70, utc("2026-09-01T00:00:00"))]


def test_a_goodwill_grant_counts_as_activity_and_does_not_lapse_at_the_next_run(network: Network) -> None:
    """Found in review: a grant to an idle member was wiped by the next run, dated before it existed."""
    from programme.goodwill import AdjustmentCommand, GoodwillDesk

    create_policy_version(
        network.uow, request_key(), policy=NetworkPolicy(ExpiryPolicy(lifetime_months=24, inactivity_months=3)),
        effective_from=None, created_by="tests",
    )  # fmt: skip
    long_lived = Network(network.engine, network.clock, CheckoutSettings(identifier_pepper=b"t"))
    member = phone()
    long_lived.earn(long_lived.partner(), member, 40)
    network.clock.set(utc("2026-06-15T10:00:00"))
    desk = GoodwillDesk(network.uow, identifier_pepper=b"t", held_points=held_points)
    command = AdjustmentCommand(member, "GRANT", 500, "MISSING_POINTS", "receipt never earned")
    desk.request(request_key("support:alice"), command, "support:alice")

    assert expire(network) == ExpiryRun(0, 0, 0)
    network.clock.set(utc("2026-09-15T10:00:00"))  # three months after the grant
    assert expire(network) == ExpiryRun(1, 2, 540)
