"""Settlement for people at a terminal: amounts in currency units, tables, and a close's progress."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TextIO

from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.v1 import settlement_service_pb2 as pb

from partners.rates import CURRENCY_EXPONENTS

DIRECTIONS: dict[int, str] = {
    pb.PAYMENT_DIRECTION_INBOUND: "partner pays operator",
    pb.PAYMENT_DIRECTION_OUTBOUND: "operator pays partner",
    pb.PAYMENT_DIRECTION_NONE: "nothing to pay",
}
LIABILITY_COLUMNS = (
    "issuer_partner_id", "currency_code", "opening_points", "issued_points", "redeemed_points", "expired_points",
    "adjustment_points", "closing_points", "pending_points", "available_points", "expiring_within_30_days_points",
    "expiring_within_60_days_points", "expiring_within_90_days_points",
)  # fmt: skip
LIABILITY_HEADER = ("ISSUER", "CURRENCY", "OPENING", "ISSUED", "REDEEMED", "EXPIRED", "ADJUSTED", "CLOSING",
                    "PENDING", "AVAILABLE", "EXP<=30D", "EXP<=60D", "EXP<=90D")  # fmt: skip


# Amounts are int64 minor units on the wire.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def to_minor(amount: str, currency: str) -> int:
    """'260.00' EUR -> 26000, exactly. More decimals than the currency has are refused, never rounded.

    So are amounts beyond int64 minor units, which no request can carry. Raises ValueError with a
    message for people.
    """
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        raise ValueError(f"unknown currency {currency!r} (statement ids end with an ISO 4217 code, e.g. /EUR)")
    try:
        value = Decimal(amount.strip())
    except InvalidOperation:
        value = Decimal("NaN")
    exponent_of_value = value.as_tuple().exponent
    if not isinstance(exponent_of_value, int):  # NaN or infinity
        raise ValueError("not a decimal number such as 260.00")
    if -exponent_of_value > exponent:
        raise ValueError(f"more decimals than {currency} has ({exponent})")
    # Compared in currency units, before scaling: scaleb rounds (or overflows) past the context's precision.
    smallest, largest = Decimal(INT64_MIN).scaleb(-exponent), Decimal(INT64_MAX).scaleb(-exponent)
    if not smallest <= value <= largest:
        raise ValueError(f"out of range: beyond the largest amount a request carries ({largest:f} {currency})")
    return int(value.scaleb(exponent))


def format_minor(amount_minor: int, currency: str) -> str:
    """-100000 EUR -> '-1000.00'; 5 JPY -> '5'. Unknown currencies show their minor units as they are."""
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        return f"{amount_minor} minor units"
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def money(amount_minor: int, currency: str) -> str:
    return f"{format_minor(amount_minor, currency)} {currency}"


# Periods and statements
def period_summary(period: pb.SettlementPeriod, *, idempotent_replay: bool) -> str:
    note = "already closed: nothing was written" if idempotent_replay else "closed now"
    rows = [
        ("window", f"{timestamp(period.start_time)} .. {timestamp(period.end_time)}"),
        ("closed", f"{timestamp(period.close_time)} by {period.closed_by}" if period.HasField("close_time") else "-"),
        ("transactions", str(period.transaction_count)),
        ("statements", str(period.statement_count)),
    ]
    if period.HasField("paid_time"):
        rows.append(("paid", timestamp(period.paid_time)))
    for margin in period.operator_margins:
        amount = format_minor(margin.margin_minor, margin.currency_code)
        rows.append((f"margin {margin.currency_code}", f"{amount} (exact {margin.margin_exact})"))
    details = [f"  {label:<14}{value}" for label, value in rows]
    return "\n".join([f"period {period.period} {state(period.state)} ({note})", *details])


def statements_table(statements: Sequence[pb.Statement]) -> str:
    if not statements:
        return "no statements"
    header = ("STATEMENT", "NET", "OUTSTANDING", "DIRECTION", "STATUS", "DUE")
    rows = [
        (s.statement_id, money(s.net_minor, s.currency_code), money(s.outstanding_minor, s.currency_code),
         direction(s.payment_direction), statement_status(s), s.due_date)
        for s in statements
    ]  # fmt: skip
    return render_table(header, rows, right_aligned={1, 2})


def statement_text(statement: pb.Statement) -> str:
    """A statement as finance reads it: header, lines, positions, payment state and payments."""
    currency = statement.currency_code
    parts = [
        f"statement {statement.statement_id}  ({statement_status(statement)})",
        f"  partner       {statement.partner_display_name} ({statement.partner_id})",
        f"  period        {statement.period}, closed {timestamp(statement.close_time)}",
        f"  currency      {currency}; due {statement.due_date}",
        "",
        lines_table(statement.lines, currency),
        "",
    ]
    positions = (("opening position", statement.opening_position_minor), ("net", statement.net_minor),
                 ("closing position", statement.closing_position_minor))  # fmt: skip
    parts += [f"  {label:<18}{money(amount_minor, currency):>20}" for label, amount_minor in positions]
    parts += [
        f"  {'net exactly':<18}{statement.net_exact:>20}",
        "",
        f"  {direction(statement.payment_direction)}: paid {money(statement.paid_minor, currency)}, "
        f"outstanding {money(statement.outstanding_minor, currency)}",
        f"  items {statement.item_count}, items sha256 {statement.items_sha256}",
        f"  csv sha256 {statement.csv_sha256}",
        "",
        "payments",
        payments_table(statement.payments, currency),
    ]
    return "\n".join(parts)


def lines_table(lines: Iterable[pb.StatementLine], currency: str) -> str:
    header = ("#", "TYPE", "DESCRIPTION", "POINTS", "UNIT PRICE", "AMOUNT", "ITEMS")
    rows = [
        (str(line.line_number), pb.StatementLineType.Name(line.line_type).removeprefix("STATEMENT_LINE_TYPE_"),
         _line_description(line), str(line.points), line.unit_price, format_minor(line.amount_minor, currency),
         str(line.item_count))
        for line in lines
    ]  # fmt: skip
    return render_table(header, rows, right_aligned={0, 3, 4, 5, 6}) if rows else "no lines"


def payments_table(payments: Iterable[pb.Payment], currency: str) -> str:
    header = ("VALUE DATE", "AMOUNT", "DIRECTION", "REFERENCE", "RECORDED", "BY", "PAYMENT")
    rows = [
        (p.value_date, money(p.amount_minor, currency), direction(p.direction), p.bank_reference,
         timestamp(p.record_time), p.recorded_by, p.payment_id)
        for p in payments
    ]  # fmt: skip
    return render_table(header, rows, right_aligned={1}) if rows else "  none yet"


def payment_text(response: pb.RecordPaymentResponse) -> str:
    payment, statement, currency = response.payment, response.statement, response.statement.currency_code
    replay = " (an earlier identical request: nothing new was recorded)" if response.idempotent_replay else ""
    return (
        f"payment {payment.payment_id} recorded{replay}: {money(payment.amount_minor, currency)}, "
        f"{direction(payment.direction)}, value date {payment.value_date}, reference {payment.bank_reference}\n"
        f"statement {statement.statement_id}: paid {money(statement.paid_minor, currency)}, "
        f"outstanding {money(statement.outstanding_minor, currency)} ({statement_status(statement)})\n"
        f"period {response.settlement_period.period}: {state(response.settlement_period.state)}"
    )


def statement_status(statement: pb.Statement) -> str:
    if statement.payment_direction == pb.PAYMENT_DIRECTION_NONE:
        return "NOTHING TO PAY"
    if statement.outstanding_minor == 0:
        return "PAID"
    return "PARTLY PAID" if statement.paid_minor else "UNPAID"


# Reconciliation and liability
def reconciliation_text(response: pb.ReconcilePeriodResponse) -> str:
    rows = [("PASS" if check.passed else "FAIL", check.name, check.detail) for check in response.checks]
    failed = sum(not check.passed for check in response.checks)
    verdict = "PASSED" if response.passed else f"FAILED ({failed} of {len(response.checks)} checks)"
    return render_table(("RESULT", "CHECK", "DETAIL"), rows) + f"\nreconciliation of {response.period}: {verdict}"


def liability_rows(response: pb.GetLiabilityReportResponse) -> list[tuple[str, ...]]:
    return [tuple(str(getattr(row, column)) for column in LIABILITY_COLUMNS) for row in response.rows]


def liability_table(response: pb.GetLiabilityReportResponse) -> str:
    rows = liability_rows(response)
    title = f"points liability for {response.period} as of {timestamp(response.as_of_time)}"
    if not rows:
        return f"{title}\nno points outstanding"
    return f"{title}\n" + render_table(LIABILITY_HEADER, rows, right_aligned=set(range(2, len(LIABILITY_HEADER))))


def liability_csv(response: pb.GetLiabilityReportResponse) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LIABILITY_COLUMNS)
    writer.writerows(liability_rows(response))
    return text.getvalue()


# Close progress
class ProgressDisplay:
    """A close's progress on stderr: a bar redrawn with \\r on a terminal, else one line per stage."""

    BAR_WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.is_terminal = stream.isatty()
        self.stage = ""
        self.drawn_width = 0

    def show(self, progress: pb.CloseProgress) -> None:
        if self.is_terminal:
            done = self.BAR_WIDTH * min(progress.completed, progress.total) // progress.total if progress.total else 0
            bar = "#" * done + "-" * (self.BAR_WIDTH - done)
            line = f"{progress.stage:<24} [{bar}] {progress.completed}/{progress.total}"
            # Padded to the last line's width so a shorter line leaves nothing of it behind.
            self.stream.write("\r" + line.ljust(self.drawn_width))
            self.drawn_width = len(line)
        elif progress.stage != self.stage:
            self.stream.write(f"{progress.stage} ({progress.completed}/{progress.total})\n")
        self.stage = progress.stage
        self.stream.flush()

    def finish(self) -> None:
        if self.is_terminal and self.drawn_width:
            self.stream.write("\n")
            self.stream.flush()


# Small pieces
def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: Collection[int] = ()) -> str:
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]

    def render(row: Sequence[str]) -> str:
        cells = [cell.rjust(width) if column in right_aligned else cell.ljust(width)
                 for column, (cell, width) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        return "  ".join(cells).rstrip()

    return "\n".join(render(row) for row in (header, *rows))


def direction(payment_direction: int) -> str:
    return DIRECTIONS.get(payment_direction, "-")


def state(period_state: int) -> str:
    return pb.PeriodState.Name(period_state).removeprefix("PERIOD_STATE_")


def timestamp(stamp: Timestamp) -> str:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else "-"


def _line_description(line: pb.StatementLine) -> str:
    if not line.prior_period:
        return line.description
    reference = f", ref {line.original_reference}" if line.original_reference else ""
    return f"{line.description} (prior period {line.prior_period}{reference})"
