"""Exact rate arithmetic for contract terms: earn, redemption value, basket share. Pure, no I/O."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from common.errors import InvalidArgument

# ISO 4217 minor-unit exponents of the currencies the network settles in.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HKD": 2, "HUF": 2, "INR": 2, "ISK": 0, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2,
    "NOK": 2, "NZD": 2, "PLN": 2, "SEK": 2, "SGD": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip


class UnsupportedCurrency(InvalidArgument):
    reason = "UNSUPPORTED_CURRENCY"


class InvalidContractTerms(InvalidArgument):
    reason = "INVALID_CONTRACT_TERMS"


# Rates are stored as text of at most 40 characters and priced with exact fractions: bound both.
MAX_RATE = Decimal(1_000_000)
MAX_RATE_DECIMAL_PLACES = 12


def _is_reasonable(value: Decimal) -> bool:
    exponent = value.as_tuple().exponent
    return value.is_finite() and isinstance(exponent, int) and exponent >= -MAX_RATE_DECIMAL_PLACES


class Rounding(StrEnum):
    DOWN = "DOWN"
    HALF_UP = "HALF_UP"
    UP = "UP"


class Billing(StrEnum):
    ON_ISSUANCE = "ON_ISSUANCE"
    ON_REDEMPTION = "ON_REDEMPTION"


def currency_exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise UnsupportedCurrency(f"currency {currency!r} is not supported", currency=currency) from None


@dataclass(frozen=True)
class ContractTerms:
    """The exchange rates and limits of one contract version (DESIGN.md section 3).

    Rates are in the settlement currency's major unit: ``earn_rate`` points per 1.00 of eligible
    spend, ``redeem_value`` the discount one point buys, ``issuance_price`` what the partner pays
    per point it funds, ``reimbursement_rate`` what it receives per point redeemed at its tills.
    """

    currency: str
    earn_rate: Decimal
    redeem_value: Decimal
    issuance_price: Decimal
    reimbursement_rate: Decimal
    earn_rounding: Rounding = Rounding.DOWN
    billing: Billing = Billing.ON_ISSUANCE
    pending_days: int = 0
    max_points_per_transaction: int | None = None
    daily_issuance_cap: int | None = None
    max_points_share_of_basket: Decimal | None = None

    def validate(self) -> None:
        currency_exponent(self.currency)
        for name in ("earn_rate", "redeem_value", "issuance_price", "reimbursement_rate"):
            value: Decimal = getattr(self, name)
            if not _is_reasonable(value) or not 0 <= value < MAX_RATE:
                raise InvalidContractTerms(
                    f"{name} must be a decimal from 0 to {MAX_RATE} with at most {MAX_RATE_DECIMAL_PLACES} places",
                    field=name,
                )
        if self.redeem_value <= 0:
            raise InvalidContractTerms("redeem_value must be a positive decimal", field="redeem_value")
        if not 0 <= self.pending_days <= 365:
            raise InvalidContractTerms("pending_days must be between 0 and 365", field="pending_days")
        for name in ("max_points_per_transaction", "daily_issuance_cap"):
            limit: int | None = getattr(self, name)
            if limit is not None and limit <= 0:
                raise InvalidContractTerms(f"{name} must be positive when set", field=name)
        share = self.max_points_share_of_basket
        if share is not None and not (_is_reasonable(share) and 0 < share <= 1):
            raise InvalidContractTerms(
                "max_points_share_of_basket must be in (0, 1]", field="max_points_share_of_basket"
            )


@dataclass(frozen=True)
class ContractVersionView:
    """A stored contract version: its identity plus its terms."""

    id: int
    partner_id: int
    version: int
    effective_from: datetime
    terms: ContractTerms


def _minor_per_major(currency: str) -> int:
    return int(10 ** currency_exponent(currency))


def _round(value: Fraction, rounding: Rounding) -> int:
    if rounding is Rounding.DOWN:
        return math.floor(value)
    if rounding is Rounding.UP:
        return math.ceil(value)
    return math.floor(value + Fraction(1, 2))


def points_for_spend(eligible_minor: int, terms: ContractTerms) -> int:
    """Points earned on an eligible spend, rounded by the contract's rule."""
    if eligible_minor <= 0:
        return 0
    numerator, denominator = _points_per_minor(terms.earn_rate, terms.currency)
    exact = eligible_minor * numerator  # points = exact / denominator
    if terms.earn_rounding is Rounding.DOWN:
        return exact // denominator
    if terms.earn_rounding is Rounding.UP:
        return -(-exact // denominator)
    return (2 * exact + denominator) // (2 * denominator)  # floor(exact / denominator + 1/2)


@functools.lru_cache(maxsize=1024)
def _points_per_minor(earn_rate: Decimal, currency: str) -> tuple[int, int]:
    """The earn rate (points per major unit) as an exact ratio of points per minor unit, in lowest terms
    with a positive denominator. Built once per rate: every earn needs it, and making a Fraction of a
    Decimal costs more than the rest of the arithmetic."""
    ratio = Fraction(earn_rate) / _minor_per_major(currency)
    return ratio.numerator, ratio.denominator


def value_of_points_minor(points: int, terms: ContractTerms) -> int:
    """The discount, in minor units, that ``points`` buy at this partner (rounded down)."""
    return math.floor(Fraction(points) * Fraction(terms.redeem_value) * _minor_per_major(terms.currency))


def max_points_for_basket(basket_minor: int, terms: ContractTerms) -> int:
    """The most points a basket may be paid with under the share limit (and the per-transaction limit)."""
    point_minor = Fraction(terms.redeem_value) * _minor_per_major(terms.currency)
    share = Fraction(terms.max_points_share_of_basket) if terms.max_points_share_of_basket else Fraction(1)
    by_share = math.floor(Fraction(basket_minor) * share / point_minor)
    if terms.max_points_per_transaction is not None:
        return min(by_share, terms.max_points_per_transaction)
    return by_share


def proportional_points(points: int, part_minor: int, whole_minor: int) -> int:
    """``points`` x part / whole, rounded down; the whole always maps to all the points."""
    if whole_minor <= 0 or part_minor >= whole_minor:
        return points
    return points * part_minor // whole_minor
