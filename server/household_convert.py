"""Conversions for HouseholdService messages. No rules live here."""

from __future__ import annotations

from loyalty.v1 import household_service_pb2 as pb

from members.identifiers import MemberIdentifier
from programme.households import HouseholdView, TransferCommand, TransferView
from server.convert import member_identifier, timestamp


def members(request: pb.CreateHouseholdRequest) -> list[MemberIdentifier]:
    return [member_identifier(member) for member in request.members]


def lookup(request: pb.GetHouseholdRequest) -> tuple[str, MemberIdentifier | None]:
    """(household_id, member): whichever the request names; the domain refuses neither or both."""
    if request.WhichOneof("lookup") == "member":
        return "", member_identifier(request.member)
    return request.household_id, None


def transfer_command(request: pb.TransferPointsRequest) -> TransferCommand:
    return TransferCommand(member_identifier(request.sender), member_identifier(request.recipient), request.points)


def household(view: HouseholdView) -> pb.Household:
    return pb.Household(
        household_id=view.household_id, create_time=timestamp(view.created_at), creator=view.created_by,
        members=[
            pb.HouseholdMember(member_number=member.member_number, join_time=timestamp(member.joined_at))
            for member in view.members
        ],
    )  # fmt: skip


def transfer(view: TransferView) -> pb.PointTransfer:
    return pb.PointTransfer(
        transaction_id=view.transaction_id, household_id=view.household_id,
        sender_member_number=view.sender_member_number, recipient_member_number=view.recipient_member_number,
        points=view.points, transfer_time=timestamp(view.transferred_at),
    )  # fmt: skip
