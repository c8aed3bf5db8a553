"""Ledger tables. Journal transactions, entries and lot movements are append-only (database triggers)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, DecimalString, UtcDateTime

# Tables whose rows the database itself refuses to UPDATE or DELETE.
APPEND_ONLY_TABLES = ("journal_transactions", "journal_entries", "lot_movements", "contract_versions")


class LedgerAccount(Base):
    """An account in points. Member accounts carry a cached balance in member_balances."""

    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("kind", "owner_id"),
        CheckConstraint(
            "kind IN ('MEMBER_POINTS', 'MEMBER_DEBT', 'PARTNER_ISSUED', 'PARTNER_REDEEMED', 'OPERATOR')",
            name="kind",
        ),
    )


class MemberBalance(Base):
    """The lock target for every change to a member's points, and the cached balances."""

    __tablename__ = "member_balances"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    points_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    debt_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    points_balance: Mapped[int] = mapped_column(BigInteger)
    debt_points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("points_balance >= 0", name="points_balance_not_negative"),
        CheckConstraint("debt_points >= 0", name="debt_points_not_negative"),
    )


class JournalTransaction(Base):
    __tablename__ = "journal_transactions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    contract_version_id: Mapped[int | None] = mapped_column(ForeignKey("contract_versions.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    receipt_id: Mapped[str | None] = mapped_column(String(100))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    references_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    business_time: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        CheckConstraint(
            "kind IN ('EARN', 'REDEEM', 'EARN_REVERSAL', 'REDEMPTION_REFUND', 'EXPIRY', 'ADJUSTMENT', 'BONUS', "
            "'TRANSFER')",
            name="kind",
        ),
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_journal_transactions_partner_id_business_time", "partner_id", "business_time"),
        # Settlement asks for the latest transaction before a period and itemises by business time.
        Index("ix_journal_transactions_business_time", "business_time"),
        # A return finds the receipt's redemptions.
        Index("ix_journal_transactions_partner_id_receipt_id", "partner_id", "receipt_id"),
        # A member's history newest first and their last activity (statements, the churn list, the
        # expiry run) read this index alone; it serves every lookup by member too.
        Index("ix_journal_transactions_member_id_business_time", "member_id", "business_time", "kind"),
    )


class JournalEntry(Base):
    __tablename__ = "journal_entries"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    side: Mapped[str] = mapped_column(String(1))
    amount_points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("side IN ('D', 'C')", name="side"),
        CheckConstraint("amount_points > 0", name="amount_points_positive"),
    )


class Lot(Base):
    """Points credited to a member by one issuer; remaining_points is the only column that changes."""

    __tablename__ = "lots"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    issuer_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    source_transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    contract_version_id: Mapped[int | None] = mapped_column(ForeignKey("contract_versions.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    remaining_points: Mapped[int] = mapped_column(BigInteger)
    issuance_price: Mapped[Decimal] = mapped_column(DecimalString())
    currency: Mapped[str] = mapped_column(String(3))
    earned_at: Mapped[datetime] = mapped_column(UtcDateTime())
    available_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # A lot a transfer made (Ledger.transfer): the lot its points were first credited into, followed
    # back through any number of transfers. A return of that lot's purchase takes unspent points back
    # from here too, and settlement counts them as the purchase's own lot. None for any other lot.
    origin_lot_id: Mapped[int | None] = mapped_column(ForeignKey("lots.id"))

    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("remaining_points >= 0", name="remaining_not_negative"),
        CheckConstraint("remaining_points <= points", name="remaining_within_points"),
        # The expiry run looks for lapsed lots with points left: few, among many spent ones.
        Index(
            "ix_lots_expires_at_with_points",
            "expires_at",
            postgresql_where=text("remaining_points > 0"),
            sqlite_where=text("remaining_points > 0"),
        ),
        # A return looks for the lots its purchase's points were transferred into: few lots have an origin.
        Index(
            "ix_lots_origin_lot_id",
            "origin_lot_id",
            postgresql_where=text("origin_lot_id IS NOT NULL"),
            sqlite_where=text("origin_lot_id IS NOT NULL"),
        ),
    )


class LotMovement(Base):
    """Lineage: how a transaction changed a lot. Fixed when written, never recomputed."""

    __tablename__ = "lot_movements"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    points_delta: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(
            "kind IN ('CONSUMED', 'RESTORED', 'REVERSED', 'DEBT_REPAYMENT', 'EXPIRED', 'ADJUSTED', 'TRANSFERRED', "
            "'REPAYMENT_RESTORED')",
            name="kind",
        ),
        CheckConstraint("points_delta <> 0", name="points_delta_not_zero"),
    )
