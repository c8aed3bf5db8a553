"""`coalition households ...`: support staff's households and point transfers over gRPC, signed with an operator key."""

from __future__ import annotations

import argparse
from typing import Any

from loyalty.v1 import household_service_pb2 as pb

from server.partner_cli import connection_options, operator_call
from server.support_cli import member_identifier

ROLES = ("support",)
MEMBER_HELP = "member number (M123456789), phone (+447700900123) or email"


def add_households_commands(commands: Any) -> None:
    households = commands.add_parser(
        "households", help="household groups and point transfers between their members",
        description="Members of one household may transfer points to one another within the network policy's "
        "transfer limits (coalition policy set --transfer-*). Calls are signed with an operator key and the "
        "`support` role; --staff-id names who acts.",
    )  # fmt: skip
    connection_options(households)
    actions = households.add_subparsers(title="actions", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="form a household of two or more members")
    create.add_argument("members", nargs="+", metavar="MEMBER", help=f"{MEMBER_HELP}; at least two")
    create.set_defaults(run=_call(lambda a: ("CreateHousehold", pb.CreateHouseholdRequest(
        request_id=a.request_id, members=[member_identifier(member) for member in a.members]))))  # fmt: skip

    for name, rpc, request_type, summary in (
        ("add", "AddHouseholdMember", pb.AddHouseholdMemberRequest, "add a member who is in no household"),
        ("leave", "RemoveHouseholdMember", pb.RemoveHouseholdMemberRequest,
         "take a member out of a household (the membership stays on record)"),
    ):  # fmt: skip
        action = actions.add_parser(name, help=summary)
        action.add_argument("household_id")
        action.add_argument("member", help=MEMBER_HELP)
        action.set_defaults(run=_call(lambda a, rpc=rpc, request_type=request_type: (rpc, request_type(
            request_id=a.request_id, household_id=a.household_id, member=member_identifier(a.member)))))  # fmt: skip

    show = actions.add_parser("show", help="a household and its members, by id or by one of its members")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("household_id", nargs="?", help="the household's id")
    which.add_argument("--member", help=f"a member of the household: {MEMBER_HELP}")
    show.set_defaults(run=_call(_show_request))

    transfer = actions.add_parser(
        "transfer", help="transfer points from one member of a household to another",
        description="Takes the sender's available points, first to expire first (never held ones), and gives "
        "them to the recipient with the same issuer and expiry. Refused with the limit's reason when a transfer "
        "limit of the network policy does not allow it.",
    )  # fmt: skip
    transfer.add_argument("sender", help=f"who gives the points: {MEMBER_HELP}")
    transfer.add_argument("recipient", help=f"who receives them: {MEMBER_HELP}")
    transfer.add_argument("--points", type=int, required=True, help="points to transfer")
    transfer.set_defaults(run=_call(lambda a: ("TransferPoints", pb.TransferPointsRequest(
        request_id=a.request_id, sender=member_identifier(a.sender), recipient=member_identifier(a.recipient),
        points=a.points))))  # fmt: skip


def _call(build: Any) -> Any:
    return operator_call(build, service="households", roles=ROLES)


def _show_request(a: argparse.Namespace) -> tuple[str, Any]:
    if a.member:
        return "GetHousehold", pb.GetHouseholdRequest(member=member_identifier(a.member))
    return "GetHousehold", pb.GetHouseholdRequest(household_id=a.household_id)
