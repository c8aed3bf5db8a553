"""PartnerProgrammeService: a partner's own activities and promotions (programme/partner_programme.py)."""

from __future__ import annotations

import grpc
from loyalty.v1 import partner_programme_service_pb2 as pb
from loyalty.v1 import partner_programme_service_pb2_grpc

from common.idempotency import RequestKey
from programme.partner_programme import InvalidActivity, InvalidPromotion, PartnerProgramme
from server import metrics
from server import partner_programme_convert as convert
from server.interceptors import current_principal


def _partner() -> tuple[int, str]:
    principal = current_principal()
    partner_id, _ = principal.require_partner()
    return partner_id, principal.idempotency_scope


class PartnerProgrammeServicer(partner_programme_service_pb2_grpc.PartnerProgrammeServiceServicer):
    def __init__(self, programme: PartnerProgramme) -> None:
        self.programme = programme

    def DefineActivity(
        self, request: pb.DefineActivityRequest, context: grpc.ServicerContext
    ) -> pb.DefineActivityResponse:
        partner_id, scope = _partner()
        if not request.HasField("activity"):
            raise InvalidActivity("activity is required", field="activity")
        command = convert.activity_command(request.activity)
        outcome = self.programme.define_activity(RequestKey(scope, request.request_id), partner_id, command)
        _counted(outcome.is_replay, "DefineActivity")
        return pb.DefineActivityResponse(activity=convert.activity(outcome.result), idempotent_replay=outcome.is_replay)

    def ListActivities(
        self, request: pb.ListActivitiesRequest, context: grpc.ServicerContext
    ) -> pb.ListActivitiesResponse:
        partner_id, _ = _partner()
        page = self.programme.list_activities(partner_id, page_size=request.page_size, page_token=request.page_token)
        return pb.ListActivitiesResponse(
            activities=[convert.activity(view) for view in page.items], next_page_token=page.next_page_token
        )

    def CreatePromotion(
        self, request: pb.CreatePromotionRequest, context: grpc.ServicerContext
    ) -> pb.CreatePromotionResponse:
        partner_id, scope = _partner()
        if not request.HasField("promotion"):
            raise InvalidPromotion("promotion is required", field="promotion")
        command = convert.promotion_command(request.promotion)
        outcome = self.programme.create_promotion(RequestKey(scope, request.request_id), partner_id, command)
        _counted(outcome.is_replay, "CreatePromotion")
        return pb.CreatePromotionResponse(
            promotion=convert.promotion(outcome.result), idempotent_replay=outcome.is_replay
        )

    def EndPromotion(self, request: pb.EndPromotionRequest, context: grpc.ServicerContext) -> pb.EndPromotionResponse:
        partner_id, scope = _partner()
        outcome = self.programme.end_promotion(RequestKey(scope, request.request_id), partner_id, request.promotion_id)
        _counted(outcome.is_replay, "EndPromotion")
        return pb.EndPromotionResponse(promotion=convert.promotion(outcome.result), idempotent_replay=outcome.is_replay)

    def ListPromotions(
        self, request: pb.ListPromotionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPromotionsResponse:
        partner_id, _ = _partner()
        page = self.programme.list_promotions(partner_id, page_size=request.page_size, page_token=request.page_token)
        return pb.ListPromotionsResponse(
            promotions=[convert.promotion(view) for view in page.items], next_page_token=page.next_page_token
        )


def _counted(is_replay: bool, method: str) -> None:
    if is_replay:
        metrics.IDEMPOTENT_REPLAYS_TOTAL.labels(method=method).inc()
