"""`coalition policy ...`: the operator reads and versions the network policy over gRPC."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from loyalty.v1 import network_policy_service_pb2 as pb

from server.partner_cli import call_and_print, connection_options, operator_call, operator_client, paging_options

READ_ROLES = ("admin", "finance", "support")
WRITE_ROLES = ("admin",)


def add_policy_commands(commands: Any) -> None:
    policy = commands.add_parser(
        "policy", help="read and version the network policy (expiry, tiers, bonuses, referrals...)",
        description="The network policy holds the programme rules for every partner. Versions are immutable "
        "and effective-dated, like partner contracts: `set` adds a version that changes the given rules.",
    )  # fmt: skip
    connection_options(policy)
    actions = policy.add_subparsers(title="actions", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="print the policy version in force (JSON)")
    show.add_argument("--at", default="", help="RFC 3339 time to read at (default: now)")
    show.set_defaults(run=operator_call(_show_request, service="network_policy", roles=READ_ROLES))

    change = actions.add_parser(
        "set", help="add a version: the policy in force with the changes given",
        description="Starts from the version in force, applies --file (a NetworkPolicy as JSON, the shape "
        "`show` prints under \"policy\"), then the flags, and adds the result as a new version.",
    )  # fmt: skip
    change.add_argument("--file", type=Path, help="NetworkPolicy JSON to start from instead of the version in force")
    change.add_argument("--lifetime-months", type=int, help="points expire this many months after earning")
    inactivity = change.add_mutually_exclusive_group()
    inactivity.add_argument("--inactivity-months", type=int, help="all points lapse after this many idle months")
    inactivity.add_argument("--no-inactivity-expiry", action="store_true", help="points never lapse for inactivity")
    change.add_argument("--expiring-soon-days", type=int, help="how far ahead balances report expiring points")
    change.add_argument(
        "--goodwill-approval-threshold", type=int, metavar="POINTS",
        help="adjustments above this many points wait for a second person's approval",
    )  # fmt: skip
    change.add_argument(
        "--goodwill-reason-codes", metavar="CODE,CODE", help="the reasons support may give, comma-separated"
    )
    change.add_argument("--goodwill-currency", metavar="CODE", help="currency granted points are reported in")
    consent = change.add_mutually_exclusive_group()
    consent.add_argument(
        "--consent-shows-all-partners", action="store_true", default=None, dest="consent_shows_all",
        help="with the member's consent a partner sees the whole statement",
    )  # fmt: skip
    consent.add_argument(
        "--consent-shows-own-share", action="store_false", dest="consent_shows_all",
        help="a partner sees only its own share of a statement, consent or not",
    )  # fmt: skip
    change.add_argument(
        "--offline-member-daily-points", type=int, metavar="POINTS",
        help="points one member may redeem offline per day across the network (0: none)",
    )  # fmt: skip
    change.add_argument(
        "--offline-store-daily-points", type=int, metavar="POINTS",
        help="points one store may let members redeem offline per day (0: none)",
    )  # fmt: skip
    change.add_argument(
        "--tiers", metavar="NAME:POINTS:PERCENT,...", type=_tiers,
        help='the tier programme from the base up, e.g. "Base:0:0,Silver:5000:50,Gold:15000:100" '
        '(qualifying points, bonus percent); "" turns tiers off',
    )  # fmt: skip
    change.add_argument("--tier-window-months", type=int, help="rolling window of qualifying points, in months")
    change.add_argument("--tier-grace-days", type=int, help="days a tier is kept once its points are no longer met")
    change.add_argument("--sign-up-points", type=int, help="operator-funded points for every new member (0: none)")
    change.add_argument("--referrer-points", type=int, help="points for a member whose referral code is used")
    change.add_argument("--referred-points", type=int, help="points for the new member who used a referral code")
    change.add_argument("--referrals-per-month", type=int, help="most rewarded referrals per referrer per month")
    change.add_argument("--transfer-daily-points", type=int, help="points a member may send per day (0: off)")
    change.add_argument("--transfer-min-account-age-days", type=int, help="days both members must have been members")
    change.add_argument("--transfer-min-membership-days", type=int, help="days both must have been in the household")
    change.add_argument("--transfer-max-senders", type=int, help="distinct senders to one member within 30 days")
    change.add_argument("--household-max-members", type=int, help="most members of one household")
    change.add_argument("--effective-time", default="", help="RFC 3339, e.g. 2027-01-01T00:00:00Z (default: now)")
    change.set_defaults(run=_set)

    versions = actions.add_parser("versions", help="list the policy versions, oldest first")
    paging_options(versions)
    versions.set_defaults(run=operator_call(lambda a: ("ListNetworkPolicyVersions", pb.ListNetworkPolicyVersionsRequest(
        page_size=a.page_size, page_token=a.page_token)), service="network_policy", roles=READ_ROLES))  # fmt: skip


def _show_request(arguments: argparse.Namespace) -> tuple[str, Any]:
    from server.cli import timestamp_argument

    request = pb.GetNetworkPolicyRequest()
    if arguments.at:
        request.read_time.CopyFrom(timestamp_argument(arguments.at))
    return "GetNetworkPolicy", request


def _set(arguments: argparse.Namespace) -> int:
    from server.cli import timestamp_argument

    with operator_client(arguments, WRITE_ROLES) as client:
        if arguments.file is not None:
            policy = json_format.Parse(arguments.file.read_text(), pb.NetworkPolicy())
        else:
            try:
                policy = client.network_policy.GetNetworkPolicy(pb.GetNetworkPolicyRequest()).policy_version.policy
            except grpc.RpcError as error:
                print(f"error: reading the policy in force: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
        _apply_flags(policy, arguments)
        request = pb.CreateNetworkPolicyVersionRequest(request_id=arguments.request_id, policy=policy)
        if arguments.effective_time:
            request.effective_time.CopyFrom(timestamp_argument(arguments.effective_time))
        return call_and_print(lambda: client.network_policy.CreateNetworkPolicyVersion(request))


def _apply_flags(policy: pb.NetworkPolicy, arguments: argparse.Namespace) -> None:
    expiry = policy.expiry
    if arguments.lifetime_months is not None:
        expiry.lifetime_months = arguments.lifetime_months
    if arguments.inactivity_months is not None:
        expiry.inactivity_months = arguments.inactivity_months
    if arguments.no_inactivity_expiry:
        expiry.ClearField("inactivity_months")
    if arguments.expiring_soon_days is not None:
        expiry.expiring_soon_days = arguments.expiring_soon_days
    if arguments.goodwill_approval_threshold is not None:
        policy.goodwill.approval_threshold_points = arguments.goodwill_approval_threshold
    if arguments.goodwill_reason_codes is not None:
        policy.goodwill.ClearField("reason_codes")
        policy.goodwill.reason_codes.extend(code.strip() for code in arguments.goodwill_reason_codes.split(","))
    if arguments.goodwill_currency is not None:
        policy.goodwill.currency_code = arguments.goodwill_currency
    if arguments.consent_shows_all is not None:
        policy.privacy.statement_consent_shows_all_partners = arguments.consent_shows_all
    if arguments.offline_member_daily_points is not None:
        policy.offline.member_daily_points = arguments.offline_member_daily_points
    if arguments.offline_store_daily_points is not None:
        policy.offline.store_daily_points = arguments.offline_store_daily_points
    if arguments.tiers is not None:
        policy.tiers.ClearField("tiers")
        policy.tiers.tiers.extend(arguments.tiers)
    settings = (
        (policy.tiers, "window_months", arguments.tier_window_months),
        (policy.tiers, "grace_days", arguments.tier_grace_days),
        (policy.bonuses, "sign_up_points", arguments.sign_up_points),
        (policy.referrals, "referrer_points", arguments.referrer_points),
        (policy.referrals, "referred_points", arguments.referred_points),
        (policy.referrals, "rewards_per_referrer_per_month", arguments.referrals_per_month),
        (policy.transfers, "daily_points_per_sender", arguments.transfer_daily_points),
        (policy.transfers, "min_account_age_days", arguments.transfer_min_account_age_days),
        (policy.transfers, "min_membership_days", arguments.transfer_min_membership_days),
        (policy.transfers, "max_senders_per_recipient", arguments.transfer_max_senders),
        (policy.transfers, "max_household_members", arguments.household_max_members),
    )
    for section, name, value in settings:
        if value is not None:
            setattr(section, name, value)


def _tiers(text: str) -> list[pb.Tier]:
    """ "Base:0:0,Silver:5000:50" as Tier messages; the server validates the programme itself."""
    tiers = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        try:
            name, points, percent = (field.strip() for field in part.split(":"))
            tiers.append(pb.Tier(name=name, qualifying_points=int(points), bonus_percent=int(percent)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME:POINTS:PERCENT") from None
    return tiers
