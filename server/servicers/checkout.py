"""CheckoutService: each RPC converts, calls one checkout use case and converts back."""

from __future__ import annotations

from typing import Any

import grpc
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import checkout_service_pb2_grpc

from checkout.commands import ActivityAwardCommand, CaptureCommand, EnrollCommand, QuoteCommand, ReleaseCommand
from checkout.services import CheckoutService
from checkout.session import PartnerRef
from common.idempotency import Outcome
from server import convert, metrics
from server.interceptors import current_principal


def _partner() -> PartnerRef:
    principal = current_principal()
    partner_id, _ = principal.require_partner()
    return PartnerRef(partner_id, principal.idempotency_scope)


def _counted(outcome: Outcome[Any], method: str) -> None:
    if outcome.is_replay:
        metrics.IDEMPOTENT_REPLAYS_TOTAL.labels(method=method).inc()


def _points(operation: str, points: int, outcome: Outcome[Any]) -> None:
    if not outcome.is_replay:
        metrics.record_points(operation, current_principal().subject, points)


class CheckoutServicer(checkout_service_pb2_grpc.CheckoutServiceServicer):
    def __init__(self, service: CheckoutService) -> None:
        self.service = service

    def QuoteBasket(self, request: pb.QuoteBasketRequest, context: grpc.ServicerContext) -> pb.QuoteBasketResponse:
        partner = _partner()
        command = QuoteCommand(convert.optional_member(request), convert.basket(request.basket))
        return convert.quote_response(self.service.quote(partner, command))

    def EarnPoints(self, request: pb.EarnPointsRequest, context: grpc.ServicerContext) -> pb.EarnPointsResponse:
        partner = _partner()
        outcome = self.service.earn_points(partner, request.request_id, convert.earn_command(request))
        _counted(outcome, "EarnPoints")
        _points("earned", outcome.result.points_earned, outcome)
        return convert.earn_response(outcome.result, outcome.is_replay)

    def HoldPoints(self, request: pb.HoldPointsRequest, context: grpc.ServicerContext) -> pb.HoldPointsResponse:
        partner = _partner()
        outcome = self.service.hold_points(partner, request.request_id, convert.hold_command(request))
        _counted(outcome, "HoldPoints")
        return pb.HoldPointsResponse(hold=convert.hold(outcome.result), idempotent_replay=outcome.is_replay)

    def CaptureHold(self, request: pb.CaptureHoldRequest, context: grpc.ServicerContext) -> pb.CaptureHoldResponse:
        partner = _partner()
        command = CaptureCommand(convert.require_text(request.hold_id, "hold_id"), request.points)
        outcome = self.service.capture_hold(partner, request.request_id, command)
        _counted(outcome, "CaptureHold")
        _points("redeemed", outcome.result.points_captured, outcome)
        return convert.capture_response(outcome.result, outcome.is_replay)

    def ReleaseHold(self, request: pb.ReleaseHoldRequest, context: grpc.ServicerContext) -> pb.ReleaseHoldResponse:
        partner = _partner()
        command = ReleaseCommand(convert.require_text(request.hold_id, "hold_id"))
        outcome = self.service.release_hold(partner, request.request_id, command)
        _counted(outcome, "ReleaseHold")
        return pb.ReleaseHoldResponse(hold=convert.hold(outcome.result), idempotent_replay=outcome.is_replay)

    def RedeemPoints(self, request: pb.RedeemPointsRequest, context: grpc.ServicerContext) -> pb.RedeemPointsResponse:
        partner = _partner()
        outcome = self.service.redeem_points(partner, request.request_id, convert.redeem_command(request))
        _counted(outcome, "RedeemPoints")
        _points("redeemed", outcome.result.points_redeemed, outcome)
        return convert.redeem_response(outcome.result, outcome.is_replay)

    def DonatePoints(self, request: pb.DonatePointsRequest, context: grpc.ServicerContext) -> pb.DonatePointsResponse:
        partner = _partner()
        outcome = self.service.donate_points(partner, request.request_id, convert.donate_command(request))
        _counted(outcome, "DonatePoints")
        _points("donated", outcome.result.points_donated, outcome)
        return convert.donate_response(outcome.result, outcome.is_replay)

    def ReturnPurchase(
        self, request: pb.ReturnPurchaseRequest, context: grpc.ServicerContext
    ) -> pb.ReturnPurchaseResponse:
        partner = _partner()
        outcome = self.service.return_purchase(partner, request.request_id, convert.return_command(request))
        _counted(outcome, "ReturnPurchase")
        _points("reversed", outcome.result.points_reversed, outcome)
        _points("restored", outcome.result.points_restored, outcome)
        return convert.return_response(outcome.result, outcome.is_replay)

    def EnrollMember(self, request: pb.EnrollMemberRequest, context: grpc.ServicerContext) -> pb.EnrollMemberResponse:
        partner = _partner()
        command = EnrollCommand(convert.member_identifier(request.member), referral_code=request.referral_code)
        outcome = self.service.enroll_member(partner, request.request_id, command)
        _counted(outcome, "EnrollMember")
        return pb.EnrollMemberResponse(
            member=convert.member(outcome.result),
            newly_enrolled=outcome.result.is_newly_enrolled,
            idempotent_replay=outcome.is_replay,
        )

    def LookupMember(self, request: pb.LookupMemberRequest, context: grpc.ServicerContext) -> pb.LookupMemberResponse:
        partner = _partner()
        view = self.service.lookup_member(partner, convert.member_identifier(request.member))
        return pb.LookupMemberResponse(member=convert.member(view))

    def GetBalance(self, request: pb.GetBalanceRequest, context: grpc.ServicerContext) -> pb.GetBalanceResponse:
        partner = _partner()
        view = self.service.get_balance(partner, convert.member_identifier(request.member))
        return pb.GetBalanceResponse(balance=convert.balance(view))

    def SubmitOfflineBatch(
        self, request: pb.SubmitOfflineBatchRequest, context: grpc.ServicerContext
    ) -> pb.SubmitOfflineBatchResponse:
        partner = _partner()
        results = self.service.submit_offline_batch(partner, request.store_id, convert.offline_items(request))
        for result in results:
            if result.is_replay:
                metrics.IDEMPOTENT_REPLAYS_TOTAL.labels(method="SubmitOfflineBatch").inc()
            elif result.redemption is not None:
                metrics.record_points("redeemed", current_principal().subject, result.redemption.points_redeemed)
            elif result.earn is not None:
                metrics.record_points("earned", current_principal().subject, result.earn.points_earned)
        return convert.offline_results(results)

    def AwardActivityPoints(
        self, request: pb.AwardActivityPointsRequest, context: grpc.ServicerContext
    ) -> pb.AwardActivityPointsResponse:
        partner = _partner()
        command = ActivityAwardCommand(
            convert.member_identifier(request.member), convert.require_text(request.activity_code, "activity_code")
        )
        outcome = self.service.award_activity_points(partner, request.request_id, command)
        _counted(outcome, "AwardActivityPoints")
        _points("earned", outcome.result.points_awarded, outcome)
        return convert.activity_award_response(outcome.result, outcome.is_replay)

    def GetReferralCode(
        self, request: pb.GetReferralCodeRequest, context: grpc.ServicerContext
    ) -> pb.GetReferralCodeResponse:
        partner = _partner()
        identifier = convert.member_identifier(request.member)
        member_number, code = self.service.get_referral_code(partner, identifier)
        return pb.GetReferralCodeResponse(member_number=member_number, referral_code=code)
