"""CardService: each RPC converts, calls one card use case and converts back."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import grpc
from loyalty.v1 import card_service_pb2 as pb
from loyalty.v1 import card_service_pb2_grpc

from cards.commands import LinkCommand
from cards.services import CardService
from checkout.session import PartnerRef
from server import cards_convert, convert
from server.interceptors import RefusedElements, RefusedMessage, current_principal
from server.servicers.partner_admin import admin_request_key


def _issuer() -> PartnerRef:
    principal = current_principal()
    partner_id, _ = principal.require_partner()
    return PartnerRef(partner_id, principal.idempotency_scope)


class CardServicer(card_service_pb2_grpc.CardServiceServicer):
    def __init__(self, service: CardService) -> None:
        self.service = service

    def LinkCard(self, request: pb.LinkCardRequest, context: grpc.ServicerContext) -> pb.LinkCardResponse:
        command = LinkCommand(request.card_token, convert.member_identifier(request.member))
        outcome = self.service.link_card(_issuer(), request.request_id, command)
        return cards_convert.link_response(outcome.result, outcome.is_replay)

    def UnlinkCard(self, request: pb.UnlinkCardRequest, context: grpc.ServicerContext) -> pb.UnlinkCardResponse:
        outcome = self.service.unlink_card(_issuer(), request.request_id, request.card_token)
        return pb.UnlinkCardResponse(
            unlink_time=convert.timestamp(outcome.result.unlinked_at), idempotent_replay=outcome.is_replay
        )

    def StreamCardTransactions(
        self, request_iterator: Iterator[pb.StreamCardTransactionsRequest | RefusedMessage | RefusedElements],
        context: grpc.ServicerContext,
    ) -> Iterator[pb.StreamCardTransactionsResponse]:  # fmt: skip
        issuer = _issuer()
        self.service.feed.check_issuer(issuer.partner_id)
        yield from cards_convert.item_responses(request_iterator, partial(self.service.apply_items, issuer))

    def CreateCardMerchant(
        self, request: pb.CreateCardMerchantRequest, context: grpc.ServicerContext
    ) -> pb.CreateCardMerchantResponse:
        mapping = request.card_merchant
        request_key = admin_request_key(request.request_id)
        outcome = self.service.add_merchant(request_key, mapping.merchant_id, mapping.partner_id)
        return pb.CreateCardMerchantResponse(
            card_merchant=cards_convert.merchant(outcome.result), idempotent_replay=outcome.is_replay
        )

    def ListCardMerchants(
        self, request: pb.ListCardMerchantsRequest, context: grpc.ServicerContext
    ) -> pb.ListCardMerchantsResponse:
        admin_request_key()
        page = self.service.list_merchants(request.page_size, request.page_token)
        return pb.ListCardMerchantsResponse(
            card_merchants=[cards_convert.merchant(view) for view in page.items], next_page_token=page.next_page_token
        )

    def DeleteCardMerchant(
        self, request: pb.DeleteCardMerchantRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCardMerchantResponse:
        admin_request_key()
        self.service.remove_merchant(request.merchant_id)
        return pb.DeleteCardMerchantResponse()
