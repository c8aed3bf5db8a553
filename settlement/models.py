"""Settlement tables. Everything a close writes is append-only (database triggers); only a period's
status moves on, from CLOSED to PAID, when the last payment arrives."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, DecimalString, UtcDateTime

# Tables whose rows the database refuses to UPDATE or DELETE.
APPEND_ONLY_TABLES = (
    "settlement_assignments",
    "settlement_statements",
    "settlement_statement_lines",
    "settlement_matrix_cells",
    "settlement_operator_margins",
    "settlement_payments",
)


class SettlementPeriod(Base):
    """A closed period. Periods without a row are open."""

    __tablename__ = "settlement_periods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str] = mapped_column(String(10), unique=True)
    length: Mapped[str] = mapped_column(String(5))
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(10))
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_by: Mapped[str] = mapped_column(String(120))
    transaction_count: Mapped[int] = mapped_column(BigInteger)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The last payment the opening positions of its statements account for (closes and payments are
    # serialised, so every payment is either before a close or after it).
    payments_through_id: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("status IN ('CLOSED', 'PAID')", name="status"),
        CheckConstraint("length IN ('MONTH', 'WEEK', 'DAY')", name="length"),
    )


class SettlementAssignment(Base):
    """Itemisation: each journal transaction belongs to exactly one period (the primary key says so).

    No foreign keys: a close writes a row per transaction of the period in one INSERT ... SELECT from
    journal_transactions, and checking each row against two append-only parents took three quarters
    of a million-entry close. The rows can only come from that statement, inside the close.
    """

    __tablename__ = "settlement_assignments"

    transaction_id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=False)
    period_id: Mapped[int] = mapped_column(Integer, index=True)


class Statement(Base):
    """One partner's statement for one period and currency; positive amounts are owed to the partner."""

    __tablename__ = "settlement_statements"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    statement_id: Mapped[str] = mapped_column(String(100), unique=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("settlement_periods.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    opening_position_minor: Mapped[int] = mapped_column(BigInteger)
    net_minor: Mapped[int] = mapped_column(BigInteger)
    closing_position_minor: Mapped[int] = mapped_column(BigInteger)
    net_exact: Mapped[Decimal] = mapped_column(DecimalString())
    due_date: Mapped[date] = mapped_column(Date)
    item_count: Mapped[int] = mapped_column(BigInteger)
    items_sha256: Mapped[str] = mapped_column(String(64))
    csv_sha256: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (UniqueConstraint("period_id", "partner_id", "currency"),)


class StatementLine(Base):
    __tablename__ = "settlement_statement_lines"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("settlement_statements.id"), index=True)
    line_number: Mapped[int] = mapped_column(Integer)
    line_type: Mapped[str] = mapped_column(String(25))
    prior_period: Mapped[str] = mapped_column(String(10))
    original_reference: Mapped[str] = mapped_column(String(120))
    points: Mapped[int] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(DecimalString())
    amount_exact: Mapped[Decimal] = mapped_column(DecimalString())
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    item_count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("statement_id", "line_number"),)


class MatrixCell(Base):
    """Points of one issuer's lots spent at one redeeming partner in the period, from lot lineage."""

    __tablename__ = "settlement_matrix_cells"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("settlement_periods.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    # NULL: points the operator funded.
    issuer_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    redeemer_partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    issuer_value_exact: Mapped[Decimal] = mapped_column(DecimalString())
    issuer_value_minor: Mapped[int] = mapped_column(BigInteger)


class OperatorMargin(Base):
    """What the operator keeps per currency: minus the sum of the partner nets, rounding residue included."""

    __tablename__ = "settlement_operator_margins"

    period_id: Mapped[int] = mapped_column(ForeignKey("settlement_periods.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    margin_minor: Mapped[int] = mapped_column(BigInteger)
    margin_exact: Mapped[Decimal] = mapped_column(DecimalString())


class Payment(Base):
    """Money that moved for a statement: INBOUND from the partner, OUTBOUND to it."""

    __tablename__ = "settlement_payments"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(String(32), unique=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("settlement_statements.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    value_date: Mapped[date] = mapped_column(Date)
    bank_reference: Mapped[str] = mapped_column(String(140))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_by: Mapped[str] = mapped_column(String(120))

    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("direction IN ('INBOUND', 'OUTBOUND')", name="direction"),
    )
