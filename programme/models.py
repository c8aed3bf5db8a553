"""Tables of the member programme. Policy versions are immutable; the database refuses UPDATE and DELETE."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, UtcDateTime

APPEND_ONLY_TABLES = ("network_policy_versions", "goodwill_adjustments", "goodwill_decisions")


class NetworkPolicyVersion(Base):
    """One effective-dated version of the network policy, versioned like partner contracts.

    The policy is a JSON document (programme/policy.py reads and validates it): it has many small
    settings that grow with every programme feature, and a version is only ever read whole.
    """

    __tablename__ = "network_policy_versions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(100))


class GoodwillAdjustment(Base):
    """A support adjustment as it was asked for: who asked, for whom, how many points and why.

    Its outcome is a GoodwillDecision; both tables are append-only, so together they are the audit
    trail with both identities.
    """

    __tablename__ = "goodwill_adjustments"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    direction: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInteger)
    reason_code: Mapped[str] = mapped_column(String(40))
    note: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime())
    needs_approval: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        CheckConstraint("direction IN ('GRANT', 'DEDUCT')", name="direction"),
        CheckConstraint("points > 0", name="points_positive"),
    )


class GoodwillDecision(Base):
    """What became of an adjustment, once: APPLIED (with its journal transaction) or REJECTED.

    An adjustment within the approval threshold is applied when it is asked for, by the person who
    asked; a larger one by a second person.
    """

    __tablename__ = "goodwill_decisions"

    adjustment_id: Mapped[int] = mapped_column(ForeignKey("goodwill_adjustments.id"), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(10))
    decided_by: Mapped[str] = mapped_column(String(100))
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime())
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    note: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("outcome IN ('APPLIED', 'REJECTED')", name="outcome"),
        CheckConstraint("(outcome = 'APPLIED') = (transaction_id IS NOT NULL)", name="applied_has_transaction"),
    )
