"""SQLAlchemy base, portable column types and the engine factory (built once, in the composition root)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import URL, BigInteger, DateTime, Dialect, Engine, Integer, MetaData, String, Table, event, make_url
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from common.sql import QUEUE_KEEPING_DRIVERNAME

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntegerId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DecimalString(TypeDecorator[Decimal]):
    """Exact decimals stored as text, because SQLite's NUMERIC is a float."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else format(value, "f")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(url: str, *, pool_size: int = 10, statement_timeout_ms: int = 10_000) -> Engine:
    """Builds the engine for SQLite (single writer, WAL) or PostgreSQL (pooled, READ COMMITTED)."""
    if url.startswith("sqlite"):
        engine = sa_create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": statement_timeout_ms / 1000},
            pool_size=pool_size,
            max_overflow=0,
            hide_parameters=True,  # bound values (receipts, member ids) must not reach logs
        )
        _configure_sqlite(engine, busy_timeout_ms=statement_timeout_ms)
        return engine
    engine = sa_create_engine(
        _queue_keeping(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=statement_timeout_ms / 1000,
        connect_args={
            "options": f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={statement_timeout_ms}",
            # Hot statements are prepared by common.libpq; psycopg's own preparing would, after any
            # rollback, send DEALLOCATE ALL and drop those too.
            "prepare_threshold": None,
        },
        isolation_level="READ COMMITTED",
        hide_parameters=True,  # bound values (receipts, member ids) must not reach logs
    )
    return engine


def _queue_keeping(url: str) -> URL:
    """The URL with psycopg's dialect swapped for the one that keeps queued statements in order."""
    parsed = make_url(url)
    # QUEUE_KEEPING_DRIVERNAME: the URL of an engine built here, reused to build another.
    if parsed.drivername not in ("postgresql", "postgresql+psycopg", QUEUE_KEEPING_DRIVERNAME):
        raise ValueError(f"PostgreSQL is reached through psycopg (postgresql+psycopg://...), not {parsed.drivername}")
    return parsed.set(drivername=QUEUE_KEEPING_DRIVERNAME)


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: one writer at a time, no upgrade deadlocks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def table_of(model: type[Base]) -> Table:
    """The Core table behind a model, typed as a Table for Core statements in repositories."""
    return cast(Table, model.__table__)
