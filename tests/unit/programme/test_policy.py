"""The network policy's rules: validation, defaults for documents older than a section, calendar months."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from common import codec
from programme.policy import DEFAULT_POLICY, ExpiryPolicy, GoodwillPolicy, InvalidPolicy, NetworkPolicy, add_months


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        ("2026-01-31T10:00:00", 1, "2026-02-28T10:00:00"),  # a shorter month: its last day
        ("2024-01-31T10:00:00", 1, "2024-02-29T10:00:00"),
        ("2026-03-02T09:00:00", 24, "2028-03-02T09:00:00"),
        ("2026-12-15T00:00:00", 1, "2027-01-15T00:00:00"),
        ("2026-03-31T23:59:59", -1, "2026-02-28T23:59:59"),
        ("2026-01-15T00:00:00", -13, "2024-12-15T00:00:00"),
    ],
)
def test_add_months_keeps_the_day_or_takes_the_months_last(start: str, months: int, expected: str) -> None:
    moment = datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert add_months(moment, months) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (NetworkPolicy(expiry=ExpiryPolicy(lifetime_months=0)), "expiry.lifetime_months"),
        (NetworkPolicy(expiry=ExpiryPolicy(lifetime_months=241)), "expiry.lifetime_months"),
        (NetworkPolicy(expiry=ExpiryPolicy(inactivity_months=0)), "expiry.inactivity_months"),
        (NetworkPolicy(expiry=ExpiryPolicy(expiring_soon_days=0)), "expiry.expiring_soon_days"),
        (NetworkPolicy(goodwill=GoodwillPolicy(approval_threshold_points=-1)), "goodwill.approval_threshold_points"),
        (NetworkPolicy(goodwill=GoodwillPolicy(reason_codes=())), "goodwill.reason_codes"),
        (NetworkPolicy(goodwill=GoodwillPolicy(reason_codes=("lower",))), "goodwill.reason_codes"),
        (NetworkPolicy(goodwill=GoodwillPolicy(reason_codes=("SAME", "SAME"))), "goodwill.reason_codes"),
    ],
)
def test_invalid_rules_are_refused_naming_the_field(policy: NetworkPolicy, field: str) -> None:
    with pytest.raises(InvalidPolicy) as raised:
        policy.validate()
    assert raised.value.metadata == {"field": field}


def test_the_defaults_are_valid_and_round_trip_through_the_stored_document() -> None:
    DEFAULT_POLICY.validate()
    changed = replace(DEFAULT_POLICY, expiry=ExpiryPolicy(lifetime_months=12, inactivity_months=6))
    assert codec.loads(NetworkPolicy, codec.dumps(changed)) == changed


def test_a_document_stored_before_a_section_existed_reads_with_that_sections_defaults() -> None:
    stored = '{"expiry": {"lifetime_months": 36, "inactivity_months": null, "expiring_soon_days": 30}}'
    policy = codec.loads(NetworkPolicy, stored)
    assert policy.expiry.lifetime_months == 36
    assert policy.goodwill == GoodwillPolicy()
