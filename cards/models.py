"""Card links, the merchant table, card transactions and the items that changed them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, UtcDateTime


class CardLink(Base):
    """A bank's card token linked to a member; kept after unlinking, as history.

    The token itself is never stored: only its keyed hash, the one member_identifiers holds too.
    """

    __tablename__ = "card_links"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    issuer_partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    token_hash: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    linked_at: Mapped[datetime] = mapped_column(UtcDateTime())
    unlinked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        # A token is linked to at most one member at a time, whichever bank linked it.
        Index(
            "uq_card_links_token_hash_linked",
            "token_hash",
            unique=True,
            postgresql_where=text("unlinked_at IS NULL"),
            sqlite_where=text("unlinked_at IS NULL"),
        ),
        Index("ix_card_links_issuer_partner_id_token_hash", "issuer_partner_id", "token_hash"),
    )


class CardMerchant(Base):
    """The operator's table of card-acceptor merchant ids that belong to a network partner."""

    __tablename__ = "card_merchants"

    merchant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CardTransaction(Base):
    """One bank transaction as its items have shaped it: authorised, cleared, partly or wholly reversed."""

    __tablename__ = "card_transactions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    issuer_partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    bank_transaction_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    merchant_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    currency: Mapped[str] = mapped_column(String(3))
    authorised_minor: Mapped[int | None] = mapped_column(BigInteger)
    pending_points: Mapped[int] = mapped_column(BigInteger)
    authorised_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    cleared_minor: Mapped[int | None] = mapped_column(BigInteger)
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    merchant_points: Mapped[int] = mapped_column(BigInteger)
    bank_points: Mapped[int] = mapped_column(BigInteger)
    merchant_earn_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    bank_earn_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    reversed_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("issuer_partner_id", "bank_transaction_id", name="uq_card_transactions_key"),
        CheckConstraint("reversed_minor >= 0", name="reversed_not_negative"),
        CheckConstraint("cleared_minor IS NULL OR reversed_minor <= cleared_minor", name="reversed_within_cleared"),
        # The pending-points query of a member's balance.
        Index("ix_card_transactions_member_id_authorised_at", "member_id", "authorised_at"),
    )


class CardItem(Base):
    """One item a bank sent, once: its key, what it asked for and what it did (or waits to do)."""

    __tablename__ = "card_items"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    issuer_partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    bank_transaction_id: Mapped[str] = mapped_column(String(64))
    item_type: Mapped[str] = mapped_column(String(20))
    item_id: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(60))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    transaction_time: Mapped[datetime] = mapped_column(UtcDateTime())
    pending_points: Mapped[int] = mapped_column(BigInteger)
    points_earned: Mapped[int] = mapped_column(BigInteger)
    points_reversed: Mapped[int] = mapped_column(BigInteger)
    debt_points: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        UniqueConstraint("issuer_partner_id", "bank_transaction_id", "item_type", "item_id", name="uq_card_items_key"),
        CheckConstraint("item_type IN ('AUTHORISATION', 'CLEARING', 'REFUND', 'CHARGEBACK')", name="item_type"),
        CheckConstraint("status IN ('APPLIED', 'WAITING', 'IGNORED', 'REJECTED')", name="status"),
    )
