"""Card use cases, one per call a bank or the operator makes."""

from __future__ import annotations

from collections.abc import Sequence

from cards import links
from cards.commands import CardItemCommand, CardItemResult, LinkCommand, LinkResult, MerchantView, UnlinkResult
from cards.feed import CardFeed, CardSettings
from checkout.session import PartnerRef
from common.idempotency import Outcome, RequestKey
from common.sql import Page
from common.uow import UnitOfWork


class CardService:
    def __init__(self, uow: UnitOfWork, settings: CardSettings) -> None:
        self.uow = uow
        self.settings = settings
        self.feed = CardFeed(uow, settings)

    def link_card(self, issuer: PartnerRef, request_id: str, command: LinkCommand) -> Outcome[LinkResult]:
        return links.link_card(self.uow, self.settings.identifier_pepper, issuer, request_id, command)

    def unlink_card(self, issuer: PartnerRef, request_id: str, card_token: str) -> Outcome[UnlinkResult]:
        return links.unlink_card(self.uow, self.settings.identifier_pepper, issuer, request_id, card_token)

    def apply_items(self, issuer: PartnerRef, items: Sequence[CardItemCommand]) -> list[CardItemResult]:
        """Applies a bank's items in order, one database transaction for all: a result per item."""
        return self.feed.apply_batch(issuer.partner_id, items)

    def apply_item(self, issuer: PartnerRef, item: CardItemCommand) -> CardItemResult:
        return self.feed.apply(issuer.partner_id, item)

    def add_merchant(self, request: RequestKey, merchant_id: str, partner_code: str) -> Outcome[MerchantView]:
        return links.add_merchant(self.uow, request, merchant_id, partner_code)

    def list_merchants(self, page_size: int, page_token: str) -> Page[MerchantView]:
        return links.list_merchants(self.uow, page_size, page_token)

    def remove_merchant(self, merchant_id: str) -> None:
        links.remove_merchant(self.uow, merchant_id)
