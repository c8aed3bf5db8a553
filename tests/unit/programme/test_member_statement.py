"""The pure parts of member statements: expiry days, the inactivity deadline, activity page tokens, filters."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta

import pytest

from common.sql import InvalidPageToken
from ledger.lots import LotBalance
from programme.activity import ActivityFilter, InvalidActivityKind, decode_activity_token, encode_activity_token
from programme.policy import ExpiryPolicy
from programme.statement import ExpiryDay, inactivity_expiry, next_expiries

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def lot(lot_id: int, points: int, expires_at: datetime, *, available_at: datetime = NOW) -> LotBalance:
    return LotBalance(lot_id, points, NOW - timedelta(days=1), available_at, expires_at)


def test_next_expiries_group_available_points_by_utc_day_soonest_first() -> None:
    late_evening = datetime(2026, 4, 1, 23, 30, tzinfo=UTC)
    lots = [
        lot(1, 10, datetime(2026, 4, 1, 8, 0, tzinfo=UTC)),
        lot(2, 5, late_evening),
        lot(3, 7, datetime(2026, 4, 2, 0, 0, tzinfo=UTC)),
        lot(4, 100, datetime(2026, 3, 20, tzinfo=UTC), available_at=NOW + timedelta(days=1)),  # pending
        lot(5, 100, NOW),  # lapsed already
        lot(6, 0, datetime(2026, 3, 10, tzinfo=UTC)),  # spent
    ]
    assert next_expiries(lots, NOW) == [
        ExpiryDay(date(2026, 4, 1), datetime(2026, 4, 1, 8, 0, tzinfo=UTC), 15),
        ExpiryDay(date(2026, 4, 2), datetime(2026, 4, 2, 0, 0, tzinfo=UTC), 7),
    ]


def test_next_expiries_stop_after_a_handful_of_days() -> None:
    lots = [lot(day, day, NOW + timedelta(days=day)) for day in range(1, 10)]
    assert [expiry.points for expiry in next_expiries(lots, NOW)] == [1, 2, 3, 4, 5]
    assert [expiry.points for expiry in next_expiries(lots, NOW, days=2)] == [1, 2]


def test_the_inactivity_deadline_needs_a_rule_and_an_activity() -> None:
    last = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    assert inactivity_expiry(last, ExpiryPolicy(inactivity_months=1)) == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert inactivity_expiry(last, ExpiryPolicy()) is None
    assert inactivity_expiry(None, ExpiryPolicy(inactivity_months=1)) is None


def test_activity_tokens_round_trip_to_the_microsecond() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 123_457, tzinfo=UTC)
    assert decode_activity_token(encode_activity_token(moment, 42)) == (moment, 42)
    assert decode_activity_token("") is None


@pytest.mark.parametrize(
    "text",
    [b"after:5", b"before:x:1", b"before:1:-1", b"before:1:99999999999999999999", b"before:999999999999999999999:1"],
)
def test_foreign_activity_tokens_are_refused(text: bytes) -> None:
    for token in ("garbage", base64.urlsafe_b64encode(text).decode()):
        with pytest.raises(InvalidPageToken):
            decode_activity_token(token)


def test_activity_filters_name_known_kinds() -> None:
    ActivityFilter(kinds=("EARN", "EXPIRY")).validate()
    with pytest.raises(InvalidActivityKind):
        ActivityFilter(kinds=("EARN", "PURCHASE")).validate()
