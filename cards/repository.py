"""Core statements on the card tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from cards.models import CardItem, CardLink, CardMerchant, CardTransaction
from common.db import table_of
from common.sql import inserted_id

links = table_of(CardLink)
merchants = table_of(CardMerchant)
card_transactions = table_of(CardTransaction)
items = table_of(CardItem)

_ITEM_BY_KEY = select(items).where(
    items.c.issuer_partner_id == bindparam("issuer"),
    items.c.bank_transaction_id == bindparam("transaction"),
    items.c.item_type == bindparam("item_type"),
    items.c.item_id == bindparam("item_id"),
)
_TRANSACTION_FOR_UPDATE = (
    select(card_transactions)
    .where(
        card_transactions.c.issuer_partner_id == bindparam("issuer"),
        card_transactions.c.bank_transaction_id == bindparam("transaction"),
    )
    .with_for_update()
)
_ACTIVE_LINK = select(links.c.id, links.c.issuer_partner_id, links.c.member_id).where(
    links.c.token_hash == bindparam("hash"), links.c.unlinked_at.is_(None)
)
_MERCHANT_PARTNER = select(merchants.c.partner_id).where(merchants.c.merchant_id == bindparam("merchant"))
_PENDING = select(func.coalesce(func.sum(card_transactions.c.pending_points), 0)).where(
    card_transactions.c.member_id == bindparam("member"),
    card_transactions.c.cleared_at.is_(None),
    card_transactions.c.authorised_at > bindparam("since"),
)
_INSERT_ITEM = items.insert()
_INSERT_TRANSACTION = card_transactions.insert()


@dataclass(frozen=True)
class ActiveLink:
    link_id: int
    issuer_partner_id: int
    member_id: int


@dataclass(frozen=True)
class StoredItem:
    id: int
    item_type: str
    item_id: str
    request_hash: str
    status: str
    reason: str
    amount_minor: int
    transaction_time: datetime
    pending_points: int
    points_earned: int
    points_reversed: int
    debt_points: int


@dataclass(frozen=True)
class TransactionRow:
    id: int
    member_id: int
    merchant_partner_id: int | None
    currency: str
    authorised_at: datetime | None
    cleared_minor: int | None
    cleared_at: datetime | None
    merchant_points: int
    bank_points: int
    merchant_earn_transaction_id: int | None
    bank_earn_transaction_id: int | None
    reversed_minor: int


class CardRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def active_link(self, token_hash: str) -> ActiveLink | None:
        row = self.connection.execute(_ACTIVE_LINK, {"hash": token_hash}).first()
        return ActiveLink(*row) if row else None

    def insert_link(self, **values: Any) -> int:
        return inserted_id(self.connection.execute(links.insert().values(**values)))

    def end_link(self, link_id: int, now: datetime) -> None:
        self.connection.execute(links.update().where(links.c.id == link_id).values(unlinked_at=now))

    def merchant_partner(self, merchant_id: str) -> int | None:
        value = self.connection.execute(_MERCHANT_PARTNER, {"merchant": merchant_id}).scalar()
        return None if value is None else int(value)

    def insert_merchant(self, merchant_id: str, partner_id: int, now: datetime) -> None:
        self.connection.execute(merchants.insert().values(merchant_id=merchant_id, partner_id=partner_id,
                                                          created_at=now))  # fmt: skip

    def delete_merchant(self, merchant_id: str) -> bool:
        result = self.connection.execute(merchants.delete().where(merchants.c.merchant_id == merchant_id))
        return bool(result.rowcount)

    def merchants_page(self, offset: int, limit: int) -> list[tuple[str, int, datetime]]:
        rows = self.connection.execute(
            select(merchants.c.merchant_id, merchants.c.partner_id, merchants.c.created_at)
            .order_by(merchants.c.merchant_id)
            .offset(offset)
            .limit(limit)
        )
        return [(merchant, int(partner), created) for merchant, partner, created in rows]

    def item(self, issuer: int, transaction: str, item_type: str, item_id: str) -> StoredItem | None:
        parameters = {"issuer": issuer, "transaction": transaction, "item_type": item_type, "item_id": item_id}
        row = self.connection.execute(_ITEM_BY_KEY, parameters).first()
        if row is None:
            return None
        return StoredItem(
            row.id, row.item_type, row.item_id, row.request_hash, row.status, row.reason, row.amount_minor,
            row.transaction_time, row.pending_points, row.points_earned, row.points_reversed, row.debt_points,
        )  # fmt: skip

    def insert_item(self, **values: Any) -> None:
        self.connection.execute(_INSERT_ITEM, values)

    def waiting_items(self, issuer: int, transaction: str) -> list[StoredItem]:
        rows = self.connection.execute(
            select(items.c.item_type, items.c.item_id).where(
                items.c.issuer_partner_id == issuer, items.c.bank_transaction_id == transaction,
                items.c.status == "WAITING",
            ).order_by(items.c.id)
        )  # fmt: skip
        found = [self.item(issuer, transaction, item_type, item_id) for item_type, item_id in rows]
        return [item for item in found if item is not None]

    def mark_item(self, item_id: int, **values: Any) -> None:
        self.connection.execute(items.update().where(items.c.id == item_id).values(**values))

    def transaction_for_update(self, issuer: int, transaction: str) -> TransactionRow | None:
        row = self.connection.execute(_TRANSACTION_FOR_UPDATE, {"issuer": issuer, "transaction": transaction}).first()
        if row is None:
            return None
        return TransactionRow(
            row.id, row.member_id, row.merchant_partner_id, row.currency, row.authorised_at, row.cleared_minor,
            row.cleared_at, row.merchant_points, row.bank_points, row.merchant_earn_transaction_id,
            row.bank_earn_transaction_id, row.reversed_minor,
        )  # fmt: skip

    def insert_transaction(self, **values: Any) -> None:
        self.connection.execute(_INSERT_TRANSACTION, values)

    def update_transaction(self, transaction_id: int, **values: Any) -> None:
        self.connection.execute(
            card_transactions.update().where(card_transactions.c.id == transaction_id).values(**values)
        )

    def pending_points(self, member_id: int, since: datetime) -> int:
        """Points of authorisations since ``since`` that no clearing has confirmed yet."""
        return int(self.connection.execute(_PENDING, {"member": member_id, "since": since}).scalar_one())
