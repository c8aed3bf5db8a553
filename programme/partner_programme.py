"""What a partner adds to the programme on its own account: activities it awards points for (a review,
a survey, a healthy-habit check-in) and promotions that multiply its earns for a date range.

Both are funded by the partner: an activity award and a promotion's extra points are BONUS lots of
that partner at its contract's issuance price (programme/bonuses.py); checkout posts them
(checkout/services.py), this module keeps the definitions and the rules.

- An activity is defined by a partner-chosen code, the points one award gives and a per-member limit
  (awards per UTC day, calendar month, calendar year or ever). Definitions are immutable versions; the
  latest is in force, and a retired one awards nothing.
- A promotion adds ``bonus_percent`` of the partner's earn on every purchase whose business time
  falls in [starts_at, ends_at). Overlapping promotions do not stack: the largest applies. Ending a
  promotion early moves its end to the moment it is ended; earns already made keep their bonus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select

from common.db import table_of
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.idempotency import Outcome, RequestKey, run_once
from common.ids import new_id
from common.sql import Page, paginate
from common.uow import UnitOfWork
from programme.models import ActivityDefinition, Promotion
from programme.policy import MAX_BONUS_PERCENT, MAX_BONUS_POINTS

activity_definitions = table_of(ActivityDefinition)
promotions = table_of(Promotion)

ACTIVITY_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
LIMIT_PERIODS = ("DAY", "MONTH", "YEAR", "LIFETIME")
MAX_AWARDS_PER_MEMBER = 10_000
MAX_NAME_LENGTH = 100


class InvalidActivity(InvalidArgument):
    reason = "INVALID_ACTIVITY"


class ActivityNotFound(NotFound):
    reason = "ACTIVITY_NOT_FOUND"


class ActivityRetired(FailedPrecondition):
    reason = "ACTIVITY_RETIRED"


class ActivityLimitReached(FailedPrecondition):
    reason = "ACTIVITY_LIMIT_REACHED"


class InvalidPromotion(InvalidArgument):
    reason = "INVALID_PROMOTION"


class PromotionNotFound(NotFound):
    reason = "PROMOTION_NOT_FOUND"


class PromotionAlreadyEnded(FailedPrecondition):
    reason = "PROMOTION_ALREADY_ENDED"


@dataclass(frozen=True)
class ActivityCommand:
    code: str
    display_name: str
    points: int
    max_awards_per_member: int
    limit_period: str
    retired: bool = False


@dataclass(frozen=True)
class ActivityView:
    code: str
    version: int
    display_name: str
    points: int
    max_awards_per_member: int
    limit_period: str
    retired: bool
    created_at: datetime


@dataclass(frozen=True)
class PromotionCommand:
    display_name: str
    bonus_percent: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class PromotionView:
    promotion_id: str
    display_name: str
    bonus_percent: int
    starts_at: datetime
    ends_at: datetime
    ended_early_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class ActivePromotion:
    promotion_id: str
    bonus_percent: int


class PartnerProgramme:
    """A partner's activities and promotions; every write runs once per request id."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def define_activity(self, request: RequestKey, partner_id: int, command: ActivityCommand) -> Outcome[ActivityView]:
        """Adds a version of an activity (a new code, or new points or limits for a known one)."""
        _validate_activity(command)

        def work(connection: Connection) -> ActivityView:
            latest = connection.execute(
                select(func.max(activity_definitions.c.version)).where(
                    activity_definitions.c.partner_id == partner_id, activity_definitions.c.code == command.code
                )
            ).scalar()
            row_id = connection.execute(
                activity_definitions.insert().values(
                    partner_id=partner_id, code=command.code, version=int(latest or 0) + 1,
                    display_name=command.display_name.strip(), points=command.points,
                    max_awards_per_member=command.max_awards_per_member, limit_period=command.limit_period,
                    retired=command.retired, created_at=self.uow.clock.now(),
                ).returning(activity_definitions.c.id)
            ).scalar_one()  # fmt: skip
            stored = select(activity_definitions).where(activity_definitions.c.id == row_id)
            return _activity(connection.execute(stored).one())

        return run_once(self.uow, request, "DefineActivity", command, ActivityView, work)

    def list_activities(self, partner_id: int, *, page_size: int, page_token: str) -> Page[ActivityView]:
        """The partner's activities as in force (their latest versions), in the order they were first defined."""

        def fetch(after_id: int, limit: int) -> list[tuple[int, ActivityView]]:
            def work(connection: Connection) -> list[tuple[int, ActivityView]]:
                first = (
                    select(activity_definitions.c.code, func.min(activity_definitions.c.id).label("first_id"))
                    .where(activity_definitions.c.partner_id == partner_id)
                    .group_by(activity_definitions.c.code)
                    .having(func.min(activity_definitions.c.id) > after_id)
                    .order_by(func.min(activity_definitions.c.id))
                    .limit(limit)
                )
                found = connection.execute(first).all()
                return [(int(row.first_id), _latest(connection, partner_id, row.code)) for row in found]

            return self.uow.run(work)

        page = paginate(page_size, page_token, fetch, lambda item: item[0])
        return Page([view for _, view in page.items], page.next_page_token)

    def create_promotion(
        self, request: RequestKey, partner_id: int, command: PromotionCommand
    ) -> Outcome[PromotionView]:
        _validate_promotion(command)

        def work(connection: Connection) -> PromotionView:
            now = self.uow.clock.now()
            if command.ends_at <= now:
                raise InvalidPromotion("the promotion would already be over", field="end_time")
            row_id = connection.execute(
                promotions.insert().values(
                    public_id=new_id(), partner_id=partner_id, display_name=command.display_name.strip(),
                    bonus_percent=command.bonus_percent, starts_at=command.starts_at, ends_at=command.ends_at,
                    created_at=now,
                ).returning(promotions.c.id)
            ).scalar_one()  # fmt: skip
            return _promotion(connection.execute(select(promotions).where(promotions.c.id == row_id)).one())

        return run_once(self.uow, request, "CreatePromotion", command, PromotionView, work)

    def end_promotion(self, request: RequestKey, partner_id: int, promotion_id: str) -> Outcome[PromotionView]:
        """Ends a promotion now; one that is over already is refused (PROMOTION_ALREADY_ENDED)."""

        def work(connection: Connection) -> PromotionView:
            now = self.uow.clock.now()
            row = connection.execute(
                select(promotions)
                .where(promotions.c.public_id == promotion_id, promotions.c.partner_id == partner_id)
                .with_for_update()
            ).first()
            if row is None:
                raise PromotionNotFound("this partner has no promotion with that id", promotion_id=promotion_id)
            if row.ends_at <= now:
                raise PromotionAlreadyEnded("the promotion is already over", ended_at=row.ends_at.isoformat())
            # One that has not started yet ends as it would start: an empty range, it never applies.
            ends_at = max(now, row.starts_at)
            connection.execute(
                promotions.update().where(promotions.c.id == row.id).values(ends_at=ends_at, ended_early_at=now)
            )
            return _promotion(connection.execute(select(promotions).where(promotions.c.id == row.id)).one())

        return run_once(self.uow, request, "EndPromotion", {"promotion_id": promotion_id}, PromotionView, work)

    def list_promotions(self, partner_id: int, *, page_size: int, page_token: str) -> Page[PromotionView]:
        """The partner's promotions, oldest first, ended ones included."""

        def fetch(after_id: int, limit: int) -> list[tuple[int, PromotionView]]:
            def work(connection: Connection) -> list[tuple[int, PromotionView]]:
                rows = connection.execute(
                    select(promotions)
                    .where(promotions.c.partner_id == partner_id, promotions.c.id > after_id)
                    .order_by(promotions.c.id)
                    .limit(limit)
                ).all()
                return [(int(row.id), _promotion(row)) for row in rows]

            return self.uow.run(work)

        page = paginate(page_size, page_token, fetch, lambda item: item[0])
        return Page([view for _, view in page.items], page.next_page_token)


def activity_in_force(connection: Connection, partner_id: int, code: str) -> ActivityView:
    """The activity a partner awards points for; refused when unknown or retired."""
    if not ACTIVITY_CODE.match(code):
        raise InvalidActivity("activity_code is 2-40 characters: A-Z, 0-9 and _", field="activity_code")
    view = _latest(connection, partner_id, code)
    if view.retired:
        raise ActivityRetired("the partner retired this activity", activity_code=code)
    return view


def period_start(limit_period: str, now: datetime) -> datetime | None:
    """Where the current limit period began (UTC); None for LIFETIME."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if limit_period == "DAY":
        return midnight
    if limit_period == "MONTH":
        return midnight.replace(day=1)
    if limit_period == "YEAR":
        return midnight.replace(month=1, day=1)
    return None


def best_promotion_select(partner_id: ColumnElement[Any], at: ColumnElement[Any]) -> Select[Any]:
    """The partner's largest promotion running at ``at`` (they do not stack): one row at most, read by
    ``active_promotion_of``. Every earn asks, as part of ``checkout.repository``'s one read."""
    return (
        select(promotions.c.public_id, promotions.c.bonus_percent)
        .where(promotions.c.partner_id == partner_id, promotions.c.starts_at <= at, promotions.c.ends_at > at)
        .order_by(promotions.c.bonus_percent.desc(), promotions.c.id)
        .limit(1)
    )


def active_promotion_of(values: Sequence[Any] | None) -> ActivePromotion | None:
    """A row of ``best_promotion_select`` (None, or NULLs from an outer join: no promotion runs)."""
    return ActivePromotion(values[0], int(values[1])) if values is not None and values[0] is not None else None


def _latest(connection: Connection, partner_id: int, code: str) -> ActivityView:
    row = connection.execute(
        select(activity_definitions)
        .where(activity_definitions.c.partner_id == partner_id, activity_definitions.c.code == code)
        .order_by(activity_definitions.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise ActivityNotFound("this partner defined no activity with that code", activity_code=code)
    return _activity(row)


def _validate_activity(command: ActivityCommand) -> None:
    if not ACTIVITY_CODE.match(command.code):
        raise InvalidActivity("code is 2-40 characters: A-Z, 0-9 and _, starting with a letter", field="code")
    if not command.display_name.strip() or len(command.display_name) > MAX_NAME_LENGTH:
        raise InvalidActivity(f"display_name is 1-{MAX_NAME_LENGTH} characters", field="display_name")
    if not 0 < command.points <= MAX_BONUS_POINTS:
        raise InvalidActivity(f"points must be 1 to {MAX_BONUS_POINTS:,}", field="points")
    if not 0 < command.max_awards_per_member <= MAX_AWARDS_PER_MEMBER:
        raise InvalidActivity(
            f"max_awards_per_member must be 1 to {MAX_AWARDS_PER_MEMBER:,}", field="max_awards_per_member"
        )
    if command.limit_period not in LIMIT_PERIODS:
        raise InvalidActivity(f"limit_period must be one of {list(LIMIT_PERIODS)}", field="limit_period")


def _validate_promotion(command: PromotionCommand) -> None:
    if not command.display_name.strip() or len(command.display_name) > MAX_NAME_LENGTH:
        raise InvalidPromotion(f"display_name is 1-{MAX_NAME_LENGTH} characters", field="display_name")
    if not 0 < command.bonus_percent <= MAX_BONUS_PERCENT:
        raise InvalidPromotion(f"bonus_percent must be 1-{MAX_BONUS_PERCENT}", field="bonus_percent")
    if command.ends_at <= command.starts_at:
        raise InvalidPromotion("end_time must be after start_time", field="end_time")


def _activity(row: Any) -> ActivityView:
    return ActivityView(
        code=row.code, version=int(row.version), display_name=row.display_name, points=int(row.points),
        max_awards_per_member=int(row.max_awards_per_member), limit_period=row.limit_period,
        retired=bool(row.retired), created_at=row.created_at,
    )  # fmt: skip


def _promotion(row: Any) -> PromotionView:
    return PromotionView(
        promotion_id=row.public_id, display_name=row.display_name, bonus_percent=int(row.bonus_percent),
        starts_at=row.starts_at, ends_at=row.ends_at, ended_early_at=row.ended_early_at, created_at=row.created_at,
    )  # fmt: skip
