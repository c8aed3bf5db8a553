"""SupportService: support staff's goodwill adjustments, a second person approving large ones."""

from __future__ import annotations

import grpc
from loyalty.v1 import support_service_pb2 as pb
from loyalty.v1 import support_service_pb2_grpc

from auth.principal import Principal
from common.idempotency import RequestKey
from programme.goodwill import AdjustmentCommand, GoodwillDesk
from server import support_convert as convert
from server.convert import member_identifier
from server.interceptors import current_principal

WRITER_ROLES = ("support", "admin")
READER_ROLES = ("support", "admin", "finance")


def _staff(roles: tuple[str, ...]) -> Principal:
    principal = current_principal()
    principal.require_any_role(*roles)
    return principal


def _key(principal: Principal, request_id: str) -> RequestKey:
    return RequestKey(principal.idempotency_scope, request_id)


class SupportServicer(support_service_pb2_grpc.SupportServiceServicer):
    def __init__(self, desk: GoodwillDesk) -> None:
        self.desk = desk

    def CreatePointsAdjustment(
        self, request: pb.CreatePointsAdjustmentRequest, context: grpc.ServicerContext
    ) -> pb.CreatePointsAdjustmentResponse:
        staff = _staff(WRITER_ROLES)
        command = AdjustmentCommand(
            member=member_identifier(request.member), direction=convert.direction(request.direction),
            points=request.points, reason_code=request.reason_code, note=request.note,
        )  # fmt: skip
        outcome = self.desk.request(_key(staff, request.request_id), command, staff.subject)
        return pb.CreatePointsAdjustmentResponse(
            adjustment=convert.adjustment(outcome.result), idempotent_replay=outcome.is_replay
        )

    def ApprovePointsAdjustment(
        self, request: pb.ApprovePointsAdjustmentRequest, context: grpc.ServicerContext
    ) -> pb.ApprovePointsAdjustmentResponse:
        staff = _staff(WRITER_ROLES)
        outcome = self.desk.approve(_key(staff, request.request_id), request.adjustment_id, staff.subject, request.note)
        return pb.ApprovePointsAdjustmentResponse(
            adjustment=convert.adjustment(outcome.result), idempotent_replay=outcome.is_replay
        )

    def RejectPointsAdjustment(
        self, request: pb.RejectPointsAdjustmentRequest, context: grpc.ServicerContext
    ) -> pb.RejectPointsAdjustmentResponse:
        staff = _staff(WRITER_ROLES)
        outcome = self.desk.reject(_key(staff, request.request_id), request.adjustment_id, staff.subject, request.note)
        return pb.RejectPointsAdjustmentResponse(
            adjustment=convert.adjustment(outcome.result), idempotent_replay=outcome.is_replay
        )

    def GetPointsAdjustment(
        self, request: pb.GetPointsAdjustmentRequest, context: grpc.ServicerContext
    ) -> pb.GetPointsAdjustmentResponse:
        _staff(READER_ROLES)
        return pb.GetPointsAdjustmentResponse(adjustment=convert.adjustment(self.desk.get(request.adjustment_id)))

    def ListPointsAdjustments(
        self, request: pb.ListPointsAdjustmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListPointsAdjustmentsResponse:
        _staff(READER_ROLES)
        page = self.desk.list(
            status=convert.state_filter(request.state), member_number=request.member_number,
            page_size=request.page_size, page_token=request.page_token,
        )  # fmt: skip
        return pb.ListPointsAdjustmentsResponse(
            adjustments=[convert.adjustment(view) for view in page.items], next_page_token=page.next_page_token
        )
