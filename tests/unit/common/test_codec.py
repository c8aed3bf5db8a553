"""The JSON codec round-trips stored results exactly, and fingerprints tell commands apart."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkout.commands import (
    BalanceView,
    Basket,
    BasketLine,
    CaptureResult,
    EarnCommand,
    EarnResult,
    HoldView,
    MemberView,
    ReturnResult,
)
from common.codec import dumps, fingerprint, loads
from members.identifiers import IdentifierKind, MemberIdentifier
from partners.rates import Billing, ContractTerms, ContractVersionView, Rounding

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

EARN = EarnResult(
    transaction_id="tx-1",
    member_number="M123456789",
    points_earned=42,
    debt_repaid_points=3,
    available_at=AT + timedelta(days=14),
    expires_at=AT + timedelta(days=730, microseconds=17),
    contract_version=2,
    is_newly_enrolled=True,
)

HOLD = HoldView(
    hold_id="hold-1",
    member_number="M123456789",
    points=500,
    captured_points=300,
    status="CAPTURED",
    value_minor=300,
    currency="EUR",
    created_at=AT,
    expires_at=AT + timedelta(minutes=15),
    contract_version=1,
    capture_transaction_id="tx-2",
)

CAPTURE = CaptureResult(transaction_id="tx-2", hold=HOLD, points_captured=300, value_minor=300, points_released=200)

MEMBER = MemberView(
    member_number="M123456789",
    enrolled_at=AT - timedelta(days=100),
    masked_identifiers=(("PHONE", "+44*******123"), ("EMAIL", "a***@example.com")),
    balance=BalanceView(
        member_number="M123456789",
        available_points=1200,
        pending_points=50,
        held_points=500,
        debt_points=0,
        expiring_soon_points=100,
        expiring_soon_until=AT + timedelta(days=30),
    ),
    is_newly_enrolled=False,
)

RETURN = ReturnResult(
    member_number="M123456789",
    returned_minor_total=2500,
    points_reversed=25,
    points_restored=10,
    debt_created_points=5,
    reversal_transaction_id="tx-3",
    refund_transaction_id="",
)

CONTRACT = ContractVersionView(
    id=7,
    partner_id=3,
    version=2,
    effective_from=AT,
    terms=ContractTerms(
        currency="KWD",
        earn_rate=Decimal("2.500"),
        redeem_value=Decimal("0.0015"),
        issuance_price=Decimal("0.0012"),
        reimbursement_rate=Decimal("0.001"),
        earn_rounding=Rounding.HALF_UP,
        billing=Billing.ON_REDEMPTION,
        pending_days=14,
        max_points_per_transaction=5000,
        daily_issuance_cap=100_000,
        max_points_share_of_basket=Decimal("0.5"),
    ),
)

CONTRACT_WITHOUT_LIMITS = dataclasses.replace(
    CONTRACT,
    terms=dataclasses.replace(
        CONTRACT.terms, max_points_per_transaction=None, daily_issuance_cap=None, max_points_share_of_basket=None
    ),
)

EARN_COMMAND = EarnCommand(
    member=MemberIdentifier(IdentifierKind.PHONE, "+447700900123"),
    receipt_id="r-1",
    basket=Basket(
        currency="EUR",
        total_minor=2000,
        lines=(BasketLine("sku-1", 1500), BasketLine("tobacco", 500, is_excluded=True)),
        paid_with_points_minor=100,
    ),
    enroll_if_unknown=True,
    channel="POS",
    store_id="store-9",
)

EXAMPLES: list[Any] = [EARN, HOLD, CAPTURE, MEMBER, RETURN, CONTRACT, CONTRACT_WITHOUT_LIMITS, EARN_COMMAND]
EXAMPLE_IDS = [
    "earn",
    "hold",
    "capture",
    "member",
    "return",
    "contract",
    "contract-without-limits",
    "earn-command",
]


@pytest.mark.parametrize("value", EXAMPLES, ids=EXAMPLE_IDS)
def test_round_trip_gives_an_equal_value_of_the_same_types(value: Any) -> None:
    restored = loads(type(value), dumps(value))

    assert restored == value
    assert_same_types(restored, value)


def assert_same_types(restored: Any, original: Any) -> None:
    """Equality alone would let a str pass for a StrEnum or a list for a tuple; check the types too."""
    assert type(restored) is type(original), (restored, original)
    if dataclasses.is_dataclass(original):
        for field in dataclasses.fields(original):
            assert_same_types(getattr(restored, field.name), getattr(original, field.name))
    elif isinstance(original, tuple):
        for restored_item, original_item in zip(restored, original, strict=True):
            assert_same_types(restored_item, original_item)


def test_decimal_keeps_its_exact_digits() -> None:
    restored = loads(ContractVersionView, dumps(CONTRACT))

    assert str(restored.terms.earn_rate) == "2.500"
    assert str(restored.terms.redeem_value) == "0.0015"


def test_datetimes_keep_their_time_zone_and_microseconds() -> None:
    offset = timezone(timedelta(hours=5, minutes=30))
    local = dataclasses.replace(EARN, available_at=datetime(2026, 3, 1, 17, 30, 0, 123456, tzinfo=offset))

    restored = loads(EarnResult, dumps(local))

    assert restored.available_at == local.available_at
    assert restored.available_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert restored.expires_at.microsecond == 17


def test_enums_and_decimals_are_stored_as_plain_json() -> None:
    stored = json.loads(dumps(CONTRACT))

    assert stored["terms"]["earn_rounding"] == "HALF_UP"
    assert stored["terms"]["billing"] == "ON_REDEMPTION"
    assert stored["terms"]["earn_rate"] == "2.500"
    assert stored["effective_from"] == "2026-03-01T12:00:00+00:00"


def test_optional_fields_round_trip_as_null() -> None:
    stored = json.loads(dumps(CONTRACT_WITHOUT_LIMITS))

    assert stored["terms"]["max_points_share_of_basket"] is None
    assert loads(ContractVersionView, dumps(CONTRACT_WITHOUT_LIMITS)).terms.max_points_share_of_basket is None


def test_dumps_is_canonical() -> None:
    text = dumps(EARN)

    assert text == dumps(dataclasses.replace(EARN))
    assert " " not in text
    assert list(json.loads(text)) == sorted(json.loads(text))


# --- fingerprints -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", EXAMPLES, ids=EXAMPLE_IDS)
def test_fingerprint_is_stable(value: Any) -> None:
    digest = fingerprint(value)

    assert digest == fingerprint(loads(type(value), dumps(value)))
    assert digest == fingerprint(dataclasses.replace(value))
    assert len(digest) == 64
    int(digest, 16)


# Fingerprints as the first release computed them: stored with idempotency records, they must never change.
PINNED_FINGERPRINTS = {
    "earn": "a7de517fea0cd96c0d3007ea41d297deeaf141fffbced2ab0fdc7e2987278d3a",
    "hold": "3a9570279abea504ac8873226146259b79faf94cd46a921f9bf3b8dff47bfa36",
    "capture": "0bc3e229f066a090d1ff1a3ed809af67e485b0cabd4372b29b75f220298ad271",
    "member": "d0cb1c5d24a72fcd350f1d4a40745d6711028f3d7f30cc74e31d06bd4aaa14d9",
    "return": "38c004cc2c5a209bb43e366d985c672b4efc6d17bc99d9fa1a42d32b93e1355b",
    "contract": "958eb5c9ea189c77045840cc47e8beb91a2a8beb62503d86ba74d49ea5c9278e",
    "contract-without-limits": "14df880674c93ae752bf2149b64eaa3aa84ad4afe81919ced1ef2d47cf319165",
    "earn-command": "a5ccfc61ecfb0b5172d3f14d4489b130c6fad8f56b930c1ab715ee2d3e96ce79",
}


@pytest.mark.parametrize(("value", "name"), list(zip(EXAMPLES, EXAMPLE_IDS, strict=True)), ids=EXAMPLE_IDS)
def test_fingerprints_stay_what_earlier_releases_stored(value: Any, name: str) -> None:
    assert fingerprint(value) == PINNED_FINGERPRINTS[name]


def changed(value: Any) -> Any:
    """A value of the same type that differs from ``value``."""
    if isinstance(value, Enum):
        return next(member for member in type(value) if member is not value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, Decimal):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, datetime):
        return value + timedelta(microseconds=1)
    if isinstance(value, tuple):
        return (*value, value[-1]) if value else ("x",)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        first = dataclasses.fields(value)[0]
        return dataclasses.replace(value, **{first.name: changed(getattr(value, first.name))})
    if value is None:
        return 1
    raise AssertionError(f"no change defined for {value!r}")


def field_changes(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every copy of ``value`` with exactly one leaf field changed, nested dataclasses included."""
    variants: list[tuple[str, Any]] = []
    for field in dataclasses.fields(value):
        current = getattr(value, field.name)
        name = f"{path}{field.name}"
        if dataclasses.is_dataclass(current):
            variants += [
                (nested_name, dataclasses.replace(value, **{field.name: nested}))
                for nested_name, nested in field_changes(current, f"{name}.")
            ]
        else:
            variants.append((name, dataclasses.replace(value, **{field.name: changed(current)})))
    return variants


@pytest.mark.parametrize("value", EXAMPLES, ids=EXAMPLE_IDS)
def test_fingerprint_differs_when_any_field_differs(value: Any) -> None:
    original = fingerprint(value)
    variants = field_changes(value)

    assert variants
    for name, variant in variants:
        assert fingerprint(variant) != original, name


def test_fingerprint_tells_apart_the_order_of_basket_lines() -> None:
    lines = EARN_COMMAND.basket.lines
    reordered = dataclasses.replace(
        EARN_COMMAND, basket=dataclasses.replace(EARN_COMMAND.basket, lines=tuple(reversed(lines)))
    )
    assert fingerprint(reordered) != fingerprint(EARN_COMMAND)


# --- properties -------------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
texts = st.text(max_size=20)
counts = st.integers(min_value=-(2**63), max_value=2**63 - 1)

earn_results = st.builds(
    EarnResult,
    transaction_id=texts,
    member_number=texts,
    points_earned=counts,
    debt_repaid_points=counts,
    available_at=moments,
    expires_at=moments,
    contract_version=counts,
    is_newly_enrolled=st.booleans(),
)
member_views = st.builds(
    MemberView,
    member_number=texts,
    enrolled_at=moments,
    masked_identifiers=st.lists(st.tuples(texts, texts), max_size=4).map(tuple),
    balance=st.builds(
        BalanceView,
        member_number=texts,
        available_points=counts,
        pending_points=counts,
        held_points=counts,
        debt_points=counts,
        expiring_soon_points=counts,
        expiring_soon_until=moments,
    ),
    is_newly_enrolled=st.booleans(),
)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**9), max_value=10**9)
contract_views = st.builds(
    ContractVersionView,
    id=counts,
    partner_id=counts,
    version=counts,
    effective_from=moments,
    terms=st.builds(
        ContractTerms,
        currency=st.sampled_from(["EUR", "JPY", "KWD"]),
        earn_rate=decimals,
        redeem_value=decimals,
        issuance_price=decimals,
        reimbursement_rate=decimals,
        earn_rounding=st.sampled_from(Rounding),
        billing=st.sampled_from(Billing),
        pending_days=counts,
        max_points_per_transaction=st.none() | counts,
        daily_issuance_cap=st.none() | counts,
        max_points_share_of_basket=st.none() | decimals,
    ),
)


@PROPERTY
@given(st.one_of(earn_results, member_views, contract_views))
def test_any_result_round_trips(value: Any) -> None:
    restored = loads(type(value), dumps(value))

    assert restored == value
    assert_same_types(restored, value)
    assert fingerprint(restored) == fingerprint(value)


@PROPERTY
@given(earn_results, earn_results)
def test_different_results_have_different_fingerprints(first: EarnResult, second: EarnResult) -> None:
    assert (fingerprint(first) == fingerprint(second)) == (first == second)
