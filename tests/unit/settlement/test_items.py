"""Itemisation: which statement line each ledger fact becomes, and which earlier period it belongs to."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from common.errors import FailedPrecondition
from settlement.items import Item, UnclassifiedLedgerFact, items_of_entry, items_of_movement
from settlement.netting import LineTotal, LineType
from settlement.periods import Period, PeriodLength, parse_period
from settlement.repository import EntryItem, MovementItem

MARCH = parse_period("2026-03", PeriodLength.MONTH)
IN_MARCH = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
IN_JANUARY = datetime(2026, 1, 20, 15, 0, tzinfo=UTC)
IN_FEBRUARY = datetime(2026, 2, 14, 8, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
PRICE = Decimal("0.012")
RATE = Decimal("0.009")
ZERO = Decimal(0)

ACCOUNT_KINDS = ["MEMBER_POINTS", "MEMBER_DEBT", "PARTNER_ISSUED", "PARTNER_REDEEMED", "OPERATOR"]
TRANSACTION_KINDS = ["EARN", "REDEEM", "EARN_REVERSAL", "REDEMPTION_REFUND", "EXPIRY", "ADJUSTMENT"]
CLASSIFIED = {
    ("PARTNER_ISSUED", "EARN"),
    ("PARTNER_ISSUED", "EARN_REVERSAL"),
    ("PARTNER_ISSUED", "EXPIRY"),
    ("PARTNER_REDEEMED", "REDEEM"),
    ("PARTNER_REDEEMED", "REDEMPTION_REFUND"),
}


def entry(**overrides: object) -> EntryItem:
    """An entry of 1,000 points in March on partner 7's issued account for an earn, unless overridden."""
    base = EntryItem(
        entry_id=41,
        partner_id=7,
        account_kind="PARTNER_ISSUED",
        transaction_kind="EARN",
        points=1000,
        currency="EUR",
        billing="ON_ISSUANCE",
        issuance_price=PRICE,
        reimbursement_rate=RATE,
        business_time=IN_MARCH,
        transaction_public_id="T-OWN",
        original_time=None,
        original_public_id=None,
        own_lot_reversed=0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def movement(**overrides: object) -> MovementItem:
    """250 points of a lot of partner 9 (ON_REDEMPTION) spent in March, unless overridden."""
    base = MovementItem(
        movement_id=73,
        issuer_partner_id=9,
        currency="EUR",
        issuance_price=PRICE,
        kind="CONSUMED",
        points_delta=-250,
        is_own_lot_reversal=False,
        business_time=IN_MARCH,
        transaction_public_id="T-OWN",
        original_time=None,
        original_public_id=None,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def lines(items: list[Item]) -> list[tuple[LineType, Decimal, int]]:
    return [(item.line_type, item.unit_price, item.points) for item in items]


# --- entries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account_kind", "transaction_kind", "billing", "expected"),
    [
        ("PARTNER_ISSUED", "EARN", "ON_ISSUANCE", [(LineType.ISSUANCE, PRICE, 1000)]),
        ("PARTNER_ISSUED", "EARN", "ON_REDEMPTION", [(LineType.ISSUANCE, ZERO, 1000)]),
        ("PARTNER_ISSUED", "EARN_REVERSAL", "ON_ISSUANCE", [(LineType.ISSUANCE_REVERSAL, PRICE, 1000)]),
        ("PARTNER_REDEEMED", "REDEEM", "ON_ISSUANCE", [(LineType.REDEMPTION, RATE, 1000)]),
        ("PARTNER_REDEEMED", "REDEEM", "ON_REDEMPTION", [(LineType.REDEMPTION, RATE, 1000)]),
        ("PARTNER_REDEEMED", "REDEMPTION_REFUND", "ON_ISSUANCE", [(LineType.REDEMPTION_REFUND, RATE, 1000)]),
        ("PARTNER_REDEEMED", "REDEMPTION_REFUND", "ON_REDEMPTION", [(LineType.REDEMPTION_REFUND, RATE, 1000)]),
    ],
)
def test_entries_become_lines_by_account_transaction_and_billing(
    account_kind: str, transaction_kind: str, billing: str, expected: list[tuple[LineType, Decimal, int]]
) -> None:
    fact = entry(account_kind=account_kind, transaction_kind=transaction_kind, billing=billing)

    items = items_of_entry(fact, MARCH)

    assert lines(items) == expected
    for item in items:
        assert (item.key, item.partner_id, item.currency) == ("E41", 7, "EUR")
        assert (item.prior_period, item.original_reference) == ("", "")


@pytest.mark.parametrize(
    ("own_lot_reversed", "expected"),
    [
        # Every returned point still sat in the purchase's own lot: none was spent, nothing to credit.
        (1000, [(LineType.ISSUANCE_REVERSAL, ZERO, 1000)]),
        # 400 came back from the own lot; the other 600 had been spent and billed, so they are credited.
        (400, [(LineType.ISSUANCE_REVERSAL, ZERO, 1000), (LineType.CONSUMPTION_REVERSAL, PRICE, 600)]),
        (0, [(LineType.ISSUANCE_REVERSAL, ZERO, 1000), (LineType.CONSUMPTION_REVERSAL, PRICE, 1000)]),
    ],
)
def test_an_on_redemption_earn_reversal_credits_only_points_already_spent(
    own_lot_reversed: int, expected: list[tuple[LineType, Decimal, int]]
) -> None:
    fact = entry(transaction_kind="EARN_REVERSAL", billing="ON_REDEMPTION", own_lot_reversed=own_lot_reversed)

    assert lines(items_of_entry(fact, MARCH)) == expected


def test_an_on_issuance_earn_reversal_ignores_own_lot_lineage() -> None:
    fact = entry(transaction_kind="EARN_REVERSAL", billing="ON_ISSUANCE", own_lot_reversed=400)

    assert lines(items_of_entry(fact, MARCH)) == [(LineType.ISSUANCE_REVERSAL, PRICE, 1000)]


def test_expired_points_of_an_on_issuance_issuer_are_breakage_at_zero() -> None:
    fact = entry(transaction_kind="EXPIRY", billing="ON_ISSUANCE")

    assert lines(items_of_entry(fact, MARCH)) == [(LineType.BREAKAGE, ZERO, 1000)]


def test_expired_points_of_an_on_redemption_issuer_come_from_the_lot_movement_only() -> None:
    """Its lot's EXPIRED movement is the breakage item; the entry adds nothing, so nothing counts twice."""
    fact = entry(transaction_kind="EXPIRY", billing="ON_REDEMPTION")

    assert items_of_entry(fact, MARCH) == []


@pytest.mark.parametrize(
    ("account_kind", "transaction_kind", "billing"),
    [
        (account, transaction, billing)
        for account, transaction in itertools.product(ACCOUNT_KINDS, TRANSACTION_KINDS)
        if (account, transaction) not in CLASSIFIED
        for billing in ("ON_ISSUANCE", "ON_REDEMPTION")
    ]
    + [("PARTNER_ISSUED", "SOMETHING_NEW", "ON_ISSUANCE"), ("PARTNER_REDEEMED", "REDEEM ", "ON_ISSUANCE")],
)
def test_an_entry_without_a_rule_stops_the_close(account_kind: str, transaction_kind: str, billing: str) -> None:
    fact = entry(account_kind=account_kind, transaction_kind=transaction_kind, billing=billing)

    with pytest.raises(UnclassifiedLedgerFact, match=transaction_kind.strip()) as raised:
        items_of_entry(fact, MARCH)

    assert raised.value.metadata == {"account_kind": account_kind, "transaction_kind": transaction_kind}


# --- lot movements ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "points_delta", "is_own_lot_reversal", "expected"),
    [
        ("CONSUMED", -250, False, [(LineType.CONSUMPTION, PRICE, 250)]),
        # Debt repaid from a new lot used its points up, like spending them.
        ("DEBT_REPAYMENT", -250, False, [(LineType.CONSUMPTION, PRICE, 250)]),
        ("RESTORED", 250, False, [(LineType.CONSUMPTION_REVERSAL, PRICE, 250)]),
        # A return taking back points of the returned purchase's own lot: they were never spent.
        ("REVERSED", -250, True, []),
        # A return taking points of another lot uses them up: billed to that lot's issuer.
        ("REVERSED", -250, False, [(LineType.CONSUMPTION, PRICE, 250)]),
        ("EXPIRED", -250, False, [(LineType.BREAKAGE, ZERO, 250)]),
        # Support deducted them (programme/goodwill.py): never spent, so never billed.
        ("ADJUSTED", -250, False, [(LineType.ADJUSTMENT, ZERO, 250)]),
    ],
)
def test_lot_movements_become_lines_by_kind(
    kind: str, points_delta: int, is_own_lot_reversal: bool, expected: list[tuple[LineType, Decimal, int]]
) -> None:
    fact = movement(kind=kind, points_delta=points_delta, is_own_lot_reversal=is_own_lot_reversal)

    items = items_of_movement(fact, MARCH)

    assert lines(items) == expected
    for item in items:
        assert (item.key, item.partner_id, item.currency) == ("M73", 9, "EUR")
        assert item.points > 0


@pytest.mark.parametrize("kind", ["CREATED", "ISSUED", "ADJUST", "", "consumed"])
def test_a_movement_without_a_rule_stops_the_close(kind: str) -> None:
    with pytest.raises(UnclassifiedLedgerFact) as raised:
        items_of_movement(movement(kind=kind), MARCH)

    assert raised.value.metadata == {"movement_kind": kind}


def test_an_unclassified_fact_reaches_the_client_as_a_failed_precondition() -> None:
    # A domain error of the FAILED_PRECONDITION kind, so the server answers with its reason, not INTERNAL.
    error = UnclassifiedLedgerFact("no settlement rule for a CREATED lot movement", movement_kind="CREATED")

    assert isinstance(error, FailedPrecondition)
    assert error.reason == "UNCLASSIFIED_LEDGER_FACT"


def test_a_return_of_a_partly_spent_on_redemption_earn_bills_each_issuer_once() -> None:
    """Partner 7 (ON_REDEMPTION) issued 1,000 points; the member spent 600 of them, then returned the purchase.

    The return takes the 400 left in the own lot and 600 from a lot of partner 9. Partner 7 pays for
    nothing in the end (its 600 spent points are credited back), partner 9 pays for its 600 used points.
    """
    earned = entry(transaction_kind="EARN", billing="ON_REDEMPTION", business_time=IN_MARCH - timedelta(days=5))
    spent = movement(movement_id=1, issuer_partner_id=7, kind="CONSUMED", points_delta=-600)
    returned = entry(entry_id=42, transaction_kind="EARN_REVERSAL", billing="ON_REDEMPTION", own_lot_reversed=400)
    own_lot = movement(movement_id=2, issuer_partner_id=7, kind="REVERSED", points_delta=-400, is_own_lot_reversal=True)
    other_lot = movement(movement_id=3, issuer_partner_id=9, kind="REVERSED", points_delta=-600, issuance_price=RATE)

    items = [
        *items_of_entry(earned, MARCH),
        *items_of_movement(spent, MARCH),
        *items_of_entry(returned, MARCH),
        *items_of_movement(own_lot, MARCH),
        *items_of_movement(other_lot, MARCH),
    ]

    owed: dict[int, Fraction] = {7: Fraction(0), 9: Fraction(0)}
    for item in items:
        owed[item.partner_id] += LineTotal(item.line_type, item.unit_price, item.points, 1).amount
    assert owed == {7: Fraction(0), 9: -600 * Fraction(RATE)}


def test_an_items_canonical_line_names_it_its_line_and_what_it_adjusts() -> None:
    # The reference, not the period label: a close computes these lines in SQL, where the label is not at hand.
    (item,) = items_of_entry(entry(business_time=IN_FEBRUARY), MARCH)

    assert item.canonical() == "E41,ISSUANCE,1000,0.012,T-OWN\n"


@pytest.mark.parametrize(
    ("price", "text"),
    [(Decimal("0.0000001"), "0.0000001"), (Decimal("1E-7"), "0.0000001"), (Decimal("0.00000012"), "0.00000012"),
     (Decimal("0E-9"), "0.000000000"), (Decimal("1.50"), "1.50"), (Decimal(0), "0")],
)  # fmt: skip
def test_an_items_canonical_price_is_fixed_point_like_the_stored_text(price: Decimal, text: str) -> None:
    # The SQL close hashes the price's stored fixed-point text; exponent notation would change the items hash.
    (item,) = items_of_entry(entry(issuance_price=price), MARCH)

    assert item.canonical() == f"E41,ISSUANCE,1000,{text},\n"


# --- prior periods ----------------------------------------------------------------------------

Build = Callable[..., EntryItem | MovementItem]
builders = pytest.mark.parametrize("build", [entry, movement], ids=["entry", "movement"])


def prior_of(fact: EntryItem | MovementItem, period: Period) -> tuple[str, str]:
    items = items_of_entry(fact, period) if isinstance(fact, EntryItem) else items_of_movement(fact, period)
    (item,) = items
    return item.prior_period, item.original_reference


@builders
@pytest.mark.parametrize(
    ("business_time", "original_time", "expected"),
    [
        (IN_MARCH, None, ("", "")),
        (MARCH.starts_at, None, ("", "")),
        (MARCH.ends_at - TICK, None, ("", "")),
        # Late: booked with its true business time, after February closed.
        (MARCH.starts_at - TICK, None, ("2026-02", "T-OWN")),
        (IN_JANUARY, None, ("2026-01", "T-OWN")),
        (datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), None, ("2025-12", "T-OWN")),
        # A late item names itself, even when it is a return of an even older purchase.
        (IN_FEBRUARY, IN_JANUARY, ("2026-02", "T-OWN")),
        # A return in March of a purchase from an earlier period names the purchase.
        (IN_MARCH, IN_JANUARY, ("2026-01", "T-ORIGINAL")),
        (IN_MARCH, MARCH.starts_at - TICK, ("2026-02", "T-ORIGINAL")),
        (IN_MARCH, MARCH.starts_at, ("", "")),
        (IN_MARCH, IN_MARCH - timedelta(days=2), ("", "")),
    ],
)
def test_items_of_earlier_periods_are_labelled(
    build: Build, business_time: datetime, original_time: datetime | None, expected: tuple[str, str]
) -> None:
    fact = build(
        business_time=business_time,
        original_time=original_time,
        original_public_id=None if original_time is None else "T-ORIGINAL",
    )

    assert prior_of(fact, MARCH) == expected


@builders
@pytest.mark.parametrize(
    ("period", "business_time", "original_time", "expected"),
    [
        ("2026-W10", datetime(2026, 3, 1, 23, 59, tzinfo=UTC), None, ("2026-W09", "T-OWN")),
        ("2026-W10", datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 2, 24, tzinfo=UTC), ("2026-W09", "T-ORIGINAL")),
        ("2021-W01", datetime(2021, 1, 2, tzinfo=UTC), None, ("2020-W53", "T-OWN")),
        ("2026-03-05", datetime(2026, 3, 4, 23, 0, tzinfo=UTC), None, ("2026-03-04", "T-OWN")),
        ("2026-03-05", datetime(2026, 3, 5, 1, 0, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC),
         ("2026-02-28", "T-ORIGINAL")),
        ("2026-03-05", datetime(2026, 3, 5, 1, 0, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC), ("", "")),
    ],
)  # fmt: skip
def test_prior_periods_are_named_in_the_configured_length(
    build: Build, period: str, business_time: datetime, original_time: datetime | None, expected: tuple[str, str]
) -> None:
    length = PeriodLength.WEEK if "W" in period else PeriodLength.DAY
    fact = build(
        business_time=business_time,
        original_time=original_time,
        original_public_id=None if original_time is None else "T-ORIGINAL",
    )

    assert prior_of(fact, parse_period(period, length)) == expected


def test_both_items_of_an_earn_reversal_carry_the_prior_period() -> None:
    fact = entry(
        transaction_kind="EARN_REVERSAL",
        billing="ON_REDEMPTION",
        original_time=IN_JANUARY,
        original_public_id="T-ORIGINAL",
    )

    items = items_of_entry(fact, MARCH)

    assert [(item.line_type, item.prior_period, item.original_reference) for item in items] == [
        (LineType.ISSUANCE_REVERSAL, "2026-01", "T-ORIGINAL"),
        (LineType.CONSUMPTION_REVERSAL, "2026-01", "T-ORIGINAL"),
    ]
