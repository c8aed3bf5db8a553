"""Small portable SQL helpers shared by the repositories."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, CursorResult, Table
from sqlalchemy.dialects import postgresql, sqlite

from common.errors import InvalidArgument


class InvalidPageToken(InvalidArgument):
    reason = "INVALID_PAGE_TOKEN"


T = TypeVar("T")

MAX_PAGE_SIZE = 1000
MAX_ID = 2**63 - 1  # the largest signed 64-bit integer, the largest id a table holds
DEFAULT_PAGE_SIZE = 50


_insert_ignoring: dict[tuple[str, str], Any] = {}


def insert_ignoring_conflict(connection: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either backend; True if a row was inserted."""
    key = (connection.dialect.name, table.name)
    statement = _insert_ignoring.get(key)
    if statement is None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        # rowcount is not reliable here on every driver; RETURNING yields a row only when one was inserted.
        statement = dialect.insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
        _insert_ignoring[key] = statement  # built once: building statements costs more than running them
    return connection.execute(statement, values).first() is not None


def page_size_or_default(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def decode_page_token(token: str) -> int:
    """The id after which the next page starts (0 for the first page)."""
    if not token:
        return 0
    try:
        prefix, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix != "after":
            raise ValueError(prefix)
        after = int(value)
        # Ids are positive and fit a signed 64-bit integer: any other number would reach the database as a
        # bind it rejects (SQLite raises OverflowError) instead of being refused as a token we never issued.
        if not 0 <= after <= MAX_ID:
            raise ValueError(value)
        return after
    except ValueError:
        raise InvalidPageToken("page_token is not one this service issued") from None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def paginate(
    page_size: int, page_token: str, fetch: Callable[[int, int], list[T]], cursor: Callable[[T], int]
) -> Page[T]:
    """AIP-158 pagination: ``fetch(after, limit)`` reads one row more than a page to know if more remain."""
    limit, after = page_size_or_default(page_size), decode_page_token(page_token)
    rows = fetch(after, limit + 1)
    items = rows[:limit]
    return Page(items, encode_page_token(cursor(items[-1])) if len(rows) > limit else "")


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT generated."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
