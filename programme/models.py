"""Tables of the member programme. Policy versions are immutable; the database refuses UPDATE and DELETE."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, BigIntegerId, UtcDateTime

APPEND_ONLY_TABLES = ("network_policy_versions",)


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
