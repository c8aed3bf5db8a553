"""Statement and matrix documents: the canonical CSV (RFC 4180) and JSON finance reads."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partners.rates import currency_exponent
from settlement.documents import (
    MATRIX_CSV_HEADER,
    STATEMENT_CSV_HEADER,
    LineView,
    MatrixCellView,
    MatrixView,
    PaymentView,
    StatementView,
    format_minor,
    matrix_csv,
    statement_csv,
    to_json,
)
from settlement.netting import LineTotal, LineType, statement_figures

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

CURRENCIES = ["EUR", "JPY", "KWD", "USD", "BHD"]
CLOSED_AT = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
LINE_FIELDS = [field.name for field in dataclasses.fields(LineView)]


def statement(
    currency: str = "EUR",
    totals: list[LineTotal] | None = None,
    *,
    opening_minor: int = 0,
    statement_id: str | None = None,
    paid_minor: int = 0,
    payments: list[PaymentView] | None = None,
) -> StatementView:
    """A statement view built from line totals the way a close builds it."""
    if totals is None:
        totals = [
            LineTotal(LineType.ISSUANCE, Decimal("0.012"), 100_000, 3),
            LineTotal(LineType.REDEMPTION, Decimal("0.010"), 20_000, 2),
            LineTotal(LineType.REDEMPTION_REFUND, Decimal("0.010"), 150, 1, "2026-02", "T-0002"),
        ]
    figures = statement_figures(currency, totals)
    return StatementView(
        statement_id=statement_id or f"2026-03/acme/{currency}",
        period="2026-03",
        period_starts_at=datetime(2026, 3, 1, tzinfo=UTC),
        period_ends_at=datetime(2026, 4, 1, tzinfo=UTC),
        partner_id="acme",
        partner_name='Acme, "the" shop',
        currency=currency,
        opening_position_minor=opening_minor,
        net_minor=figures.net_minor,
        closing_position_minor=opening_minor + figures.net_minor,
        net_exact=figures.net_exact,
        due_date=date(2026, 4, 15),
        item_count=sum(total.item_count for total in totals),
        items_sha256="a" * 64,
        csv_sha256="b" * 64,
        closed_at=CLOSED_AT,
        paid_minor=paid_minor,
        lines=[LineView(**{name: getattr(line, name) for name in LINE_FIELDS}) for line in figures.lines],
        payments=payments or [],
    )


def parsed(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))


def rows_of(content: bytes, section: str) -> list[dict[str, str]]:
    header, *rows = parsed(content)
    return [dict(zip(header, row, strict=True)) for row in rows if row[header.index("section")] == section]


def amount_shape(currency: str) -> re.Pattern[str]:
    places = currency_exponent(currency)
    return re.compile(r"^-?\d+$" if places == 0 else rf"^-?\d+\.\d{{{places}}}$")


# --- amounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "currency", "text"),
    [
        (-100_000, "EUR", "-1000.00"),
        (0, "EUR", "0.00"),
        (7, "EUR", "0.07"),
        (-1, "USD", "-0.01"),
        (5, "JPY", "5"),
        (-5, "JPY", "-5"),
        (0, "JPY", "0"),
        (1234, "KWD", "1.234"),
        (-1, "KWD", "-0.001"),
        (1_000_000, "BHD", "1000.000"),
    ],
)
def test_amounts_are_written_in_the_currencys_minor_unit_precision(amount_minor: int, currency: str, text: str) -> None:
    assert format_minor(amount_minor, currency) == text


@PROPERTY
@given(amount_minor=st.integers(-(10**15), 10**15), currency=st.sampled_from(CURRENCIES))
def test_formatted_amounts_read_back_exactly(amount_minor: int, currency: str) -> None:
    text = format_minor(amount_minor, currency)

    assert amount_shape(currency).match(text)
    assert Decimal(text).scaleb(currency_exponent(currency)) == amount_minor


# --- the statement CSV ------------------------------------------------------------------------


def test_the_statement_csv_is_rfc_4180_with_one_header_row() -> None:
    content = statement_csv(statement())

    text = content.decode("utf-8")
    assert text.endswith("\r\n")
    assert text.count("\n") == text.count("\r\n")  # every record ends in CRLF, no bare LF
    rows = parsed(content)
    assert rows[0] == list(STATEMENT_CSV_HEADER)
    assert sum(row == list(STATEMENT_CSV_HEADER) for row in rows) == 1
    assert all(len(row) == len(STATEMENT_CSV_HEADER) for row in rows)
    assert [row[5] for row in rows[1:]] == ["OPENING_POSITION", "LINE", "LINE", "LINE", "NET", "CLOSING_POSITION"]


def test_the_statement_csv_lists_each_line() -> None:
    content = statement_csv(statement())

    assert [(row["line"], row["line_type"], row["points"], row["unit_price"], row["amount"]) for row in
            rows_of(content, "LINE")] == [
        ("1", "ISSUANCE", "100000", "0.012", "-1200.00"),
        ("2", "REDEMPTION", "20000", "0.010", "200.00"),
        ("3", "REDEMPTION_REFUND", "150", "0.010", "-1.50"),
    ]  # fmt: skip
    (prior,) = [row for row in rows_of(content, "LINE") if row["prior_period"]]
    assert (prior["prior_period"], prior["original_reference"]) == ("2026-02", "T-0002")
    assert prior["description"].endswith("(prior-period adjustment for 2026-02)")
    (net,) = rows_of(content, "NET")
    assert net["amount"] == "-1001.50"
    assert {row["statement_id"] for row in rows_of(content, "LINE")} == {"2026-03/acme/EUR"}
    assert {row["due_date"] for row in rows_of(content, "NET")} == {"2026-04-15"}


@pytest.mark.parametrize(
    ("currency", "totals", "net"),
    [
        ("EUR", [LineTotal(LineType.ISSUANCE, Decimal("0.01"), 100_000, 1)], "-1000.00"),
        ("JPY", [LineTotal(LineType.REDEMPTION, Decimal("0.5"), 10, 1)], "5"),
        ("KWD", [LineTotal(LineType.REDEMPTION, Decimal("0.001234"), 1000, 1)], "1.234"),
    ],
)
def test_the_net_is_written_in_the_currencys_precision(currency: str, totals: list[LineTotal], net: str) -> None:
    content = statement_csv(statement(currency, totals))

    (row,) = rows_of(content, "NET")
    assert row["amount"] == net
    (line,) = rows_of(content, "LINE")
    assert line["amount"] == net


line_totals = st.lists(
    st.builds(
        LineTotal,
        line_type=st.sampled_from([line_type for line_type in LineType if line_type is not LineType.ROUNDING]),
        unit_price=st.builds(
            lambda units, places: Decimal(units).scaleb(-places), st.integers(0, 10**7), st.integers(0, 6)
        ),
        points=st.integers(0, 10**9),
        item_count=st.integers(1, 100),
    ),
    max_size=10,
    unique_by=lambda total: (total.line_type, total.unit_price),
)


@PROPERTY
@given(currency=st.sampled_from(CURRENCIES), totals=line_totals, opening_minor=st.integers(-(10**12), 10**12))
def test_the_line_amounts_sum_to_the_net(currency: str, totals: list[LineTotal], opening_minor: int) -> None:
    content = statement_csv(statement(currency, totals, opening_minor=opening_minor))

    (opening,) = rows_of(content, "OPENING_POSITION")
    (net,) = rows_of(content, "NET")
    (closing,) = rows_of(content, "CLOSING_POSITION")
    line_amounts = [Decimal(row["amount"]) for row in rows_of(content, "LINE")]
    assert sum(line_amounts, Decimal(0)) == Decimal(net["amount"])
    assert Decimal(opening["amount"]) + Decimal(net["amount"]) == Decimal(closing["amount"])
    for row in [opening, net, closing, *rows_of(content, "LINE")]:
        assert amount_shape(currency).match(row["amount"]), row["amount"]


awkward_text = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=("Cs", "Cc")), st.sampled_from(',"\r\n')), max_size=20
)


@PROPERTY
@given(statement_id=awkward_text.filter(bool), reference=awkward_text)
def test_fields_with_commas_quotes_and_newlines_read_back_intact(statement_id: str, reference: str) -> None:
    totals = [LineTotal(LineType.REDEMPTION, Decimal("0.01"), 100, 1, "2026-02" if reference else "", reference)]
    view = statement(totals=totals, statement_id=statement_id)

    rows = parsed(statement_csv(view))

    assert rows[0] == list(STATEMENT_CSV_HEADER)
    assert len(rows) == 1 + 4
    assert {row[0] for row in rows[1:]} == {statement_id}
    assert rows[2][10] == reference


def test_the_same_statement_gives_the_same_bytes() -> None:
    view = statement()

    content = statement_csv(view)

    assert statement_csv(view) == content
    assert statement_csv(statement()) == content
    assert statement_csv(dataclasses.replace(view, lines=list(view.lines))) == content
    # The canonical CSV covers the statement's figures, not how far it has been paid.
    assert statement_csv(dataclasses.replace(view, paid_minor=100)) == content


# --- JSON -------------------------------------------------------------------------------------


def test_statement_json_round_trips_with_decimals_as_strings() -> None:
    payment = PaymentView(
        payment_id="P-1", statement_id="2026-03/acme/EUR", direction="INBOUND", amount_minor=50_000,
        value_date=date(2026, 4, 10), bank_reference="SEPA 123", recorded_at=datetime(2026, 4, 10, 9, 0, tzinfo=UTC),
        recorded_by="finance@operator",
    )  # fmt: skip
    view = statement(paid_minor=50_000, payments=[payment])

    content = to_json(view)
    data = json.loads(content)

    assert content.endswith(b"\n")
    assert data["net_exact"] == str(view.net_exact)
    assert Decimal(data["net_exact"]) == view.net_exact
    assert (data["net_minor"], data["opening_position_minor"], data["closing_position_minor"]) == (
        view.net_minor, view.opening_position_minor, view.closing_position_minor,
    )  # fmt: skip
    assert datetime.fromisoformat(data["closed_at"]) == CLOSED_AT
    assert date.fromisoformat(data["due_date"]) == view.due_date
    assert (data["outstanding_minor"], data["payment_direction"], data["status"]) == (50_150, "INBOUND", "DUE")
    assert len(data["lines"]) == len(view.lines)
    for line, written in zip(view.lines, data["lines"], strict=True):
        assert isinstance(written["amount_exact"], str) and isinstance(written["unit_price"], str)
        assert Decimal(written["amount_exact"]) == line.amount_exact
        assert Decimal(written["unit_price"]) == line.unit_price
        assert written["amount_minor"] == line.amount_minor
        assert written["line_type"] == line.line_type.value
        assert written["description"] == line.description
    (written_payment,) = data["payments"]
    assert written_payment["value_date"] == "2026-04-10"
    assert datetime.fromisoformat(written_payment["recorded_at"]) == payment.recorded_at
    assert to_json(view) == content
    assert list(data) == sorted(data)


def test_matrix_json_round_trips() -> None:
    view = matrix()

    data = json.loads(to_json(view))

    assert data["period"] == "2026-03"
    assert [cell["issuer_partner_id"] for cell in data["cells"]] == ["acme", "operator", "zen"]
    assert [Decimal(cell["issuer_value_exact"]) for cell in data["cells"]] == [
        cell.issuer_value_exact for cell in view.cells
    ]


# --- what a statement says about payment ------------------------------------------------------


@pytest.mark.parametrize(
    ("net_minor", "paid_minor", "direction", "outstanding_minor", "status"),
    [
        (-100_000, 0, "INBOUND", 100_000, "DUE"),
        (-100_000, 100_000, "INBOUND", 0, "PAID"),
        (26_000, 10_000, "OUTBOUND", 16_000, "DUE"),
        (0, 0, "NONE", 0, "PAID"),
    ],
)
def test_who_pays_and_what_is_outstanding(
    net_minor: int, paid_minor: int, direction: str, outstanding_minor: int, status: str
) -> None:
    view = dataclasses.replace(statement(), net_minor=net_minor, paid_minor=paid_minor)

    assert (view.payment_direction, view.outstanding_minor, view.status) == (direction, outstanding_minor, status)


# --- the cross-brand matrix -------------------------------------------------------------------


def matrix() -> MatrixView:
    return MatrixView(
        "2026-03",
        [
            MatrixCellView("EUR", "acme", "zen", 6_000, Decimal("72.000"), 7_200),
            MatrixCellView("EUR", "operator", "acme", 500, Decimal("0"), 0),
            MatrixCellView("JPY", "zen", "acme", 300, Decimal("4.5"), 4),
        ],
    )


def test_the_matrix_csv_has_one_header_and_a_row_per_cell() -> None:
    content = matrix_csv(matrix())

    assert content.decode().count("\n") == content.decode().count("\r\n")
    assert parsed(content) == [
        list(MATRIX_CSV_HEADER),
        ["2026-03", "EUR", "acme", "zen", "6000", "72.00"],
        ["2026-03", "EUR", "operator", "acme", "500", "0.00"],
        ["2026-03", "JPY", "zen", "acme", "300", "4"],
    ]
    assert matrix_csv(matrix()) == content


def test_an_empty_matrix_is_just_its_header() -> None:
    assert parsed(matrix_csv(MatrixView("2026-03", []))) == [list(MATRIX_CSV_HEADER)]
