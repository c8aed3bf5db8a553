"""Queries on network policy versions."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, func, select

from common import codec
from common.db import table_of
from common.sql import Prebuilt
from programme.models import NetworkPolicyVersion
from programme.policy import NetworkPolicy, PolicyVersionView

policy_versions = table_of(NetworkPolicyVersion)


def in_force_select(at: ColumnElement[Any]) -> Select[Any]:
    """The policy version in force at ``at``: one row at most (none: the defaults apply), read by
    ``version_of``. Its own query, or part of a larger one."""
    return (
        select(
            policy_versions.c.version, policy_versions.c.effective_from, policy_versions.c.document,
            policy_versions.c.created_at, policy_versions.c.created_by,
        )
        .where(policy_versions.c.effective_from <= at)
        .order_by(policy_versions.c.effective_from.desc(), policy_versions.c.version.desc())
        .limit(1)
    )  # fmt: skip


# Every earn reads it (how long the new points live): prebuilt, straight on the driver on PostgreSQL.
_IN_FORCE = Prebuilt(in_force_select(bindparam("at")))


def version_of(values: Sequence[Any] | None) -> PolicyVersionView | None:
    """A row of ``in_force_select`` (None, or NULLs from an outer join: no version is in force)."""
    if values is None or values[0] is None:
        return None
    version, effective_from, document, created_at, created_by = values
    return PolicyVersionView(version, effective_from, _policy(document), created_at, created_by)


class PolicyRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def in_force(self, at: datetime) -> PolicyVersionView | None:
        return version_of(_IN_FORCE.first(self.connection, {"at": at}))

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
    return PolicyVersionView(row.version, row.effective_from, _policy(row.document), row.created_at, row.created_by)


@functools.lru_cache(maxsize=64)
def _policy(document: str) -> NetworkPolicy:
    """Versions are immutable and few: each stored document is parsed once per process."""
    return codec.loads(NetworkPolicy, document)
