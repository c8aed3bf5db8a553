"""Netting maths: exact lines, half-even rounding, rounding lines, nets and the operator's margin."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partners.rates import currency_exponent
from settlement.netting import (
    LineTotal,
    LineType,
    StatementFigures,
    exact_decimal,
    operator_margins,
    statement_figures,
    to_minor,
)

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# JPY has no minor unit, KWD and BHD have three decimals: rounding must follow each currency.
CURRENCIES = ["EUR", "JPY", "KWD", "USD", "BHD"]
BILLED_TYPES = [line_type for line_type in LineType if line_type is not LineType.ROUNDING]

# Signs from DESIGN.md section 6, written out independently of the module's table:
# + the operator pays the partner, - the partner pays the operator.
EXPECTED_SIGN = {
    LineType.ISSUANCE: -1,  # it pays for points it funded
    LineType.ISSUANCE_REVERSAL: 1,
    LineType.CONSUMPTION: -1,  # it pays when its points are spent
    LineType.CONSUMPTION_REVERSAL: 1,
    LineType.REDEMPTION: 1,  # it receives for points redeemed at its tills
    LineType.REDEMPTION_REFUND: -1,
    LineType.BREAKAGE: 0,  # reported, not billed
    LineType.ADJUSTMENT: 0,  # support deducted them: reported, not billed
}
PRIOR_REFERENCES = [("2026-01", "T-0001"), ("2026-02", "T-0002"), ("2026-02", "T-0010")]


def half_even(amount: Fraction, currency: str) -> int:
    """Reference rounding in integers: to the nearest minor unit, ties to the even one."""
    scaled = amount * 10 ** currency_exponent(currency)
    floor = math.floor(scaled)
    remainder = scaled - floor
    if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


def in_units(amount_minor: int, currency: str) -> Fraction:
    return Fraction(amount_minor, 10 ** currency_exponent(currency))


def expected_amount(total: LineTotal) -> Fraction:
    return EXPECTED_SIGN[total.line_type] * total.points * Fraction(total.unit_price)


# --- a random network: partners, contracts, flows -> line totals ------------------------------

# Prices as contracts hold them: decimals with up to 6 places.
prices = st.builds(lambda units, places: Decimal(units).scaleb(-places), st.integers(0, 10**7), st.integers(0, 6))


@dataclass(frozen=True)
class Contract:
    issuance_price: Decimal
    reimbursement_rate: Decimal


@dataclass(frozen=True)
class Partner:
    currency: str
    is_billed_on_issuance: bool
    contracts: list[Contract]  # versions over time; each flow used one of them


@dataclass(frozen=True)
class Flow:
    kind: str
    version: int
    points: int
    spent_share: Fraction  # of a returned ON_REDEMPTION earn, the part whose points were already spent
    prior: tuple[str, str] | None


FLOW_KINDS = ["earn", "earn_return", "redeem", "refund", "lot_spent", "lot_restored", "lot_expired"]

partners = st.builds(
    Partner,
    currency=st.sampled_from(CURRENCIES),
    is_billed_on_issuance=st.booleans(),
    contracts=st.lists(st.builds(Contract, prices, prices), min_size=1, max_size=3),
)
flows = st.builds(
    Flow,
    kind=st.sampled_from(FLOW_KINDS),
    version=st.integers(0, 2),
    points=st.integers(0, 10**9),
    spent_share=st.integers(0, 10).map(lambda tenths: Fraction(tenths, 10)),
    prior=st.one_of(st.none(), st.sampled_from(PRIOR_REFERENCES)),
)


def items_of(partner: Partner, flow: Flow) -> list[tuple[LineType, Decimal, int]]:
    """What one flow puts on its partner's statement, by DESIGN.md section 6."""
    contract = partner.contracts[flow.version % len(partner.contracts)]
    zero = Decimal(0)
    billed_issuance = contract.issuance_price if partner.is_billed_on_issuance else zero
    if flow.kind == "earn":
        return [(LineType.ISSUANCE, billed_issuance, flow.points)]
    if flow.kind == "earn_return":
        found = [(LineType.ISSUANCE_REVERSAL, billed_issuance, flow.points)]
        spent = math.floor(flow.points * flow.spent_share)
        if not partner.is_billed_on_issuance and spent:
            found.append((LineType.CONSUMPTION_REVERSAL, contract.issuance_price, spent))
        return found
    if flow.kind == "redeem":
        return [(LineType.REDEMPTION, contract.reimbursement_rate, flow.points)]
    if flow.kind == "refund":
        return [(LineType.REDEMPTION_REFUND, contract.reimbursement_rate, flow.points)]
    if partner.is_billed_on_issuance:
        return []  # lot changes bill only ON_REDEMPTION issuers
    if flow.kind == "lot_spent":
        return [(LineType.CONSUMPTION, contract.issuance_price, flow.points)]
    if flow.kind == "lot_restored":
        return [(LineType.CONSUMPTION_REVERSAL, contract.issuance_price, flow.points)]
    return [(LineType.BREAKAGE, zero, flow.points)]


def line_totals(partner: Partner, partner_flows: list[Flow]) -> list[LineTotal]:
    """Items summed per line type, unit price and prior-period reference, as a close does."""
    summed: dict[tuple[LineType, Decimal, str, str], list[int]] = {}
    for flow in partner_flows:
        prior, reference = flow.prior or ("", "")
        for line_type, price, points in items_of(partner, flow):
            total = summed.setdefault((line_type, price, prior, reference), [0, 0])
            total[0] += points
            total[1] += 1
    return [
        LineTotal(line_type, price, points, count, prior, reference)
        for (line_type, price, prior, reference), (points, count) in summed.items()
    ]


networks = st.lists(st.tuples(partners, st.lists(flows, max_size=12)), min_size=1, max_size=5)


def close(network: list[tuple[Partner, list[Flow]]]) -> list[tuple[str, list[LineTotal], StatementFigures]]:
    return [
        (partner.currency, totals, statement_figures(partner.currency, totals))
        for partner, partner_flows in network
        for totals in [line_totals(partner, partner_flows)]
    ]


# --- one statement ----------------------------------------------------------------------------


@PROPERTY
@given(network=networks)
def test_each_line_is_exact_and_rounded_half_even(network: list[tuple[Partner, list[Flow]]]) -> None:
    for currency, totals, figures in close(network):
        billed = [line for line in figures.lines if line.line_type is not LineType.ROUNDING]
        assert len(billed) == len(totals)
        by_key = {(t.line_type, t.unit_price, t.prior_period, t.original_reference): t for t in totals}
        for line in billed:
            total = by_key[(line.line_type, line.unit_price, line.prior_period, line.original_reference)]
            assert (line.points, line.item_count) == (total.points, total.item_count)
            assert Fraction(line.amount_exact) == expected_amount(total)
            assert line.amount_minor == half_even(expected_amount(total), currency)


@PROPERTY
@given(network=networks)
def test_lines_sum_to_the_net_in_minor_units_and_exactly(network: list[tuple[Partner, list[Flow]]]) -> None:
    for currency, totals, figures in close(network):
        exact_net = sum((expected_amount(total) for total in totals), Fraction(0))

        assert Fraction(figures.net_exact) == exact_net
        assert sum(Fraction(line.amount_exact) for line in figures.lines) == exact_net
        assert figures.net_minor == half_even(exact_net, currency)
        assert figures.net_minor == to_minor(exact_net, currency)
        assert sum(line.amount_minor for line in figures.lines) == figures.net_minor


@PROPERTY
@given(network=networks)
def test_a_rounding_line_is_last_appears_only_when_needed_and_stays_small(
    network: list[tuple[Partner, list[Flow]]],
) -> None:
    for _, totals, figures in close(network):
        assert [line.line_number for line in figures.lines] == list(range(1, len(figures.lines) + 1))
        rounding = [line for line in figures.lines if line.line_type is LineType.ROUNDING]
        billed_minor = sum(line.amount_minor for line in figures.lines if line.line_type is not LineType.ROUNDING)
        assert len(rounding) <= 1
        if billed_minor == figures.net_minor:
            assert rounding == []
            continue
        (line,) = rounding
        assert line is figures.lines[-1]
        assert line.amount_minor == figures.net_minor - billed_minor
        assert (line.amount_exact, line.points, line.item_count, line.unit_price) == (0, 0, 0, 0)
        assert (line.prior_period, line.original_reference) == ("", "")
        # Each line and the net are each at most half a minor unit from exact.
        assert abs(line.amount_minor) < len(totals)
        assert 2 * abs(line.amount_minor) <= len(totals) + 1


# --- the operator's margin --------------------------------------------------------------------


@PROPERTY
@given(network=networks)
def test_per_currency_the_nets_and_the_margin_sum_to_zero(network: list[tuple[Partner, list[Flow]]]) -> None:
    closed = close(network)

    margins = operator_margins((currency, f.net_minor, f.net_exact) for currency, _, f in closed)

    assert list(margins) == sorted({currency for currency, _, _ in closed})
    for currency, (margin_minor, margin_exact) in margins.items():
        nets = [figures for statement_currency, _, figures in closed if statement_currency == currency]
        assert sum(f.net_minor for f in nets) + margin_minor == 0
        assert sum(Fraction(f.net_exact) for f in nets) + Fraction(margin_exact) == 0


@PROPERTY
@given(network=networks)
def test_rounding_residue_is_booked_to_the_operator_never_lost(network: list[tuple[Partner, list[Flow]]]) -> None:
    closed = close(network)

    margins = operator_margins((currency, f.net_minor, f.net_exact) for currency, _, f in closed)

    for currency, (margin_minor, margin_exact) in margins.items():
        residue = in_units(margin_minor, currency) - Fraction(margin_exact)
        statement_residues = [
            in_units(f.net_minor, currency) - Fraction(f.net_exact)
            for statement_currency, _, f in closed
            if statement_currency == currency
        ]
        assert residue == -sum(statement_residues, Fraction(0))


def test_margins_are_kept_apart_per_currency() -> None:
    nets = [("EUR", -100000, Decimal("-1000.004")), ("JPY", 7, Decimal("7.2")), ("EUR", 26000, Decimal("260"))]

    assert operator_margins(nets) == {"EUR": (74000, Decimal("740.004")), "JPY": (-7, Decimal("-7.2"))}
    assert operator_margins([]) == {}


# --- canonical line order ---------------------------------------------------------------------

line_keys = st.tuples(
    st.sampled_from(BILLED_TYPES), prices, st.one_of(st.just(("", "")), st.sampled_from(PRIOR_REFERENCES))
)


@st.composite
def distinct_totals(draw: st.DrawFn) -> list[LineTotal]:
    # A close sums items per (type, price, prior period, reference): one total per key.
    keys = draw(st.lists(line_keys, max_size=12, unique_by=lambda key: (key[0], key[1], key[2])))
    return [
        LineTotal(line_type, price, draw(st.integers(0, 10**6)), draw(st.integers(1, 50)), prior, reference)
        for line_type, price, (prior, reference) in keys
    ]


@PROPERTY
@given(totals=distinct_totals(), currency=st.sampled_from(CURRENCIES), data=st.data())
def test_line_order_is_canonical_and_independent_of_input_order(
    totals: list[LineTotal], currency: str, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(totals))

    figures = statement_figures(currency, totals)

    assert statement_figures(currency, shuffled) == figures
    billed = [line for line in figures.lines if line.line_type is not LineType.ROUNDING]
    current = [line for line in billed if not line.prior_period]
    prior = [line for line in billed if line.prior_period]
    assert billed == current + prior  # prior-period adjustments come after this period's lines
    kinds = list(LineType)
    assert [(kinds.index(line.line_type), line.unit_price) for line in current] == sorted(
        (kinds.index(line.line_type), line.unit_price) for line in current
    )
    prior_order = [(line.prior_period, line.original_reference, kinds.index(line.line_type)) for line in prior]
    assert [key[:2] for key in prior_order] == sorted(key[:2] for key in prior_order)
    for (period, reference, kind), (next_period, next_reference, next_kind) in itertools.pairwise(prior_order):
        if (period, reference) == (next_period, next_reference):
            assert kind <= next_kind


def test_an_empty_statement_nets_to_zero_without_lines() -> None:
    assert statement_figures("EUR", []) == StatementFigures([], Decimal(0), 0)


def test_three_thirds_of_a_cent_make_a_rounding_line() -> None:
    # Three lines of 0.004 EUR: each rounds to 0.00, the net 0.012 rounds to 0.01.
    totals = [
        LineTotal(LineType.REDEMPTION, Decimal("0.004"), 1, 1),
        LineTotal(LineType.REDEMPTION, Decimal("0.002"), 2, 1),
        LineTotal(LineType.REDEMPTION, Decimal("0.001"), 4, 1),
    ]

    figures = statement_figures("EUR", totals)

    assert [line.amount_minor for line in figures.lines] == [0, 0, 0, 1]
    assert figures.lines[-1].line_type is LineType.ROUNDING
    assert (figures.net_exact, figures.net_minor) == (Decimal("0.012"), 1)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Fraction("0.005"), "EUR", 0),  # tie: to the even cent
        (Fraction("0.015"), "EUR", 2),
        (Fraction("-0.005"), "EUR", 0),
        (Fraction("-0.015"), "EUR", -2),
        (Fraction("0.0051"), "EUR", 1),
        (Fraction("2.5"), "JPY", 2),
        (Fraction("3.5"), "JPY", 4),
        (Fraction("-2.5"), "JPY", -2),
        (Fraction("1.2345"), "KWD", 1234),
        (Fraction("1.2355"), "KWD", 1236),
        (Fraction("0.0005"), "BHD", 0),
    ],
)
def test_to_minor_rounds_half_even_in_the_currencys_minor_unit(amount: Fraction, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


# --- exact decimals ---------------------------------------------------------------------------


@PROPERTY
@given(numerator=st.integers(-(10**15), 10**15), twos=st.integers(0, 12), fives=st.integers(0, 12))
def test_exact_decimal_round_trips_fractions_with_a_finite_expansion(numerator: int, twos: int, fives: int) -> None:
    amount = Fraction(numerator, 2**twos * 5**fives)

    assert Fraction(exact_decimal(amount)) == amount


@pytest.mark.parametrize("amount", [Fraction(1, 3), Fraction(-1, 3), Fraction(1, 6), Fraction(7, 30), Fraction(1, 7)])
def test_exact_decimal_refuses_fractions_without_a_finite_expansion(amount: Fraction) -> None:
    with pytest.raises(ValueError, match="finite decimal expansion"):
        exact_decimal(amount)


def test_exact_decimal_keeps_every_digit_of_the_largest_amounts_contracts_allow() -> None:
    # Points are BIGINT and prices validate below 1,000,000 with up to 12 places (partners.rates),
    # so one line can carry 2**63 - 1 points at 999999.999999999999; a net adds several such lines.
    largest_line = (2**63 - 1) * Fraction("999999.999999999999")

    for amount in (largest_line, 2 * largest_line, Fraction(10**30 + 1, 10**6)):
        assert Fraction(exact_decimal(amount)) == amount


# --- DESIGN.md section 6, the worked example ----------------------------------------------------


def test_the_worked_example_of_the_design() -> None:
    # Period 2026-03 in EUR. A and B are billed on issuance, C on redemption; C's lots supplied 6,000 points.
    a = [
        LineTotal(LineType.ISSUANCE, Decimal("0.012"), 100_000, 1),
        LineTotal(LineType.REDEMPTION, Decimal("0.010"), 20_000, 1),
    ]
    b = [
        LineTotal(LineType.ISSUANCE, Decimal("0.011"), 40_000, 1),
        LineTotal(LineType.REDEMPTION, Decimal("0.010"), 70_000, 1),
    ]
    c = [
        LineTotal(LineType.ISSUANCE, Decimal(0), 10_000, 1),  # reported at 0: billed on spending
        LineTotal(LineType.CONSUMPTION, Decimal("0.012"), 6_000, 1),
        LineTotal(LineType.REDEMPTION, Decimal("0.009"), 30_000, 1),
    ]

    statements = {name: statement_figures("EUR", totals) for name, totals in (("A", a), ("B", b), ("C", c))}

    assert {name: (f.net_minor, f.net_exact) for name, f in statements.items()} == {
        "A": (-100_000, Decimal("-1000.00")),
        "B": (26_000, Decimal("260.00")),
        "C": (19_800, Decimal("198.00")),
    }
    assert [(line.line_type, line.amount_minor) for line in statements["A"].lines] == [
        (LineType.ISSUANCE, -120_000),
        (LineType.REDEMPTION, 20_000),
    ]
    assert [(line.line_type, line.amount_minor) for line in statements["C"].lines] == [
        (LineType.ISSUANCE, 0),
        (LineType.CONSUMPTION, -7_200),
        (LineType.REDEMPTION, 27_000),
    ]
    margins = operator_margins(("EUR", f.net_minor, f.net_exact) for f in statements.values())
    assert margins == {"EUR": (54_200, Decimal("542.00"))}
    assert sum(f.net_minor for f in statements.values()) + margins["EUR"][0] == 0


def test_amounts_are_signed_from_the_partners_side() -> None:
    one_each = {line_type: LineTotal(line_type, Decimal("0.5"), 2, 1).amount for line_type in BILLED_TYPES}

    assert one_each == {line_type: Fraction(EXPECTED_SIGN[line_type]) for line_type in BILLED_TYPES}


def test_flows_net_per_partner_like_the_design_says() -> None:
    # Sanity of this module's random network: the worked example, written as flows, nets as the design says.
    on_issuance = Partner("EUR", True, [Contract(Decimal("0.012"), Decimal("0.010"))])
    on_redemption = Partner("EUR", False, [Contract(Decimal("0.012"), Decimal("0.009"))])
    network = [
        (on_issuance, [Flow("earn", 0, 100_000, Fraction(0), None), Flow("redeem", 0, 20_000, Fraction(0), None)]),
        (on_redemption, [Flow("earn", 0, 10_000, Fraction(0), None), Flow("lot_spent", 0, 6_000, Fraction(0), None),
                         Flow("redeem", 0, 30_000, Fraction(0), None)]),
    ]  # fmt: skip

    assert [figures.net_minor for _, _, figures in close(network)] == [-100_000, 19_800]
