"""The netting maths of DESIGN.md section 6: exact line amounts, rounding, nets and the operator's margin.

Pure, no I/O. Amounts are exact fractions of a currency unit until a figure is shown; then they are
rounded half-even to the currency's minor unit, and the difference is booked as a rounding line so
that a statement's lines always add up to its net. The operator keeps minus the sum of the rounded
nets, so per currency the nets and the margin sum to exactly zero and no residue is lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from partners.rates import currency_exponent


class LineType(StrEnum):
    """What a statement line is for. The sign is from the partner's side: + the operator pays it."""

    ISSUANCE = "ISSUANCE"  # points it funded; billed at issuance for ON_ISSUANCE, reported at 0 otherwise
    ISSUANCE_REVERSAL = "ISSUANCE_REVERSAL"  # points taken back by returns at its tills
    CONSUMPTION = "CONSUMPTION"  # ON_REDEMPTION: points of its lots spent, at the price on each lot
    CONSUMPTION_REVERSAL = "CONSUMPTION_REVERSAL"  # ON_REDEMPTION: spent points of its lots given back
    REDEMPTION = "REDEMPTION"  # points redeemed at its tills, reimbursed
    REDEMPTION_REFUND = "REDEMPTION_REFUND"  # redeemed points given back on returns
    BREAKAGE = "BREAKAGE"  # its points that expired; reported, not billed
    ADJUSTMENT = "ADJUSTMENT"  # ON_REDEMPTION: its points support deducted from members; reported, not billed
    ROUNDING = "ROUNDING"  # the difference between the rounded net and the sum of rounded lines


SIGN: dict[LineType, int] = {
    LineType.ISSUANCE: -1,
    LineType.ISSUANCE_REVERSAL: 1,
    LineType.CONSUMPTION: -1,
    LineType.CONSUMPTION_REVERSAL: 1,
    LineType.REDEMPTION: 1,
    LineType.REDEMPTION_REFUND: -1,
    LineType.BREAKAGE: 0,
    LineType.ADJUSTMENT: 0,
}

# In every stored statement's csv_sha256: changing a text breaks them all (tests/unit/settlement/test_csv_golden.py).
DESCRIPTIONS: dict[LineType, str] = {
    LineType.ISSUANCE: "Points issued",
    LineType.ISSUANCE_REVERSAL: "Issued points taken back on returns",
    LineType.CONSUMPTION: "Points of its lots spent in the network",
    LineType.CONSUMPTION_REVERSAL: "Spent points of its lots given back",
    LineType.REDEMPTION: "Points redeemed at its tills",
    LineType.REDEMPTION_REFUND: "Redeemed points given back on returns",
    LineType.BREAKAGE: "Points of its lots expired (not billed)",
    LineType.ADJUSTMENT: "Points of its lots deducted by support (not billed)",
    LineType.ROUNDING: "Rounding to the minor unit",
}


@dataclass(frozen=True)
class LineTotal:
    """Items of one kind at one unit price: the input to a statement line."""

    line_type: LineType
    unit_price: Decimal
    points: int
    item_count: int
    prior_period: str = ""
    original_reference: str = ""

    @property
    def amount(self) -> Fraction:
        """Exact amount in currency units, signed from the partner's side."""
        return SIGN[self.line_type] * self.points * Fraction(self.unit_price)


@dataclass(frozen=True)
class Line:
    line_number: int
    line_type: LineType
    unit_price: Decimal
    points: int
    item_count: int
    amount_exact: Decimal
    amount_minor: int
    prior_period: str = ""
    original_reference: str = ""


@dataclass(frozen=True)
class StatementFigures:
    lines: list[Line]
    net_exact: Decimal
    net_minor: int


def to_minor(amount: Fraction, currency: str) -> int:
    """Rounds an exact amount in currency units half-even to minor units."""
    scaled: Fraction = amount * 10 ** currency_exponent(currency)
    return round(scaled)


def exact_decimal(amount: Fraction) -> Decimal:
    """An exact amount as a Decimal. Prices are decimals, so every amount has a finite expansion."""
    numerator, denominator = amount.numerator, amount.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        raise ValueError(f"{amount} has no finite decimal expansion")
    places = max(twos, fives)
    scaled = numerator * 10**places // amount.denominator
    # Built from its digits: arithmetic would round to the context's 28 significant digits.
    digits = tuple(int(digit) for digit in str(abs(scaled)))
    return Decimal((1 if scaled < 0 else 0, digits, -places))


def statement_figures(currency: str, totals: Iterable[LineTotal]) -> StatementFigures:
    """Lines in a canonical order, each rounded, then a rounding line so the lines sum to the net."""
    ordered = sorted(totals, key=_line_order)
    lines: list[Line] = []
    exact_net = Fraction(0)
    for number, total in enumerate(ordered, start=1):
        exact_net += total.amount
        lines.append(Line(
            line_number=number, line_type=total.line_type, unit_price=total.unit_price, points=total.points,
            item_count=total.item_count, amount_exact=exact_decimal(total.amount),
            amount_minor=to_minor(total.amount, currency), prior_period=total.prior_period,
            original_reference=total.original_reference,
        ))  # fmt: skip
    net_minor = to_minor(exact_net, currency)
    rounding = net_minor - sum(line.amount_minor for line in lines)
    if rounding:
        # In exact terms rounding is nothing: exact amounts sum to net_exact, minor amounts to net_minor.
        lines.append(Line(
            line_number=len(lines) + 1, line_type=LineType.ROUNDING, unit_price=Decimal(0), points=0,
            item_count=0, amount_exact=Decimal(0), amount_minor=rounding,
        ))  # fmt: skip
    return StatementFigures(lines, exact_decimal(exact_net), net_minor)


def operator_margins(nets: Iterable[tuple[str, int, Decimal]]) -> dict[str, tuple[int, Decimal]]:
    """Per currency: the operator's margin in minor units (minus the rounded nets) and exactly."""
    margins: dict[str, tuple[int, Fraction]] = defaultdict(lambda: (0, Fraction(0)))
    for currency, net_minor, net_exact in nets:
        minor, exact = margins[currency]
        margins[currency] = (minor - net_minor, exact - Fraction(net_exact))
    return {currency: (minor, exact_decimal(exact)) for currency, (minor, exact) in sorted(margins.items())}


def _line_order(total: LineTotal) -> tuple[int, str, str, Decimal]:
    # Current-period lines first in a fixed order of kinds, then prior-period adjustments by reference.
    kinds = list(LineType)
    return (
        1 if total.prior_period else 0,
        total.prior_period + "|" + total.original_reference,
        f"{kinds.index(total.line_type):02d}",
        total.unit_price,
    )
