"""The network policy over a real server and through the CLI, and points lapsing under it.

The server has a database of its own: the policy is network-wide, and its clock is moved to let
points lapse.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from loyalty.v1 import checkout_service_pb2 as checkout_pb
from loyalty.v1 import network_policy_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from common.clock import ManualClock
from sdk.client import CoalitionClient, Credentials
from server.app import RunningServer, expire_points_and_report
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, reason_of
from tests.e2e.test_cli import COMMAND
from tests.e2e.test_settlement_cli import cli_connection, onboard, start_own_server
from tests.factories import phone

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DEFAULT_REASON_CODES = ["SERVICE_RECOVERY", "TECHNICAL_ERROR", "MISSING_POINTS", "CORRECTION"]


@dataclass(frozen=True)
class Network:
    running: RunningServer
    clock: ManualClock
    target: str
    admin: CoalitionClient
    operator_key: OperatorKey
    directory: Path
    cli_options: tuple[str, ...]  # connection options of `coalition policy`
    environment: dict[str, str]

    def staff(self, *roles: str) -> CoalitionClient:
        credentials = Credentials.operator("staff", OPERATOR_KEY_ID, self.operator_key.private_key, list(roles))
        return CoalitionClient(self.target, credentials)

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, "policy", *self.cli_options, *arguments], env=self.environment,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, operator_key: OperatorKey) -> Iterator[Network]:
    directory = tmp_path_factory.mktemp("policy")
    database_url = f"sqlite:///{directory / 'ledger.db'}"
    running, clock, target = start_own_server(database_url, operator_key, START)
    options, environment = cli_connection(directory, operator_key, target, "ops-cli")
    admin = Credentials.operator("ops-tester", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
    with CoalitionClient(target, admin) as client:
        yield Network(running, clock, target, client, operator_key, directory, options, environment)
    running.stop(0)


def expiry(lifetime_months: int = 24, inactivity_months: int | None = None, soon_days: int = 30) -> pb.NetworkPolicy:
    policy = pb.NetworkPolicy(
        expiry=pb.ExpiryPolicy(lifetime_months=lifetime_months, expiring_soon_days=soon_days),
        goodwill=pb.GoodwillPolicy(
            approval_threshold_points=1_000, reason_codes=DEFAULT_REASON_CODES, currency_code="EUR"
        ),
        privacy=pb.PrivacyPolicy(statement_consent_shows_all_partners=True),
        offline=pb.OfflinePolicy(member_daily_points=2_000, store_daily_points=50_000),
        tiers=pb.TierPolicy(window_months=12, grace_days=30),
        bonuses=pb.BonusPolicy(),
        referrals=pb.ReferralPolicy(rewards_per_referrer_per_month=5),
        transfers=pb.TransferPolicy(
            daily_points_per_sender=5_000, min_account_age_days=30, min_membership_days=7,
            max_senders_per_recipient=2, max_household_members=6,
        ),
    )  # fmt: skip
    if inactivity_months is not None:
        policy.expiry.inactivity_months = inactivity_months
    return policy


def without_goodwill_reasons() -> pb.NetworkPolicy:
    policy = expiry()
    policy.goodwill.ClearField("reason_codes")
    return policy


def without_offline_section() -> pb.NetworkPolicy:
    policy = expiry()
    policy.ClearField("offline")
    return policy


def negative_offline_allowance() -> pb.NetworkPolicy:
    policy = expiry()
    policy.offline.store_daily_points = -1
    return policy


def test_versions_are_immutable_effective_dated_idempotent_and_validated(network: Network) -> None:
    service = network.admin.network_policy
    default = service.GetNetworkPolicy(pb.GetNetworkPolicyRequest()).policy_version
    assert default.version == 0 and not default.HasField("effective_time")
    assert default.policy == expiry()

    request_id = uuid.uuid4().hex
    first = service.CreateNetworkPolicyVersion(
        pb.CreateNetworkPolicyVersionRequest(request_id=request_id, policy=expiry(inactivity_months=18))
    )
    replay = service.CreateNetworkPolicyVersion(
        pb.CreateNetworkPolicyVersionRequest(request_id=request_id, policy=expiry(inactivity_months=18))
    )
    assert (first.policy_version.version, first.idempotent_replay) == (1, False)
    assert (replay.policy_version, replay.idempotent_replay) == (first.policy_version, True)
    assert first.policy_version.creator == "ops-tester"

    later = pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=expiry(soon_days=60))
    later.effective_time.FromDatetime(network.clock.now() + timedelta(days=10))
    assert service.CreateNetworkPolicyVersion(later).policy_version.version == 2
    now = service.GetNetworkPolicy(pb.GetNetworkPolicyRequest()).policy_version
    then = pb.GetNetworkPolicyRequest()
    then.read_time.FromDatetime(network.clock.now() + timedelta(days=11))
    assert now.version == 1 and now.policy.expiry.inactivity_months == 18
    assert service.GetNetworkPolicy(then).policy_version.policy == expiry(soon_days=60)

    refused = [
        pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=expiry(lifetime_months=0)),
        pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=expiry(inactivity_months=0)),
        pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=pb.NetworkPolicy()),
        pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=without_goodwill_reasons()),
        pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=without_offline_section()),
        pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=negative_offline_allowance()),
        pb.CreateNetworkPolicyVersionRequest(request_id=request_id, policy=expiry(lifetime_months=12)),
    ]
    past = pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=expiry())
    past.effective_time.FromDatetime(network.clock.now() - timedelta(days=1))
    reasons = [reason_of(lambda request=request: service.CreateNetworkPolicyVersion(request)) for request in refused]
    assert reasons == [(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_POLICY")] * 6 + [
        (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_REUSED")
    ]
    assert reason_of(lambda: service.CreateNetworkPolicyVersion(past)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "EFFECTIVE_TIME_IN_PAST"
    )  # fmt: skip
    listed = service.ListNetworkPolicyVersions(pb.ListNetworkPolicyVersionsRequest())
    assert [version.version for version in listed.policy_versions] == [1, 2]  # the refused wrote nothing


def test_staff_without_admin_may_read_but_not_change_and_partners_may_do_neither(network: Network) -> None:
    with network.staff("finance") as finance:
        assert finance.network_policy.GetNetworkPolicy(pb.GetNetworkPolicyRequest()).policy_version.version >= 0
        assert reason_of(lambda: finance.network_policy.CreateNetworkPolicyVersion(
            pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=expiry()))
        ) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE")  # fmt: skip
    _, shop = onboard(network.admin, network.target, admin_pb.BILLING_MODE_ON_ISSUANCE)
    with shop:
        assert reason_of(lambda: shop.network_policy.GetNetworkPolicy(pb.GetNetworkPolicyRequest())) == (
            grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE"
        )  # fmt: skip


def test_points_lapse_under_the_policy_and_balances_see_it(network: Network) -> None:
    """Inactivity: a member idle for the policy's months loses the points; the run books them once."""
    request = pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=expiry(inactivity_months=2))
    request.effective_time.FromDatetime(network.clock.now() + timedelta(days=20))  # after the versions above
    network.admin.network_policy.CreateNetworkPolicyVersion(request)
    _, shop = onboard(network.admin, network.target, admin_pb.BILLING_MODE_ON_ISSUANCE)
    member = checkout_pb.MemberIdentifier(phone_number=phone().value)
    with shop:
        shop.checkout.EarnPoints(checkout_pb.EarnPointsRequest(
            member=member, receipt_id="R-1", enroll_if_unknown=True,
            basket=checkout_pb.Basket(currency_code="EUR", total_minor=25_000),
        ))  # fmt: skip
        network.clock.set(network.clock.now() + timedelta(days=62))
        run = expire_points_and_report(network.running.app.uow)
        assert run is not None and run.points_expired >= 250
        assert expire_points_and_report(network.running.app.uow).points_expired == 0  # type: ignore[union-attr]
        balance = shop.checkout.GetBalance(checkout_pb.GetBalanceRequest(member=member))
    assert balance.balance.available_points == 0


def test_the_cli_shows_sets_and_lists_versions(network: Network) -> None:
    shown = network.cli("show")
    assert shown.returncode == 0, shown.stderr
    current = json.loads(shown.stdout)["policy_version"]

    changed = network.cli(
        "set", "--lifetime-months", "36", "--no-inactivity-expiry", "--goodwill-approval-threshold", "500",
        "--goodwill-reason-codes", "SERVICE_RECOVERY, BIRTHDAY", "--consent-shows-own-share",
        "--offline-member-daily-points", "1500", "--tiers", "Base:0:0, Silver:5000:50, Gold:15000:100",
        "--tier-grace-days", "14", "--sign-up-points", "100", "--referrer-points", "500", "--referred-points", "250",
        "--transfer-daily-points", "2000", "--household-max-members", "4",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stdout + changed.stderr
    created = json.loads(changed.stdout)["policy_version"]
    assert int(created["version"]) == int(current["version"]) + 1
    assert created["policy"] == {
        "expiry": {"lifetime_months": 36, "expiring_soon_days": 30},
        "goodwill": {
            "approval_threshold_points": "500",
            "reason_codes": ["SERVICE_RECOVERY", "BIRTHDAY"],
            "currency_code": "EUR",
        },
        "privacy": {"statement_consent_shows_all_partners": False},
        "offline": {"member_daily_points": "1500", "store_daily_points": "50000"},
        "tiers": {
            "tiers": [
                {"name": "Base", "qualifying_points": "0", "bonus_percent": 0},
                {"name": "Silver", "qualifying_points": "5000", "bonus_percent": 50},
                {"name": "Gold", "qualifying_points": "15000", "bonus_percent": 100},
            ],
            "window_months": 12, "grace_days": 14,
        },
        "bonuses": {"sign_up_points": "100"},
        "referrals": {"referrer_points": "500", "referred_points": "250", "rewards_per_referrer_per_month": 5},
        "transfers": {
            "daily_points_per_sender": "2000", "min_account_age_days": 30, "min_membership_days": 7,
            "max_senders_per_recipient": 2, "max_household_members": 4,
        },
    }  # fmt: skip
    assert created["creator"] == "ops-cli"

    policy_file = network.directory / "policy.json"
    written = {
        "expiry": {"lifetimeMonths": 12, "expiringSoonDays": 14},
        "goodwill": {"reasonCodes": ["CORRECTION"], "currencyCode": "GBP"},
        "privacy": {},
        "offline": {"memberDailyPoints": 2000, "storeDailyPoints": 50000},
        "tiers": {"windowMonths": 12},
        "bonuses": {},
        "referrals": {},
        "transfers": {"dailyPointsPerSender": 1000, "maxHouseholdMembers": 2},
    }
    policy_file.write_text(json.dumps(written))
    from_file = network.cli("set", "--file", str(policy_file), "--inactivity-months", "6")
    assert json.loads(from_file.stdout)["policy_version"]["policy"]["expiry"] == {
        "lifetime_months": 12, "inactivity_months": 6, "expiring_soon_days": 14
    }  # fmt: skip

    refused = network.cli("set", "--lifetime-months", "0")
    assert refused.returncode == 1 and "INVALID_ARGUMENT INVALID_POLICY" in refused.stdout
    no_base = network.cli("set", "--tiers", "Silver:5000:50")
    assert no_base.returncode == 1 and "INVALID_POLICY" in no_base.stdout and "base tier" in no_base.stdout

    versions = json.loads(network.cli("versions", "--page-size", "1000").stdout)["policy_versions"]
    assert int(versions[-1]["version"]) == int(created["version"]) + 1
    assert "show" in network.cli("--help").stdout
