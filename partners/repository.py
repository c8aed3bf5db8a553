"""Queries on partners, their keys and contract versions."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, func, select

from common.db import table_of
from common.sql import Prebuilt, inserted_id
from partners.models import ContractVersion, Partner, PartnerKey
from partners.rates import Billing, ContractTerms, ContractVersionView, Rounding

partners = table_of(Partner)
partner_keys = table_of(PartnerKey)
contract_versions = table_of(ContractVersion)


@dataclass(frozen=True)
class PartnerView:
    id: int
    partner_code: str
    display_name: str
    kind: str
    status: str
    created_at: datetime
    suspended_at: datetime | None

    @property
    def is_active(self) -> bool:
        return self.status == "ACTIVE"


@dataclass(frozen=True)
class PartnerKeyView:
    row_id: int
    key_id: str
    partner_id: int
    partner_code: str
    algorithm: str
    public_key_pem: str
    created_at: datetime
    revoked_at: datetime | None


# The two lookups of the hot path (every earn prices with the version in force; every token check that
# misses the key cache reads the key) are built once and run as Prebuilt: on PostgreSQL on the driver.
def version_in_force_select(partner_id: ColumnElement[Any], at: ColumnElement[Any]) -> Select[Any]:
    """The contract version that prices a partner's transaction at ``at``, with the partner's status:
    one row at most, read by ``version_in_force_of``. Its own query, or part of a larger one."""
    return (
        select(contract_versions, partners.c.status.label("partner_status"))
        .join(partners, partners.c.id == contract_versions.c.partner_id)
        .where(contract_versions.c.partner_id == partner_id, contract_versions.c.effective_from <= at)
        .order_by(contract_versions.c.effective_from.desc(), contract_versions.c.version.desc())
        .limit(1)
    )


_VERSION_IN_FORCE_SELECT = version_in_force_select(bindparam("partner"), bindparam("at"))
_VERSION_IN_FORCE = Prebuilt(_VERSION_IN_FORCE_SELECT)
_VERSION_IN_FORCE_NAMES = tuple(str(column.key) for column in _VERSION_IN_FORCE_SELECT.selected_columns)


def version_in_force_of(values: Sequence[Any]) -> tuple[ContractVersionView, bool]:
    """A row of ``version_in_force_select``: the version, and whether the partner is active."""
    *version, partner_status = values  # the partner's status comes last
    return _version_of_values(tuple(version)), partner_status == "ACTIVE"


@functools.lru_cache(maxsize=1024)
def _version_of_values(values: tuple[Any, ...]) -> ContractVersionView:
    """The version of a row of its columns' values. A version never changes (the database refuses
    it) and every earn reads the one in force, so each is built once: keyed by all its values, a
    version of another database with the same id is another key."""
    return _version(SimpleNamespace(**dict(zip(_VERSION_IN_FORCE_NAMES[:-1], values, strict=True))))


_KEY_COLUMNS = (
    partner_keys.c.id,
    partner_keys.c.key_id,
    partner_keys.c.partner_id,
    partners.c.partner_code,
    partner_keys.c.algorithm,
    partner_keys.c.public_key_pem,
    partner_keys.c.created_at,
    partner_keys.c.revoked_at,
)
_KEY = Prebuilt(
    select(*_KEY_COLUMNS)
    .join(partners, partners.c.id == partner_keys.c.partner_id)
    .where(partner_keys.c.key_id == bindparam("key"))
)

_PARTNER_COLUMNS = (
    partners.c.id,
    partners.c.partner_code,
    partners.c.display_name,
    partners.c.kind,
    partners.c.status,
    partners.c.created_at,
    partners.c.suspended_at,
)


def _terms(row: Any) -> ContractTerms:
    return ContractTerms(
        currency=row.currency,
        earn_rate=row.earn_rate,
        redeem_value=row.redeem_value,
        issuance_price=row.issuance_price,
        reimbursement_rate=row.reimbursement_rate,
        earn_rounding=Rounding(row.earn_rounding),
        billing=Billing(row.billing),
        pending_days=row.pending_days,
        max_points_per_transaction=row.max_points_per_transaction,
        daily_issuance_cap=row.daily_issuance_cap,
        max_points_share_of_basket=row.max_points_share_of_basket,
    )


def _version(row: Any) -> ContractVersionView:
    """The version of a row read by name (a SQLAlchemy Row, or a namespace of a Prebuilt's values)."""
    return ContractVersionView(row.id, row.partner_id, row.version, row.effective_from, _terms(row))


class PartnerRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def by_code(self, partner_code: str) -> PartnerView | None:
        row = self.connection.execute(select(*_PARTNER_COLUMNS).where(partners.c.partner_code == partner_code)).first()
        return PartnerView(*row) if row else None

    def by_id(self, partner_id: int) -> PartnerView | None:
        row = self.connection.execute(select(*_PARTNER_COLUMNS).where(partners.c.id == partner_id)).first()
        return PartnerView(*row) if row else None

    def page(self, after_id: int, limit: int) -> list[PartnerView]:
        rows = self.connection.execute(
            select(*_PARTNER_COLUMNS).where(partners.c.id > after_id).order_by(partners.c.id).limit(limit)
        )
        return [PartnerView(*row) for row in rows]

    def insert(self, **values: Any) -> int:
        return inserted_id(self.connection.execute(partners.insert().values(**values)))

    def set_status(self, partner_id: int, status: str, suspended_at: datetime | None) -> None:
        self.connection.execute(
            partners.update().where(partners.c.id == partner_id).values(status=status, suspended_at=suspended_at)
        )

    def key(self, key_id: str) -> PartnerKeyView | None:
        row = _KEY.first(self.connection, {"key": key_id})
        return PartnerKeyView(*row) if row else None

    def keys_of(self, partner_id: int, after_id: int, limit: int) -> list[PartnerKeyView]:
        rows = self.connection.execute(
            select(*_KEY_COLUMNS)
            .join(partners, partners.c.id == partner_keys.c.partner_id)
            .where(partner_keys.c.partner_id == partner_id, partner_keys.c.id > after_id)
            .order_by(partner_keys.c.id)
            .limit(limit)
        )
        return [PartnerKeyView(*row) for row in rows]

    def insert_key(self, **values: Any) -> None:
        self.connection.execute(partner_keys.insert().values(**values))

    def revoke_key(self, key_id: str, revoked_at: datetime) -> None:
        self.connection.execute(
            partner_keys.update().where(partner_keys.c.key_id == key_id).values(revoked_at=revoked_at)
        )

    def latest_version_number(self, partner_id: int) -> int:
        value = self.connection.execute(
            select(func.max(contract_versions.c.version)).where(contract_versions.c.partner_id == partner_id)
        ).scalar()
        return int(value or 0)

    def insert_version(self, **values: Any) -> int:
        return inserted_id(self.connection.execute(contract_versions.insert().values(**values)))

    def version_by_id(self, version_id: int) -> ContractVersionView:
        row = self.connection.execute(select(contract_versions).where(contract_versions.c.id == version_id)).one()
        return _version(row)

    def version_in_force(self, partner_id: int, at: datetime) -> tuple[ContractVersionView, bool] | None:
        """The version that prices a transaction at ``at``, and whether the partner is active."""
        values = _VERSION_IN_FORCE.first(self.connection, {"partner": partner_id, "at": at})
        return None if values is None else version_in_force_of(values)

    def versions_page(self, partner_id: int, after_version: int, limit: int) -> list[ContractVersionView]:
        rows = self.connection.execute(
            select(contract_versions)
            .where(contract_versions.c.partner_id == partner_id, contract_versions.c.version > after_version)
            .order_by(contract_versions.c.version)
            .limit(limit)
        )
        return [_version(row) for row in rows]
