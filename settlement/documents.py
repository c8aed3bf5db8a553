"""What finance reads: statement, matrix and liability views, and their canonical CSV and JSON.

The canonical CSV of a statement is what its stored SHA-256 covers: re-rendering a closed statement
from the database reproduces it byte for byte. CSV follows RFC 4180 (CRLF, one header row), dates
are ISO 8601 and amounts are decimal strings in the currency's minor-unit precision.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from partners.rates import currency_exponent
from settlement.netting import DESCRIPTIONS, LineType


@dataclass(frozen=True)
class LineView:
    line_number: int
    line_type: LineType
    prior_period: str
    original_reference: str
    points: int
    unit_price: Decimal
    amount_exact: Decimal
    amount_minor: int
    item_count: int

    @property
    def description(self) -> str:
        if self.prior_period:
            return f"{DESCRIPTIONS[self.line_type]} (prior-period adjustment for {self.prior_period})"
        return DESCRIPTIONS[self.line_type]


@dataclass(frozen=True)
class PaymentView:
    payment_id: str
    statement_id: str
    direction: str  # INBOUND: the partner paid the operator; OUTBOUND: the operator paid the partner
    amount_minor: int
    value_date: date
    bank_reference: str
    recorded_at: datetime
    recorded_by: str


@dataclass(frozen=True)
class StatementView:
    """A partner's statement; positive amounts are owed to the partner, negative owed by it."""

    statement_id: str
    period: str
    period_starts_at: datetime
    period_ends_at: datetime
    partner_id: str
    partner_name: str
    currency: str
    opening_position_minor: int
    net_minor: int
    closing_position_minor: int
    net_exact: Decimal
    due_date: date
    item_count: int
    items_sha256: str
    csv_sha256: str
    closed_at: datetime
    paid_minor: int
    lines: list[LineView] = field(default_factory=list)
    payments: list[PaymentView] = field(default_factory=list)

    @property
    def outstanding_minor(self) -> int:
        """What is still to be paid on this statement's net (always >= 0)."""
        return abs(self.net_minor) - self.paid_minor

    @property
    def payment_direction(self) -> str:
        """Who pays: INBOUND (the partner pays), OUTBOUND (the operator pays) or NONE."""
        if self.net_minor < 0:
            return "INBOUND"
        return "OUTBOUND" if self.net_minor > 0 else "NONE"

    @property
    def status(self) -> str:
        return "PAID" if self.outstanding_minor == 0 else "DUE"


@dataclass(frozen=True)
class MatrixCellView:
    currency: str
    issuer_partner_id: str  # "operator" for points the operator funded
    redeemer_partner_id: str
    points: int
    issuer_value_exact: Decimal
    issuer_value_minor: int


@dataclass(frozen=True)
class MatrixView:
    period: str
    cells: list[MatrixCellView]


@dataclass(frozen=True)
class Export:
    filename: str
    content_type: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def format_minor(amount_minor: int, currency: str) -> str:
    """-100000 EUR -> "-1000.00"; 5 JPY -> "5"."""
    return str(Decimal(amount_minor).scaleb(-currency_exponent(currency)))


STATEMENT_CSV_HEADER = (
    "statement_id", "period", "partner_id", "currency", "due_date", "section", "line", "line_type",
    "description", "prior_period", "original_reference", "points", "unit_price", "amount",
)  # fmt: skip


def statement_csv(view: StatementView) -> bytes:
    """The canonical CSV: opening position, the lines (their amounts sum to the net), net, closing position."""
    rows: list[list[str]] = []
    base = [view.statement_id, view.period, view.partner_id, view.currency, view.due_date.isoformat()]

    def total(section: str, description: str, amount_minor: int) -> None:
        rows.append([*base, section, "", "", description, "", "", "", "", format_minor(amount_minor, view.currency)])

    total("OPENING_POSITION", "Position carried from earlier periods", view.opening_position_minor)
    for line in view.lines:
        rows.append([
            *base, "LINE", str(line.line_number), line.line_type.value, line.description, line.prior_period,
            line.original_reference, str(line.points), format(line.unit_price, "f"),
            format_minor(line.amount_minor, view.currency),
        ])  # fmt: skip
    total("NET", "Net for the period (+ owed to the partner, - owed by it)", view.net_minor)
    total("CLOSING_POSITION", "Position after this period", view.closing_position_minor)
    return _csv([list(STATEMENT_CSV_HEADER), *rows])


MATRIX_CSV_HEADER = ("period", "currency", "issuer_partner_id", "redeemer_partner_id", "points", "issuer_value")


def matrix_csv(view: MatrixView) -> bytes:
    rows = [
        [view.period, cell.currency, cell.issuer_partner_id, cell.redeemer_partner_id, str(cell.points),
         format_minor(cell.issuer_value_minor, cell.currency)]
        for cell in view.cells
    ]  # fmt: skip
    return _csv([list(MATRIX_CSV_HEADER), *rows])


def to_json(view: Any) -> bytes:
    """Any view as JSON: amounts in minor units plus exact decimals as strings, times in RFC 3339."""
    return (json.dumps(_plain(view), indent=2, sort_keys=True) + "\n").encode()


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        data = {item.name: _plain(getattr(value, item.name)) for item in fields(value)}
        for name in ("outstanding_minor", "payment_direction", "status", "description"):
            if hasattr(type(value), name):
                data[name] = getattr(value, name)
        return data
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return format(value, "f")  # fixed-point, never 1E-7
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue().encode()
