"""Tables for members, their hashed identifiers and which partners they have dealt with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, UtcDateTime


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    member_number: Mapped[str] = mapped_column(String(20), unique=True)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    enrolled_by_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))


class MemberIdentifier(Base):
    """A phone or email kept only as a keyed hash (for lookup) plus a masked hint (for display)."""

    __tablename__ = "member_identifiers"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    lookup_hash: Mapped[str] = mapped_column(String(64))
    masked_value: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("kind", "lookup_hash"),)


class MemberPartnerLink(Base):
    """A partner may see a member only once the member has dealt with it."""

    __tablename__ = "member_partner_links"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
