"""Tables for partners, their public keys and immutable contract versions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, DecimalString, UtcDateTime


class Partner(Base):
    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    partner_code: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    suspended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        CheckConstraint("kind IN ('ONLINE_SHOP', 'STORE_CHAIN', 'CARD_ISSUER', 'CHARITY')", name="kind"),
        CheckConstraint("status IN ('ACTIVE', 'SUSPENDED')", name="status"),
    )


class PartnerKey(Base):
    __tablename__ = "partner_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(100), unique=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (CheckConstraint("algorithm IN ('ES256', 'EdDSA')", name="algorithm"),)


class ContractVersion(Base):
    """One immutable version of a partner's terms; the database refuses UPDATE and DELETE."""

    __tablename__ = "contract_versions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime())
    currency: Mapped[str] = mapped_column(String(3))
    earn_rate: Mapped[Decimal] = mapped_column(DecimalString())
    earn_rounding: Mapped[str] = mapped_column(String(10))
    redeem_value: Mapped[Decimal] = mapped_column(DecimalString())
    issuance_price: Mapped[Decimal] = mapped_column(DecimalString())
    reimbursement_rate: Mapped[Decimal] = mapped_column(DecimalString())
    billing: Mapped[str] = mapped_column(String(20))
    pending_days: Mapped[int] = mapped_column(Integer)
    max_points_per_transaction: Mapped[int | None] = mapped_column(BigIntegerId)
    daily_issuance_cap: Mapped[int | None] = mapped_column(BigIntegerId)
    max_points_share_of_basket: Mapped[Decimal | None] = mapped_column(DecimalString())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        UniqueConstraint("partner_id", "version"),
        CheckConstraint("billing IN ('ON_ISSUANCE', 'ON_REDEMPTION')", name="billing"),
        CheckConstraint("earn_rounding IN ('DOWN', 'HALF_UP', 'UP')", name="earn_rounding"),
        CheckConstraint("pending_days >= 0", name="pending_days_not_negative"),
    )
