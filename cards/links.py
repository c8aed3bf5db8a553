"""Linking card tokens to members, and the operator's merchant table."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from cards.commands import LinkCommand, LinkResult, MerchantView, UnlinkResult
from cards.errors import (
    CardLinkNotFound,
    CardTokenAlreadyLinked,
    MerchantAlreadyMapped,
    MerchantNotFound,
    NotACardIssuer,
)
from cards.repository import CardRepository, links
from checkout.session import PartnerRef
from common.idempotency import Outcome, RequestKey, run_once
from common.sql import Page, paginate
from common.uow import UnitOfWork
from ledger.repository import LedgerRepository
from members.identifiers import IdentifierKind, MemberIdentifier, lookup_hash, mask, normalise
from members.repository import MemberRepository
from members.services import enroll_member
from partners.repository import PartnerRepository
from partners.services import PartnerNotFound


@dataclass(frozen=True)
class CardToken:
    """A normalised card token and its keyed hash; the token itself is never stored."""

    identifier: MemberIdentifier
    lookup_hash: str

    @classmethod
    def of(cls, token: str, pepper: bytes) -> CardToken:
        identifier = normalise(MemberIdentifier(IdentifierKind.CARD_TOKEN, token))
        return cls(identifier, lookup_hash(identifier, pepper))


def require_card_issuer(connection: Connection, partner_id: int) -> None:
    partner = PartnerRepository(connection).by_id(partner_id)
    if partner is None or partner.kind != "CARD_ISSUER":
        raise NotACardIssuer("only a card-issuer partner links cards and sends card transactions")


def link_card(
    uow: UnitOfWork, pepper: bytes, issuer: PartnerRef, request_id: str, command: LinkCommand
) -> Outcome[LinkResult]:
    """Links the bank's token to the member (enrolling an unknown phone or email); one member per token."""
    token = CardToken.of(command.card_token, pepper)

    def work(connection: Connection) -> LinkResult:
        require_card_issuer(connection, issuer.partner_id)
        cards, members, now = CardRepository(connection), MemberRepository(connection), uow.clock.now()
        if cards.active_link(token.lookup_hash) is not None:
            raise CardTokenAlreadyLinked("this card token is already linked; unlink it first")
        member, is_new = enroll_member(members, command.member, pepper, partner_id=issuer.partner_id, now=now)
        if is_new:
            LedgerRepository(connection).open_member(member.id)
        members.link_partner(member.id, issuer.partner_id, now)
        cards.insert_link(issuer_partner_id=issuer.partner_id, token_hash=token.lookup_hash, member_id=member.id,
                          linked_at=now, unlinked_at=None)  # fmt: skip
        members.insert_identifier(member.id, IdentifierKind.CARD_TOKEN, token.lookup_hash, mask(token.identifier))
        return LinkResult(member.member_number, now, is_new)

    return run_once(uow, issuer.request(request_id), "LinkCard", command, LinkResult, work)


def unlink_card(
    uow: UnitOfWork, pepper: bytes, issuer: PartnerRef, request_id: str, card_token: str
) -> Outcome[UnlinkResult]:
    """Ends the bank's link; another bank's token looks exactly like an unknown one."""
    token = CardToken.of(card_token, pepper)

    def work(connection: Connection) -> UnlinkResult:
        require_card_issuer(connection, issuer.partner_id)
        cards, now = CardRepository(connection), uow.clock.now()
        link = cards.active_link(token.lookup_hash)
        if link is None or link.issuer_partner_id != issuer.partner_id:
            raise CardLinkNotFound("this bank has no linked card with that token")
        cards.end_link(link.link_id, now)
        MemberRepository(connection).remove_identifier(IdentifierKind.CARD_TOKEN, token.lookup_hash)
        return UnlinkResult(now)

    return run_once(uow, issuer.request(request_id), "UnlinkCard", {"card_token": token.lookup_hash},
                    UnlinkResult, work)  # fmt: skip


def add_merchant(uow: UnitOfWork, request: RequestKey, merchant_id: str, partner_code: str) -> Outcome[MerchantView]:
    def work(connection: Connection) -> MerchantView:
        partner = PartnerRepository(connection).by_code(partner_code)
        if partner is None:
            raise PartnerNotFound(f"partner {partner_code} not found", partner_id=partner_code)
        cards, now = CardRepository(connection), uow.clock.now()
        if cards.merchant_partner(merchant_id) is not None:
            raise MerchantAlreadyMapped(f"merchant {merchant_id} is already mapped", merchant_id=merchant_id)
        cards.insert_merchant(merchant_id, partner.id, now)
        return MerchantView(merchant_id, partner_code, now)

    command = {"merchant_id": merchant_id, "partner_code": partner_code}
    return run_once(uow, request, "CreateCardMerchant", command, MerchantView, work)


def remove_merchant(uow: UnitOfWork, merchant_id: str) -> None:
    """Later card transactions at this merchant earn as at any non-partner merchant."""

    def work(connection: Connection) -> None:
        if not CardRepository(connection).delete_merchant(merchant_id):
            raise MerchantNotFound(f"merchant {merchant_id} is not mapped", merchant_id=merchant_id)

    uow.run(work)


def list_merchants(uow: UnitOfWork, page_size: int, page_token: str) -> Page[MerchantView]:
    """Merchants in merchant-id order; the page token holds how many came before (ids are text)."""

    def work(connection: Connection) -> Page[MerchantView]:
        cards, partners = CardRepository(connection), PartnerRepository(connection)
        positions: dict[str, int] = {}

        def fetch(offset: int, limit: int) -> list[MerchantView]:
            found = []
            for index, (merchant, partner_id, created) in enumerate(cards.merchants_page(offset, limit)):
                partner = partners.by_id(partner_id)
                positions[merchant] = offset + index + 1
                found.append(MerchantView(merchant, partner.partner_code if partner else "", created))
            return found

        return paginate(page_size, page_token, fetch, lambda view: positions[view.merchant_id])

    return uow.run(work)


def share_a_card(connection: Connection, member_id: int, other_member_id: int) -> bool:
    """Whether one card token was ever linked to both members (now or before an unlink): one person,
    for the referral programme's self-referral guard (programme/referrals.py)."""
    first, second = links.alias("first_link"), links.alias("second_link")
    shared = (
        select(first.c.token_hash)
        .join(second, second.c.token_hash == first.c.token_hash)
        .where(first.c.member_id == member_id, second.c.member_id == other_member_id)
        .limit(1)
    )
    return connection.execute(shared).first() is not None
