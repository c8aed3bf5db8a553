"""SettlementService: finance (operator `finance` role) closes periods and pays; partners read their statements."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import grpc
from loyalty.v1 import settlement_service_pb2 as pb
from loyalty.v1 import settlement_service_pb2_grpc

from auth.principal import Principal
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from server import metrics
from server import settlement_convert as convert
from server.interceptors import current_principal
from settlement import checks, liability, services
from settlement.services import ClosedPeriod, Progress, SettlementPolicy

FINANCE_ROLE = "finance"


def _finance() -> Principal:
    principal = current_principal()
    principal.require_role(FINANCE_ROLE)
    return principal


def _viewer() -> int | None:
    """The partner a statement reader is limited to; None for finance, who sees every statement."""
    principal = current_principal()
    if principal.partner_id is None:
        principal.require_role(FINANCE_ROLE)
    return principal.partner_id


class SettlementServicer(settlement_service_pb2_grpc.SettlementServiceServicer):
    def __init__(self, uow: UnitOfWork, policy: SettlementPolicy) -> None:
        self.uow = uow
        self.policy = policy

    def ClosePeriod(
        self, request: pb.ClosePeriodRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ClosePeriodResponse]:
        closed_by = _finance().subject

        def close(progress: Progress) -> ClosedPeriod:
            return services.close_period(self.uow, self.policy, request.period, closed_by=closed_by, progress=progress)

        for step in _with_progress(close):
            if isinstance(step, ClosedPeriod):
                yield pb.ClosePeriodResponse(
                    settlement_period=convert.settlement_period(step.period), idempotent_replay=not step.newly_closed
                )
            else:
                yield pb.ClosePeriodResponse(progress=step)

    def GetSettlementPeriod(
        self, request: pb.GetSettlementPeriodRequest, context: grpc.ServicerContext
    ) -> pb.GetSettlementPeriodResponse:
        _finance()
        view = services.get_period(self.uow, self.policy, request.period)
        return pb.GetSettlementPeriodResponse(settlement_period=convert.settlement_period(view))

    def ListSettlementPeriods(
        self, request: pb.ListSettlementPeriodsRequest, context: grpc.ServicerContext
    ) -> pb.ListSettlementPeriodsResponse:
        _finance()
        page = services.list_periods(self.uow, page_size=request.page_size, page_token=request.page_token)
        return pb.ListSettlementPeriodsResponse(
            settlement_periods=[convert.settlement_period(item) for item in page.items],
            next_page_token=page.next_page_token,
        )

    def ListStatements(
        self, request: pb.ListStatementsRequest, context: grpc.ServicerContext
    ) -> pb.ListStatementsResponse:
        viewer = _viewer()
        page = services.list_statements(
            self.uow, self.policy, period=request.period, partner_code=request.partner_id,
            viewer_partner_id=viewer, page_size=request.page_size, page_token=request.page_token,
        )  # fmt: skip
        for_partner = viewer is not None
        return pb.ListStatementsResponse(
            statements=[convert.statement(item, for_partner=for_partner) for item in page.items],
            next_page_token=page.next_page_token,
        )

    def GetStatement(self, request: pb.GetStatementRequest, context: grpc.ServicerContext) -> pb.GetStatementResponse:
        viewer = _viewer()
        view = services.get_statement(self.uow, request.statement_id, viewer_partner_id=viewer)
        return pb.GetStatementResponse(statement=convert.statement(view, for_partner=viewer is not None))

    def ExportStatement(
        self, request: pb.ExportStatementRequest, context: grpc.ServicerContext
    ) -> pb.ExportStatementResponse:
        viewer = _viewer()
        export = services.export_statement(
            self.uow, request.statement_id, convert.statement_format(request.format), viewer_partner_id=viewer
        )
        return convert.export_statement_response(export)

    def GetCrossBrandMatrix(
        self, request: pb.GetCrossBrandMatrixRequest, context: grpc.ServicerContext
    ) -> pb.GetCrossBrandMatrixResponse:
        _finance()
        export_format = convert.matrix_format(request.format)
        view = services.cross_brand_matrix(self.uow, self.policy, request.period)
        response = pb.GetCrossBrandMatrixResponse(cells=[convert.matrix_cell(cell) for cell in view.cells])
        if export_format is not None:
            export = services.matrix_export(view, export_format)
            response.filename, response.content = export.filename, export.content
        return response

    def RecordPayment(
        self, request: pb.RecordPaymentRequest, context: grpc.ServicerContext
    ) -> pb.RecordPaymentResponse:
        principal = _finance()
        outcome = services.record_payment(
            self.uow, RequestKey(principal.idempotency_scope, request.request_id),
            statement_id=request.statement_id, amount_minor=request.amount_minor,
            value_date=convert.value_date(request.value_date), bank_reference=request.bank_reference,
            recorded_by=principal.subject,
        )  # fmt: skip
        statement = services.get_statement(self.uow, request.statement_id)
        period = services.get_period(self.uow, self.policy, statement.period)
        return pb.RecordPaymentResponse(
            payment=convert.payment(outcome.result), statement=convert.statement(statement),
            settlement_period=convert.settlement_period(period), idempotent_replay=outcome.is_replay,
        )  # fmt: skip

    def ReconcilePeriod(
        self, request: pb.ReconcilePeriodRequest, context: grpc.ServicerContext
    ) -> pb.ReconcilePeriodResponse:
        _finance()
        reconciliation = checks.reconcile(self.uow, self.policy, request.period)
        for check in reconciliation.checks:
            if not check.passed:  # an alert fires on any of these
                metrics.RECONCILIATION_FAILURES_TOTAL.labels(check=check.name).inc()
        return convert.reconciliation(reconciliation)

    def GetLiabilityReport(
        self, request: pb.GetLiabilityReportRequest, context: grpc.ServicerContext
    ) -> pb.GetLiabilityReportResponse:
        _finance()
        return convert.liability_report(liability.liability_report(self.uow, self.policy, request.period))


_Step = pb.CloseProgress | ClosedPeriod | BaseException


def _with_progress(work: Callable[[Progress], ClosedPeriod]) -> Iterator[pb.CloseProgress | ClosedPeriod]:
    """Runs ``work`` in a thread of its own and yields its progress as it happens, then its result.

    If the client goes away the stream stops being read, but the work runs to its end: a close is one
    transaction and idempotent, so finishing it is safe and the next call finds the period closed.
    """
    steps: queue.SimpleQueue[_Step] = queue.SimpleQueue()  # unbounded: the worker never blocks on it

    def report(stage: str, completed: int, total: int) -> None:
        steps.put(pb.CloseProgress(stage=stage, completed=completed, total=total))

    def run() -> None:
        try:
            steps.put(work(report))
        except BaseException as error:  # handed to the RPC thread, whose interceptor maps it to a status
            steps.put(error)

    threading.Thread(target=run, name="settlement-close").start()
    while True:
        step = steps.get()
        if isinstance(step, BaseException):
            raise step
        yield step
        if isinstance(step, ClosedPeriod):
            return
