"""MemberService: member statements and activity for partners and staff, churn signals."""

from __future__ import annotations

import grpc
from loyalty.v1 import member_service_pb2 as pb
from loyalty.v1 import member_service_pb2_grpc

from auth.principal import PrincipalKind
from common.uow import UnitOfWork
from programme.activity import list_inactive_members, list_member_activity
from programme.statement import get_member_statement
from programme.visibility import OPERATOR_STAFF, MemberReadSettings, Viewer
from server import convert, member_convert
from server.interceptors import current_principal

STAFF_ROLES = ("admin", "finance", "support")


def _viewer() -> Viewer:
    """A partner sees its share; operator staff, with any staff role, see everything."""
    principal = current_principal()
    if principal.kind is PrincipalKind.PARTNER:
        partner_id, partner_code = principal.require_partner()
        return Viewer(partner_id, partner_code)
    principal.require_any_role(*STAFF_ROLES)
    return OPERATOR_STAFF


class MemberServicer(member_service_pb2_grpc.MemberServiceServicer):
    def __init__(self, uow: UnitOfWork, settings: MemberReadSettings) -> None:
        self.uow = uow
        self.settings = settings

    def GetMemberStatement(
        self, request: pb.GetMemberStatementRequest, context: grpc.ServicerContext
    ) -> pb.GetMemberStatementResponse:
        viewer = _viewer()
        view = get_member_statement(
            self.uow, self.settings, viewer, convert.member_identifier(request.member),
            member_consent=request.member_consent,
        )  # fmt: skip
        return pb.GetMemberStatementResponse(statement=member_convert.statement(view))

    def ListMemberActivity(
        self, request: pb.ListMemberActivityRequest, context: grpc.ServicerContext
    ) -> pb.ListMemberActivityResponse:
        viewer = _viewer()
        result = list_member_activity(
            self.uow, self.settings, viewer, convert.member_identifier(request.member),
            member_consent=request.member_consent,
            filters=member_convert.activity_filter(request.partner_code, request.kinds),
            page_size=request.page_size, page_token=request.page_token,
        )  # fmt: skip
        return member_convert.activity_response(result)

    def ListInactiveMembers(
        self, request: pb.ListInactiveMembersRequest, context: grpc.ServicerContext
    ) -> pb.ListInactiveMembersResponse:
        viewer = _viewer()
        result = list_inactive_members(
            self.uow, self.settings, viewer, inactive_days=request.inactive_days,
            last_partner_code=request.last_partner_code.strip(), page_size=request.page_size,
            page_token=request.page_token,
        )  # fmt: skip
        return member_convert.inactive_response(result)
