"""Settlement periods: calendar months in UTC by default, or ISO weeks or days. Pure, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from common.errors import InvalidArgument


class InvalidPeriod(InvalidArgument):
    reason = "INVALID_PERIOD"


class PeriodLength(StrEnum):
    MONTH = "MONTH"
    WEEK = "WEEK"
    DAY = "DAY"


# ASCII digits only, matched against the whole label (fullmatch: no trailing newline slips through).
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_WEEK = re.compile(r"([0-9]{4})-W([0-9]{2})")
_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


@dataclass(frozen=True, order=True)
class Period:
    """A half-open UTC interval [starts_at, ends_at) named by its label (2026-03, 2026-W10, 2026-03-05)."""

    starts_at: datetime
    ends_at: datetime
    label: str
    length: PeriodLength

    def contains(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at

    def previous(self) -> Period:
        return period_of(self.starts_at - timedelta(microseconds=1), self.length)

    def next(self) -> Period:
        return period_of(self.ends_at, self.length)


def period_of(moment: datetime, length: PeriodLength) -> Period:
    """The period that contains ``moment``."""
    moment = moment.astimezone(UTC)
    if length is PeriodLength.MONTH:
        return _month(moment.year, moment.month)
    if length is PeriodLength.WEEK:
        year, week, _ = moment.isocalendar()
        return _week(year, week)
    return _day(moment.date())


def parse_period(label: str, length: PeriodLength) -> Period:
    """The period named ``label``; the label's shape must match the configured period length."""
    try:
        if length is PeriodLength.MONTH and (match := _MONTH.fullmatch(label)):
            return _month(int(match[1]), int(match[2]))
        if length is PeriodLength.WEEK and (match := _WEEK.fullmatch(label)):
            return _week(int(match[1]), int(match[2]))
        if length is PeriodLength.DAY and (match := _DAY.fullmatch(label)):
            return _day(date(int(match[1]), int(match[2]), int(match[3])))
    except (ValueError, OverflowError):  # no such month, week or day, or past the end of the calendar
        pass
    examples = {PeriodLength.MONTH: "2026-03", PeriodLength.WEEK: "2026-W10", PeriodLength.DAY: "2026-03-05"}
    raise InvalidPeriod(f"period {label!r} is not a {length.value.lower()} label like {examples[length]}", period=label)


def _month(year: int, month: int) -> Period:
    if not 1 <= month <= 12:
        raise ValueError(month)
    starts = datetime(year, month, 1, tzinfo=UTC)
    ends = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return Period(starts, ends, f"{year:04d}-{month:02d}", PeriodLength.MONTH)


def _week(year: int, week: int) -> Period:
    monday = date.fromisocalendar(year, week, 1)
    starts = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return Period(starts, starts + timedelta(days=7), f"{year:04d}-W{week:02d}", PeriodLength.WEEK)


def _day(day: date) -> Period:
    starts = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Period(starts, starts + timedelta(days=1), day.isoformat(), PeriodLength.DAY)
