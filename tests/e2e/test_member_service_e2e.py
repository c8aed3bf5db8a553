"""MemberService over a real server: statements, activity and churn signals, every visibility rule, the CLI.

The server has a database of its own: the privacy policy is network-wide, and the churn list spans
every member, with a clock the tests move.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from loyalty.v1 import checkout_service_pb2 as checkout_pb
from loyalty.v1 import member_service_pb2 as pb
from loyalty.v1 import network_policy_service_pb2 as policy_pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from common.clock import ManualClock
from programme.policy import add_months
from sdk.client import CoalitionClient, Credentials
from server.app import RunningServer
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, reason_of
from tests.e2e.test_cli import COMMAND
from tests.e2e.test_settlement_cli import cli_connection, onboard, start_own_server
from tests.factories import phone

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Shop:
    code: str
    client: CoalitionClient


@dataclass(frozen=True)
class Network:
    running: RunningServer
    clock: ManualClock
    target: str
    admin: CoalitionClient
    operator_key: OperatorKey
    cli_options: tuple[str, ...]
    environment: dict[str, str]

    def staff(self, *roles: str) -> CoalitionClient:
        credentials = Credentials.operator("staff", OPERATOR_KEY_ID, self.operator_key.private_key, list(roles))
        return CoalitionClient(self.target, credentials)

    def shop(self) -> Shop:
        code, client = onboard(self.admin, self.target, admin_pb.BILLING_MODE_ON_ISSUANCE)
        return Shop(code, client)

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, "members", *self.cli_options, *arguments], env=self.environment,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def cli_bytes(self, *arguments: str) -> bytes:
        return subprocess.run(
            [*COMMAND, "members", *self.cli_options, *arguments], env=self.environment,
            capture_output=True, timeout=60, check=True,
        ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, operator_key: OperatorKey) -> Iterator[Network]:
    directory = tmp_path_factory.mktemp("members")
    database_url = f"sqlite:///{directory / 'ledger.db'}"
    running, clock, target = start_own_server(database_url, operator_key, START)
    options, environment = cli_connection(directory, operator_key, target, "finance-cli")
    admin = Credentials.operator("ops-tester", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
    with CoalitionClient(target, admin) as client:
        yield Network(running, clock, target, client, operator_key, options, environment)
    running.stop(0)


def earn(shop: Shop, member: checkout_pb.MemberIdentifier, points: int, receipt: str = "") -> str:
    response = shop.client.checkout.EarnPoints(checkout_pb.EarnPointsRequest(
        member=member, receipt_id=receipt or f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=checkout_pb.Basket(currency_code="EUR", total_minor=points * 100),
    ))  # fmt: skip
    return str(response.member_number)


def redeem(shop: Shop, member: checkout_pb.MemberIdentifier, points: int) -> None:
    shop.client.checkout.RedeemPoints(checkout_pb.RedeemPointsRequest(
        member=member, points=points, currency_code="EUR", receipt_id=f"W-{uuid.uuid4().hex[:8]}"))  # fmt: skip


def statement(
    client: CoalitionClient, member: checkout_pb.MemberIdentifier, consent: bool = False
) -> pb.MemberStatement:
    request = pb.GetMemberStatementRequest(member=member, member_consent=consent)
    return client.members.GetMemberStatement(request).statement


def lifetime(view: pb.MemberStatement) -> list[tuple[str, int, int]]:
    return sorted((row.partner_code, row.earned_points, row.spent_points) for row in view.lifetime_points)


def set_consent_rule(network: Network, *, shows_all_partners: bool) -> None:
    service = network.admin.network_policy
    policy = service.GetNetworkPolicy(policy_pb.GetNetworkPolicyRequest()).policy_version.policy
    policy.privacy.statement_consent_shows_all_partners = shows_all_partners
    service.CreateNetworkPolicyVersion(policy_pb.CreateNetworkPolicyVersionRequest(policy=policy))


def test_statement_shows_a_partner_its_share_the_network_with_consent_and_staff_everything(network: Network) -> None:
    shop, store, stranger = network.shop(), network.shop(), network.shop()
    member = checkout_pb.MemberIdentifier(phone_number=phone().value)
    number = earn(shop, member, 100)
    earn(store, member, 200)
    redeem(store, member, 50)
    by_number = checkout_pb.MemberIdentifier(member_number=number)

    own = statement(shop.client, member)
    assert own.scope == pb.STATEMENT_SCOPE_OWN_SHARE and own.member_number == number
    assert lifetime(own) == [(shop.code, 100, 0)]
    assert (own.balance.available_points, own.balance.pending_points, own.balance.held_points) == (250, 0, 0)
    assert [(day.points, day.expire_date) for day in own.next_expiries] == [
        (250, add_months(START, 24).date().isoformat())  # the default policy: points live 24 months
    ]
    everything = sorted([(shop.code, 100, 0), (store.code, 200, 50)])
    consented = statement(shop.client, by_number, consent=True)
    assert (consented.scope, lifetime(consented)) == (pb.STATEMENT_SCOPE_NETWORK, everything)
    for role in ("finance", "support", "admin"):
        with network.staff(role) as staff:
            view = statement(staff, member)
            assert (view.scope, lifetime(view)) == (pb.STATEMENT_SCOPE_NETWORK, everything)

    # Never dealt with the member: NOT_FOUND, consent or not, as at checkout.
    for consent in (False, True):
        assert reason_of(lambda: statement(stranger.client, member, consent)) == (  # noqa: B023
            grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND",
        )  # fmt: skip
    with network.staff() as nobody:
        assert reason_of(lambda: statement(nobody, member)) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE")
    assert reason_of(lambda: statement(shop.client, checkout_pb.MemberIdentifier())) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MEMBER_IDENTIFIER",
    )  # fmt: skip

    set_consent_rule(network, shows_all_partners=False)
    try:
        switched_off = statement(shop.client, member, consent=True)
        assert (switched_off.scope, lifetime(switched_off)) == (pb.STATEMENT_SCOPE_OWN_SHARE, [(shop.code, 100, 0)])
        activity = shop.client.members.ListMemberActivity(
            pb.ListMemberActivityRequest(member=member, member_consent=True)
        )
        assert [item.partner_code for item in activity.activities] == [shop.code]
        with network.staff("finance") as staff:
            assert lifetime(statement(staff, member)) == everything
    finally:
        set_consent_rule(network, shows_all_partners=True)


def test_activity_lists_newest_first_filters_pages_and_keeps_to_the_partners_share(network: Network) -> None:
    shop, store, stranger = network.shop(), network.shop(), network.shop()
    member = checkout_pb.MemberIdentifier(email=f"{uuid.uuid4().hex[:10]}@example.com")
    earn(shop, member, 100, receipt="R-1")
    network.clock.advance(timedelta(minutes=1))
    redeem(store, member, 30)
    network.clock.advance(timedelta(minutes=1))
    earn(store, member, 20)
    network.clock.advance(timedelta(minutes=1))

    def listed(client: CoalitionClient, **fields: object) -> pb.ListMemberActivityResponse:
        return client.members.ListMemberActivity(pb.ListMemberActivityRequest(member=member, **fields))  # type: ignore[arg-type]

    with network.staff("support") as staff:
        everything = listed(staff)
        assert [(item.kind, item.points, item.partner_code) for item in everything.activities] == [
            (pb.ACTIVITY_KIND_EARN, 20, store.code), (pb.ACTIVITY_KIND_REDEEM, -30, store.code),
            (pb.ACTIVITY_KIND_EARN, 100, shop.code),
        ]  # fmt: skip
        assert everything.scope == pb.STATEMENT_SCOPE_NETWORK and everything.next_page_token == ""
        assert everything.activities[2].receipt_id == "R-1" and everything.activities[2].transaction_id

        first = listed(staff, page_size=2)
        second = listed(staff, page_size=2, page_token=first.next_page_token)
        assert list(first.activities) + list(second.activities) == list(everything.activities)
        assert second.next_page_token == ""
        redeems = listed(staff, kinds=[pb.ACTIVITY_KIND_REDEEM, pb.ACTIVITY_KIND_EXPIRY])
        assert [item.points for item in redeems.activities] == [-30]
        assert [item.points for item in listed(staff, partner_code=shop.code).activities] == [100]
        assert reason_of(lambda: listed(staff, partner_code="no-such-partner")) == (
            grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PARTNER_FILTER",
        )  # fmt: skip
        for kinds in ([pb.ACTIVITY_KIND_UNSPECIFIED], [99]):
            assert reason_of(lambda: listed(staff, kinds=kinds)) == (  # noqa: B023
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ACTIVITY_KIND",
            )  # fmt: skip
        assert reason_of(lambda: listed(staff, page_token="nonsense")) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
        )  # fmt: skip

    own = listed(shop.client)
    assert own.scope == pb.STATEMENT_SCOPE_OWN_SHARE
    assert [item.partner_code for item in own.activities] == [shop.code]
    assert reason_of(lambda: listed(shop.client, partner_code=store.code)) == (
        grpc.StatusCode.PERMISSION_DENIED, "OTHER_PARTNERS_NOT_VISIBLE",
    )  # fmt: skip
    assert [item.points for item in listed(shop.client, member_consent=True, partner_code=store.code).activities] == [
        20, -30,
    ]  # fmt: skip
    assert reason_of(lambda: listed(stranger.client, member_consent=True)) == (
        grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND",
    )  # fmt: skip


def quiet_members(network: Network) -> tuple[Shop, Shop, dict[str, str]]:
    """Two shops; a member last seen at each 100 days ago, one still active; the clock then moves on."""
    shop, store = network.shop(), network.shop()
    numbers = {
        "shop": earn(shop, checkout_pb.MemberIdentifier(phone_number=phone().value), 40),
        "store": earn(store, checkout_pb.MemberIdentifier(phone_number=phone().value), 60),
    }
    active = checkout_pb.MemberIdentifier(phone_number=phone().value)
    earn(shop, active, 10)
    network.clock.advance(timedelta(days=100))
    earn(shop, active, 10)
    return shop, store, numbers


def test_inactive_members_by_last_partner_for_staff_and_partners(network: Network) -> None:
    shop, store, numbers = quiet_members(network)

    def inactive(client: CoalitionClient, **fields: object) -> list[tuple[str, str, int]]:
        request = pb.ListInactiveMembersRequest(**({"inactive_days": 90} | fields))  # type: ignore[arg-type]
        response = client.members.ListInactiveMembers(request)
        assert response.inactive_since_time.ToDatetime(tzinfo=UTC) == network.clock.now() - timedelta(days=90)
        return [(item.member_number, item.last_partner_code, item.available_points) for item in response.members]

    with network.staff("finance") as finance:
        assert inactive(finance, last_partner_code=shop.code) == [(numbers["shop"], shop.code, 40)]
        assert inactive(finance, last_partner_code=store.code) == [(numbers["store"], store.code, 60)]
        everyone = [number for number, _, _ in inactive(finance, page_size=1000)]
        assert {numbers["shop"], numbers["store"]} <= set(everyone)
        paged: list[str] = []
        token = ""
        while True:
            request = pb.ListInactiveMembersRequest(inactive_days=90, page_size=1, page_token=token)
            response = finance.members.ListInactiveMembers(request)
            paged.extend(item.member_number for item in response.members)
            token = response.next_page_token
            if not token:
                break
        assert paged == everyone
        assert reason_of(lambda: inactive(finance, inactive_days=0)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INACTIVE_DAYS",
        )  # fmt: skip

    assert inactive(shop.client) == [(numbers["shop"], shop.code, 40)]
    assert inactive(store.client, last_partner_code=store.code) == [(numbers["store"], store.code, 60)]
    assert reason_of(lambda: inactive(shop.client, last_partner_code=store.code)) == (
        grpc.StatusCode.PERMISSION_DENIED, "OTHER_PARTNERS_NOT_VISIBLE",
    )  # fmt: skip


def test_finance_exports_inactive_members_from_the_cli(network: Network) -> None:
    shop, _, numbers = quiet_members(network)

    exported = network.cli_bytes("inactive", "--days", "90", "--partner", shop.code, "--format", "csv")
    assert exported.startswith(b"member_number,last_activity_time,last_partner,available_points\r\n")  # RFC 4180
    rows = list(csv.DictReader(io.StringIO(exported.decode(), newline="")))
    assert [(row["member_number"], row["last_partner"], row["available_points"]) for row in rows] == [
        (numbers["shop"], shop.code, "40")
    ]
    assert rows[0]["last_activity_time"].endswith("Z")

    as_json = json.loads(network.cli("inactive", "--days", "90", "--partner", shop.code, "--format", "json").stdout)
    assert [member["member_number"] for member in as_json["members"]] == [numbers["shop"]]
    assert as_json["members"][0]["available_points"] == "40"

    table = network.cli("inactive", "--days", "90", "--partner", shop.code)
    assert table.returncode == 0 and numbers["shop"] in table.stdout and "1 members inactive since" in table.stdout

    refused = network.cli("inactive", "--days", "0")
    assert refused.returncode == 1 and "INVALID_ARGUMENT INVALID_INACTIVE_DAYS" in refused.stderr
