"""Settlement views to protobuf: exact decimals travel fixed-point, and partners do not see who recorded a payment."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from loyalty.v1 import settlement_service_pb2 as pb

from server import settlement_convert as convert
from settlement.documents import LineView, MatrixCellView, PaymentView, StatementView
from settlement.netting import LineType
from settlement.services import MarginView, PeriodView

CLOSED_AT = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
# Seven leading decimal zeros: str() writes these "1E-7" and "-1E-7", which a client cannot take as amounts.
TINY_PRICE = Decimal("0.0000001")


def tiny_statement() -> StatementView:
    """A statement of 1 point at 0.0000001 EUR: every exact figure on it is tiny."""
    return StatementView(
        statement_id="2026-03/partner-a/EUR", period="2026-03", period_starts_at=datetime(2026, 3, 1, tzinfo=UTC),
        period_ends_at=datetime(2026, 4, 1, tzinfo=UTC), partner_id="partner-a", partner_name="Partner A",
        currency="EUR", opening_position_minor=0, net_minor=0, closing_position_minor=0, net_exact=-TINY_PRICE,
        due_date=date(2026, 4, 15), item_count=1, items_sha256="0" * 64, csv_sha256="1" * 64, closed_at=CLOSED_AT,
        paid_minor=0,
        lines=[LineView(1, LineType.ISSUANCE, "", "", 1, TINY_PRICE, -TINY_PRICE, 0, 1)],
        payments=[PaymentView("pay-1", "2026-03/partner-a/EUR", "INBOUND", 100, date(2026, 4, 10), "BANK-1",
                              CLOSED_AT, "fin-alice")],
    )  # fmt: skip


def test_decimals_are_sent_fixed_point_never_in_exponent_notation() -> None:
    assert str(TINY_PRICE) == "1E-7"  # what the conversion must not send

    message = convert.statement(tiny_statement())

    (line,) = message.lines
    assert (line.unit_price, line.amount_exact, message.net_exact) == ("0.0000001", "-0.0000001", "-0.0000001")


def test_margins_and_matrix_values_are_sent_fixed_point() -> None:
    period = PeriodView(
        period="2026-03", length="MONTH", starts_at=datetime(2026, 3, 1, tzinfo=UTC),
        ends_at=datetime(2026, 4, 1, tzinfo=UTC), status="CLOSED", closed_at=CLOSED_AT,
        margins=[MarginView("EUR", 0, TINY_PRICE), MarginView("JPY", 500, Decimal("5E+2"))],
    )  # fmt: skip
    cell = MatrixCellView("EUR", "partner-a", "partner-b", 1, TINY_PRICE, 0)

    margins = [margin.margin_exact for margin in convert.settlement_period(period).operator_margins]

    assert margins == ["0.0000001", "500"]
    assert convert.matrix_cell(cell).issuer_value_exact == "0.0000001"


def test_a_partner_reading_its_statement_does_not_see_who_recorded_a_payment() -> None:
    view = tiny_statement()

    for_finance = convert.statement(view)
    for_partner = convert.statement(view, for_partner=True)

    assert [payment.recorded_by for payment in for_finance.payments] == ["fin-alice"]
    (payment,) = for_partner.payments
    assert payment.recorded_by == ""
    # Everything else about the payment is the partner's to see.
    assert (payment.payment_id, payment.amount_minor, payment.bank_reference, payment.direction) == (
        "pay-1", 100, "BANK-1", pb.PAYMENT_DIRECTION_INBOUND,
    )  # fmt: skip
    assert payment.record_time.ToDatetime(UTC) == CLOSED_AT
