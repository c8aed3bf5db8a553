"""Churn signals on a real database: who went quiet, where they were last seen, and who may see them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from checkout.commands import EnrollCommand, HoldCommand
from common.sql import InvalidPageToken
from programme.activity import InactiveMembers, InvalidInactiveDays, list_inactive_members
from programme.visibility import (
    OPERATOR_STAFF,
    MemberReadSettings,
    OtherPartnersNotVisible,
    UnknownPartnerFilter,
    Viewer,
)
from server.app import held_points
from tests.factories import phone, request_key
from tests.integration.settlement.harness import Brand, Network, own_network, utc

START = utc("2026-01-05T09:00:00")
NOW = utc("2026-06-01T12:00:00")
SETTINGS = MemberReadSettings(identifier_pepper=b"t", held_points=held_points)


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    """A network on a database of its own, whose books must balance when the test ends."""
    with own_network(isolated_database_url, START) as network:
        yield network


def inactive(
    network: Network, who: Viewer = OPERATOR_STAFF, *, days: int = 90, partner: str = "", page_size: int = 0,
    page_token: str = "",
) -> InactiveMembers:  # fmt: skip
    return list_inactive_members(
        network.uow, SETTINGS, who, inactive_days=days, last_partner_code=partner, page_size=page_size,
        page_token=page_token,
    )  # fmt: skip


def rows(result: InactiveMembers) -> list[tuple[str, str | None, int]]:
    return [(member.member_number, member.last_partner_code, member.available_points) for member in result.page.items]


def test_members_quiet_for_n_days_with_their_last_partner_and_points(network: Network) -> None:
    shop, store = network.partner(), network.partner()
    gone_from_shop, moved_to_store, active, never_active = phone(), phone(), phone(), phone()
    numbers = {}
    numbers["shop"] = network.earn(shop, gone_from_shop, 120).member_number
    numbers["store"] = network.earn(shop, moved_to_store, 300).member_number
    network.clock.set(START + timedelta(days=10))
    network.redeem(store, moved_to_store, 50)  # its last activity: at the store
    network.checkout.enroll_member(shop.ref, request_key().key, EnrollCommand(never_active))
    network.clock.set(NOW - timedelta(days=30))
    network.earn(store, active, 10)
    network.clock.set(NOW - timedelta(minutes=5))
    network.checkout.hold_points(store.ref, request_key().key, HoldCommand(moved_to_store, 40, 900, "EUR"))
    network.clock.set(NOW)

    result = inactive(network)
    assert result.inactive_since == NOW - timedelta(days=90)
    assert sorted(rows(result)) == sorted([(numbers["shop"], shop.code, 120), (numbers["store"], store.code, 210)])
    last = {member.member_number: member.last_activity_at for member in result.page.items}
    assert last == {numbers["shop"]: START, numbers["store"]: START + timedelta(days=10)}

    # A partner sees those last active at it, whatever else they did elsewhere; staff may filter.
    assert rows(inactive(network, Viewer(shop.ref.partner_id, shop.code))) == [(numbers["shop"], shop.code, 120)]
    assert rows(inactive(network, Viewer(store.ref.partner_id, store.code), partner=store.code)) == [
        (numbers["store"], store.code, 210)
    ]
    assert rows(inactive(network, partner=store.code)) == [(numbers["store"], store.code, 210)]
    assert rows(inactive(network, days=30)) == rows(inactive(network, days=29)) != rows(inactive(network, days=31))
    assert inactive(network, days=200).page.items == []


def test_the_list_pages_in_member_order(network: Network) -> None:
    shop: Brand = network.partner()
    numbers = [network.earn(shop, phone(), 10 + index).member_number for index in range(7)]
    network.clock.set(NOW)

    seen, token = [], ""
    while True:
        page = inactive(network, page_size=3, page_token=token).page
        assert len(page.items) <= 3
        seen.extend(member.member_number for member in page.items)
        token = page.next_page_token
        if not token:
            break
    assert seen == numbers  # enrolled in this order, so in member id order


def test_arguments_are_checked_and_partners_see_only_their_own(network: Network) -> None:
    shop, store = network.partner(), network.partner()
    network.earn(shop, phone(), 10)
    for days in (0, -1, 3661):
        with pytest.raises(InvalidInactiveDays):
            inactive(network, days=days)
    with pytest.raises(OtherPartnersNotVisible):
        inactive(network, Viewer(shop.ref.partner_id, shop.code), partner=store.code)
    with pytest.raises(UnknownPartnerFilter):
        inactive(network, partner="no-such-partner")
    with pytest.raises(InvalidPageToken):
        inactive(network, page_token="garbage")
