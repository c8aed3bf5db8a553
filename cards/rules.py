"""What a card transaction earns and what a refund takes back. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from partners.rates import ContractTerms, points_for_spend


@dataclass(frozen=True)
class CardEarn:
    """Points of one card transaction: the merchant partner's lot and the bank's lot."""

    merchant_points: int
    bank_points: int

    @property
    def total(self) -> int:
        return self.merchant_points + self.bank_points


def card_earn(amount_minor: int, merchant_terms: ContractTerms | None, bank_terms: ContractTerms) -> CardEarn:
    """At a partner merchant the merchant funds its usual earn and the bank a bonus at its own rate;
    elsewhere only the bank earns, at the same rate (its contract's earn_rate is the card's rate)."""
    merchant = points_for_spend(amount_minor, merchant_terms) if merchant_terms is not None else 0
    return CardEarn(merchant, points_for_spend(amount_minor, bank_terms))


def points_to_reverse(points: int, cleared_minor: int, reversed_before_minor: int, reversed_after_minor: int) -> int:
    """Proportional share of ``points`` for the reversal that takes the reversed amount from before to after.

    Cumulative shares are rounded down, so partial reversals never take back more than the whole, and
    the last one (reversing all of the cleared amount) takes exactly what is left.
    """
    if cleared_minor <= 0:
        return 0

    def share(reversed_minor: int) -> int:
        return int(Fraction(points * reversed_minor, cleared_minor))

    return share(reversed_after_minor) - share(reversed_before_minor)
