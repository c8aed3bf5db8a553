"""Settlement periods: labels, half-open UTC boundaries, and chains without gaps or overlaps."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument
from settlement.periods import InvalidPeriod, Period, PeriodLength, parse_period, period_of

MONTH, WEEK, DAY = PeriodLength.MONTH, PeriodLength.WEEK, PeriodLength.DAY
TICK = timedelta(microseconds=1)

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

lengths = st.sampled_from(list(PeriodLength))
# Any instant in four centuries, plus instants crowded around year ends, where months, ISO weeks
# (week 53, week 1 starting in December) and days all turn over at once.
anywhere = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2299, 12, 31), timezones=st.just(UTC))
near_year_end = st.builds(
    lambda year, offset: datetime(year, 1, 1, tzinfo=UTC) + offset,
    st.integers(1901, 2299),
    st.timedeltas(min_value=timedelta(days=-8), max_value=timedelta(days=8)),
)
moments = st.one_of(anywhere, near_year_end)
offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
)


def refuses(label: str, length: PeriodLength) -> InvalidPeriod:
    with pytest.raises(InvalidPeriod) as caught:
        parse_period(label, length)
    return caught.value


def has_53_weeks(year: int) -> bool:
    # December 28th always lies in the last ISO week of its year.
    return date(year, 12, 28).isocalendar().week == 53


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "length", "starts_at", "ends_at"),
    [
        ("2026-03", MONTH, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
        ("2026-12", MONTH, datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2024-02", MONTH, datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        ("2026-W10", WEEK, datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)),
        ("2026-W01", WEEK, datetime(2025, 12, 29, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)),
        ("2020-W53", WEEK, datetime(2020, 12, 28, tzinfo=UTC), datetime(2021, 1, 4, tzinfo=UTC)),
        ("2026-W53", WEEK, datetime(2026, 12, 28, tzinfo=UTC), datetime(2027, 1, 4, tzinfo=UTC)),
        ("2026-03-05", DAY, datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)),
        ("2024-02-29", DAY, datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        ("2026-12-31", DAY, datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_label_names_a_half_open_utc_interval(
    label: str, length: PeriodLength, starts_at: datetime, ends_at: datetime
) -> None:
    period = parse_period(label, length)

    assert period == Period(starts_at, ends_at, label, length)
    assert period.contains(starts_at)
    assert period.contains(ends_at - TICK)
    assert not period.contains(ends_at)
    assert not period.contains(starts_at - TICK)


@PROPERTY
@given(year=st.integers(1, 9998), month=st.integers(1, 12))
def test_month_labels_round_trip(year: int, month: int) -> None:
    label = f"{year:04d}-{month:02d}"

    period = parse_period(label, MONTH)

    assert period.label == label
    assert period_of(period.starts_at, MONTH).label == label
    assert period.ends_at - period.starts_at == timedelta(days=calendar.monthrange(year, month)[1])


@PROPERTY
@given(year=st.integers(1, 9998), week=st.integers(1, 53))
def test_week_labels_round_trip_and_week_53_exists_only_in_long_years(year: int, week: int) -> None:
    label = f"{year:04d}-W{week:02d}"
    if week == 53 and not has_53_weeks(year):
        assert refuses(label, WEEK).reason == "INVALID_PERIOD"
        return

    period = parse_period(label, WEEK)

    assert period.label == label
    assert period_of(period.starts_at, WEEK).label == label
    assert period.starts_at.weekday() == 0  # ISO weeks start on Monday
    assert period.ends_at - period.starts_at == timedelta(days=7)


@PROPERTY
@given(day=st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 30)))
def test_day_labels_round_trip(day: date) -> None:
    period = parse_period(day.isoformat(), DAY)

    assert period.label == day.isoformat()
    assert period_of(period.starts_at, DAY).label == day.isoformat()
    assert period.ends_at - period.starts_at == timedelta(days=1)


def test_leap_years_follow_the_gregorian_rule() -> None:
    assert parse_period("2000-02", MONTH).ends_at == datetime(2000, 3, 1, tzinfo=UTC)
    assert parse_period("2000-02-29", DAY).label == "2000-02-29"
    assert refuses("2100-02-29", DAY).reason == "INVALID_PERIOD"
    assert refuses("2023-02-29", DAY).reason == "INVALID_PERIOD"
    february_2100 = parse_period("2100-02", MONTH)
    assert february_2100.ends_at - february_2100.starts_at == timedelta(days=28)


def test_the_first_days_of_a_year_can_belong_to_the_previous_iso_year() -> None:
    assert period_of(datetime(2021, 1, 3, 23, 59, tzinfo=UTC), WEEK).label == "2020-W53"
    assert period_of(datetime(2021, 1, 4, tzinfo=UTC), WEEK).label == "2021-W01"
    assert period_of(datetime(2025, 12, 29, tzinfo=UTC), WEEK).label == "2026-W01"


# --- boundaries and chains --------------------------------------------------------------------


@PROPERTY
@given(moment=moments, length=lengths)
def test_the_period_of_a_moment_contains_it_and_starts_at_utc_midnight(moment: datetime, length: PeriodLength) -> None:
    period = period_of(moment, length)

    assert period.starts_at <= moment < period.ends_at
    assert period.contains(moment)
    assert period.length is length
    for boundary in (period.starts_at, period.ends_at):
        assert boundary.tzinfo is UTC
        assert (boundary.hour, boundary.minute, boundary.second, boundary.microsecond) == (0, 0, 0, 0)
    if length is MONTH:
        assert period.starts_at.day == 1 and period.ends_at.day == 1
    if length is WEEK:
        assert period.starts_at.weekday() == 0


@PROPERTY
@given(moment=moments, length=lengths)
def test_boundaries_are_half_open(moment: datetime, length: PeriodLength) -> None:
    period = period_of(moment, length)

    assert period_of(period.starts_at, length) == period
    assert period_of(period.ends_at - TICK, length) == period
    assert period_of(period.ends_at, length) != period
    assert period_of(period.starts_at - TICK, length) != period


@PROPERTY
@given(moment=moments, length=lengths)
def test_labels_round_trip(moment: datetime, length: PeriodLength) -> None:
    period = period_of(moment, length)

    assert parse_period(period.label, length) == period
    assert period_of(period.starts_at, length).label == period.label


@PROPERTY
@given(moment=moments, length=lengths, steps=st.integers(1, 60))
def test_next_and_previous_chain_without_gaps_or_overlaps(moment: datetime, length: PeriodLength, steps: int) -> None:
    start = period_of(moment, length)
    chain = [start]
    for _ in range(steps):
        chain.append(chain[-1].next())

    for earlier, later in itertools.pairwise(chain):
        assert later.starts_at == earlier.ends_at  # no gap, no overlap
        assert later.previous() == earlier
        assert later > earlier  # periods order by time
    assert len({period.label for period in chain}) == len(chain)
    walked_back = chain[-1]
    for _ in range(steps):
        walked_back = walked_back.previous()
    assert walked_back == start


@PROPERTY
@given(moment=moments, length=lengths, offset=offsets)
def test_the_period_depends_on_the_instant_not_on_its_time_zone(
    moment: datetime, length: PeriodLength, offset: timezone
) -> None:
    assert period_of(moment.astimezone(offset), length) == period_of(moment, length)


def test_a_local_time_just_after_midnight_belongs_to_the_utc_period() -> None:
    # 00:30 on 1 April in Paris (UTC+2) is still 31 March in UTC.
    paris_summer = timezone(timedelta(hours=2))
    assert period_of(datetime(2026, 4, 1, 0, 30, tzinfo=paris_summer), MONTH).label == "2026-03"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "length"),
    [
        ("", MONTH),
        ("2026-3", MONTH),
        ("26-03", MONTH),
        ("2026/03", MONTH),
        ("2026-00", MONTH),
        ("2026-13", MONTH),
        ("0000-01", MONTH),
        (" 2026-03", MONTH),
        ("2026-03 ", MONTH),
        ("2026-03\n", MONTH),
        ("\uff12\uff10\uff12\uff16-03", MONTH),  # full-width digits: \d matches them, the label is not ours
        ("", WEEK),
        ("2026-W00", WEEK),
        ("2026-W54", WEEK),
        ("2025-W53", WEEK),
        ("2026-W1", WEEK),
        ("2026-w10", WEEK),
        ("2026W10", WEEK),
        ("2026-W10\n", WEEK),
        ("", DAY),
        ("2026-02-30", DAY),
        ("2026-04-31", DAY),
        ("2026-13-01", DAY),
        ("2026-3-5", DAY),
        ("20260305", DAY),
        ("2026-03-05\n", DAY),
        ("2026-03-05T00:00", DAY),
    ],
)
def test_bad_labels_are_refused(label: str, length: PeriodLength) -> None:
    error = refuses(label, length)

    assert isinstance(error, InvalidArgument)
    assert error.reason == "INVALID_PERIOD"
    assert error.metadata == {"period": label}


@pytest.mark.parametrize(
    ("label", "length"),
    [
        ("2026-W10", MONTH),
        ("2026-03-05", MONTH),
        ("2026-03", WEEK),
        ("2026-03-05", WEEK),
        ("2026-03", DAY),
        ("2026-W10", DAY),
    ],
)
def test_a_label_of_another_period_length_is_refused(label: str, length: PeriodLength) -> None:
    error = refuses(label, length)

    assert error.reason == "INVALID_PERIOD"
    assert length.value.lower() in error.message


@pytest.mark.parametrize(
    ("label", "length"),
    [("9999-12", MONTH), ("9999-W52", WEEK), ("9999-12-31", DAY), ("0001-01", MONTH), ("0001-W01", WEEK)],
)
def test_labels_at_the_end_of_the_calendar_are_parsed_or_refused_never_crash(label: str, length: PeriodLength) -> None:
    # A client can send any label: the answer is a period or INVALID_PERIOD, never an internal error.
    try:
        period = parse_period(label, length)
    except InvalidPeriod as error:
        assert error.reason == "INVALID_PERIOD"
    else:
        assert period.label == label


label_like = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"^\d{4}-\d{2}$"),
    st.from_regex(r"^\d{4}-W\d{2}$"),
    st.from_regex(r"^\d{4}-\d{2}-\d{2}$"),
)


@PROPERTY
@given(label=label_like, length=lengths)
def test_any_text_is_either_refused_or_names_itself(label: str, length: PeriodLength) -> None:
    try:
        period = parse_period(label, length)
    except InvalidPeriod:
        return
    assert period.label == label
    assert period.length is length
