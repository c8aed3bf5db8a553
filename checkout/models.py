"""Checkout state: holds, purchases (receipts), daily issuance and offline redemption counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, UtcDateTime


class Hold(Base):
    """Points reserved for an open basket; resolves exactly once (captured, released or expired)."""

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    contract_version_id: Mapped[int] = mapped_column(ForeignKey("contract_versions.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    captured_points: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10))
    receipt_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    capture_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))

    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("captured_points >= 0 AND captured_points <= points", name="captured_within_held"),
        CheckConstraint("status IN ('HELD', 'CAPTURED', 'RELEASED', 'EXPIRED')", name="status"),
    )


class Purchase(Base):
    """One partner receipt: what it earned, what points paid for it, and what has been returned."""

    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    receipt_id: Mapped[str] = mapped_column(String(100))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(20))
    store_id: Mapped[str | None] = mapped_column(String(100))
    contract_version_id: Mapped[int] = mapped_column(ForeignKey("contract_versions.id"))
    earned_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    earn_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    points_earned: Mapped[int] = mapped_column(BigInteger)
    points_redeemed: Mapped[int] = mapped_column(BigInteger)
    returned_minor: Mapped[int] = mapped_column(BigInteger)
    points_reversed: Mapped[int] = mapped_column(BigInteger)
    points_restored: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("partner_id", "receipt_id"),
        CheckConstraint("returned_minor >= 0 AND returned_minor <= total_minor", name="returns_within_total"),
        CheckConstraint("points_reversed <= points_earned", name="reversed_within_earned"),
        CheckConstraint("points_restored <= points_redeemed", name="restored_within_redeemed"),
    )


class PartnerDailyIssuance(Base):
    """Points a partner issued per UTC day, kept only to enforce the contract's daily cap."""

    __tablename__ = "partner_daily_issuance"

    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    points_issued: Mapped[int] = mapped_column(BigInteger)


class OfflineRedemptionDay(Base):
    """Points redeemed offline per UTC business day, per member (network-wide) and per partner store.

    Kept only to enforce the network policy's offline allowances (checkout/offline.py): a MEMBER row
    has the member's id as owner and an empty store id, a STORE row the partner's id and its store id.
    """

    __tablename__ = "offline_redemption_days"

    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    owner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    points_redeemed: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("kind IN ('MEMBER', 'STORE')", name="kind"),)
