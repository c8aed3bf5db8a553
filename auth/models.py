"""Used token ids, durable and shared by every replica, so a token works once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, UtcDateTime


class UsedTokenId(Base):
    __tablename__ = "used_token_ids"

    issuer: Mapped[str] = mapped_column(String(120), primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
