"""Tables of the member programme. Policy versions are immutable; the database refuses UPDATE and DELETE."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, UtcDateTime

# Migration 0003 made the first three append-only; 0007 the audit trails of tiers, bonuses and transfers.
APPEND_ONLY_TABLES = (
    "network_policy_versions", "goodwill_adjustments", "goodwill_decisions",
    "tier_changes", "bonus_awards", "activity_definitions", "point_transfers", "tier_points_withdrawn",
)  # fmt: skip


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


class MemberTier(Base):
    """A member's tier now and the date it lapses unless they qualify again (programme/tiers.py).

    The one mutable row of the tier programme; every change is also a TierChange row.
    """

    __tablename__ = "member_tiers"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(40))
    since: Mapped[datetime] = mapped_column(UtcDateTime())
    # None for the base tier, which never lapses.
    lapses_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)


class TierChange(Base):
    """Audit trail of tier changes: a promotion on an earn, a demotion by the tier review."""

    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    from_tier: Mapped[str] = mapped_column(String(40))
    to_tier: Mapped[str] = mapped_column(String(40))
    qualifying_points: Mapped[int] = mapped_column(BigInteger)
    cause: Mapped[str] = mapped_column(String(10))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (CheckConstraint("cause IN ('EARN', 'REVIEW')", name="cause"),)


class TierPointsWithdrawn(Base):
    """Points of a purchase's earn that a return set against points already gone (lapsed or deducted):
    no reversal is posted for them, yet the purchase no longer qualifies them for a tier."""

    __tablename__ = "tier_points_withdrawn"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    earn_transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (CheckConstraint("points > 0", name="points_positive"),)


class BonusAward(Base):
    """What a BONUS journal transaction was for: the ledger says who funded it, this says why.

    ``earn_transaction_id`` names the purchase a tier, promotion or referral bonus rode on, so a
    return takes the purchase's bonuses back in proportion.
    """

    __tablename__ = "bonus_awards"

    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), primary_key=True)
    bonus_kind: Mapped[str] = mapped_column(String(12))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    earn_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    detail: Mapped[str] = mapped_column(String(100))  # the tier, activity code, promotion or referral id

    __table_args__ = (
        CheckConstraint("bonus_kind IN ('TIER', 'SIGN_UP', 'ACTIVITY', 'PROMOTION', 'REFERRAL')", name="bonus_kind"),
        Index("ix_bonus_awards_member_id_bonus_kind", "member_id", "bonus_kind"),
    )


class ActivityDefinition(Base):
    """A partner's activity (a review, a survey, a check-in): points per award and a per-member limit.

    Versions are immutable; the latest version of a code is in force, and a retired one awards nothing.
    """

    __tablename__ = "activity_definitions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    code: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    display_name: Mapped[str] = mapped_column(String(100))
    points: Mapped[int] = mapped_column(BigInteger)
    max_awards_per_member: Mapped[int] = mapped_column(Integer)
    limit_period: Mapped[str] = mapped_column(String(10))
    retired: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        UniqueConstraint("partner_id", "code", "version"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("max_awards_per_member > 0", name="max_awards_positive"),
        CheckConstraint("limit_period IN ('DAY', 'MONTH', 'YEAR', 'LIFETIME')", name="limit_period"),
    )


class Promotion(Base):
    """A partner's earn multiplier for a date range, funded by the partner as a bonus lot on each earn."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    display_name: Mapped[str] = mapped_column(String(100))
    bonus_percent: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Ending a promotion early moves ends_at no later than the moment it is ended; this says when.
    ended_early_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        CheckConstraint("bonus_percent > 0", name="bonus_percent_positive"),
        CheckConstraint("ends_at >= starts_at", name="ends_after_start"),
        Index("ix_promotions_partner_id_starts_at", "partner_id", "starts_at"),
    )


class ReferralCode(Base):
    """A member's shareable referral code, made the first time it is asked for."""

    __tablename__ = "referral_codes"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Referral(Base):
    """A new member who enrolled with a referral code; rewarded once, on their first qualifying purchase."""

    __tablename__ = "referrals"

    referred_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    referrer_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(10))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    refusal_reason: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'REWARDED', 'REFUSED')", name="status"),
        Index("ix_referrals_referrer_member_id_decided_at", "referrer_member_id", "decided_at"),
    )


class Household(Base):
    """A household group whose members may transfer points to one another."""

    __tablename__ = "households"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(100))


class HouseholdMembership(Base):
    """A member's time in a household; ``left_at`` is set once when they leave (one open row per member)."""

    __tablename__ = "household_memberships"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    joined_at: Mapped[datetime] = mapped_column(UtcDateTime())
    left_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index(
            "ux_household_memberships_open_member_id",
            "member_id",
            unique=True,
            postgresql_where=text("left_at IS NULL"),
            sqlite_where=text("left_at IS NULL"),
        ),
    )


class PointTransfer(Base):
    """A TRANSFER journal transaction between two members of one household, for the anti-abuse limits."""

    __tablename__ = "point_transfers"

    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"))
    sender_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    recipient_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    transferred_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("sender_member_id <> recipient_member_id", name="not_to_self"),
        Index("ix_point_transfers_sender_member_id_transferred_at", "sender_member_id", "transferred_at"),
        Index("ix_point_transfers_recipient_member_id_transferred_at", "recipient_member_id", "transferred_at"),
    )
