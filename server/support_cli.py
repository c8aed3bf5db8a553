"""`coalition support ...`: support staff's goodwill adjustments over gRPC, signed with an operator key."""

from __future__ import annotations

import argparse
from typing import Any

from loyalty.v1 import checkout_service_pb2 as checkout_pb
from loyalty.v1 import support_service_pb2 as pb

from server.partner_cli import connection_options, operator_call, paging_options

ROLES = ("support",)
STATES = {"pending": pb.ADJUSTMENT_STATE_PENDING, "applied": pb.ADJUSTMENT_STATE_APPLIED,
          "rejected": pb.ADJUSTMENT_STATE_REJECTED}  # fmt: skip


def add_support_commands(commands: Any) -> None:
    support = commands.add_parser(
        "support", help="goodwill adjustments: grant or deduct points, approve or reject large ones",
        description="Adjustments within the network policy's approval threshold apply at once; larger ones "
        "wait until a second person approves them. --staff-id names who acts (the token's subject).",
    )  # fmt: skip
    connection_options(support)
    actions = support.add_subparsers(title="actions", metavar="ACTION", required=True)

    adjust = actions.add_parser("adjust", help="grant or deduct a member's points with a reason code")
    adjust.add_argument("member", help="member number (M123456789), phone (+447700900123) or email")
    amount = adjust.add_mutually_exclusive_group(required=True)
    amount.add_argument("--grant", type=int, metavar="POINTS", help="points to give (funded by the operator)")
    amount.add_argument("--deduct", type=int, metavar="POINTS", help="available points to take")
    adjust.add_argument("--reason", required=True, help="a reason code of the network policy, e.g. SERVICE_RECOVERY")
    adjust.add_argument("--note", required=True, help="what happened (kept in the audit trail)")
    adjust.set_defaults(run=_call(_adjust_request))

    for name, rpc, request_type, summary in (
        ("approve", "ApprovePointsAdjustment", pb.ApprovePointsAdjustmentRequest, "apply a pending adjustment"),
        ("reject", "RejectPointsAdjustment", pb.RejectPointsAdjustmentRequest, "close a pending adjustment"),
    ):
        action = actions.add_parser(name, help=f"{summary} (not your own, to approve)")
        action.add_argument("adjustment_id")
        action.add_argument("--note", default="", help="why (kept in the audit trail)")
        action.set_defaults(run=_call(lambda a, rpc=rpc, request_type=request_type: (rpc, request_type(
            request_id=a.request_id, adjustment_id=a.adjustment_id, note=a.note))))  # fmt: skip

    show = actions.add_parser("show", help="one adjustment")
    show.add_argument("adjustment_id")
    show.set_defaults(run=_call(lambda a: ("GetPointsAdjustment", pb.GetPointsAdjustmentRequest(
        adjustment_id=a.adjustment_id))))  # fmt: skip

    listing = actions.add_parser("list", help="the audit trail, oldest first")
    listing.add_argument("--state", choices=sorted(STATES), help="only adjustments in this state")
    listing.add_argument("--member", default="", help="only this member number's adjustments")
    paging_options(listing)
    listing.set_defaults(run=_call(lambda a: ("ListPointsAdjustments", pb.ListPointsAdjustmentsRequest(
        state=STATES[a.state] if a.state else pb.ADJUSTMENT_STATE_UNSPECIFIED, member_number=a.member,
        page_size=a.page_size, page_token=a.page_token))))  # fmt: skip


def _call(build: Any) -> Any:
    return operator_call(build, service="support", roles=ROLES)


def _adjust_request(a: argparse.Namespace) -> tuple[str, Any]:
    direction, points = (
        (pb.ADJUSTMENT_DIRECTION_GRANT, a.grant) if a.grant is not None else (pb.ADJUSTMENT_DIRECTION_DEDUCT, a.deduct)
    )
    return "CreatePointsAdjustment", pb.CreatePointsAdjustmentRequest(
        request_id=a.request_id, member=member_identifier(a.member), direction=direction, points=points,
        reason_code=a.reason, note=a.note,
    )  # fmt: skip


def member_identifier(text: str) -> checkout_pb.MemberIdentifier:
    """A phone if it starts with + or 00, an email if it has an @, else a member number."""
    value = text.strip()
    if value.startswith(("+", "00")):
        return checkout_pb.MemberIdentifier(phone_number=value)
    if "@" in value:
        return checkout_pb.MemberIdentifier(email=value)
    return checkout_pb.MemberIdentifier(member_number=value)
