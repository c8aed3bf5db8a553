"""A member's activity history, and churn signals: members with no activity for a number of days."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from common.errors import InvalidArgument
from common.sql import (
    MAX_ID,
    InvalidPageToken,
    Page,
    decode_page_token,
    encode_page_token,
    page_size_or_default,
)
from common.uow import UnitOfWork
from ledger.repository import LedgerRepository
from members.identifiers import MemberIdentifier
from programme.member_reads import InactiveRow, MemberReadRepository
from programme.visibility import (
    MemberReadSettings,
    StatementScope,
    Viewer,
    partner_filter,
    require_active_partner,
    visible_member,
)

# Every kind of journal transaction on a member's account (ledger/models.py).
TRANSACTION_KINDS = ("EARN", "REDEEM", "EARN_REVERSAL", "REDEMPTION_REFUND", "EXPIRY", "ADJUSTMENT", "TRANSFER")
MAX_INACTIVE_DAYS = 3660


class InvalidActivityKind(InvalidArgument):
    reason = "INVALID_ACTIVITY_KIND"


class InvalidInactiveDays(InvalidArgument):
    reason = "INVALID_INACTIVE_DAYS"


@dataclass(frozen=True)
class ActivityFilter:
    partner_code: str = ""  # empty: every partner the viewer may see
    kinds: tuple[str, ...] = ()  # empty: every kind

    def validate(self) -> None:
        unknown = sorted(set(self.kinds) - set(TRANSACTION_KINDS))
        if unknown:
            raise InvalidActivityKind(f"unknown activity kinds {unknown}", field="kinds")


@dataclass(frozen=True)
class Activity:
    transaction_id: str
    kind: str
    partner_code: str | None  # None: the network operator
    points: int  # from the member's side: + gained, - lost
    business_time: datetime
    receipt_id: str | None


@dataclass(frozen=True)
class ActivityPage:
    member_number: str
    scope: StatementScope
    page: Page[Activity]


@dataclass(frozen=True)
class InactiveMember:
    member_number: str
    last_activity_at: datetime
    last_partner_code: str | None  # None: the network operator
    available_points: int


@dataclass(frozen=True)
class InactiveMembers:
    inactive_since: datetime
    page: Page[InactiveMember]


def list_member_activity(
    uow: UnitOfWork, settings: MemberReadSettings, viewer: Viewer, identifier: MemberIdentifier, *,
    member_consent: bool, filters: ActivityFilter, page_size: int, page_token: str,
) -> ActivityPage:  # fmt: skip
    filters.validate()
    limit, before = page_size_or_default(page_size), decode_activity_token(page_token)
    now = uow.clock.now()

    def work(connection: Connection) -> ActivityPage:
        member = visible_member(connection, settings, viewer, identifier, member_consent=member_consent, now=now)
        sees_all = member.scope is StatementScope.NETWORK
        partner_id = partner_filter(connection, viewer, filters.partner_code, sees_all=sees_all)
        reads = MemberReadRepository(connection)
        rows = reads.activity_page(
            member.row.id, partner_id=partner_id or member.only_partner_id, kinds=filters.kinds, before=before,
            limit=limit + 1,
        )  # fmt: skip
        accounts = LedgerRepository(connection).member_accounts(member.row.id)
        signed = reads.member_side_points(
            [row.id for row in rows[:limit]], [accounts.points_account_id, accounts.debt_account_id]
        )
        items = [
            Activity(row.public_id, row.kind, row.partner_code, signed.get(row.id, 0), row.business_time,
                     row.receipt_id)
            for row in rows[:limit]
        ]  # fmt: skip
        last = rows[limit - 1] if len(rows) > limit else None
        token = encode_activity_token(last.business_time, last.id) if last else ""
        return ActivityPage(member.row.member_number, member.scope, Page(items, token))

    return uow.run(work)


def list_inactive_members(
    uow: UnitOfWork, settings: MemberReadSettings, viewer: Viewer, *, inactive_days: int, last_partner_code: str,
    page_size: int, page_token: str,
) -> InactiveMembers:  # fmt: skip
    """Members whose last earn, spend or return is ``inactive_days`` or more ago; a partner sees its own."""
    if not 1 <= inactive_days <= MAX_INACTIVE_DAYS:
        raise InvalidInactiveDays(f"inactive_days must be 1-{MAX_INACTIVE_DAYS}", field="inactive_days")
    limit, after = page_size_or_default(page_size), decode_page_token(page_token)
    now = uow.clock.now()
    inactive_since = now - timedelta(days=inactive_days)

    def work(connection: Connection) -> InactiveMembers:
        if viewer.partner_id is not None:
            require_active_partner(connection, viewer.partner_id)
        chosen = partner_filter(connection, viewer, last_partner_code, sees_all=not viewer.is_partner)
        reads = MemberReadRepository(connection)
        rows = reads.inactive_page(
            inactive_since=inactive_since, last_partner_id=chosen or viewer.partner_id, after_member_id=after,
            limit=limit + 1,
        )  # fmt: skip
        items = _inactive_members(connection, settings, reads, rows[:limit], now)
        token = encode_page_token(rows[limit - 1].member_id) if len(rows) > limit else ""
        return InactiveMembers(inactive_since, Page(items, token))

    return uow.run(work)


def _inactive_members(
    connection: Connection, settings: MemberReadSettings, reads: MemberReadRepository, rows: Sequence[InactiveRow],
    now: datetime,
) -> list[InactiveMember]:  # fmt: skip
    spendable = reads.spendable_by_member([row.member_id for row in rows], now)
    codes = reads.partner_codes(sorted({row.last_partner_id for row in rows if row.last_partner_id}))
    found: list[InactiveMember] = []
    for row in rows:
        points = spendable.get(row.member_id, 0)
        if points:  # holds only matter to members with points
            points = max(points - settings.held_points(connection, row.member_id, now), 0)
        partner_code = codes.get(row.last_partner_id) if row.last_partner_id else None
        found.append(InactiveMember(row.member_number, row.last_activity_at, partner_code, points))
    return found


# Activity pages run newest first by business time, so their token carries the last row's time and id.
_ACTIVITY_TOKEN_PREFIX = "before"  # noqa: S105 - a page token format, not a secret
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_activity_token(business_time: datetime, transaction_id: int) -> str:
    micros = (business_time - _EPOCH) // _MICROSECOND
    return base64.urlsafe_b64encode(f"{_ACTIVITY_TOKEN_PREFIX}:{micros}:{transaction_id}".encode()).decode()


def decode_activity_token(token: str) -> tuple[datetime, int] | None:
    """The (business time, transaction id) the next page starts before; None for the first page."""
    if not token:
        return None
    try:
        prefix, micros, transaction_id = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if prefix != _ACTIVITY_TOKEN_PREFIX or not 0 <= int(transaction_id) <= MAX_ID:
            raise ValueError(prefix)
        moment = _EPOCH + int(micros) * _MICROSECOND
        return moment, int(transaction_id)
    except (ValueError, OverflowError, UnicodeDecodeError):
        raise InvalidPageToken("page_token is not one this service issued") from None
