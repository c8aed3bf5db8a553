"""Core statements on the card tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, String, Table, bindparam, func, select, true
from sqlalchemy.dialects import postgresql

from cards.models import CardItem, CardLink, CardMerchant, CardTransaction
from checkout.repository import holds
from common.db import table_of
from common.sql import Prebuilt, insert_many_ignoring_conflict, inserted_id
from members.repository import links as member_partner_links

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
# A batch reads what its items need with one statement each and writes with one batch each.
_ITEMS_OF_TRANSACTIONS = (
    select(items)
    .where(
        items.c.issuer_partner_id == bindparam("issuer"),
        items.c.bank_transaction_id.in_(bindparam("transactions", expanding=True)),
    )
    .order_by(items.c.id)
)
_TRANSACTIONS_FOR_UPDATE = (
    select(card_transactions)
    .where(
        card_transactions.c.issuer_partner_id == bindparam("issuer"),
        card_transactions.c.bank_transaction_id.in_(bindparam("transactions", expanding=True)),
    )
    .order_by(card_transactions.c.id)
    .with_for_update()
)


def _each_transaction(table: Table, *, lock: bool) -> Select[Any]:
    """PostgreSQL: the table's rows of the issuer's bank transactions, found one index probe per id.

    The plain ``IN`` list is planned from statistics, and a table filled faster than autovacuum
    analyses it (a new network's first card file) has none: PostgreSQL then reads every row of the
    issuer and compares it with each of the batch's ids, a cost that grows with the table. A lateral
    lookup per id does not depend on them. Locked rows are locked in id-list order (sorted).
    """
    wanted = (
        func.unnest(bindparam("transactions", type_=postgresql.ARRAY(String)))
        .table_valued("bank_transaction_id")
        .render_derived(name="wanted")
    )
    inner = select(table).where(
        table.c.issuer_partner_id == bindparam("issuer"), table.c.bank_transaction_id == wanted.c.bank_transaction_id
    )
    # FOR UPDATE and OFFSET each keep the subquery a lookup per id rather than one join planned as a whole.
    found = (inner.with_for_update() if lock else inner.offset(0)).lateral("found")
    return select(found).select_from(wanted).join(found, true()).order_by(found.c.id)


_ITEMS_OF_TRANSACTIONS_PG = _each_transaction(items, lock=False)
_TRANSACTIONS_FOR_UPDATE_PG = _each_transaction(card_transactions, lock=True)
_ACTIVE_LINKS = select(links.c.token_hash, links.c.id, links.c.issuer_partner_id, links.c.member_id).where(
    links.c.token_hash.in_(bindparam("hashes", expanding=True)), links.c.unlinked_at.is_(None)
)
_MERCHANT_PARTNERS = select(merchants.c.merchant_id, merchants.c.partner_id).where(
    merchants.c.merchant_id.in_(bindparam("merchants", expanding=True))
)
# CheckoutRepository.held_points, for many members at once.
_HELD_BY_MEMBER = (
    select(holds.c.member_id, func.sum(holds.c.points))
    .where(
        holds.c.member_id.in_(bindparam("members", expanding=True)),
        holds.c.status == "HELD",
        holds.c.expires_at > bindparam("now"),
    )
    .group_by(holds.c.member_id)
)
_INSERT_ITEMS = Prebuilt(items.insert().inline())
_INSERT_TRANSACTIONS = Prebuilt(card_transactions.insert().inline())
# What a later item changes on a card transaction or on an item: every column that ever changes.
TRANSACTION_CHANGES = (
    "merchant_partner_id", "pending_points", "cleared_minor", "cleared_at", "merchant_points", "bank_points",
    "merchant_earn_transaction_id", "bank_earn_transaction_id", "reversed_minor",
)  # fmt: skip
ITEM_CHANGES = ("status", "reason", "points_reversed", "debt_points", "applied_at")
_UPDATE_TRANSACTIONS = Prebuilt(
    card_transactions.update()
    .where(card_transactions.c.id == bindparam("row_id"))
    .values({name: bindparam(f"new_{name}") for name in TRANSACTION_CHANGES})
)
_UPDATE_ITEMS = Prebuilt(
    items.update()
    .where(items.c.id == bindparam("row_id"))
    .values({name: bindparam(f"new_{name}") for name in ITEM_CHANGES})
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

    # A batch of items: reads of many keys at once, writes of many rows at once.
    def items_of_transactions(self, issuer: int, transactions: list[str]) -> list[dict[str, Any]]:
        """Every stored item of these bank transactions, as column values, in the order they were stored."""
        if not transactions:
            return []
        parameters = {"issuer": issuer, "transactions": sorted(set(transactions))}
        statement = _ITEMS_OF_TRANSACTIONS_PG if self._is_postgresql else _ITEMS_OF_TRANSACTIONS
        return [dict(row._mapping) for row in self.connection.execute(statement, parameters)]

    def transactions_for_update(self, issuer: int, transactions: list[str]) -> list[dict[str, Any]]:
        """These bank transactions' rows, locked, as column values."""
        if not transactions:
            return []
        parameters = {"issuer": issuer, "transactions": sorted(set(transactions))}
        statement = _TRANSACTIONS_FOR_UPDATE_PG if self._is_postgresql else _TRANSACTIONS_FOR_UPDATE
        return [dict(row._mapping) for row in self.connection.execute(statement, parameters)]

    @property
    def _is_postgresql(self) -> bool:
        return self.connection.dialect.name == "postgresql"

    def active_links(self, token_hashes: list[str]) -> dict[str, ActiveLink]:
        if not token_hashes:
            return {}
        rows = self.connection.execute(_ACTIVE_LINKS, {"hashes": sorted(set(token_hashes))})
        return {token_hash: ActiveLink(link_id, issuer, member) for token_hash, link_id, issuer, member in rows}

    def merchant_partners(self, merchant_ids: list[str]) -> dict[str, int | None]:
        """The partner of each merchant id (None: not a partner's)."""
        found: dict[str, int | None] = dict.fromkeys(merchant_ids)
        if merchant_ids:
            rows = self.connection.execute(_MERCHANT_PARTNERS, {"merchants": sorted(set(merchant_ids))})
            found |= {merchant: int(partner) for merchant, partner in rows}
        return found

    def held_by_member(self, member_ids: list[int], now: datetime) -> dict[int, int]:
        """Points held by open redemptions of each member (CheckoutRepository.held_points of each)."""
        found = dict.fromkeys(member_ids, 0)
        if member_ids:
            rows = self.connection.execute(_HELD_BY_MEMBER, {"members": sorted(set(member_ids)), "now": now})
            found |= {int(member): int(points) for member, points in rows}
        return found

    def insert_items(self, rows: list[dict[str, Any]]) -> None:
        _INSERT_ITEMS.copy_rows(self.connection, rows)

    def update_items(self, rows: list[dict[str, Any]]) -> None:
        """Each row: ``id`` and the final values of ITEM_CHANGES."""
        _UPDATE_ITEMS.run_many(self.connection, [_changes(row, ITEM_CHANGES) for row in rows])

    def insert_transactions(self, rows: list[dict[str, Any]]) -> None:
        _INSERT_TRANSACTIONS.copy_rows(self.connection, rows)

    def update_transactions(self, rows: list[dict[str, Any]]) -> None:
        """Each row: ``id`` and the final values of TRANSACTION_CHANGES."""
        _UPDATE_TRANSACTIONS.run_many(self.connection, [_changes(row, TRANSACTION_CHANGES) for row in rows])

    def link_members_to_partners(self, pairs: set[tuple[int, int]], now: datetime) -> None:
        """What MemberRepository.link_partner does, for many (member, partner) pairs in one batch."""
        rows = [{"member_id": member, "partner_id": partner, "first_seen_at": now} for member, partner in sorted(pairs)]
        insert_many_ignoring_conflict(self.connection, member_partner_links, rows)


def _changes(row: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {"row_id": row["id"]} | {f"new_{name}": row[name] for name in names}
