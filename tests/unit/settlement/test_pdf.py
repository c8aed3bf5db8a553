"""The PDF statement: deterministic bytes, the figures a finance reader looks for, and long statements that paginate."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

from settlement.documents import LineView, PaymentView, StatementView
from settlement.netting import LineType
from settlement.pdf import statement_pdf

CSV_SHA256 = "3f1c" * 16
ITEMS_SHA256 = "9a0b" * 16


def line(number: int, line_type: LineType, points: int, unit_price: str, amount_minor: int, **extra: str) -> LineView:
    return LineView(
        line_number=number, line_type=line_type, prior_period=extra.get("prior_period", ""),
        original_reference=extra.get("original_reference", ""), points=points, unit_price=Decimal(unit_price),
        amount_exact=Decimal(0) if line_type is LineType.ROUNDING else Decimal(amount_minor).scaleb(-2),
        amount_minor=amount_minor, item_count=points // 500,
    )  # fmt: skip


def statement(lines: list[LineView], payments: list[PaymentView] | None = None, **changes: object) -> StatementView:
    net_minor = sum(item.amount_minor for item in lines)
    view = StatementView(
        statement_id="2026-03/B/EUR", period="2026-03", period_starts_at=datetime(2026, 3, 1, tzinfo=UTC),
        period_ends_at=datetime(2026, 4, 1, tzinfo=UTC), partner_id="B", partner_name="Bistro & Bakery <Nord>",
        currency="EUR", opening_position_minor=-5_000, net_minor=net_minor, closing_position_minor=net_minor - 5_000,
        net_exact=Decimal(net_minor).scaleb(-2), due_date=date(2026, 4, 15), item_count=len(lines) * 7,
        items_sha256=ITEMS_SHA256, csv_sha256=CSV_SHA256, closed_at=datetime(2026, 4, 1, 0, 5, 12, tzinfo=UTC),
        paid_minor=sum(payment.amount_minor for payment in payments or []), lines=lines, payments=payments or [],
    )  # fmt: skip
    return replace(view, **changes)  # type: ignore[arg-type]


def worked_example() -> StatementView:
    """Partner B of DESIGN.md's worked example, a late return from February, a rounding cent and a payment."""
    lines = [
        line(1, LineType.ISSUANCE, 40_000, "0.011", -44_000),
        line(2, LineType.REDEMPTION, 70_000, "0.010", 70_000),
        line(3, LineType.REDEMPTION_REFUND, 1_333, "0.0075", -1_000, prior_period="2026-02",
             original_reference="k3v7q2mzx4d5ya6b2c3e4f5g6h"),
        line(4, LineType.ROUNDING, 0, "0", -1),
    ]  # fmt: skip
    payment = PaymentView(
        payment_id="pay-1", statement_id="2026-03/B/EUR", direction="OUTBOUND", amount_minor=10_000,
        value_date=date(2026, 4, 10), bank_reference="SEPA-2026-04-10-000123", recorded_at=datetime(2026, 4, 10, 9, 30),
        recorded_by="finance@coalition.example",
    )  # fmt: skip
    return statement(lines, [payment])


def page_text(pdf: bytes) -> str:
    """The text shown on the pages, a line per text line, read from a PDF rendered without compression."""
    assert b"/FlateDecode" not in pdf
    lines: list[str] = []
    for block in re.findall(rb"\bBT (.*?) ET\b", pdf, re.S):
        for segment in block.split(b"T*"):
            shown = re.findall(rb"\(((?:\\.|[^\\)])*)\) Tj", segment)
            if shown:
                lines.append(re.sub(rb"\\([()\\])", rb"\1", b"".join(shown)).decode("latin-1"))
    return "\n".join(lines)


def assert_shown(text: str, *runs: list[str]) -> None:
    """Each run of strings is shown as consecutive text lines (table cells are drawn row by row)."""
    for run in runs:
        assert "\n" + "\n".join(run) + "\n" in "\n" + text + "\n", run


def page_count(pdf: bytes) -> int:
    match = re.search(rb"/Count (\d+) /Kids", pdf)
    assert match
    return int(match[1])


def test_a_statement_renders_as_pdf_and_the_same_view_gives_the_same_bytes() -> None:
    view = worked_example()

    first, second = statement_pdf(view), statement_pdf(view)

    assert first.startswith(b"%PDF-")
    assert first.rstrip().endswith(b"%%EOF")
    assert b"/FlateDecode" in first
    assert first == second
    assert statement_pdf(replace(view, due_date=date(2026, 4, 16))) != first


def test_the_metadata_is_fixed_so_the_bytes_do_not_depend_on_when_the_pdf_was_made() -> None:
    pdf = statement_pdf(worked_example(), compress=False)

    assert b"/Title (Coalition settlement statement 2026-03/B/EUR)" in pdf
    assert b"/Author (Coalition) " in pdf
    assert b"/Creator (Coalition) " in pdf
    assert b"/CreationDate (D:20000101000000+00'00')" in pdf
    assert b"/MediaBox [ 0 0 595.2756 841.8898 ]" in pdf  # A4 in points


def test_the_header_and_summary_say_who_pays_whom_and_by_when() -> None:
    text = page_text(statement_pdf(worked_example(), compress=False))

    assert_shown(
        text,
        ["Coalition settlement statement", "Statement for", "Bistro & Bakery <Nord>", "Partner id: B"],
        ["Statement", "2026-03/B/EUR", "Period", "2026-03 (2026-03-01 to 2026-03-31, UTC)", "Currency", "EUR"],
        ["Closed at", "2026-04-01 00:05 UTC", "Due date", "2026-04-15"],
        ["Opening position (unpaid from earlier statements)", "EUR -50.00", "owed by you"],
        ["Net for this period", "EUR 249.99", "owed to you"],
        ["Closing position", "EUR 199.99", "owed to you"],
        ["Coalition pays you EUR 249.99 by 2026-04-15", "Paid so far: EUR 100.00. Outstanding: EUR 149.99."],
    )


def test_the_lines_table_shows_every_line_and_a_total_equal_to_the_net() -> None:
    view = worked_example()
    assert sum(line.amount_minor for line in view.lines) == view.net_minor

    text = page_text(statement_pdf(view, compress=False))

    assert_shown(
        text,
        ["No", "Description", "Prior period / reference", "Points", "Unit price", "Amount (EUR)"],
        ["1", "Points issued", "40,000", "0.011", "-440.00"],
        ["2", "Points redeemed at its tills", "70,000", "0.010", "700.00"],
        ["3", "Redeemed points given back on returns", "Adjustment for 2026-02", "k3v7q2mzx4d5ya6b2c3e4f5g6h",
         "1,333", "0.0075", "-10.00"],
        ["4", "Rounding to the minor unit", "-0.01"],
        ["Total: net for this period", "249.99"],
    )  # fmt: skip


def test_payments_and_the_hashes_to_verify_are_on_the_page() -> None:
    text = page_text(statement_pdf(worked_example(), compress=False))

    assert_shown(
        text,
        ["Payments recorded", "Value date", "Payment", "Bank reference", "Recorded at", "Amount (EUR)"],
        ["2026-04-10", "Coalition paid you", "SEPA-2026-04-10-000123", "2026-04-10 09:30 UTC", "100.00"],
        ["Coalition settlement statement 2026-03/B/EUR", "Page 1 of 1"],
        [f"csv_sha256   {CSV_SHA256}  verify: sha256 of the CSV export", f"items_sha256 {ITEMS_SHA256}"],
    )


def test_a_partner_that_owes_is_asked_to_pay() -> None:
    owes = statement([
        line(1, LineType.ISSUANCE, 100_000, "0.012", -120_000),
        line(2, LineType.REDEMPTION, 20_000, "0.010", 20_000),
    ])  # fmt: skip

    text = page_text(statement_pdf(owes, compress=False))

    assert_shown(
        text,
        ["Net for this period", "EUR -1,000.00", "owed by you"],
        ["Please pay Coalition EUR 1,000.00 by 2026-04-15", "Paid so far: EUR 0.00. Outstanding: EUR 1,000.00."],
        ["Total: net for this period", "-1,000.00"],
    )
    assert "Payments recorded" not in text


def test_a_settled_statement_and_one_without_activity() -> None:
    paid = worked_example()
    paid = replace(paid, paid_minor=paid.net_minor)
    quiet = statement([], opening_position_minor=0, closing_position_minor=0)

    paid_text = page_text(statement_pdf(paid, compress=False))
    quiet_text = page_text(statement_pdf(quiet, compress=False))

    assert_shown(paid_text, ["Coalition pays you EUR 249.99 by 2026-04-15", "Paid in full."])
    assert_shown(
        quiet_text,
        ["Net for this period", "EUR 0.00", "settled"],
        ["Nothing to pay", "Statement lines"],
        ["No activity in this period", "Total: net for this period", "0.00"],
    )


def test_amounts_have_the_precision_of_the_currency_minor_unit() -> None:
    yen = statement([line(1, LineType.REDEMPTION, 1_234_567, "1", 1_234_567)], currency="JPY",
                    opening_position_minor=0, closing_position_minor=1_234_567)  # fmt: skip
    dinar = statement([line(1, LineType.REDEMPTION, 1_234_567, "1", 1_234_567)], currency="KWD",
                      opening_position_minor=0, closing_position_minor=1_234_567)  # fmt: skip

    assert_shown(page_text(statement_pdf(yen, compress=False)), ["Coalition pays you JPY 1,234,567 by 2026-04-15"])
    assert_shown(page_text(statement_pdf(dinar, compress=False)), ["Coalition pays you KWD 1,234.567 by 2026-04-15"])


def test_a_long_statement_runs_over_pages_repeating_the_table_header() -> None:
    lines = [
        line(number, LineType.REDEMPTION_REFUND, 1_000 + number, "0.010", -(1_000 + number), prior_period="2026-02",
             original_reference=f"ref{number:023d}")
        for number in range(1, 201)
    ]  # fmt: skip
    view = statement(lines)

    pdf = statement_pdf(view, compress=False)
    text = page_text(pdf)

    pages = page_count(pdf)
    assert pages >= 4
    assert text.count("Prior period / reference") == pages
    assert text.count("Bistro & Bakery <Nord> (B)") == pages - 1  # running header after the first page
    assert text.count(f"csv_sha256   {CSV_SHA256}") == pages
    for page in range(1, pages + 1):
        assert f"\nPage {page} of {pages}\n" in text
    assert_shown(text, ["200", "Redeemed points given back on returns", "Adjustment for 2026-02",
                        "ref00000000000000000000200", "1,200", "0.010", "-12.00"],
                 ["Total: net for this period", "-2,201.00"])  # fmt: skip
    assert statement_pdf(view) == statement_pdf(view)


def test_a_period_is_shown_as_the_utc_days_it_covers() -> None:
    day = statement([], period="2026-03-05", period_starts_at=datetime(2026, 3, 5, tzinfo=UTC),
                    period_ends_at=datetime(2026, 3, 6, tzinfo=UTC))  # fmt: skip
    week = statement([], period="2026-W10", period_starts_at=datetime(2026, 3, 2, tzinfo=UTC),
                     period_ends_at=datetime(2026, 3, 9, tzinfo=UTC))  # fmt: skip

    assert_shown(page_text(statement_pdf(day, compress=False)), ["Period", "2026-03-05 (2026-03-05, UTC)"])
    assert_shown(page_text(statement_pdf(week, compress=False)), ["Period", "2026-W10 (2026-03-02 to 2026-03-08, UTC)"])
