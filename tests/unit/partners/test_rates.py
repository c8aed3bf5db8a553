"""Exact rate arithmetic: earning, redemption value, basket limits and term validation."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partners.rates import (
    CURRENCY_EXPONENTS,
    ContractTerms,
    InvalidContractTerms,
    Rounding,
    UnsupportedCurrency,
    currency_exponent,
    max_points_for_basket,
    points_for_spend,
    proportional_points,
    value_of_points_minor,
)

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def terms(currency: str = "EUR", **overrides: object) -> ContractTerms:
    base = ContractTerms(
        currency=currency,
        earn_rate=Decimal("1"),
        redeem_value=Decimal("0.01"),
        issuance_price=Decimal("0.008"),
        reimbursement_rate=Decimal("0.007"),
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def exact_points(eligible_minor: int, earn_rate: Decimal, exponent: int, rounding: Rounding) -> int:
    """Reference in plain integers: spend x rate / 10**exponent, rounded by the rule."""
    if eligible_minor <= 0:
        return 0
    rate_numerator, rate_denominator = earn_rate.as_integer_ratio()
    numerator = eligible_minor * rate_numerator
    denominator = rate_denominator * int(10**exponent)
    if rounding is Rounding.DOWN:
        return numerator // denominator
    if rounding is Rounding.UP:
        return -(-numerator // denominator)
    return (2 * numerator + denominator) // (2 * denominator)


# --- currencies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("currency", "exponent"), [("JPY", 0), ("EUR", 2), ("USD", 2), ("KWD", 3), ("BHD", 3)])
def test_currency_exponent_follows_iso_4217(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["XXX", "", "EURO", "BTC"])
def test_unsupported_currency_raises(currency: str) -> None:
    with pytest.raises(UnsupportedCurrency) as caught:
        currency_exponent(currency)
    assert caught.value.reason == "UNSUPPORTED_CURRENCY"
    assert caught.value.metadata == {"currency": currency}


def test_unsupported_currency_is_refused_by_every_calculation() -> None:
    odd = terms("XXX")
    with pytest.raises(UnsupportedCurrency):
        odd.validate()
    with pytest.raises(UnsupportedCurrency):
        points_for_spend(1000, odd)
    with pytest.raises(UnsupportedCurrency):
        value_of_points_minor(10, odd)
    with pytest.raises(UnsupportedCurrency):
        max_points_for_basket(1000, odd)


# --- points_for_spend -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "earn_rate", "eligible_minor", "down", "half_up", "up"),
    [
        # EUR, 1 point per 1.00.
        ("EUR", "1", 1900, 19, 19, 19),
        ("EUR", "1", 1949, 19, 19, 20),
        ("EUR", "1", 1950, 19, 20, 20),
        ("EUR", "1", 1999, 19, 20, 20),
        ("EUR", "1", 1, 0, 0, 1),
        ("EUR", "1", 50, 0, 1, 1),
        ("EUR", "1", 250, 2, 3, 3),  # half up, not half to even
        # Decimal rates stay exact: 0.1 x 10.00 is exactly 1, never 1.0000000000000002.
        ("EUR", "0.1", 1000, 1, 1, 1),
        ("EUR", "0.07", 10000, 7, 7, 7),
        ("EUR", "2.5", 1234, 30, 31, 31),
        # JPY has no minor unit: 1 point per 100 yen.
        ("JPY", "0.01", 100, 1, 1, 1),
        ("JPY", "0.01", 149, 1, 1, 2),
        ("JPY", "0.01", 150, 1, 2, 2),
        ("JPY", "3", 7, 21, 21, 21),
        # KWD has three decimals: 1 KWD = 1000 fils.
        ("KWD", "2.5", 1200, 3, 3, 3),
        ("KWD", "2.5", 1234, 3, 3, 4),
        ("KWD", "2.5", 1400, 3, 4, 4),
        ("KWD", "1", 999, 0, 1, 1),
        ("KWD", "1", 499, 0, 0, 1),
        ("KWD", "1", 500, 0, 1, 1),
    ],
)
def test_points_for_spend_in_every_rounding_mode(
    currency: str, earn_rate: str, eligible_minor: int, down: int, half_up: int, up: int
) -> None:
    def earned(rounding: Rounding) -> int:
        return points_for_spend(eligible_minor, terms(currency, earn_rate=Decimal(earn_rate), earn_rounding=rounding))

    assert (earned(Rounding.DOWN), earned(Rounding.HALF_UP), earned(Rounding.UP)) == (down, half_up, up)


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("eligible_minor", [0, -1, -1999])
def test_no_spend_earns_nothing(rounding: Rounding, eligible_minor: int) -> None:
    assert points_for_spend(eligible_minor, terms(earn_rounding=rounding)) == 0


@pytest.mark.parametrize("rounding", list(Rounding))
def test_zero_earn_rate_earns_nothing(rounding: Rounding) -> None:
    assert points_for_spend(1_000_000, terms(earn_rate=Decimal("0"), earn_rounding=rounding)) == 0


def test_default_rounding_is_down() -> None:
    assert terms().earn_rounding is Rounding.DOWN
    assert points_for_spend(1999, terms()) == 19


# --- value_of_points_minor --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "redeem_value", "points", "value_minor"),
    [
        ("EUR", "0.01", 0, 0),
        ("EUR", "0.01", 1, 1),
        ("EUR", "0.01", 100, 100),
        ("EUR", "0.005", 3, 1),  # 1.5 cents, rounded down
        ("EUR", "0.005", 4, 2),
        ("EUR", "0.0099", 100, 99),
        ("JPY", "1", 100, 100),
        ("JPY", "0.5", 3, 1),
        ("KWD", "0.0015", 1, 1),  # 1.5 fils
        ("KWD", "0.0015", 3, 4),  # 4.5 fils
        ("KWD", "0.002", 500, 1000),
    ],
)
def test_value_of_points_is_rounded_down_in_minor_units(
    currency: str, redeem_value: str, points: int, value_minor: int
) -> None:
    assert value_of_points_minor(points, terms(currency, redeem_value=Decimal(redeem_value))) == value_minor


# --- max_points_for_basket --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("basket_minor", "overrides", "expected"),
    [
        (10_000, {}, 10_000),  # no limits: the whole basket at 1 cent per point
        (0, {}, 0),
        (10_000, {"max_points_share_of_basket": Decimal("0.5")}, 5_000),
        (100, {"max_points_share_of_basket": Decimal("0.3333")}, 33),
        (10_000, {"max_points_share_of_basket": Decimal("1")}, 10_000),
        (101, {"redeem_value": Decimal("0.02")}, 50),  # 50.5 points' worth, rounded down
        (10_000, {"max_points_per_transaction": 500}, 500),
        (300, {"max_points_per_transaction": 500}, 300),
        (10_000, {"max_points_share_of_basket": Decimal("0.5"), "max_points_per_transaction": 3_000}, 3_000),
        (4_000, {"max_points_share_of_basket": Decimal("0.5"), "max_points_per_transaction": 3_000}, 2_000),
    ],
)
def test_max_points_for_basket_applies_share_and_transaction_limits(
    basket_minor: int, overrides: dict[str, object], expected: int
) -> None:
    assert max_points_for_basket(basket_minor, terms("EUR", **overrides)) == expected


@pytest.mark.parametrize(
    ("currency", "basket_minor", "expected"),
    [("JPY", 1000, 500), ("EUR", 1000, 500), ("KWD", 1000, 500)],
)
def test_max_points_for_basket_uses_the_currency_exponent(currency: str, basket_minor: int, expected: int) -> None:
    # One point is worth one minor unit in each currency (1 yen, 1 cent, 1 fils); half the basket.
    point_value = Decimal(1).scaleb(-currency_exponent(currency))
    limited = terms(currency, redeem_value=point_value, max_points_share_of_basket=Decimal("0.5"))
    assert max_points_for_basket(basket_minor, limited) == expected


# --- proportional_points ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "part_minor", "whole_minor", "expected"),
    [
        (1000, 250, 1000, 250),
        (1000, 1000, 1000, 1000),
        (1000, 1500, 1000, 1000),  # more than the whole still maps to all the points
        (1000, 0, 1000, 0),
        (10, 1, 3, 3),
        (10, 2, 3, 6),
        (10, 3, 3, 10),
        (7, 999, 1000, 6),
        (0, 500, 1000, 0),
        (1000, 0, 0, 1000),  # an empty whole maps to all the points
    ],
)
def test_proportional_points(points: int, part_minor: int, whole_minor: int, expected: int) -> None:
    assert proportional_points(points, part_minor, whole_minor) == expected


# --- ContractTerms.validate -------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"earn_rate": Decimal("0"), "issuance_price": Decimal("0"), "reimbursement_rate": Decimal("0")},
        {"pending_days": 0},
        {"pending_days": 365},
        {"max_points_share_of_basket": Decimal("1")},
        {"max_points_share_of_basket": Decimal("0.0001")},
        {"max_points_per_transaction": 1, "daily_issuance_cap": 1},
        {"redeem_value": Decimal("0.0001")},
    ],
    ids=repr,
)
@pytest.mark.parametrize("currency", ["JPY", "EUR", "KWD"])
def test_valid_terms_pass(currency: str, overrides: dict[str, object]) -> None:
    terms(currency, **overrides).validate()


NON_FINITE = [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *[(name, value) for name in ("earn_rate", "issuance_price", "reimbursement_rate") for value in NON_FINITE],
        ("earn_rate", Decimal("-0.01")),
        ("issuance_price", Decimal("-1")),
        ("reimbursement_rate", Decimal("-0.0001")),
        *[("redeem_value", value) for value in NON_FINITE],
        ("redeem_value", Decimal("0")),
        ("redeem_value", Decimal("-0.01")),
        ("pending_days", -1),
        ("pending_days", 366),
        *[("max_points_share_of_basket", value) for value in NON_FINITE],
        ("max_points_share_of_basket", Decimal("0")),
        ("max_points_share_of_basket", Decimal("-0.5")),
        ("max_points_share_of_basket", Decimal("1.0001")),
        ("max_points_share_of_basket", Decimal("2")),
        ("max_points_per_transaction", 0),
        ("max_points_per_transaction", -5),
        ("daily_issuance_cap", 0),
        ("daily_issuance_cap", -1),
    ],
    ids=lambda value: str(value),
)
def test_invalid_terms_are_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidContractTerms) as caught:
        terms("EUR", **{field: value}).validate()
    assert caught.value.reason == "INVALID_CONTRACT_TERMS"
    assert caught.value.metadata == {"field": field}


# --- properties -------------------------------------------------------------------------------

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
rates = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)
spends = st.integers(min_value=-1000, max_value=10**12)


@PROPERTY
@given(currency=currencies, earn_rate=rates, eligible_minor=spends, rounding=st.sampled_from(Rounding))
def test_points_equal_the_exact_reference(
    currency: str, earn_rate: Decimal, eligible_minor: int, rounding: Rounding
) -> None:
    earned = points_for_spend(eligible_minor, terms(currency, earn_rate=earn_rate, earn_rounding=rounding))
    assert earned == exact_points(eligible_minor, earn_rate, CURRENCY_EXPONENTS[currency], rounding)
    assert earned >= 0


@PROPERTY
@given(currency=currencies, earn_rate=rates, eligible_minor=spends)
def test_rounding_modes_are_ordered_and_within_one_point(
    currency: str, earn_rate: Decimal, eligible_minor: int
) -> None:
    down, half_up, up = (
        points_for_spend(eligible_minor, terms(currency, earn_rate=earn_rate, earn_rounding=rounding))
        for rounding in (Rounding.DOWN, Rounding.HALF_UP, Rounding.UP)
    )
    assert 0 <= down <= half_up <= up <= down + 1


@PROPERTY
@given(
    currency=currencies,
    earn_rate=rates,
    rounding=st.sampled_from(Rounding),
    spend=spends,
    extra=st.integers(min_value=0, max_value=10**9),
)
def test_earning_is_monotone_in_spend(
    currency: str, earn_rate: Decimal, rounding: Rounding, spend: int, extra: int
) -> None:
    contract = terms(currency, earn_rate=earn_rate, earn_rounding=rounding)
    assert points_for_spend(spend, contract) <= points_for_spend(spend + extra, contract)


@PROPERTY
@given(
    currency=currencies,
    redeem_value=st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4),
    points=st.integers(min_value=0, max_value=10**9),
)
def test_value_of_points_equals_the_exact_reference(currency: str, redeem_value: Decimal, points: int) -> None:
    numerator, denominator = redeem_value.as_integer_ratio()
    expected = points * numerator * 10 ** CURRENCY_EXPONENTS[currency] // denominator
    assert value_of_points_minor(points, terms(currency, redeem_value=redeem_value)) == expected


@PROPERTY
@given(
    currency=currencies,
    redeem_value=st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4),
    share=st.one_of(st.none(), st.decimals(min_value=Decimal("0.0001"), max_value=1, places=4)),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
    basket_minor=st.integers(min_value=0, max_value=10**10),
)
def test_max_points_never_pay_more_than_the_share_and_are_the_most_that_fit(
    currency: str, redeem_value: Decimal, share: Decimal | None, limit: int | None, basket_minor: int
) -> None:
    contract = terms(
        currency, redeem_value=redeem_value, max_points_share_of_basket=share, max_points_per_transaction=limit
    )
    contract.validate()
    points = max_points_for_basket(basket_minor, contract)
    point_minor = Fraction(redeem_value) * 10 ** CURRENCY_EXPONENTS[currency]
    allowed_minor = Fraction(basket_minor) * (Fraction(share) if share is not None else 1)

    assert points >= 0
    assert points * point_minor <= allowed_minor
    if limit is not None:
        assert points <= limit
    if limit is None or points < limit:
        assert (points + 1) * point_minor > allowed_minor


wholes = st.integers(min_value=1, max_value=10**9)


@PROPERTY
@given(points=st.integers(min_value=0, max_value=10**9), whole=wholes, data=st.data())
def test_proportional_points_is_bounded_and_monotone(points: int, whole: int, data: st.DataObject) -> None:
    smaller = data.draw(st.integers(min_value=0, max_value=whole))
    larger = data.draw(st.integers(min_value=smaller, max_value=whole * 2))

    low = proportional_points(points, smaller, whole)
    high = proportional_points(points, larger, whole)

    assert 0 <= low <= high <= points
    assert proportional_points(points, whole, whole) == points
    assert low == math.floor(Fraction(points * smaller, whole))


@PROPERTY
@given(points=st.integers(min_value=0, max_value=10**9), whole=wholes, data=st.data())
def test_proportional_parts_never_add_up_to_more_than_the_points(points: int, whole: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=0, max_value=whole))
    second = data.draw(st.integers(min_value=0, max_value=whole - first))
    assert proportional_points(points, first, whole) + proportional_points(points, second, whole) <= points
