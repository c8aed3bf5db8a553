"""Queries on network policy versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from common import codec
from common.db import table_of
from programme.models import NetworkPolicyVersion
from programme.policy import NetworkPolicy, PolicyVersionView

policy_versions = table_of(NetworkPolicyVersion)

_IN_FORCE = (
    select(policy_versions)
    .where(policy_versions.c.effective_from <= bindparam("at"))
    .order_by(policy_versions.c.effective_from.desc(), policy_versions.c.version.desc())
    .limit(1)
)


class PolicyRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def in_force(self, at: datetime) -> PolicyVersionView | None:
        row = self.connection.execute(_IN_FORCE, {"at": at}).first()
        return _view(row) if row else None

    def latest_version_number(self) -> int:
        return int(self.connection.execute(select(func.coalesce(func.max(policy_versions.c.version), 0))).scalar_one())

    def insert(self, *, version: int, effective_from: datetime, policy: NetworkPolicy, created_at: datetime,
               created_by: str) -> PolicyVersionView:  # fmt: skip
        self.connection.execute(
            policy_versions.insert().values(
                version=version, effective_from=effective_from, document=codec.dumps(policy),
                created_at=created_at, created_by=created_by,
            )
        )  # fmt: skip
        return PolicyVersionView(version, effective_from, policy, created_at, created_by)

    def page(self, after_version: int, limit: int) -> list[PolicyVersionView]:
        rows = self.connection.execute(
            select(policy_versions)
            .where(policy_versions.c.version > after_version)
            .order_by(policy_versions.c.version)
            .limit(limit)
        )
        return [_view(row) for row in rows]


def _view(row: Any) -> PolicyVersionView:
    policy = codec.loads(NetworkPolicy, row.document)
    return PolicyVersionView(row.version, row.effective_from, policy, row.created_at, row.created_by)
