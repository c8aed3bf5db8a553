"""Settlement use cases for finance: close a period, read and export statements, record payments.

Reconciliation and the liability report live in ``settlement.checks`` and ``settlement.liability``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import Connection

from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.idempotency import Outcome, RequestKey, run_once
from common.ids import new_id
from common.sql import Page, paginate
from common.uow import UnitOfWork
from settlement import documents
from settlement.documents import Export, LineView, MatrixCellView, MatrixView, PaymentView, StatementView
from settlement.items import UnclassifiedLedgerFact
from settlement.netting import LineTotal, LineType, exact_decimal, operator_margins, statement_figures, to_minor
from settlement.periods import Period, PeriodLength, parse_period, period_of
from settlement.repository import UNCLASSIFIED, LineRow, PeriodRow, SettlementRepository, StatementRow

OPERATOR = "operator"
# The item list of a statement with no items (one that only carries a position forward).
EMPTY_LIST_SHA256 = hashlib.sha256(b"").hexdigest()

# (stage, done, total): a close reports its progress through this, for the CLI's progress bar.
Progress = Callable[[str, int, int], None]


class PeriodNotEnded(FailedPrecondition):
    reason = "PERIOD_NOT_ENDED"
    is_business_outcome = False


class PreviousPeriodOpen(FailedPrecondition):
    reason = "PREVIOUS_PERIOD_OPEN"
    is_business_outcome = False


class LaterPeriodClosed(FailedPrecondition):
    reason = "LATER_PERIOD_CLOSED"
    is_business_outcome = False


class PeriodNotClosed(FailedPrecondition):
    reason = "PERIOD_NOT_CLOSED"
    is_business_outcome = False


class StatementNotFound(NotFound):
    reason = "STATEMENT_NOT_FOUND"


class NothingToPay(FailedPrecondition):
    reason = "NOTHING_TO_PAY"


class PaymentExceedsOutstanding(FailedPrecondition):
    reason = "PAYMENT_EXCEEDS_OUTSTANDING"


class InvalidPayment(InvalidArgument):
    reason = "INVALID_PAYMENT"


class UnsupportedExportFormat(InvalidArgument):
    reason = "UNSUPPORTED_EXPORT_FORMAT"


@dataclass(frozen=True)
class SettlementPolicy:
    """How the network settles: period length and payment terms (from configuration)."""

    period_length: PeriodLength = PeriodLength.MONTH
    payment_due_days: int = 14


@dataclass(frozen=True)
class MarginView:
    currency: str
    margin_minor: int
    margin_exact: Decimal


@dataclass(frozen=True)
class PeriodView:
    period: str
    length: str
    starts_at: datetime
    ends_at: datetime
    status: str  # OPEN, CLOSED (statements frozen) or PAID (every statement paid)
    closed_at: datetime | None = None
    closed_by: str = ""
    transaction_count: int = 0
    statement_count: int = 0
    paid_at: datetime | None = None
    margins: list[MarginView] = field(default_factory=list)


@dataclass(frozen=True)
class ClosedPeriod:
    period: PeriodView
    newly_closed: bool


def close_period(
    uow: UnitOfWork, policy: SettlementPolicy, label: str, *, closed_by: str, progress: Progress | None = None
) -> ClosedPeriod:
    """Closes a period: itemises its transactions, freezes one statement per partner and currency.

    Idempotent: closing a closed period returns it unchanged, and two concurrent closes produce one
    set of statements (the period's label is unique; the loser reruns and finds it closed).
    """
    period = parse_period(label, policy.period_length)
    report = progress or _no_progress

    def work(connection: Connection) -> ClosedPeriod:
        repository = SettlementRepository(connection)
        repository.prepare_for_close()
        repository.lock_settlement()  # one close or payment at a time; a concurrent close waits, then replays
        existing = repository.period(period.label)
        if existing is not None:
            return ClosedPeriod(_period_view(repository, existing), newly_closed=False)
        now = uow.clock.now()
        if period.ends_at > now:
            raise PeriodNotEnded(f"period {period.label} ends at {period.ends_at.isoformat()}", period=period.label)
        _require_in_order(repository, period)
        period_id = repository.insert_period(
            label=period.label, length=period.length.value, starts_at=period.starts_at, ends_at=period.ends_at,
            status="CLOSED", closed_at=now, closed_by=closed_by, transaction_count=0,
            payments_through_id=repository.last_payment_id(),
        )  # fmt: skip
        report("itemising transactions", 0, 3)
        count = repository.assign_transactions(period_id, period.ends_at)
        repository.set_transaction_count(period_id, count)
        repository.analyze_assignments()
        report("summing statement lines", 1, 3)
        items = repository.materialise_items(period_id, period.starts_at)
        totals = _line_totals(repository.line_totals(items), period)
        digests = repository.item_digests(items)
        items.drop(connection)
        report("writing statements", 2, 3)
        _write_statements(repository, policy, period, period_id, totals, digests, now, report)
        report("closed", 3, 3)
        row = repository.period(period.label)
        assert row is not None
        return ClosedPeriod(_period_view(repository, row), newly_closed=True)

    return uow.run(work)


StatementKey = tuple[int, str]  # (partner row id, currency)


def _line_totals(
    rows: list[tuple[int, str, str, Decimal, str, datetime | None, int, int]], period: Period
) -> dict[StatementKey, list[LineTotal]]:
    """Groups summed items into each statement's line totals (equal prices written alike merge)."""
    merged: dict[StatementKey, dict[tuple[LineType, Decimal, str, str], list[int]]] = defaultdict(dict)
    for partner_id, currency, line_type, unit_price, reference, prior_time, points, count in rows:
        if line_type == UNCLASSIFIED:
            raise UnclassifiedLedgerFact(f"period {period.label} holds a ledger fact settlement has no rule for")
        prior = period_of(prior_time, period.length).label if prior_time is not None else ""
        key = (LineType(line_type), unit_price, prior, reference)
        total = merged[(partner_id, currency)].setdefault(key, [0, 0])
        total[0] += points
        total[1] += count
    return {
        statement: [LineTotal(line_type, price, points, count, prior, reference)
                    for (line_type, price, prior, reference), (points, count) in lines.items()]
        for statement, lines in merged.items()
    }  # fmt: skip


def _write_statements(
    repository: SettlementRepository, policy: SettlementPolicy, period: Period, period_id: int,
    totals: dict[StatementKey, list[LineTotal]], digests: dict[StatementKey, tuple[int, str]], now: datetime,
    report: Progress,
) -> None:  # fmt: skip
    positions = repository.positions()
    partners = repository.partner_codes()
    keys = set(totals) | {key for key, position in positions.items() if position != 0}
    ordered = sorted(keys, key=lambda key: (partners[key[0]][0], key[1]))
    nets: list[tuple[str, int, Decimal]] = []
    for number, (partner_row_id, currency) in enumerate(ordered, start=1):
        figures = statement_figures(currency, totals.get((partner_row_id, currency), []))
        opening = positions.get((partner_row_id, currency), 0)
        item_count, items_sha256 = digests.get((partner_row_id, currency), (0, EMPTY_LIST_SHA256))
        code, name = partners[partner_row_id]
        view = StatementView(
            statement_id=f"{period.label}/{code}/{currency}", period=period.label,
            period_starts_at=period.starts_at, period_ends_at=period.ends_at, partner_id=code, partner_name=name,
            currency=currency, opening_position_minor=opening, net_minor=figures.net_minor,
            closing_position_minor=opening + figures.net_minor, net_exact=figures.net_exact,
            due_date=period.ends_at.date() + timedelta(days=policy.payment_due_days), item_count=item_count,
            items_sha256=items_sha256, csv_sha256="", closed_at=now, paid_minor=0,
            lines=[LineView(line.line_number, line.line_type, line.prior_period, line.original_reference,
                            line.points, line.unit_price, line.amount_exact, line.amount_minor, line.item_count)
                   for line in figures.lines],
        )  # fmt: skip
        statement_row_id = repository.insert_statement(
            statement_id=view.statement_id, period_id=period_id, partner_id=partner_row_id, currency=currency,
            opening_position_minor=view.opening_position_minor, net_minor=view.net_minor,
            closing_position_minor=view.closing_position_minor, net_exact=view.net_exact, due_date=view.due_date,
            item_count=item_count, items_sha256=items_sha256,
            csv_sha256=hashlib.sha256(documents.statement_csv(view)).hexdigest(), closed_at=now,
        )  # fmt: skip
        repository.insert_lines([
            {"statement_id": statement_row_id, "line_number": line.line_number, "line_type": line.line_type.value,
             "prior_period": line.prior_period, "original_reference": line.original_reference,
             "points": line.points, "unit_price": line.unit_price, "amount_exact": line.amount_exact,
             "amount_minor": line.amount_minor, "item_count": line.item_count}
            for line in view.lines
        ])  # fmt: skip
        nets.append((currency, view.net_minor, view.net_exact))
        report("writing statements", number, len(ordered))
    repository.insert_matrix(_matrix_cells(repository, period_id))
    margins = operator_margins(nets)
    repository.insert_margins([
        {"period_id": period_id, "currency": currency, "margin_minor": minor, "margin_exact": exact}
        for currency, (minor, exact) in margins.items()
    ])  # fmt: skip
    if all(net_minor == 0 for _, net_minor, _ in nets):
        repository.mark_paid(period_id, now)


def _matrix_cells(repository: SettlementRepository, period_id: int) -> list[dict[str, object]]:
    cells: dict[tuple[str, int | None, int], tuple[int, Fraction]] = defaultdict(lambda: (0, Fraction(0)))
    for row in repository.matrix_rows(period_id):
        points, value = cells[(row.currency, row.issuer_partner_id, row.redeemer_partner_id)]
        cells[(row.currency, row.issuer_partner_id, row.redeemer_partner_id)] = (
            points + row.points,
            value + row.points * Fraction(row.issuance_price),
        )
    return [
        {"period_id": period_id, "currency": currency, "issuer_partner_id": issuer, "redeemer_partner_id": redeemer,
         "points": points, "issuer_value_exact": exact_decimal(value), "issuer_value_minor": to_minor(value, currency)}
        for (currency, issuer, redeemer), (points, value) in sorted(
            cells.items(), key=lambda cell: (cell[0][0], cell[0][1] or 0, cell[0][2])
        )
        if points != 0
    ]  # fmt: skip


def _require_in_order(repository: SettlementRepository, period: Period) -> None:
    """Periods close in order: never before a later closed one, nor after an open earlier one with activity."""
    closed_until = repository.closed_until()
    if closed_until is not None and period.starts_at < closed_until:
        raise LaterPeriodClosed(
            f"periods up to {closed_until.isoformat()} are closed: {period.label} can no longer be closed",
            period=period.label,
        )
    latest = repository.latest_transaction_before(period.starts_at)
    if latest is None:
        return
    earlier = period_of(latest, period.length)
    if repository.period(earlier.label) is None:
        raise PreviousPeriodOpen(
            f"close {earlier.label} first: it has ledger activity and is still open", open_period=earlier.label
        )


# Reads
def get_period(uow: UnitOfWork, policy: SettlementPolicy, label: str) -> PeriodView:
    period = parse_period(label, policy.period_length)

    def work(connection: Connection) -> PeriodView:
        repository = SettlementRepository(connection)
        row = repository.period(period.label)
        if row is None:
            return PeriodView(period.label, period.length.value, period.starts_at, period.ends_at, "OPEN")
        return _period_view(repository, row)

    return uow.run(work)


def list_periods(uow: UnitOfWork, *, page_size: int, page_token: str) -> Page[PeriodView]:
    """Closed (and paid) periods, oldest first."""

    def work(connection: Connection) -> Page[PeriodView]:
        repository = SettlementRepository(connection)
        page = paginate(page_size, page_token, repository.list_periods, lambda row: row.id)
        return Page([_period_view(repository, row) for row in page.items], page.next_page_token)

    return uow.run(work)


def list_statements(
    uow: UnitOfWork, policy: SettlementPolicy, *, period: str = "", partner_code: str = "",
    viewer_partner_id: int | None = None, page_size: int = 0, page_token: str = "",
) -> Page[StatementView]:  # fmt: skip
    """Statements without their lines; a partner viewer sees only its own."""
    label = parse_period(period, policy.period_length).label if period else ""

    def work(connection: Connection) -> Page[StatementView]:
        repository = SettlementRepository(connection)
        period_id = None
        if label:
            row = repository.period(label)
            if row is None:
                return Page([], "")
            period_id = row.id
        partner_id = viewer_partner_id
        if partner_code:
            found = repository.partner_id(partner_code)
            if found is None or (viewer_partner_id is not None and found != viewer_partner_id):
                return Page([], "")
            partner_id = found

        def fetch(after: int, limit: int) -> list[StatementRow]:
            return repository.statements(period_id=period_id, partner_id=partner_id, after_id=after, limit=limit)

        page = paginate(page_size, page_token, fetch, lambda row: row.id)
        return Page([statement_view(row, []) for row in page.items], page.next_page_token)

    return uow.run(work)


def get_statement(uow: UnitOfWork, statement_id: str, *, viewer_partner_id: int | None = None) -> StatementView:
    """A statement with its lines and payments. Another partner's statement is NOT_FOUND."""

    def work(connection: Connection) -> StatementView:
        return _load_statement(SettlementRepository(connection), statement_id, viewer_partner_id)

    return uow.run(work)


def _load_statement(
    repository: SettlementRepository, statement_id: str, viewer_partner_id: int | None
) -> StatementView:
    rows = repository.statements(statement_id=statement_id)
    if not rows or (viewer_partner_id is not None and rows[0].partner_id != viewer_partner_id):
        raise StatementNotFound(f"no statement {statement_id}", statement_id=statement_id)
    row = rows[0]
    return statement_view(row, repository.lines_of(row.id), repository.payments_of(row.id))


def statement_view(row: StatementRow, lines: list[LineRow], payments: list[PaymentView] | None = None) -> StatementView:
    paid = row.inbound_minor if row.net_minor < 0 else row.outbound_minor
    return StatementView(
        statement_id=row.statement_id, period=row.period_label, period_starts_at=row.period_starts_at,
        period_ends_at=row.period_ends_at, partner_id=row.partner_code, partner_name=row.partner_name,
        currency=row.currency, opening_position_minor=row.opening_position_minor, net_minor=row.net_minor,
        closing_position_minor=row.closing_position_minor, net_exact=row.net_exact, due_date=row.due_date,
        item_count=row.item_count, items_sha256=row.items_sha256, csv_sha256=row.csv_sha256,
        closed_at=row.closed_at, paid_minor=paid,
        lines=[LineView(line.line_number, LineType(line.line_type), line.prior_period, line.original_reference,
                        line.points, line.unit_price, line.amount_exact, line.amount_minor, line.item_count)
               for line in lines],
        payments=payments or [],
    )  # fmt: skip


def export_statement(
    uow: UnitOfWork, statement_id: str, export_format: str, *, viewer_partner_id: int | None = None
) -> Export:
    """The statement as csv (canonical: its SHA-256 is the stored one), json or pdf."""
    view = get_statement(uow, statement_id, viewer_partner_id=viewer_partner_id)
    stem = "statement-" + statement_id.replace("/", "-")
    if export_format == "csv":
        return Export(f"{stem}.csv", "text/csv; charset=utf-8", documents.statement_csv(view))
    if export_format == "json":
        if viewer_partner_id is not None:  # a partner does not learn which of our staff recorded a payment
            view = replace(view, payments=[replace(payment, recorded_by="") for payment in view.payments])
        return Export(f"{stem}.json", "application/json", documents.to_json(view))
    if export_format == "pdf":
        from settlement.pdf import statement_pdf

        return Export(f"{stem}.pdf", "application/pdf", statement_pdf(view))
    raise UnsupportedExportFormat("format must be csv, json or pdf", format=export_format)


def cross_brand_matrix(uow: UnitOfWork, policy: SettlementPolicy, label: str) -> MatrixView:
    """Issuer x redeeming partner for a closed period, in points and in what the points cost their issuer."""
    period = parse_period(label, policy.period_length)

    def work(connection: Connection) -> MatrixView:
        repository = SettlementRepository(connection)
        row = _closed(repository, period.label)
        codes = repository.partner_codes()
        cells = [
            MatrixCellView(currency, codes[issuer][0] if issuer is not None else OPERATOR, codes[redeemer][0],
                           points, exact, minor)
            for currency, issuer, redeemer, points, exact, minor in repository.matrix_of(row.id)
        ]  # fmt: skip
        return MatrixView(period.label, cells)

    return uow.run(work)


def export_matrix(uow: UnitOfWork, policy: SettlementPolicy, label: str, export_format: str) -> Export:
    return matrix_export(cross_brand_matrix(uow, policy, label), export_format)


def matrix_export(view: MatrixView, export_format: str) -> Export:
    """A matrix already read, as a csv or json file."""
    if export_format == "csv":
        return Export(f"matrix-{view.period}.csv", "text/csv; charset=utf-8", documents.matrix_csv(view))
    if export_format == "json":
        return Export(f"matrix-{view.period}.json", "application/json", documents.to_json(view))
    raise UnsupportedExportFormat("the matrix exports as csv or json", format=export_format)


# Payments
def record_payment(
    uow: UnitOfWork, request: RequestKey, *, statement_id: str, amount_minor: int, value_date: date,
    bank_reference: str, recorded_by: str,
) -> Outcome[PaymentView]:  # fmt: skip
    """Records money received from or paid to a partner for one statement; never more than is due.

    The direction follows the statement's net. When the last statement of a period is paid in full,
    the period becomes PAID: its clearing position is zero.
    """
    if amount_minor <= 0:
        raise InvalidPayment("amount must be positive, in minor units", field="amount_minor")
    if not bank_reference.strip() or len(bank_reference) > 140:
        raise InvalidPayment("bank_reference is required, at most 140 characters", field="bank_reference")

    def work(connection: Connection) -> PaymentView:
        repository = SettlementRepository(connection)
        repository.lock_settlement()  # a close reads positions and payments as of one moment
        found = repository.statements(statement_id=statement_id)
        if not found:
            raise StatementNotFound(f"no statement {statement_id}", statement_id=statement_id)
        period = repository.period(found[0].period_label)
        assert period is not None
        view = statement_view(repository.statements(statement_id=statement_id)[0], [])
        if view.payment_direction == "NONE":
            raise NothingToPay(f"statement {statement_id} nets to zero", statement_id=statement_id)
        if amount_minor > view.outstanding_minor:
            raise PaymentExceedsOutstanding(
                f"only {documents.format_minor(view.outstanding_minor, view.currency)} {view.currency} is outstanding",
                outstanding_minor=view.outstanding_minor,
            )
        now = uow.clock.now()
        payment = PaymentView(
            payment_id=new_id(), statement_id=statement_id, direction=view.payment_direction,
            amount_minor=amount_minor, value_date=value_date, bank_reference=bank_reference.strip(),
            recorded_at=now, recorded_by=recorded_by,
        )  # fmt: skip
        repository.insert_payment(
            payment_id=payment.payment_id, statement_id=found[0].id, direction=payment.direction,
            amount_minor=amount_minor, value_date=value_date, bank_reference=payment.bank_reference,
            recorded_at=now, recorded_by=recorded_by,
        )  # fmt: skip
        rows = repository.statements(period_id=period.id)
        if all(statement_view(row, []).outstanding_minor == 0 for row in rows):
            repository.mark_paid(period.id, now)
        return payment

    command = {"statement_id": statement_id, "amount_minor": amount_minor, "value_date": value_date,
               "bank_reference": bank_reference}  # fmt: skip
    return run_once(uow, request, "RecordPayment", command, PaymentView, work)


def _closed(repository: SettlementRepository, label: str) -> PeriodRow:
    row = repository.period(label)
    if row is None:
        raise PeriodNotClosed(f"period {label} is not closed", period=label)
    return row


def _period_view(repository: SettlementRepository, row: PeriodRow) -> PeriodView:
    return PeriodView(
        period=row.label, length=row.length, starts_at=row.starts_at, ends_at=row.ends_at, status=row.status,
        closed_at=row.closed_at, closed_by=row.closed_by, transaction_count=row.transaction_count,
        statement_count=len(repository.statements(period_id=row.id)), paid_at=row.paid_at,
        margins=[MarginView(*margin) for margin in repository.margins_of(row.id)],
    )  # fmt: skip


def _no_progress(stage: str, done: int, total: int) -> None:
    return None
