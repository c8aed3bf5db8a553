"""Member statements and activity history on a real database: figures, visibility, filters and paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from checkout.commands import HoldCommand
from common.sql import InvalidPageToken
from members.identifiers import IdentifierKind, MemberIdentifier
from members.services import MemberNotFound
from partners.services import PartnerSuspended, set_partner_suspended
from programme.activity import ActivityFilter, ActivityPage, InvalidActivityKind, list_member_activity
from programme.expiry import expire_lapsed_points
from programme.member_reads import LifetimeRow
from programme.policy import ExpiryPolicy, NetworkPolicy, PrivacyPolicy, add_months
from programme.services import create_policy_version
from programme.statement import ExpiryDay, get_member_statement
from programme.visibility import (
    OPERATOR_STAFF,
    MemberReadSettings,
    OtherPartnersNotVisible,
    StatementScope,
    UnknownPartnerFilter,
    Viewer,
)
from server.app import held_points
from tests.factories import phone, request_key
from tests.integration.settlement.harness import Brand, Network, own_network, utc

START = utc("2026-03-02T09:00:00")
SETTINGS = MemberReadSettings(identifier_pepper=b"t", held_points=held_points)


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network on a database of its own, whose books must balance when the test ends."""
    with own_network(isolated_database_url, START) as network:
        yield network


def viewer(brand: Brand) -> Viewer:
    return Viewer(brand.ref.partner_id, brand.code)


def set_policy(network: Network, policy: NetworkPolicy) -> None:
    create_policy_version(network.uow, request_key(), policy=policy, effective_from=None, created_by="tests")


def activity(
    network: Network, who: Viewer, member: MemberIdentifier, *, consent: bool = False, page_size: int = 0,
    page_token: str = "", filters: ActivityFilter | None = None,
) -> ActivityPage:  # fmt: skip
    return list_member_activity(
        network.uow, SETTINGS, who, member, member_consent=consent, filters=filters or ActivityFilter(),
        page_size=page_size, page_token=page_token,
    )  # fmt: skip


def test_the_statement_breaks_the_balance_down_and_lists_lifetime_points_per_partner(network: Network) -> None:
    shop, store = network.partner(), network.partner(pending_days=14)
    member = phone()
    network.earn(shop, member, 500, receipt="R-1")
    network.clock.set(START + timedelta(hours=3))  # the same UTC day: one expiry day
    network.earn(shop, member, 40)
    network.clock.set(START + timedelta(days=2))
    network.earn(store, member, 300)  # pending for 14 days
    network.redeem(store, member, 100)
    network.return_purchase(shop, "R-1", returned_minor=20_000)  # takes back 200 of the 500
    network.checkout.hold_points(shop.ref, request_key().key, HoldCommand(member, 30, 600, "EUR"))

    statement = get_member_statement(network.uow, SETTINGS, OPERATOR_STAFF, member, member_consent=False)

    balance = statement.balance
    assert (balance.available_points, balance.pending_points, balance.held_points, balance.debt_points) == (
        210,
        300,
        30,
        0,
    )
    expires_at = add_months(START, 24)  # the default policy: points live 24 months
    assert statement.next_expiries == [ExpiryDay(expires_at.date(), expires_at, 240)]
    assert balance.expiring_soon_points == 0
    assert balance.expiring_soon_until == network.clock.now() + timedelta(days=30)
    assert statement.scope is StatementScope.NETWORK
    assert statement.inactivity_expires_at is None  # the default policy has no inactivity rule
    assert sorted(statement.lifetime, key=lambda row: row.partner_code or "") == sorted(
        [LifetimeRow(shop.code, 340, 0), LifetimeRow(store.code, 300, 100)], key=lambda row: row.partner_code or ""
    )


def test_expiring_soon_follows_the_policy_window_and_expiries_group_by_day(network: Network) -> None:
    set_policy(network, NetworkPolicy(ExpiryPolicy(lifetime_months=1, inactivity_months=6, expiring_soon_days=45)))
    shop = network.partner()  # its lots live one month, as the policy now in force says
    member = phone()
    for day in (0, 0, 3, 10, 20, 30, 40):
        network.clock.set(START + timedelta(days=day, minutes=day))
        network.earn(shop, member, 10 + day)

    statement = get_member_statement(network.uow, SETTINGS, viewer(shop), member, member_consent=False)

    days = [(expiry.day, expiry.points) for expiry in statement.next_expiries]
    # Now is 2026-04-11: the lots of 2026-03-02 and 2026-03-05 have lapsed (no longer spendable).
    assert days == [(utc("2026-04-12T00:00:00").date(), 20), (utc("2026-04-22T00:00:00").date(), 30),
                    (utc("2026-05-01T00:00:00").date(), 40), (utc("2026-05-11T00:00:00").date(), 50)]  # fmt: skip
    assert statement.balance.expiring_soon_points == 140  # all of them within 45 days
    assert statement.inactivity_expires_at == utc("2026-10-11T09:40:00")  # six months after the last earn


def test_a_partner_sees_its_own_share_unless_the_member_consents_where_the_policy_allows(network: Network) -> None:
    shop, store, stranger = network.partner(), network.partner(), network.partner()
    member = phone()
    network.earn(shop, member, 100)
    network.earn(store, member, 200)
    network.redeem(store, member, 50)

    def lifetime(who: Viewer, consent: bool) -> tuple[StatementScope, list[str | None]]:
        statement = get_member_statement(network.uow, SETTINGS, who, member, member_consent=consent)
        assert statement.balance.available_points == 250  # the balance is the member's, in every scope
        return statement.scope, sorted(row.partner_code or "" for row in statement.lifetime)

    both = sorted([shop.code, store.code])
    assert lifetime(viewer(shop), False) == (StatementScope.OWN_SHARE, [shop.code])
    assert lifetime(viewer(shop), True) == (StatementScope.NETWORK, both)
    assert lifetime(OPERATOR_STAFF, False) == (StatementScope.NETWORK, both)
    assert [item.partner_code for item in activity(network, viewer(shop), member).page.items] == [shop.code]
    assert len(activity(network, viewer(shop), member, consent=True).page.items) == 3

    set_policy(network, NetworkPolicy(privacy=PrivacyPolicy(statement_consent_shows_all_partners=False)))
    assert lifetime(viewer(shop), True) == (StatementScope.OWN_SHARE, [shop.code])
    assert [item.partner_code for item in activity(network, viewer(shop), member, consent=True).page.items] == [
        shop.code
    ]
    assert lifetime(OPERATOR_STAFF, False) == (StatementScope.NETWORK, both)

    with pytest.raises(MemberNotFound):  # never dealt with the member: as if it did not exist
        get_member_statement(network.uow, SETTINGS, viewer(stranger), member, member_consent=True)
    with pytest.raises(MemberNotFound):
        activity(network, viewer(stranger), member, consent=True)
    unknown = MemberIdentifier(IdentifierKind.MEMBER_NUMBER, "M000000001")
    with pytest.raises(MemberNotFound):
        get_member_statement(network.uow, SETTINGS, OPERATOR_STAFF, unknown, member_consent=False)


def test_activity_is_newest_first_signed_from_the_member_side_and_pages_without_gaps(network: Network) -> None:
    shop, store = network.partner(), network.partner()
    member = phone()
    network.earn(shop, member, 100, receipt="R-1")
    network.clock.advance(timedelta(minutes=1))
    network.redeem(store, member, 80, receipt="W-1")
    network.clock.advance(timedelta(minutes=1))
    network.return_purchase(shop, "R-1")  # takes 100 back: 20 left, so 80 become debt
    network.clock.advance(timedelta(minutes=1))
    network.return_purchase(store, "W-1")  # gives the 80 back
    network.clock.advance(timedelta(minutes=1))
    network.earn(shop, member, 50)  # repays what is left of the debt first

    listed = activity(network, OPERATOR_STAFF, member).page.items
    assert [(item.kind, item.points) for item in listed] == [
        ("EARN", 50), ("REDEMPTION_REFUND", 80), ("EARN_REVERSAL", -100), ("REDEEM", -80), ("EARN", 100),
    ]  # fmt: skip
    assert [item.partner_code for item in listed] == [shop.code, store.code, shop.code, store.code, shop.code]
    assert listed[-1].receipt_id == "R-1"
    assert [item.business_time for item in listed] == sorted((item.business_time for item in listed), reverse=True)

    paged, token = [], ""
    while True:
        page = activity(network, OPERATOR_STAFF, member, page_size=2, page_token=token).page
        paged.extend(page.items)
        assert len(page.items) <= 2
        token = page.next_page_token
        if not token:
            break
    assert paged == listed

    by_kind = activity(network, OPERATOR_STAFF, member, filters=ActivityFilter(kinds=("EARN", "REDEEM"))).page.items
    assert [item.kind for item in by_kind] == ["EARN", "REDEEM", "EARN"]
    at_store = activity(network, OPERATOR_STAFF, member, filters=ActivityFilter(partner_code=store.code)).page.items
    assert [item.kind for item in at_store] == ["REDEMPTION_REFUND", "REDEEM"]
    mine = activity(network, viewer(shop), member, filters=ActivityFilter(partner_code=shop.code, kinds=("EARN",)))
    assert [item.points for item in mine.page.items] == [50, 100]


def test_activity_filters_are_checked(network: Network) -> None:
    shop, store = network.partner(), network.partner()
    member = phone()
    network.earn(shop, member, 100)
    network.earn(store, member, 100)

    with pytest.raises(OtherPartnersNotVisible):  # own share: naming another partner is refused
        activity(network, viewer(shop), member, filters=ActivityFilter(partner_code=store.code))
    with pytest.raises(OtherPartnersNotVisible):  # permission before existence
        activity(network, viewer(shop), member, filters=ActivityFilter(partner_code="no-such-partner"))
    with_consent = activity(network, viewer(shop), member, consent=True, filters=ActivityFilter(store.code))
    assert [item.partner_code for item in with_consent.page.items] == [store.code]
    with pytest.raises(UnknownPartnerFilter):
        activity(network, OPERATOR_STAFF, member, filters=ActivityFilter(partner_code="no-such-partner"))
    with pytest.raises(InvalidActivityKind):
        activity(network, OPERATOR_STAFF, member, filters=ActivityFilter(kinds=("PURCHASE",)))
    with pytest.raises(InvalidPageToken):
        activity(network, OPERATOR_STAFF, member, page_token="bm90LWEtdG9rZW4=")


def test_a_suspended_partner_reads_nothing(network: Network) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 100)
    set_partner_suspended(network.uow, request_key(), shop.code, is_suspended=True)
    with pytest.raises(PartnerSuspended):
        get_member_statement(network.uow, SETTINGS, viewer(shop), member, member_consent=False)


def test_expired_points_show_as_activity_of_their_issuer(network: Network) -> None:
    shop = network.partner()
    member = phone()
    network.earn(shop, member, 70)
    network.clock.set(START + timedelta(days=731))
    expire_lapsed_points(network.uow, held_points)

    listed = activity(network, viewer(shop), member).page.items
    assert [(item.kind, item.points, item.partner_code) for item in listed] == [
        ("EXPIRY", -70, shop.code), ("EARN", 70, shop.code),
    ]  # fmt: skip
    statement = get_member_statement(network.uow, SETTINGS, viewer(shop), member, member_consent=False)
    assert statement.next_expiries == []
    assert statement.lifetime == [LifetimeRow(shop.code, 70, 0)]
    assert statement.read_at == network.clock.now()
