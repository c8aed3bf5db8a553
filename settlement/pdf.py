"""A statement as an A4 PDF for a partner's finance team: who pays whom first, then the lines that add up to it.

The same view always renders to the same bytes (reportlab's invariant mode and fixed metadata), so a
PDF can be regenerated from the database and compared with one sent earlier. The footer of every page
carries the statement's hashes: the SHA-256 of the canonical CSV export is what a reader verifies.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from settlement.documents import LineView, PaymentView, StatementView, format_minor
from settlement.netting import DESCRIPTIONS, LineType

OPERATOR = "Coalition"
TITLE = "Coalition settlement statement"

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 18 * mm
FRAME_PADDING = 6  # SimpleDocTemplate's frame pads its content by 6 pt on every side
FOOTER_HEIGHT = 16 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN

INK = colors.HexColor("#1B1F24")
ACCENT = colors.HexColor("#1F3A5F")
MUTED = colors.HexColor("#5B6570")
RULE = colors.HexColor("#C9D0D8")
SHADE = colors.HexColor("#F2F4F7")
HIGHLIGHT = colors.HexColor("#E6EDF5")

SANS, SANS_BOLD, MONO = "Helvetica", "Helvetica-Bold", "Courier"


def _style(name: str, size: float, *, font: str = SANS, color: colors.Color = INK, **extra: Any) -> ParagraphStyle:
    return ParagraphStyle(name, fontName=font, fontSize=size, leading=size * 1.25, textColor=color, **extra)


TITLE_STYLE = _style("title", 17, font=SANS_BOLD, color=ACCENT)
HEADING = _style("heading", 10.5, font=SANS_BOLD, color=ACCENT, spaceBefore=5 * mm, spaceAfter=2 * mm)
PARTNER = _style("partner", 13, font=SANS_BOLD)
BODY = _style("body", 9)
SMALL = _style("small", 7.5, color=MUTED)
NOTE = _style("note", 7.5, color=MUTED, spaceAfter=1.5 * mm)
CELL = _style("cell", 8.5)
REFERENCE = _style("reference", 7, font=MONO, color=MUTED, wordWrap="CJK")
VERDICT = _style("verdict", 12, font=SANS_BOLD, color=ACCENT)


def statement_pdf(view: StatementView, *, compress: bool = True) -> bytes:
    """The statement as PDF bytes. ``compress=False`` leaves the page text readable to tests."""
    # "Page x of y" needs y before the first footer is drawn: lay the document out once to count pages.
    _, page_count = _render(view, compress=compress, page_count=0)
    content, _ = _render(view, compress=compress, page_count=page_count)
    return content


def _render(view: StatementView, *, compress: bool, page_count: int) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=MARGIN - FRAME_PADDING, rightMargin=MARGIN - FRAME_PADDING,
        topMargin=MARGIN - FRAME_PADDING, bottomMargin=MARGIN + FOOTER_HEIGHT - FRAME_PADDING,
        title=f"{TITLE} {view.statement_id}", author=OPERATOR, creator=OPERATOR, producer=OPERATOR,
        subject=f"{view.partner_name} ({view.partner_id}), period {view.period}",
        invariant=1, pageCompression=1 if compress else 0, lang="en",
    )  # fmt: skip

    def first_page(canvas: Canvas, _: object) -> None:
        _footer(canvas, view, page_count)

    def later_page(canvas: Canvas, _: object) -> None:
        _running_header(canvas, view)
        _footer(canvas, view, page_count)

    story = [*_header(view), *_summary(view), *_lines(view), *_payments(view)]
    document.build(story, onFirstPage=first_page, onLaterPages=later_page)
    return buffer.getvalue(), document.page


# Header and summary


def _header(view: StatementView) -> list[Flowable]:
    facts = [
        ("Statement", view.statement_id),
        ("Period", f"{view.period} ({_period_dates(view.period_starts_at, view.period_ends_at)})"),
        ("Currency", view.currency),
        ("Closed at", _timestamp(view.closed_at)),
        ("Due date", view.due_date.isoformat()),
        ("Ledger items", f"{view.item_count:,}"),
    ]
    facts_table = Table(
        [[Paragraph(escape(label), SMALL), Paragraph(escape(value), BODY)] for label, value in facts],
        colWidths=[24 * mm, 66 * mm], hAlign="RIGHT",
    )  # fmt: skip
    facts_table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"), *_no_padding(1.2)]))
    partner = [
        Paragraph("Statement for", SMALL),
        Paragraph(escape(view.partner_name), PARTNER),
        Paragraph(f"Partner id: {escape(view.partner_id)}", BODY),
    ]
    top = Table([[partner, facts_table]], colWidths=[CONTENT_WIDTH - 90 * mm, 90 * mm])
    top.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *_no_padding(0)]))
    return [Paragraph(TITLE, TITLE_STYLE), _rule(ACCENT, 1.2), Spacer(1, 3 * mm), top]


def _summary(view: StatementView) -> list[Flowable]:
    rows: list[list[Any]] = [
        ["Opening position (unpaid from earlier statements)", *_position(view.opening_position_minor, view.currency)],
        ["Net for this period", *_position(view.net_minor, view.currency)],
        ["Closing position", *_position(view.closing_position_minor, view.currency)],
        [Paragraph(escape(_verdict(view)), VERDICT), "", ""],
    ]
    if status := _payment_status(view):
        rows.append([Paragraph(escape(status), BODY), "", ""])
    box = Table(rows, colWidths=[CONTENT_WIDTH - 75 * mm, 40 * mm, 35 * mm])
    box.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, 2), SANS, 9.5),
        ("FONT", (0, 1), (-1, 1), SANS_BOLD, 9.5),
        ("TEXTCOLOR", (2, 0), (2, 2), MUTED),
        ("ALIGN", (1, 0), (1, 2), "RIGHT"),
        ("BACKGROUND", (0, 0), (-1, 2), SHADE),
        ("BACKGROUND", (0, 3), (-1, -1), HIGHLIGHT),
        ("LINEBELOW", (0, 2), (-1, 2), 0.6, RULE),
        ("BOX", (0, 0), (-1, -1), 0.8, ACCENT),
        ("TOPPADDING", (0, 3), (-1, 3), 6),
        ("BOTTOMPADDING", (0, 3), (-1, -1), 6),
        ("LEFTPADDING", (0, 0), (-1, -1), 8),
        ("RIGHTPADDING", (0, 0), (-1, -1), 8),
        *[("SPAN", (0, row), (-1, row)) for row in range(3, len(rows))],
    ]))  # fmt: skip
    return [Paragraph("Summary", HEADING), KeepTogether(box)]


def _position(amount_minor: int, currency: str) -> list[str]:
    meaning = "owed to you" if amount_minor > 0 else "owed by you" if amount_minor < 0 else "settled"
    return [f"{currency} {_money(amount_minor, currency)}", meaning]


def _verdict(view: StatementView) -> str:
    amount = f"{view.currency} {_money(abs(view.net_minor), view.currency)}"
    due = view.due_date.isoformat()
    if view.payment_direction == "OUTBOUND":
        return f"{OPERATOR} pays you {amount} by {due}"
    if view.payment_direction == "INBOUND":
        return f"Please pay {OPERATOR} {amount} by {due}"
    return "Nothing to pay"


def _payment_status(view: StatementView) -> str:
    if view.payment_direction == "NONE":
        return ""
    if view.outstanding_minor == 0:
        return "Paid in full."
    paid = f"{view.currency} {_money(view.paid_minor, view.currency)}"
    outstanding = f"{view.currency} {_money(view.outstanding_minor, view.currency)}"
    return f"Paid so far: {paid}. Outstanding: {outstanding}."


# Lines and payments


LINE_COLUMNS = (9 * mm, 58 * mm, 41 * mm, 20 * mm, 18 * mm)  # the longest description and a 26-character id fit


def _lines(view: StatementView) -> list[Flowable]:
    amount_header = f"Amount ({view.currency})"
    header = ["No", "Description", "Prior period / reference", "Points", "Unit price", amount_header]
    body: list[list[Any]] = [_line_row(line, view.currency) for line in view.lines]
    if not body:
        body = [["", Paragraph("No activity in this period", CELL), "", "", "", ""]]
    total = ["", "Total: net for this period", "", "", "", _money(view.net_minor, view.currency)]
    widths = [*LINE_COLUMNS, CONTENT_WIDTH - sum(LINE_COLUMNS)]
    table = Table([header, *body, total], colWidths=widths, repeatRows=1)
    table.setStyle(_grid_style(len(body)))
    note = "Positive amounts are owed to you by Coalition; negative amounts are owed by you to Coalition."
    # A heading alone at the foot of a page reads badly: start on a new page unless a few rows fit.
    return [CondPageBreak(40 * mm), Paragraph("Statement lines", HEADING), Paragraph(note, NOTE), table]


def _line_row(line: LineView, currency: str) -> list[Any]:
    is_rounding = line.line_type is LineType.ROUNDING
    reference = ""
    if line.prior_period:
        reference = f"Adjustment for {escape(line.prior_period)}"
        if line.original_reference:
            reference += f"<br/><font name='{MONO}' size='6.5' color='#5B6570'>{escape(line.original_reference)}</font>"
    return [
        str(line.line_number),
        Paragraph(escape(DESCRIPTIONS[line.line_type]), CELL),
        Paragraph(reference, CELL),
        "" if is_rounding else f"{line.points:,}",
        "" if is_rounding else f"{line.unit_price:f}",
        _money(line.amount_minor, currency),
    ]


def _payments(view: StatementView) -> list[Flowable]:
    if not view.payments:
        return []
    header = ["Value date", "Payment", "Bank reference", "Recorded at", f"Amount ({view.currency})"]
    body = [_payment_row(payment, view.currency) for payment in view.payments]
    widths = [22 * mm, 38 * mm, 44 * mm, 36 * mm]
    table = Table([header, *body], colWidths=[*widths, CONTENT_WIDTH - sum(widths)], repeatRows=1)
    table.setStyle(_grid_style(len(body), has_total=False))
    return [KeepTogether([Paragraph("Payments recorded", HEADING), table])]


def _payment_row(payment: PaymentView, currency: str) -> list[Any]:
    direction = "You paid Coalition" if payment.direction == "INBOUND" else "Coalition paid you"
    return [
        payment.value_date.isoformat(),
        direction,
        Paragraph(escape(payment.bank_reference), REFERENCE),
        _timestamp(payment.recorded_at),
        _money(payment.amount_minor, currency),
    ]


def _grid_style(body_rows: int, *, has_total: bool = True) -> TableStyle:
    """Header band, zebra rows, numbers right-aligned in the last columns, a ruled total row."""
    commands: list[Any] = [
        ("FONT", (0, 0), (-1, -1), SANS, 8.5),
        ("FONT", (0, 0), (-1, 0), SANS_BOLD, 8),
        ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
        ("BACKGROUND", (0, 0), (-1, 0), ACCENT),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("ALIGN", (-1, 0), (-1, -1), "RIGHT"),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]
    if has_total:
        commands += [
            ("ALIGN", (0, 0), (0, -1), "RIGHT"),
            ("ALIGN", (3, 0), (-1, -1), "RIGHT"),
            ("FONT", (0, -1), (-1, -1), SANS_BOLD, 9),
            ("LINEABOVE", (0, -1), (-1, -1), 1, ACCENT),
            ("LINEBELOW", (0, -1), (-1, -1), 1, ACCENT),
        ]
    commands += [("BACKGROUND", (0, row), (-1, row), SHADE) for row in range(2, body_rows + 1, 2)]
    return TableStyle(commands)


# Page furniture


def _footer(canvas: Canvas, view: StatementView, page_count: int) -> None:
    canvas.saveState()
    top = MARGIN + FOOTER_HEIGHT - 4 * mm
    canvas.setStrokeColor(RULE)
    canvas.setLineWidth(0.5)
    canvas.line(MARGIN, top, PAGE_WIDTH - MARGIN, top)
    canvas.setFillColor(MUTED)
    canvas.setFont(SANS, 7.5)
    canvas.drawString(MARGIN, top - 4 * mm, f"{TITLE} {view.statement_id}")
    canvas.drawRightString(PAGE_WIDTH - MARGIN, top - 4 * mm, f"Page {canvas.getPageNumber()} of {page_count}")
    canvas.setFont(MONO, 6.5)
    csv_sha256 = view.csv_sha256 or "(not recorded)"
    canvas.drawString(MARGIN, top - 8 * mm, f"csv_sha256   {csv_sha256}  verify: sha256 of the CSV export")
    canvas.drawString(MARGIN, top - 11 * mm, f"items_sha256 {view.items_sha256 or '(none)'}")
    canvas.restoreState()


def _running_header(canvas: Canvas, view: StatementView) -> None:
    canvas.saveState()
    canvas.setFillColor(MUTED)
    canvas.setFont(SANS, 7.5)
    baseline = PAGE_HEIGHT - MARGIN + 4 * mm
    canvas.drawString(MARGIN, baseline, f"{view.partner_name} ({view.partner_id})")
    canvas.drawRightString(PAGE_WIDTH - MARGIN, baseline, f"{view.statement_id}, due {view.due_date.isoformat()}")
    canvas.restoreState()


# Formatting


def _money(amount_minor: int, currency: str) -> str:
    """-100000 EUR -> "-1,000.00": the currency's minor-unit precision with thousands separators."""
    return f"{Decimal(format_minor(amount_minor, currency)):,f}"


def _timestamp(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC (astimezone would take them as local).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _period_dates(starts_at: datetime, ends_at: datetime) -> str:
    """A half-open [starts_at, ends_at) as the inclusive UTC days it covers."""
    first: date = _utc(starts_at).date()
    last: date = (_utc(ends_at) - timedelta(microseconds=1)).date()
    days = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    return f"{days}, UTC"


def _rule(color: colors.Color, width: float) -> Table:
    line = Table([[""]], colWidths=[CONTENT_WIDTH], rowHeights=[2])
    line.setStyle(TableStyle([("LINEBELOW", (0, 0), (-1, -1), width, color), *_no_padding(0)]))
    return line


def _no_padding(vertical: float) -> list[Any]:
    return [
        ("LEFTPADDING", (0, 0), (-1, -1), 0),
        ("RIGHTPADDING", (0, 0), (-1, -1), 0),
        ("TOPPADDING", (0, 0), (-1, -1), vertical),
        ("BOTTOMPADDING", (0, 0), (-1, -1), vertical),
    ]
