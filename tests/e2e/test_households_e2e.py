"""HouseholdService over a real server and through the CLI: transfers, every limit's status and reason,
replays, who may call, and both sides in the member's activity.

The server has a database of its own on each backend: the transfer limits count days, so its books run
on a clock the tests move (tokens are still checked on the real clock). Every test makes its own members.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from loyalty.v1 import checkout_service_pb2 as checkout_pb
from loyalty.v1 import household_service_pb2 as pb
from loyalty.v1 import member_service_pb2 as member_pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from common.clock import ManualClock
from sdk.client import CoalitionClient, Credentials
from server.app import RunningServer
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, reason_of
from tests.e2e.test_cli import COMMAND
from tests.e2e.test_settlement_cli import cli_connection, onboard, start_own_server
from tests.factories import phone

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
Member = checkout_pb.MemberIdentifier


@dataclass(frozen=True)
class Network:
    running: RunningServer
    clock: ManualClock
    target: str
    support: CoalitionClient
    operator_key: OperatorKey
    cli_options: tuple[str, ...]
    environment: dict[str, str]

    def staff(self, *roles: str) -> CoalitionClient:
        credentials = Credentials.operator("staff", OPERATOR_KEY_ID, self.operator_key.private_key, list(roles))
        return CoalitionClient(self.target, credentials)

    def shop(self) -> CoalitionClient:
        admin = self.staff("admin")
        _, client = onboard(admin, self.target, admin_pb.BILLING_MODE_ON_ISSUANCE)
        admin.close()
        return client

    def family(self, shop: CoalitionClient, *points: int) -> list[Member]:
        """Members enrolled 31 days ago with these points, in one household for 8 days."""
        members = [Member(phone_number=phone().value) for _ in points]
        for member, earned in zip(members, points, strict=True):
            earn(shop, member, earned)
        self.clock.advance(timedelta(days=31))
        self.support.households.CreateHousehold(pb.CreateHouseholdRequest(members=members))
        self.clock.advance(timedelta(days=8))
        return members

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, "households", *self.cli_options, *arguments], env=self.environment,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def network(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, operator_key: OperatorKey
) -> Iterator[Network]:
    directory = tmp_path_factory.mktemp("households")
    database_url = f"sqlite:///{directory / 'ledger.db'}" if request.param == "sqlite" else fresh_postgres_database()
    running, clock, target = start_own_server(database_url, operator_key, START)
    options, environment = cli_connection(directory, operator_key, target, "support-cli")
    support = Credentials.operator("support-alice", OPERATOR_KEY_ID, operator_key.private_key, ["support"])
    try:
        with CoalitionClient(target, support) as client:
            yield Network(running, clock, target, client, operator_key, options, environment)
    finally:
        running.stop(0)
        if request.param == "postgresql":
            drop_postgres_database(database_url)


def earn(shop: CoalitionClient, member: Member, points: int, receipt: str = "") -> str:
    response = shop.checkout.EarnPoints(checkout_pb.EarnPointsRequest(
        member=member, receipt_id=receipt or f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=checkout_pb.Basket(currency_code="EUR", total_minor=points * 100),
    ))  # fmt: skip
    return str(response.member_number)


def balance(shop: CoalitionClient, member: Member) -> checkout_pb.Balance:
    return shop.checkout.GetBalance(checkout_pb.GetBalanceRequest(member=member)).balance


def transfer(client: CoalitionClient, sender: Member, recipient: Member, points: int, request_id: str = "") -> (
    pb.TransferPointsResponse
):  # fmt: skip
    return client.households.TransferPoints(pb.TransferPointsRequest(
        request_id=request_id, sender=sender, recipient=recipient, points=points))  # fmt: skip


FAILED = grpc.StatusCode.FAILED_PRECONDITION


def test_a_transfer_shows_on_both_sides_and_a_replay_returns_it(network: Network) -> None:
    shop = network.shop()
    sender, recipient = network.family(shop, 1_000, 50)

    first = transfer(network.support, sender, recipient, 300, request_id="move-300")
    again = transfer(network.support, sender, recipient, 300, request_id="move-300")

    assert (first.idempotent_replay, again.idempotent_replay, again.transfer) == (False, True, first.transfer)
    assert (first.transfer.points, first.transfer.sender_member_number) == (300, balance(shop, sender).member_number)
    assert (balance(shop, sender).available_points, balance(shop, recipient).available_points) == (700, 350)
    staff = network.staff("support")
    for member, points in ((sender, -300), (recipient, 300)):
        activity = staff.members.ListMemberActivity(member_pb.ListMemberActivityRequest(member=member)).activities
        assert (activity[0].transaction_id, activity[0].points, activity[0].partner_code) == (
            first.transfer.transaction_id, points, ""
        )  # fmt: skip
    assert reason_of(lambda: transfer(network.support, sender, recipient, 301, request_id="move-300")) == (
        grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_REUSED"
    )  # fmt: skip
    staff.close()


def test_new_accounts_and_new_memberships_are_refused(network: Network) -> None:
    shop = network.shop()
    old, new = Member(phone_number=phone().value), Member(phone_number=phone().value)
    earn(shop, old, 500)
    network.clock.advance(timedelta(days=31))
    earn(shop, new, 500)
    network.support.households.CreateHousehold(pb.CreateHouseholdRequest(members=[old, new]))

    assert reason_of(lambda: transfer(network.support, old, new, 10)) == (FAILED, "ACCOUNT_TOO_NEW")
    assert reason_of(lambda: transfer(network.support, new, old, 10)) == (FAILED, "ACCOUNT_TOO_NEW")
    network.clock.advance(timedelta(days=30))
    assert transfer(network.support, old, new, 10).transfer.points == 10

    joiner = Member(phone_number=phone().value)  # an old account, new to the household
    earn(shop, joiner, 500)
    network.clock.advance(timedelta(days=31))
    household_id = network.support.households.GetHousehold(pb.GetHouseholdRequest(member=old)).household.household_id
    network.support.households.AddHouseholdMember(
        pb.AddHouseholdMemberRequest(household_id=household_id, member=joiner)
    )
    assert reason_of(lambda: transfer(network.support, joiner, old, 10)) == (FAILED, "HOUSEHOLD_MEMBERSHIP_TOO_NEW")
    network.clock.advance(timedelta(days=7))
    assert transfer(network.support, joiner, old, 10).transfer.points == 10


def test_the_daily_allowance_and_the_many_to_one_limit(network: Network) -> None:
    shop = network.shop()
    a, b, c, d = network.family(shop, 9_000, 9_000, 9_000, 0)

    transfer(network.support, a, d, 5_000)
    assert reason_of(lambda: transfer(network.support, a, d, 1)) == (FAILED, "DAILY_TRANSFER_LIMIT_EXCEEDED")
    transfer(network.support, b, d, 100)
    assert reason_of(lambda: transfer(network.support, c, d, 100)) == (FAILED, "RECIPIENT_SENDER_LIMIT_REACHED")
    assert transfer(network.support, c, a, 100).transfer.points == 100  # c may still send to someone else
    network.clock.advance(timedelta(days=1))
    assert transfer(network.support, a, d, 1).transfer.points == 1  # a new UTC day


def test_only_within_one_household_never_to_oneself(network: Network) -> None:
    shop = network.shop()
    a, b = network.family(shop, 500, 500)
    stranger = Member(phone_number=phone().value)
    earn(shop, stranger, 500)  # in no household

    assert reason_of(lambda: transfer(network.support, a, stranger, 10)) == (FAILED, "NOT_SAME_HOUSEHOLD")
    assert reason_of(lambda: transfer(network.support, a, a, 10)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                      "TRANSFER_TO_SELF")  # fmt: skip
    assert reason_of(lambda: transfer(network.support, a, Member(phone_number=phone().value), 10)) == (
        grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND"
    )  # fmt: skip
    assert reason_of(lambda: transfer(network.support, a, b, 0)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                     "INVALID_TRANSFER")  # fmt: skip
    household_id = network.support.households.GetHousehold(pb.GetHouseholdRequest(member=a)).household.household_id
    network.support.households.RemoveHouseholdMember(
        pb.RemoveHouseholdMemberRequest(household_id=household_id, member=b)
    )
    assert reason_of(lambda: transfer(network.support, a, b, 10)) == (FAILED, "NOT_SAME_HOUSEHOLD")


def test_held_points_insufficient_points_and_a_recipient_in_debt(network: Network) -> None:
    shop = network.shop()
    sender, recipient = network.family(shop, 500, 0)
    shop.checkout.HoldPoints(checkout_pb.HoldPointsRequest(member=sender, points=400, ttl_seconds=600,
                                                           currency_code="EUR"))  # fmt: skip

    assert reason_of(lambda: transfer(network.support, sender, recipient, 101)) == (FAILED, "INSUFFICIENT_POINTS")
    transfer(network.support, sender, recipient, 100)
    earn(shop, recipient, 300, receipt="R-debt")
    shop.checkout.RedeemPoints(checkout_pb.RedeemPointsRequest(member=recipient, points=400, currency_code="EUR"))
    shop.checkout.ReturnPurchase(checkout_pb.ReturnPurchaseRequest(receipt_id="R-debt", full_return=True))
    assert balance(shop, recipient).debt_points == 300
    network.clock.advance(timedelta(minutes=11))  # the hold lapses: the sender's 400 points are free again
    assert reason_of(lambda: transfer(network.support, sender, recipient, 10)) == (FAILED, "RECIPIENT_HAS_DEBT")
    assert balance(shop, sender).available_points == 400


def test_partners_act_only_for_members_who_dealt_with_them_and_never_form_households(network: Network) -> None:
    shop, other = network.shop(), network.shop()
    a, b = network.family(shop, 500, 0)
    earn(other, b, 10)  # b has dealt with both partners, a only with the shop

    assert reason_of(lambda: transfer(other, a, b, 10)) == (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND")
    assert reason_of(lambda: other.households.GetHousehold(pb.GetHouseholdRequest(member=a))) == (
        grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND"
    )  # fmt: skip
    seen = other.households.GetHousehold(pb.GetHouseholdRequest(member=b)).household
    assert [member.member_number for member in seen.members] == [balance(shop, b).member_number]
    assert transfer(shop, a, b, 10).transfer.points == 10
    assert reason_of(lambda: shop.households.CreateHousehold(pb.CreateHouseholdRequest(members=[a, b]))) == (
        grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE"
    )  # fmt: skip
    finance = network.staff("finance")
    assert reason_of(lambda: transfer(finance, a, b, 10)) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE")
    finance.close()


def test_the_cli_forms_a_household_shows_it_and_transfers(network: Network) -> None:
    shop = network.shop()
    a, b, c = (Member(phone_number=phone().value) for _ in range(3))
    numbers = [earn(shop, member, 500) for member in (a, b, c)]
    network.clock.advance(timedelta(days=31))

    created = network.cli("create", numbers[0], b.phone_number)
    assert created.returncode == 0, created.stdout + created.stderr
    household = json.loads(created.stdout)["household"]
    assert [member["member_number"] for member in household["members"]] == numbers[:2]
    added = network.cli("add", household["household_id"], numbers[2])
    assert added.returncode == 0, added.stdout + added.stderr
    network.clock.advance(timedelta(days=8))

    moved = network.cli("transfer", numbers[0], numbers[2], "--points", "120")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert json.loads(moved.stdout)["transfer"]["points"] == "120"  # int64 as JSON text
    shown = json.loads(network.cli("show", "--member", numbers[2]).stdout)["household"]
    assert shown["household_id"] == household["household_id"] and len(shown["members"]) == 3
    left = network.cli("leave", household["household_id"], numbers[1])
    assert left.returncode == 0 and len(json.loads(left.stdout)["household"]["members"]) == 2
    refused = network.cli("transfer", numbers[0], numbers[1], "--points", "1")
    assert (refused.returncode, refused.stdout.strip()) == (
        1, "error: FAILED_PRECONDITION NOT_SAME_HOUSEHOLD: points are transferred only between members of the "
        "same household",
    )  # fmt: skip
    assert balance(shop, c).available_points == 620
