"""Settlement over a real server: the DESIGN.md worked example closed over gRPC, access rules and payments.

A close reads the whole ledger, so each test runs a server of its own on a database of its own, with
a clock it moves: the purchases happen in March 2026 and the close after the month has ended.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from loyalty.v1 import settlement_service_pb2 as settlement_pb

from common.clock import ManualClock
from sdk.client import CoalitionClient, Credentials
from sdk.tokens import generate_key_pair
from server.app import Application, RunningServer, create_server
from tests.e2e.conftest import DEFAULT_TERMS, OPERATOR_KEY_ID, OperatorKey, Partner, reason_of, server_settings
from tests.factories import phone
from tests.invariants import assert_invariants

PERIOD = "2026-03"
AFTER_MARCH = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
# DESIGN.md section 6: A and B are billed on issuance, C on redemption.
CONTRACTS = {
    "partner-a": ("0.012", "0.010", admin_pb.BILLING_MODE_ON_ISSUANCE),
    "partner-b": ("0.011", "0.010", admin_pb.BILLING_MODE_ON_ISSUANCE),
    "partner-c": ("0.012", "0.009", admin_pb.BILLING_MODE_ON_REDEMPTION),
}
A, B, C = (f"{PERIOD}/{partner_id}/EUR" for partner_id in CONTRACTS)


@dataclass
class Network:
    """A server of the test's own, the clock it runs on, and the clients that call it."""

    server: RunningServer
    clock: ManualClock
    operator_key: OperatorKey
    partners: dict[str, Partner] = field(default_factory=dict)
    clients: list[CoalitionClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def staff(self, *roles: str) -> CoalitionClient:
        credentials = Credentials.operator("fin-tester", OPERATOR_KEY_ID, self.operator_key.private_key, roles)
        return self._client(credentials)

    def _client(self, credentials: Credentials) -> CoalitionClient:
        client = CoalitionClient(self.target, credentials, clock=self.clock)
        self.clients.append(client)
        return client

    def onboard(self, partner_id: str, issuance_price: str, reimbursement_rate: str, billing: int) -> Partner:
        admin = self.staff("admin").partner_admin
        admin.CreatePartner(
            admin_pb.CreatePartnerRequest(
                partner_id=partner_id, display_name=partner_id.title(), kind=admin_pb.PARTNER_KIND_ONLINE_SHOP
            )
        )
        private_key, public_pem = generate_key_pair("ES256")
        key_id = f"{partner_id}-k1"
        admin.RegisterPartnerKey(
            admin_pb.RegisterPartnerKeyRequest(partner_id=partner_id, key_id=key_id, public_key_pem=public_pem)
        )
        terms = admin_pb.ContractTerms()
        terms.CopyFrom(DEFAULT_TERMS)
        terms.issuance_price, terms.reimbursement_rate, terms.billing = issuance_price, reimbursement_rate, billing
        admin.CreateContractVersion(admin_pb.CreateContractVersionRequest(partner_id=partner_id, terms=terms))
        partner = Partner(partner_id, key_id, private_key, self._client(Credentials(partner_id, key_id, private_key)))
        self.partners[partner_id] = partner
        return partner


@pytest.fixture
def network(isolated_database_url: str, operator_key: OperatorKey) -> Iterator[Network]:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    running = create_server(Application.build(server_settings(isolated_database_url, operator_key), clock))
    running.start()
    wait_until_serving(running)
    network = Network(running, clock, operator_key)
    yield network
    for client in network.clients:
        client.close()
    running.stop(0)


def wait_until_serving(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "server never became SERVING"
            time.sleep(0.05)


def earn(partner: Partner, member: pb.MemberIdentifier, points: int) -> None:
    # The default contract earns 1 point per 1.00 EUR.
    basket = pb.Basket(currency_code="EUR", total_minor=points * 100)
    request = pb.EarnPointsRequest(
        member=member, receipt_id=uuid.uuid4().hex[:8], enroll_if_unknown=True, basket=basket
    )
    assert partner.client.checkout.EarnPoints(request).points_earned == points


def redeem(partner: Partner, member: pb.MemberIdentifier, points: int) -> None:
    response = partner.client.checkout.RedeemPoints(
        pb.RedeemPointsRequest(member=member, points=points, currency_code="EUR", receipt_id=uuid.uuid4().hex[:8])
    )
    assert response.points_redeemed == points


def worked_example(network: Network) -> None:
    """DESIGN.md section 6 through the checkout API: 150,000 points issued, 120,000 redeemed.

    Separate members make first-to-expire consumption spend exactly 6,000 points of C's lots.
    """
    a, b, c = (network.onboard(partner_id, *contract) for partner_id, contract in CONTRACTS.items())
    network.clock.advance(timedelta(days=1))
    m1, m2, m3 = (pb.MemberIdentifier(phone_number=phone().value) for _ in range(3))
    earn(a, m1, 100_000)
    earn(b, m2, 40_000)
    earn(c, m3, 10_000)
    network.clock.advance(timedelta(days=1))
    redeem(a, m1, 20_000)
    redeem(b, m1, 60_000)
    redeem(b, m2, 10_000)
    redeem(c, m2, 24_000)
    redeem(c, m3, 6_000)


def close(client: CoalitionClient) -> list[settlement_pb.ClosePeriodResponse]:
    return list(client.settlement.ClosePeriod(settlement_pb.ClosePeriodRequest(period=PERIOD), timeout=60))


def statement(client: CoalitionClient, statement_id: str) -> settlement_pb.Statement:
    request = settlement_pb.GetStatementRequest(statement_id=statement_id)
    found: settlement_pb.Statement = client.settlement.GetStatement(request).statement
    return found


def lines_of(found: settlement_pb.Statement) -> list[tuple[str, int, str, int]]:
    return [
        (settlement_pb.StatementLineType.Name(line.line_type).removeprefix("STATEMENT_LINE_TYPE_"), line.points,
         line.unit_price, line.amount_minor)
        for line in found.lines
    ]  # fmt: skip


def test_the_worked_example_closes_to_the_figures_of_the_design(network: Network) -> None:
    worked_example(network)
    finance = network.staff("finance")
    network.clock.set(AFTER_MARCH)

    *progress, last = close(finance)
    assert progress and all(message.HasField("progress") for message in progress)
    assert not any(message.HasField("settlement_period") for message in progress)
    assert progress[-1].progress == settlement_pb.CloseProgress(stage="closed", completed=3, total=3)
    assert not last.HasField("progress") and not last.idempotent_replay
    closed = last.settlement_period
    assert (closed.period, closed.state, closed.statement_count, closed.closed_by) == (
        PERIOD, settlement_pb.PERIOD_STATE_CLOSED, 3, "fin-tester",
    )  # fmt: skip
    assert closed.start_time.ToDatetime(UTC) == datetime(2026, 3, 1, tzinfo=UTC)
    assert closed.end_time.ToDatetime(UTC) == datetime(2026, 4, 1, tzinfo=UTC)
    assert closed.close_time.ToDatetime(UTC) == AFTER_MARCH and not closed.HasField("paid_time")
    assert closed.transaction_count == 8  # three earns and five redemptions
    (margin,) = closed.operator_margins
    assert (margin.currency_code, margin.margin_minor, margin.margin_exact) == ("EUR", 54_200, "542")

    listed = finance.settlement.ListStatements(settlement_pb.ListStatementsRequest(period=PERIOD)).statements
    assert [(item.statement_id, item.net_minor, len(item.lines)) for item in listed] == [
        (A, -100_000, 0), (B, 26_000, 0), (C, 19_800, 0),
    ]  # fmt: skip
    assert sum(item.net_minor for item in listed) + margin.margin_minor == 0

    a, b, c = (statement(finance, statement_id) for statement_id in (A, B, C))
    assert lines_of(a) == [("ISSUANCE", 100_000, "0.012", -120_000), ("REDEMPTION", 20_000, "0.010", 20_000)]
    assert lines_of(b) == [("ISSUANCE", 40_000, "0.011", -44_000), ("REDEMPTION", 70_000, "0.010", 70_000)]
    assert lines_of(c) == [
        ("ISSUANCE", 10_000, "0", 0), ("CONSUMPTION", 6_000, "0.012", -7_200), ("REDEMPTION", 30_000, "0.009", 27_000),
    ]  # fmt: skip
    assert (a.net_exact, a.payment_direction, a.outstanding_minor, a.paid_minor) == (
        "-1000", settlement_pb.PAYMENT_DIRECTION_INBOUND, 100_000, 0,
    )  # fmt: skip
    assert (b.payment_direction, b.outstanding_minor) == (settlement_pb.PAYMENT_DIRECTION_OUTBOUND, 26_000)
    assert (c.payment_direction, c.outstanding_minor) == (settlement_pb.PAYMENT_DIRECTION_OUTBOUND, 19_800)
    assert (a.partner_id, a.partner_display_name, a.currency_code, a.due_date) == (
        "partner-a", "Partner-A", "EUR", "2026-04-15",
    )  # fmt: skip
    assert (a.opening_position_minor, a.closing_position_minor, a.item_count) == (0, -100_000, 2)

    matrix = finance.settlement.GetCrossBrandMatrix(
        settlement_pb.GetCrossBrandMatrixRequest(period=PERIOD, format=settlement_pb.EXPORT_FORMAT_CSV)
    )
    assert [(cell.issuer_partner_id, cell.redeemer_partner_id, cell.points, cell.issuer_value_minor)
            for cell in matrix.cells] == [
        ("partner-a", "partner-a", 20_000, 24_000), ("partner-a", "partner-b", 60_000, 72_000),
        ("partner-b", "partner-b", 10_000, 11_000), ("partner-b", "partner-c", 24_000, 26_400),
        ("partner-c", "partner-c", 6_000, 7_200),
    ]  # fmt: skip
    assert matrix.filename == f"matrix-{PERIOD}.csv"
    assert matrix.content.decode().splitlines()[1] == f"{PERIOD},EUR,partner-a,partner-a,20000,240.00"

    exported = finance.settlement.ExportStatement(
        settlement_pb.ExportStatementRequest(statement_id=A, format=settlement_pb.EXPORT_FORMAT_CSV)
    )
    assert exported.content_sha256 == hashlib.sha256(exported.content).hexdigest() == a.csv_sha256
    assert exported.filename == f"statement-{PERIOD}-partner-a-EUR.csv"
    assert exported.content_type == "text/csv; charset=utf-8"
    as_json = finance.settlement.ExportStatement(
        settlement_pb.ExportStatementRequest(statement_id=C, format=settlement_pb.EXPORT_FORMAT_JSON)
    )
    figures = json.loads(as_json.content)
    assert (figures["net_minor"], figures["paid_minor"], figures["outstanding_minor"]) == (19_800, 0, 19_800)
    as_pdf = finance.settlement.ExportStatement(
        settlement_pb.ExportStatementRequest(statement_id=B, format=settlement_pb.EXPORT_FORMAT_PDF)
    )
    assert (as_pdf.content_type, as_pdf.content[:5]) == ("application/pdf", b"%PDF-")
    no_format = settlement_pb.ExportStatementRequest(statement_id=B)
    missing = (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD")
    assert reason_of(lambda: finance.settlement.ExportStatement(no_format)) == missing

    reconciliation = finance.settlement.ReconcilePeriod(settlement_pb.ReconcilePeriodRequest(period=PERIOD))
    assert reconciliation.passed, [check for check in reconciliation.checks if not check.passed]
    assert "nets_and_margin_sum_to_zero" in {check.name for check in reconciliation.checks}
    liability = finance.settlement.GetLiabilityReport(settlement_pb.GetLiabilityReportRequest(period=PERIOD))
    assert liability.as_of_time.ToDatetime(UTC) == datetime(2026, 4, 1, tzinfo=UTC)
    assert [(row.issuer_partner_id, row.issued_points, row.redeemed_points, row.closing_points)
            for row in liability.rows] == [
        ("partner-a", 100_000, 80_000, 20_000), ("partner-b", 40_000, 34_000, 6_000),
        ("partner-c", 10_000, 6_000, 4_000),
    ]  # fmt: skip

    (again,) = close(finance)
    assert again.idempotent_replay and again.settlement_period == closed
    relisted = finance.settlement.ListStatements(settlement_pb.ListStatementsRequest(period=PERIOD)).statements
    assert list(relisted) == list(listed)
    periods = finance.settlement.ListSettlementPeriods(settlement_pb.ListSettlementPeriodsRequest())
    assert list(periods.settlement_periods) == [closed]
    assert_invariants(network.server.app.engine)


def test_a_partner_sees_only_its_own_statements_and_finance_needs_its_role(network: Network) -> None:
    worked_example(network)
    network.clock.set(AFTER_MARCH)
    close(network.staff("finance"))
    partner_a = network.partners["partner-a"].client

    own = partner_a.settlement.ListStatements(settlement_pb.ListStatementsRequest()).statements
    assert [item.statement_id for item in own] == [A]
    others = settlement_pb.ListStatementsRequest(partner_id="partner-b")
    assert not partner_a.settlement.ListStatements(others).statements
    assert statement(partner_a, A).net_minor == -100_000
    exported = partner_a.settlement.ExportStatement(
        settlement_pb.ExportStatementRequest(statement_id=A, format=settlement_pb.EXPORT_FORMAT_CSV)
    )
    assert exported.content_sha256 == statement(partner_a, A).csv_sha256

    not_found = (grpc.StatusCode.NOT_FOUND, "STATEMENT_NOT_FOUND")
    assert reason_of(lambda: statement(partner_a, B)) == not_found
    assert reason_of(lambda: partner_a.settlement.ExportStatement(
        settlement_pb.ExportStatementRequest(statement_id=B, format=settlement_pb.EXPORT_FORMAT_CSV)
    )) == not_found  # fmt: skip

    missing_role = (grpc.StatusCode.PERMISSION_DENIED, "MISSING_ROLE")
    payment = settlement_pb.RecordPaymentRequest(
        statement_id=A, amount_minor=100, value_date="2026-04-10", bank_reference="X"
    )
    for client in (partner_a, network.staff("admin", "support")):
        assert reason_of(lambda client=client: close(client)) == missing_role
        settlement = client.settlement
        assert reason_of(lambda settlement=settlement: settlement.RecordPayment(payment)) == missing_role
        for call, request in [
            (settlement.GetCrossBrandMatrix, settlement_pb.GetCrossBrandMatrixRequest(period=PERIOD)),
            (settlement.GetSettlementPeriod, settlement_pb.GetSettlementPeriodRequest(period=PERIOD)),
            (settlement.ReconcilePeriod, settlement_pb.ReconcilePeriodRequest(period=PERIOD)),
            (settlement.GetLiabilityReport, settlement_pb.GetLiabilityReportRequest(period=PERIOD)),
        ]:
            assert reason_of(lambda call=call, request=request: call(request)) == missing_role
    staff = network.staff("admin", "support").settlement
    assert reason_of(lambda: staff.ListStatements(settlement_pb.ListStatementsRequest())) == missing_role
    assert reason_of(lambda: staff.GetStatement(settlement_pb.GetStatementRequest(statement_id=A))) == missing_role


def test_payments_settle_the_period_until_it_is_paid(network: Network) -> None:
    worked_example(network)
    network.clock.set(AFTER_MARCH)
    finance = network.staff("finance")
    close(finance)

    def pay(
        statement_id: str, amount_minor: int, request_id: str = "", value_date: str = "2026-04-10"
    ) -> settlement_pb.RecordPaymentResponse:
        request = settlement_pb.RecordPaymentRequest(
            request_id=request_id, statement_id=statement_id, amount_minor=amount_minor, value_date=value_date,
            bank_reference=f"BANK-{statement_id}",
        )  # fmt: skip
        response: settlement_pb.RecordPaymentResponse = finance.settlement.RecordPayment(request)
        return response

    first = pay(A, 60_000, request_id="pay-a-1")
    assert not first.idempotent_replay
    assert (first.payment.direction, first.payment.amount_minor, first.payment.value_date) == (
        settlement_pb.PAYMENT_DIRECTION_INBOUND, 60_000, "2026-04-10",
    )  # fmt: skip
    assert (first.payment.recorded_by, first.payment.record_time.ToDatetime(UTC)) == ("fin-tester", AFTER_MARCH)
    assert (first.statement.paid_minor, first.statement.outstanding_minor) == (60_000, 40_000)
    assert first.settlement_period.state == settlement_pb.PERIOD_STATE_CLOSED
    retried = pay(A, 60_000, request_id="pay-a-1")
    assert retried.idempotent_replay and retried.payment == first.payment
    assert retried.statement.outstanding_minor == 40_000

    assert reason_of(lambda: pay(A, 40_001)) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_EXCEEDS_OUTSTANDING")
    bad_date = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYMENT")
    assert reason_of(lambda: pay(A, 1, value_date="10/04/2026")) == bad_date
    assert reason_of(lambda: pay(f"{PERIOD}/nobody/EUR", 1)) == (grpc.StatusCode.NOT_FOUND, "STATEMENT_NOT_FOUND")

    pay(A, 40_000)
    pay(B, 26_000)
    last = pay(C, 19_800)
    assert last.statement.outstanding_minor == 0
    assert last.settlement_period.state == settlement_pb.PERIOD_STATE_PAID
    assert last.settlement_period.paid_time.ToDatetime(UTC) == AFTER_MARCH
    paid = statement(finance, A)
    assert [(item.amount_minor, item.bank_reference) for item in paid.payments] == [
        (60_000, f"BANK-{A}"), (40_000, f"BANK-{A}"),
    ]  # fmt: skip
    assert {item.recorded_by for item in paid.payments} == {"fin-tester"}
    # The partner sees its payments, but not which of the operator's staff recorded them.
    seen_by_partner = statement(network.partners["partner-a"].client, A)
    assert [(item.amount_minor, item.bank_reference, item.recorded_by) for item in seen_by_partner.payments] == [
        (60_000, f"BANK-{A}", ""), (40_000, f"BANK-{A}", ""),
    ]  # fmt: skip
    period = finance.settlement.GetSettlementPeriod(settlement_pb.GetSettlementPeriodRequest(period=PERIOD))
    assert period.settlement_period.state == settlement_pb.PERIOD_STATE_PAID
    assert reason_of(lambda: pay(B, 1)) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_EXCEEDS_OUTSTANDING")
    assert_invariants(network.server.app.engine)


def test_a_period_closes_only_after_it_has_ended(network: Network) -> None:
    worked_example(network)
    finance = network.staff("finance")
    assert reason_of(lambda: close(finance)) == (grpc.StatusCode.FAILED_PRECONDITION, "PERIOD_NOT_ENDED")
    bad_label = settlement_pb.ClosePeriodRequest(period="March")
    assert reason_of(lambda: list(finance.settlement.ClosePeriod(bad_label))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PERIOD",
    )  # fmt: skip
    period = finance.settlement.GetSettlementPeriod(settlement_pb.GetSettlementPeriodRequest(period=PERIOD))
    assert period.settlement_period.state == settlement_pb.PERIOD_STATE_OPEN
    assert not period.settlement_period.HasField("close_time")
    assert not finance.settlement.ListStatements(settlement_pb.ListStatementsRequest()).statements
