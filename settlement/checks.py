"""Reconciliation of a closed period: the proofs finance hands to an auditor, each reported by name.

Every check recomputes from what is stored (statements, lines, margins, matrix, payments) or from
the ledger itself, and says what failed; none trusts the figures the close computed in memory.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Connection

from common.uow import UnitOfWork
from settlement import documents
from settlement.documents import StatementView
from settlement.items import Item, items_of_entry, items_of_movement
from settlement.netting import LineTotal, LineType, statement_figures
from settlement.periods import Period, parse_period
from settlement.repository import PeriodRow, SettlementRepository, StatementRow
from settlement.services import PeriodNotClosed, SettlementPolicy, StatementKey, statement_view

# Checkout transactions are short (a statement timeout bounds them): one recorded this long before the
# close had committed before it, so the close must have itemised it.
COMMIT_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Reconciliation:
    period: str
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def reconcile(uow: UnitOfWork, policy: SettlementPolicy, label: str) -> Reconciliation:
    period = parse_period(label, policy.period_length)

    def work(connection: Connection) -> Reconciliation:
        repository = SettlementRepository(connection)
        row = repository.period(period.label)
        if row is None:
            raise PeriodNotClosed(f"period {period.label} is not closed", period=period.label)
        rows = repository.statements(period_id=row.id)
        views = [statement_view(statement, repository.lines_of(statement.id)) for statement in rows]
        return Reconciliation(
            period.label,
            [
                _nets_and_margin_sum_to_zero(repository, row, views),
                _lines_sum_to_net(views),
                _lines_match_itemised_entries(repository, row, period, rows, views),
                _every_transaction_in_one_period(repository, row),
                _csv_hashes_reproduce(views),
                _matrix_agrees_with_statements(repository, row, views),
                _positions_carry_over(repository, row, rows),
            ],
        )

    return uow.run(work)


def itemise(repository: SettlementRepository, period_id: int, period: Period) -> Iterable[Item]:
    """Every item of a closed period, in the canonical order (entries, then lot movements, by id)."""
    for entry in repository.entry_items(period_id):
        yield from items_of_entry(entry, period)
    for movement in repository.movement_items(period_id):
        yield from items_of_movement(movement, period)


@dataclass
class _Accumulated:
    totals: dict[tuple[LineType, Decimal, str, str], list[int]] = field(default_factory=dict)
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    item_count: int = 0


class StatementBuilder:
    """Sums items into statement lines and hashes each statement's itemised list as items stream by."""

    def __init__(self) -> None:
        self.statements: dict[StatementKey, _Accumulated] = defaultdict(_Accumulated)

    def add_all(self, items: Iterable[Item]) -> None:
        statements = self.statements
        for item in items:
            accumulated = statements[(item.partner_id, item.currency)]
            key = (item.line_type, item.unit_price, item.prior_period, item.original_reference)
            total = accumulated.totals.get(key)
            if total is None:
                accumulated.totals[key] = [item.points, 1]
            else:
                total[0] += item.points
                total[1] += 1
            accumulated.hasher.update(item.canonical().encode())
            accumulated.item_count += 1

    def line_totals(self, key: StatementKey) -> list[LineTotal]:
        accumulated = self.statements.get(key)
        if accumulated is None:
            return []
        return [
            LineTotal(line_type, price, points, count, prior, reference)
            for (line_type, price, prior, reference), (points, count) in accumulated.totals.items()
        ]

    def items_digest(self, key: StatementKey) -> tuple[int, str]:
        accumulated = self.statements.get(key) or _Accumulated()
        return accumulated.item_count, accumulated.hasher.hexdigest()


def _nets_and_margin_sum_to_zero(
    repository: SettlementRepository, period: PeriodRow, views: list[StatementView]
) -> CheckResult:
    nets: dict[str, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for view in views:
        minor, exact = nets[view.currency]
        nets[view.currency] = (minor + view.net_minor, exact + view.net_exact)
    margins = {currency: (minor, exact) for currency, minor, exact in repository.margins_of(period.id)}
    failures = []
    for currency in sorted(set(nets) | set(margins)):
        net_minor, net_exact = nets.get(currency, (0, Decimal(0)))
        margin_minor, margin_exact = margins.get(currency, (0, Decimal(0)))
        if net_minor + margin_minor != 0 or net_exact + margin_exact != 0:
            failures.append(f"{currency}: nets {net_minor} + margin {margin_minor} = {net_minor + margin_minor}")
    summary = ", ".join(f"{currency} margin {minor}" for currency, (minor, _) in sorted(margins.items()))
    return _result("nets_and_margin_sum_to_zero", failures, f"per currency, nets + margin = 0 ({summary})")


def _lines_sum_to_net(views: list[StatementView]) -> CheckResult:
    failures = []
    for view in views:
        if sum(line.amount_minor for line in view.lines) != view.net_minor:
            failures.append(f"{view.statement_id}: lines sum to {sum(line.amount_minor for line in view.lines)}")
        if sum((line.amount_exact for line in view.lines), Decimal(0)) != view.net_exact:
            failures.append(f"{view.statement_id}: exact lines differ from net_exact {view.net_exact}")
        if view.opening_position_minor + view.net_minor != view.closing_position_minor:
            failures.append(f"{view.statement_id}: opening + net != closing")
    return _result("lines_sum_to_net", failures, f"{len(views)} statements: lines = net, opening + net = closing")


def _lines_match_itemised_entries(
    repository: SettlementRepository, period_row: PeriodRow, period: Period, rows: list[StatementRow],
    views: list[StatementView],
) -> CheckResult:  # fmt: skip
    """Recomputes every statement from the ledger entries assigned to the period."""
    builder = StatementBuilder()
    builder.add_all(itemise(repository, period_row.id, period))
    failures = []
    stored_keys = {(row.partner_id, row.currency) for row in rows}
    for key in sorted(set(builder.statements) - stored_keys):
        failures.append(f"items of partner row {key[0]} in {key[1]} have no statement")
    total_items = 0
    for row, view in zip(rows, views, strict=True):
        key = (row.partner_id, row.currency)
        figures = statement_figures(row.currency, builder.line_totals(key))
        recomputed = [
            (line.line_type, line.unit_price, line.points, line.amount_minor, line.prior_period,
             line.original_reference, line.item_count)
            for line in figures.lines
        ]  # fmt: skip
        stored = [
            (line.line_type, line.unit_price, line.points, line.amount_minor, line.prior_period,
             line.original_reference, line.item_count)
            for line in view.lines
        ]  # fmt: skip
        item_count, items_sha256 = builder.items_digest(key)
        total_items += item_count
        if recomputed != stored:
            failures.append(f"{view.statement_id}: stored lines differ from the itemised entries")
        if (item_count, items_sha256) != (view.item_count, view.items_sha256):
            failures.append(f"{view.statement_id}: itemised list hash or count differs")
    return _result("lines_match_itemised_entries", failures, f"{total_items} itemised entries recomputed")


def _every_transaction_in_one_period(repository: SettlementRepository, period: PeriodRow) -> CheckResult:
    failures = []
    outside = repository.assigned_outside(period.id, period.ends_at)
    if outside:
        failures.append(f"{outside} transactions assigned here have a business time after the period")
    missed = repository.unassigned_before(period.ends_at, recorded_before=period.closed_at - COMMIT_WINDOW)
    if missed:
        failures.append(f"{missed} transactions before the period's end, recorded before the close, are unassigned")
    waiting = repository.unassigned_before(period.ends_at)
    detail = (
        f"{period.transaction_count} transactions assigned, each to exactly one period (primary key); "
        f"{waiting} committed after the close wait for the next period"
    )
    return _result("every_transaction_in_one_period", failures, detail)


def _csv_hashes_reproduce(views: list[StatementView]) -> CheckResult:
    failures = [
        view.statement_id
        for view in views
        if hashlib.sha256(documents.statement_csv(view)).hexdigest() != view.csv_sha256
    ]
    return _result("csv_hashes_reproduce", [f"{failed}: CSV hash differs" for failed in failures],
                   f"{len(views)} statements re-rendered")  # fmt: skip


def _matrix_agrees_with_statements(
    repository: SettlementRepository, period: PeriodRow, views: list[StatementView]
) -> CheckResult:
    codes = repository.partner_codes()
    stored = repository.matrix_of(period.id)
    columns: dict[str, int] = defaultdict(int)
    rows: dict[tuple[str, str], int] = defaultdict(int)
    for currency, issuer, redeemer, points, _exact, _minor in stored:
        columns[codes[redeemer][0]] += points
        rows[(currency, codes[issuer][0] if issuer is not None else "operator")] += points
    redeemed: dict[str, int] = defaultdict(int)
    for view in views:
        for line in view.lines:
            if line.line_type is LineType.REDEMPTION:
                redeemed[view.partner_id] += line.points
            elif line.line_type is LineType.REDEMPTION_REFUND:
                redeemed[view.partner_id] -= line.points
    # Points redeemed on credit (booked to member debt) came from no issuer's lots: no matrix cell has them.
    for redeemer, points in repository.debt_funded_redemptions(period.id).items():
        redeemed[codes[redeemer][0]] -= points
    lineage: dict[tuple[str, str], int] = defaultdict(int)
    for matrix_row in repository.matrix_rows(period.id):
        issuer_id = matrix_row.issuer_partner_id
        lineage[(matrix_row.currency, codes[issuer_id][0] if issuer_id is not None else "operator")] += (
            matrix_row.points
        )
    failures = [
        f"column {partner}: matrix {columns.get(partner, 0)} != redeemed {redeemed.get(partner, 0)}"
        for partner in sorted(set(columns) | set(redeemed))
        if columns.get(partner, 0) != redeemed.get(partner, 0)
    ]
    failures += [
        f"row {issuer_code} ({currency}): matrix {rows.get((currency, issuer_code), 0)} != lineage {points}"
        for (currency, issuer_code), points in sorted(lineage.items())
        if rows.get((currency, issuer_code), 0) != points
    ]
    total = sum(columns.values())
    return _result("matrix_agrees_with_statements", failures,
                   f"{len(stored)} cells, {total} points: columns = points redeemed (less member debt), "
                   "rows = lot lineage")  # fmt: skip


def _positions_carry_over(repository: SettlementRepository, period: PeriodRow, rows: list[StatementRow]) -> CheckResult:
    """Each statement opens where the partner's previous one closed, less the payments recorded between
    the two closes (each close records the last payment its positions include)."""
    failures = []
    here = {(row.partner_id, row.currency): row for row in rows}
    previous_statements = repository.latest_statements_before(period.starts_at)
    payments_through = {row.label: row.payments_through_id for row in repository.list_periods(0, 10**9)}
    for (partner_id, currency), previous in previous_statements.items():
        carried = previous.closing_position_minor + repository.payments_between(
            partner_id, currency, payments_through[previous.period_label], period.payments_through_id
        )
        current = here.get((partner_id, currency))
        opening = current.opening_position_minor if current else 0
        if opening != carried:
            failures.append(f"{previous.statement_id}: closes at {carried} after payments, next opens at {opening}")
    for key, row in here.items():
        if row.opening_position_minor and key not in previous_statements:
            failures.append(f"{row.statement_id}: opens at {row.opening_position_minor} with no earlier statement")
    return _result("positions_carry_over", failures, f"{len(rows)} statements open where the previous closed")


def _result(name: str, failures: list[str], detail: str) -> CheckResult:
    if failures:
        return CheckResult(name, False, "; ".join(failures[:20]) + (" ..." if len(failures) > 20 else ""))
    return CheckResult(name, True, detail)
