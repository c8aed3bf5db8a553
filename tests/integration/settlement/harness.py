"""A partner network on a database of its own, driven through the checkout and settlement service functions."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from checkout.commands import Basket, EarnCommand, EarnResult, RedeemCommand, RedeemResult, ReturnCommand, ReturnResult
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.clock import ManualClock
from common.db import create_engine
from common.idempotency import Outcome, RequestKey
from common.uow import UnitOfWork
from members.identifiers import MemberIdentifier
from partners.rates import Billing
from settlement import services
from settlement.checks import reconcile
from settlement.documents import PaymentView, StatementView
from settlement.netting import LineType
from settlement.services import ClosedPeriod, PeriodView, SettlementPolicy
from tests.factories import create_partner, phone, request_key
from tests.invariants import assert_invariants

SETTINGS = CheckoutSettings(identifier_pepper=b"t")
FINANCE = "finance@tests"
MARCH, APRIL, MAY = "2026-03", "2026-04", "2026-05"


def utc(moment: str) -> datetime:
    """'2026-03-31T23:59:59.5' as an aware UTC datetime."""
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Brand:
    """A partner as the tests name it: its checkout identity and its code on statements."""

    ref: PartnerRef
    code: str


# (line type, prior period, original reference, points, unit price, amount in minor units)
LineFact = tuple[LineType, str, str, int, Decimal, int]


def facts(view: StatementView) -> list[LineFact]:
    """A statement's lines without their numbering (prior-period lines are ordered by random references)."""
    return sorted(
        (line.line_type, line.prior_period, line.original_reference, line.points, line.unit_price, line.amount_minor)
        for line in view.lines
    )


class Network:
    """A front desk (checkout) and a back office (settlement) on one engine, with a clock of their own."""

    def __init__(self, engine: Engine, clock: ManualClock, settings: CheckoutSettings = SETTINGS) -> None:
        self.engine = engine
        self.clock = clock
        self.uow = UnitOfWork(engine, clock)
        self.checkout = CheckoutService(self.uow, settings)
        self.policy = SettlementPolicy()

    def desk(self, when: datetime, settings: CheckoutSettings = SETTINGS) -> Network:
        """Another desk on the same database whose clock reads ``when``: a late or concurrent writer."""
        return Network(self.engine, ManualClock(when), settings)

    # Checkout
    def partner(
        self, billing: Billing = Billing.ON_ISSUANCE, issuance_price: str = "0.012", reimbursement_rate: str = "0.010",
        **terms: Any,
    ) -> Brand:  # fmt: skip
        ref = create_partner(
            self.uow, billing=billing, issuance_price=Decimal(issuance_price),
            reimbursement_rate=Decimal(reimbursement_rate), **terms,
        )  # fmt: skip
        return Brand(ref, ref.idempotency_scope.removeprefix("partner:"))

    def earn(self, brand: Brand, member: MemberIdentifier, points: int, *, receipt: str = "") -> EarnResult:
        """Earns ``points`` at one point per 1.00 EUR of spend."""
        return self.earn_basket(brand, member, Basket("EUR", points * 100), receipt=receipt)

    def earn_basket(self, brand: Brand, member: MemberIdentifier, basket: Basket, *, receipt: str = "") -> EarnResult:
        command = EarnCommand(member, receipt or new_receipt(), basket, enroll_if_unknown=True)
        return self.checkout.earn_points(brand.ref, uuid.uuid4().hex, command).result

    def redeem(self, brand: Brand, member: MemberIdentifier, points: int, *, receipt: str = "") -> RedeemResult:
        command = RedeemCommand(member, points, "EUR", receipt_id=receipt)
        return self.checkout.redeem_points(brand.ref, uuid.uuid4().hex, command).result

    def return_purchase(self, brand: Brand, receipt: str, *, returned_minor: int = 0) -> ReturnResult:
        command = ReturnCommand(receipt, returned_minor=returned_minor, is_full_return=returned_minor == 0)
        return self.checkout.return_purchase(brand.ref, uuid.uuid4().hex, command).result

    # Settlement
    def close(self, label: str) -> ClosedPeriod:
        return services.close_period(self.uow, self.policy, label, closed_by=FINANCE)

    def period(self, label: str) -> PeriodView:
        return services.get_period(self.uow, self.policy, label)

    def closed_periods(self) -> list[PeriodView]:
        return services.list_periods(self.uow, page_size=100, page_token="").items

    def statement(self, label: str, brand: Brand) -> StatementView:
        return services.get_statement(self.uow, f"{label}/{brand.code}/EUR")

    def statements(self, label: str) -> dict[str, StatementView]:
        """The period's statements with their lines, by partner code."""
        listed = services.list_statements(self.uow, self.policy, period=label, page_size=100).items
        return {view.partner_id: services.get_statement(self.uow, view.statement_id) for view in listed}

    def csv(self, statement_id: str) -> bytes:
        return services.export_statement(self.uow, statement_id, "csv").content

    def pay(
        self, statement_id: str, amount_minor: int, *, request: RequestKey | None = None, reference: str = "SEPA-1"
    ) -> Outcome[PaymentView]:
        return services.record_payment(
            self.uow, request or request_key("operator:finance"), statement_id=statement_id,
            amount_minor=amount_minor, value_date=date(2026, 4, 10), bank_reference=reference, recorded_by=FINANCE,
        )  # fmt: skip

    # Raw reads, for what the services do not show
    def rows(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), parameters)]

    def scalar(self, sql: str, **parameters: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(sql), parameters).scalar_one()

    def frozen_rows(self, label: str) -> dict[str, list[tuple[Any, ...]]]:
        """Everything the close of ``label`` wrote, row for row, to show it never changes."""
        period = "(SELECT id FROM settlement_periods WHERE label = :label)"
        statements = f"(SELECT id FROM settlement_statements WHERE period_id = {period})"
        queries = {
            "statements": f"SELECT * FROM settlement_statements WHERE period_id = {period} ORDER BY id",
            "lines": f"SELECT * FROM settlement_statement_lines WHERE statement_id IN {statements} ORDER BY id",
            "assignments": f"SELECT * FROM settlement_assignments WHERE period_id = {period} ORDER BY transaction_id",
            "matrix": f"SELECT * FROM settlement_matrix_cells WHERE period_id = {period} ORDER BY id",
            "margins": f"SELECT * FROM settlement_operator_margins WHERE period_id = {period} ORDER BY currency",
        }
        return {name: self.rows(query, label=label) for name, query in queries.items()}


def new_receipt() -> str:
    return f"R-{uuid.uuid4().hex[:12]}"


def nets_plus_margin(network: Network, label: str) -> dict[str, int]:
    """Per currency, the partner nets plus the operator's margin (DESIGN.md section 9.8: always zero)."""
    totals: dict[str, int] = defaultdict(int)
    for view in network.statements(label).values():
        totals[view.currency] += view.net_minor
    for margin in network.period(label).margins:
        totals[margin.currency] += margin.margin_minor
    return dict(totals)


def position(network: Network, brand: Brand, member: MemberIdentifier) -> tuple[int, int]:
    """(available, debt) as the member's balance shows them."""
    balance = network.checkout.get_balance(brand.ref, member)
    return balance.available_points, balance.debt_points


FIRST_QUARTER = ("2026-01", "2026-02", "2026-03")


def close_first_quarter(network: Network) -> dict[str, tuple[dict[LineType, int], int]]:
    """Closes January to March 2026; per partner code, its points per line type and its net over the three."""
    network.clock.set(utc("2026-04-01T00:00:00"))
    points: dict[str, dict[LineType, int]] = defaultdict(lambda: defaultdict(int))
    nets: dict[str, int] = defaultdict(int)
    for label in FIRST_QUARTER:
        network.close(label)
        for code, view in network.statements(label).items():
            nets[code] += view.net_minor
            for line in view.lines:
                points[code][line.line_type] += line.points
    return {code: (dict(points[code]), nets[code]) for code in nets}


@contextmanager
def own_network(
    database_url: str, start: datetime | None = None, settings: CheckoutSettings = SETTINGS
) -> Iterator[Network]:
    """A network on a database of its own (its clock at ``start``, early March 2026 by default) whose
    books must balance when the block ends."""
    engine = create_engine(database_url, pool_size=10)
    try:
        network = Network(engine, ManualClock(start or utc("2026-03-02T09:00:00")), settings)
        yield network
        assert_books_balance(network)
    finally:
        engine.dispose()


def assert_books_balance(network: Network) -> None:
    """The ledger invariants hold, and every closed period nets to zero and reconciles."""
    assert_invariants(network.engine)
    for period in network.closed_periods():
        assert set(nets_plus_margin(network, period.period).values()) <= {0}, period.period
        reconciliation = reconcile(network.uow, network.policy, period.period)
        failed = [f"{check.name}: {check.detail}" for check in reconciliation.checks if not check.passed]
        assert reconciliation.passed, f"{period.period} does not reconcile: {failed}"


@dataclass(frozen=True)
class WorkedExample:
    """DESIGN.md section 6's worked example, played through checkout in March 2026."""

    a: Brand
    b: Brand
    c: Brand
    transaction_count: int


def play_worked_example(network: Network) -> WorkedExample:
    """A and B billed on issuance, C on redemption; the clock ends on 2026-04-01, March's first free moment."""
    a = network.partner(issuance_price="0.012", reimbursement_rate="0.010")
    b = network.partner(issuance_price="0.011", reimbursement_rate="0.010")
    c = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012", reimbursement_rate="0.009")
    m1, m2, m3 = phone(), phone(), phone()
    network.clock.set(utc("2026-03-05T10:00:00"))
    network.earn(a, m1, 100_000)
    network.earn(b, m2, 40_000)
    network.earn(c, m3, 10_000)
    network.clock.set(utc("2026-03-20T15:00:00"))
    network.redeem(a, m1, 20_000)
    network.redeem(b, m1, 60_000)
    network.redeem(b, m2, 10_000)
    network.redeem(c, m2, 24_000)
    network.redeem(c, m3, 6_000)
    network.clock.set(utc("2026-04-01T00:00:00"))
    return WorkedExample(a, b, c, transaction_count=8)
