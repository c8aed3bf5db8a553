"""HouseholdService: household groups, and point transfers between their members."""

from __future__ import annotations

import grpc
from loyalty.v1 import household_service_pb2 as pb
from loyalty.v1 import household_service_pb2_grpc

from auth.principal import Principal, PrincipalKind
from common.idempotency import RequestKey
from programme.households import Households
from programme.visibility import OPERATOR_STAFF, Viewer
from server import household_convert as convert
from server.convert import member_identifier
from server.interceptors import current_principal

STAFF_ROLES = ("support", "admin")


def _staff() -> Principal:
    principal = current_principal()
    principal.require_any_role(*STAFF_ROLES)
    return principal


def _caller() -> tuple[Principal, Viewer]:
    """A partner sees members who dealt with it; operator staff (support, admin) see everyone."""
    principal = current_principal()
    if principal.kind is PrincipalKind.PARTNER:
        partner_id, partner_code = principal.require_partner()
        return principal, Viewer(partner_id, partner_code)
    principal.require_any_role(*STAFF_ROLES)
    return principal, OPERATOR_STAFF


def _key(principal: Principal, request_id: str) -> RequestKey:
    return RequestKey(principal.idempotency_scope, request_id)


class HouseholdServicer(household_service_pb2_grpc.HouseholdServiceServicer):
    def __init__(self, households: Households) -> None:
        self.households = households

    def CreateHousehold(
        self, request: pb.CreateHouseholdRequest, context: grpc.ServicerContext
    ) -> pb.CreateHouseholdResponse:
        staff = _staff()
        outcome = self.households.create(_key(staff, request.request_id), convert.members(request), staff.subject)
        return pb.CreateHouseholdResponse(
            household=convert.household(outcome.result), idempotent_replay=outcome.is_replay
        )

    def AddHouseholdMember(
        self, request: pb.AddHouseholdMemberRequest, context: grpc.ServicerContext
    ) -> pb.AddHouseholdMemberResponse:
        staff = _staff()
        outcome = self.households.add_member(
            _key(staff, request.request_id), request.household_id, member_identifier(request.member)
        )
        return pb.AddHouseholdMemberResponse(
            household=convert.household(outcome.result), idempotent_replay=outcome.is_replay
        )

    def RemoveHouseholdMember(
        self, request: pb.RemoveHouseholdMemberRequest, context: grpc.ServicerContext
    ) -> pb.RemoveHouseholdMemberResponse:
        staff = _staff()
        outcome = self.households.remove_member(
            _key(staff, request.request_id), request.household_id, member_identifier(request.member)
        )
        return pb.RemoveHouseholdMemberResponse(
            household=convert.household(outcome.result), idempotent_replay=outcome.is_replay
        )

    def GetHousehold(self, request: pb.GetHouseholdRequest, context: grpc.ServicerContext) -> pb.GetHouseholdResponse:
        _, viewer = _caller()
        household_id, member = convert.lookup(request)
        view = self.households.get(viewer, household_id=household_id, member=member)
        return pb.GetHouseholdResponse(household=convert.household(view))

    def TransferPoints(
        self, request: pb.TransferPointsRequest, context: grpc.ServicerContext
    ) -> pb.TransferPointsResponse:
        principal, viewer = _caller()
        outcome = self.households.transfer(
            _key(principal, request.request_id), viewer, convert.transfer_command(request)
        )
        return pb.TransferPointsResponse(transfer=convert.transfer(outcome.result), idempotent_replay=outcome.is_replay)
