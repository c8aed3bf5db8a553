"""Operator use cases for the network policy: read the version in force, add and list versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from common.idempotency import Outcome, RequestKey, run_once
from common.sql import Page, paginate
from common.uow import UnitOfWork
from partners.services import EffectiveTimeInPast
from programme.policy import DEFAULT_VERSION, NetworkPolicy, PolicyVersionView
from programme.repository import PolicyRepository


def policy_in_force(connection: Connection, at: datetime) -> PolicyVersionView:
    """The version in force at ``at``: the latest that took effect by then, else the defaults."""
    return PolicyRepository(connection).in_force(at) or DEFAULT_VERSION


def get_policy(uow: UnitOfWork, at: datetime | None = None) -> PolicyVersionView:
    moment = at or uow.clock.now()
    return uow.run(lambda connection: policy_in_force(connection, moment))


def create_policy_version(
    uow: UnitOfWork, request: RequestKey, *, policy: NetworkPolicy, effective_from: datetime | None, created_by: str
) -> Outcome[PolicyVersionView]:
    """Adds an immutable version that applies from ``effective_from`` (default: now), never from the past."""
    policy.validate()
    now = uow.clock.now()
    if effective_from is not None and effective_from < now:
        raise EffectiveTimeInPast("a policy version cannot take effect in the past", field="effective_time")

    def work(connection: Connection) -> PolicyVersionView:
        repository = PolicyRepository(connection)
        return repository.insert(
            version=repository.latest_version_number() + 1, effective_from=effective_from or now, policy=policy,
            created_at=now, created_by=created_by,
        )  # fmt: skip

    command = {"policy": policy, "effective_from": effective_from}
    return run_once(uow, request, "CreateNetworkPolicyVersion", command, PolicyVersionView, work)


def list_policy_versions(uow: UnitOfWork, *, page_size: int, page_token: str) -> Page[PolicyVersionView]:
    def fetch(after_version: int, limit: int) -> list[PolicyVersionView]:
        return uow.run(lambda connection: PolicyRepository(connection).page(after_version, limit))

    return paginate(page_size, page_token, fetch, lambda version: version.version)
