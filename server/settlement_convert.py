"""Conversions for SettlementService messages: settlement views to protobuf. No rules live here."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from loyalty.v1 import settlement_service_pb2 as pb

from server.convert import MissingField, UnknownEnumValue, timestamp
from settlement.checks import Reconciliation
from settlement.documents import Export, LineView, MatrixCellView, PaymentView, StatementView
from settlement.liability import LiabilityReport, LiabilityRow
from settlement.netting import LineType
from settlement.services import InvalidPayment, PeriodView

_STATES = {"OPEN": pb.PERIOD_STATE_OPEN, "CLOSED": pb.PERIOD_STATE_CLOSED, "PAID": pb.PERIOD_STATE_PAID}
_DIRECTIONS = {
    "INBOUND": pb.PAYMENT_DIRECTION_INBOUND,
    "OUTBOUND": pb.PAYMENT_DIRECTION_OUTBOUND,
    "NONE": pb.PAYMENT_DIRECTION_NONE,
}
_LINE_TYPES = {
    LineType.ISSUANCE: pb.STATEMENT_LINE_TYPE_ISSUANCE,
    LineType.ISSUANCE_REVERSAL: pb.STATEMENT_LINE_TYPE_ISSUANCE_REVERSAL,
    LineType.CONSUMPTION: pb.STATEMENT_LINE_TYPE_CONSUMPTION,
    LineType.CONSUMPTION_REVERSAL: pb.STATEMENT_LINE_TYPE_CONSUMPTION_REVERSAL,
    LineType.REDEMPTION: pb.STATEMENT_LINE_TYPE_REDEMPTION,
    LineType.REDEMPTION_REFUND: pb.STATEMENT_LINE_TYPE_REDEMPTION_REFUND,
    LineType.BREAKAGE: pb.STATEMENT_LINE_TYPE_BREAKAGE,
    LineType.ADJUSTMENT: pb.STATEMENT_LINE_TYPE_ADJUSTMENT,
    LineType.ROUNDING: pb.STATEMENT_LINE_TYPE_ROUNDING,
}
_FORMATS: dict[int, str] = {pb.EXPORT_FORMAT_CSV: "csv", pb.EXPORT_FORMAT_JSON: "json", pb.EXPORT_FORMAT_PDF: "pdf"}


def _fixed(value: Decimal) -> str:
    """A decimal as the API sends it: fixed-point ("0.0000001"), never str()'s exponent form ("1E-7")."""
    return format(value, "f")


def statement_format(value: int) -> str:
    if value == pb.EXPORT_FORMAT_UNSPECIFIED:
        raise MissingField("format is required: CSV, JSON or PDF", field="format")
    # proto3 enums are open: a newer client may send a number this server does not know.
    if value not in _FORMATS:
        raise UnknownEnumValue(f"format {value} is not a known value", field="format")
    return _FORMATS[value]


def matrix_format(value: int) -> str | None:
    """None for cells only; the service refuses a format the matrix has no export for (PDF)."""
    return None if value == pb.EXPORT_FORMAT_UNSPECIFIED else statement_format(value)


def value_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidPayment("value_date must be an ISO 8601 date such as 2026-04-15", field="value_date") from None


def settlement_period(view: PeriodView) -> pb.SettlementPeriod:
    message = pb.SettlementPeriod(
        period=view.period, state=_STATES[view.status], start_time=timestamp(view.starts_at),
        end_time=timestamp(view.ends_at), closed_by=view.closed_by, transaction_count=view.transaction_count,
        statement_count=view.statement_count,
        operator_margins=[
            pb.OperatorMargin(currency_code=margin.currency, margin_minor=margin.margin_minor,
                              margin_exact=_fixed(margin.margin_exact))
            for margin in view.margins
        ],
    )  # fmt: skip
    if view.closed_at is not None:
        message.close_time.CopyFrom(timestamp(view.closed_at))
    if view.paid_at is not None:
        message.paid_time.CopyFrom(timestamp(view.paid_at))
    return message


def statement(view: StatementView, *, for_partner: bool = False) -> pb.Statement:
    """The statement; lines and payments are empty for a view read from a list.

    ``for_partner``: the reader is the partner itself, who is not shown which staff member recorded a payment.
    """
    return pb.Statement(
        statement_id=view.statement_id, period=view.period, partner_id=view.partner_id,
        partner_display_name=view.partner_name, currency_code=view.currency,
        opening_position_minor=view.opening_position_minor, net_minor=view.net_minor,
        closing_position_minor=view.closing_position_minor, net_exact=_fixed(view.net_exact),
        due_date=view.due_date.isoformat(), payment_direction=_DIRECTIONS[view.payment_direction],
        paid_minor=view.paid_minor, outstanding_minor=view.outstanding_minor, item_count=view.item_count,
        items_sha256=view.items_sha256, csv_sha256=view.csv_sha256, close_time=timestamp(view.closed_at),
        lines=[line(item) for item in view.lines],
        payments=[payment(item, for_partner=for_partner) for item in view.payments],
    )  # fmt: skip


def line(view: LineView) -> pb.StatementLine:
    return pb.StatementLine(
        line_number=view.line_number, line_type=_LINE_TYPES[view.line_type], description=view.description,
        prior_period=view.prior_period, original_reference=view.original_reference, points=view.points,
        unit_price=_fixed(view.unit_price), amount_exact=_fixed(view.amount_exact), amount_minor=view.amount_minor,
        item_count=view.item_count,
    )  # fmt: skip


def payment(view: PaymentView, *, for_partner: bool = False) -> pb.Payment:
    # Who recorded a payment names one of the operator's staff: internal, so a partner sees it blank.
    recorded_by = "" if for_partner else view.recorded_by
    return pb.Payment(
        payment_id=view.payment_id, statement_id=view.statement_id, direction=_DIRECTIONS[view.direction],
        amount_minor=view.amount_minor, value_date=view.value_date.isoformat(), bank_reference=view.bank_reference,
        record_time=timestamp(view.recorded_at), recorded_by=recorded_by,
    )  # fmt: skip


def export_statement_response(export: Export) -> pb.ExportStatementResponse:
    return pb.ExportStatementResponse(
        filename=export.filename, content_type=export.content_type, content=export.content,
        content_sha256=export.sha256,
    )  # fmt: skip


def matrix_cell(view: MatrixCellView) -> pb.MatrixCell:
    return pb.MatrixCell(
        currency_code=view.currency, issuer_partner_id=view.issuer_partner_id,
        redeemer_partner_id=view.redeemer_partner_id, points=view.points,
        issuer_value_minor=view.issuer_value_minor, issuer_value_exact=_fixed(view.issuer_value_exact),
    )  # fmt: skip


def reconciliation(view: Reconciliation) -> pb.ReconcilePeriodResponse:
    return pb.ReconcilePeriodResponse(
        period=view.period, passed=view.passed,
        checks=[pb.ReconciliationCheck(name=check.name, passed=check.passed, detail=check.detail)
                for check in view.checks],
    )  # fmt: skip


def liability_report(view: LiabilityReport) -> pb.GetLiabilityReportResponse:
    return pb.GetLiabilityReportResponse(
        period=view.period, as_of_time=timestamp(view.as_of), rows=[liability_row(row) for row in view.rows]
    )


def liability_row(row: LiabilityRow) -> pb.LiabilityRow:
    return pb.LiabilityRow(
        issuer_partner_id=row.issuer_partner_id, currency_code=row.currency, opening_points=row.opening_points,
        issued_points=row.issued_points, redeemed_points=row.redeemed_points, expired_points=row.expired_points,
        adjustment_points=row.adjustment_points, closing_points=row.closing_points,
        pending_points=row.pending_points, available_points=row.available_points,
        expiring_within_30_days_points=row.expiring_within_30_days_points,
        expiring_within_60_days_points=row.expiring_within_60_days_points,
        expiring_within_90_days_points=row.expiring_within_90_days_points,
    )  # fmt: skip
