"""The liability report: points outstanding per issuer over a period, and how soon they can go.

closing = opening + issued - redeemed - expired + adjustments, per issuer and currency, from lots
and their lineage by business time. The closing points are split by state at the report's moment:
pending (not yet spendable) or available, and how many expire within 30, 60 and 90 days.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, select

from common.errors import FailedPrecondition
from common.uow import UnitOfWork
from settlement.periods import parse_period
from settlement.repository import lots, movements, partners, transactions
from settlement.services import OPERATOR, SettlementPolicy

EXPIRY_WINDOWS_DAYS = (30, 60, 90)


class PeriodNotStarted(FailedPrecondition):
    reason = "PERIOD_NOT_STARTED"
    is_business_outcome = False


@dataclass(frozen=True)
class LiabilityRow:
    issuer_partner_id: str
    currency: str
    opening_points: int
    issued_points: int
    redeemed_points: int
    expired_points: int
    adjustment_points: int
    closing_points: int
    pending_points: int
    available_points: int
    expiring_within_30_days_points: int
    expiring_within_60_days_points: int
    expiring_within_90_days_points: int


@dataclass(frozen=True)
class LiabilityReport:
    period: str
    as_of: datetime
    rows: list[LiabilityRow]


def liability_report(uow: UnitOfWork, policy: SettlementPolicy, label: str) -> LiabilityReport:
    """For an open or closed period: the closing figures describe its end, or now if it has not ended."""
    period = parse_period(label, policy.period_length)
    now = uow.clock.now()
    if period.starts_at > now:
        raise PeriodNotStarted(f"period {period.label} has not started", period=period.label)
    as_of = min(period.ends_at, now)

    def work(connection: Connection) -> LiabilityReport:
        flows = _flows(connection, period.starts_at, as_of)
        states = _states(connection, as_of)
        codes = dict(connection.execute(select(partners.c.id, partners.c.partner_code)).all())
        rows = []
        for key in sorted(set(flows) | set(states), key=lambda key: (key[1], codes.get(key[0], OPERATOR))):
            issuer, currency = key
            flow = flows.get(key, defaultdict(int))
            state = states.get(key, [0, 0, 0, 0, 0])
            opening = flow["opening"]
            closing = opening + flow["issued"] - flow["redeemed"] - flow["expired"] + flow["adjustments"]
            rows.append(LiabilityRow(
                issuer_partner_id=codes[issuer] if issuer is not None else OPERATOR, currency=currency,
                opening_points=opening, issued_points=flow["issued"], redeemed_points=flow["redeemed"],
                expired_points=flow["expired"], adjustment_points=flow["adjustments"], closing_points=closing,
                pending_points=state[0], available_points=state[1], expiring_within_30_days_points=state[2],
                expiring_within_60_days_points=state[3], expiring_within_90_days_points=state[4],
            ))  # fmt: skip
        return LiabilityReport(period.label, as_of, rows)

    return uow.run(work)


IssuerKey = tuple[int | None, str]
# Transfers between household members (programme/households.py): the lots they create hold points
# moved from other lots of the same issuer.
_TRANSFERS = select(transactions.c.id).where(transactions.c.kind == "TRANSFER")


def _flows(connection: Connection, starts_at: datetime, as_of: datetime) -> dict[IssuerKey, dict[str, int]]:
    flows: dict[IssuerKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    is_before = lots.c.earned_at < starts_at
    # A transfer between members moves points of one issuer from a lot to a new lot: neither the new
    # lot nor the TRANSFERRED movement changes what the issuer owes, so both are left out.
    issued = (
        select(lots.c.issuer_partner_id, lots.c.currency, is_before, func.sum(lots.c.points))
        .where(lots.c.earned_at < as_of, lots.c.source_transaction_id.not_in(_TRANSFERS))
        .group_by(lots.c.issuer_partner_id, lots.c.currency, is_before)
    )
    for issuer, currency, before, points in connection.execute(issued):
        flows[(issuer, currency)]["opening" if before else "issued"] += int(points)
    moved_before = transactions.c.business_time < starts_at
    moved = (
        select(lots.c.issuer_partner_id, lots.c.currency, movements.c.kind, moved_before,
               func.sum(movements.c.points_delta))
        .join(lots, lots.c.id == movements.c.lot_id)
        .join(transactions, transactions.c.id == movements.c.transaction_id)
        .where(transactions.c.business_time < as_of, movements.c.kind != "TRANSFERRED")
        .group_by(lots.c.issuer_partner_id, lots.c.currency, movements.c.kind, moved_before)
    )  # fmt: skip
    for issuer, currency, kind, before, delta in connection.execute(moved):
        flow = flows[(issuer, currency)]
        if before:
            flow["opening"] += int(delta)
        elif kind in ("CONSUMED", "RESTORED"):
            flow["redeemed"] -= int(delta)
        elif kind == "EXPIRED":
            flow["expired"] -= int(delta)
        else:  # REVERSED by returns, DEBT_REPAYMENT of a member's debt and REPAYMENT_RESTORED giving it back
            flow["adjustments"] += int(delta)
    return flows


def _states(connection: Connection, as_of: datetime) -> dict[IssuerKey, list[int]]:
    """[pending, available, expiring within 30, 60, 90 days] of the points outstanding at ``as_of``."""
    moved = (
        select(movements.c.lot_id, func.sum(movements.c.points_delta).label("delta"))
        .join(transactions, transactions.c.id == movements.c.transaction_id)
        .where(transactions.c.business_time < as_of)
        .group_by(movements.c.lot_id)
        .subquery()
    )
    remaining = lots.c.points + func.coalesce(moved.c.delta, 0)
    pending = lots.c.available_at > as_of
    columns: list[Any] = [
        func.sum(case((pending, remaining), else_=0)),
        func.sum(case((pending, 0), else_=remaining)),
        *(
            func.sum(case((lots.c.expires_at <= as_of + timedelta(days=days), remaining), else_=0))
            for days in EXPIRY_WINDOWS_DAYS
        ),
    ]
    query = (
        select(lots.c.issuer_partner_id, lots.c.currency, *columns)
        .outerjoin(moved, moved.c.lot_id == lots.c.id)
        # A transferred lot keeps its source's earning time but exists only from the transfer on.
        .where(
            lots.c.earned_at < as_of,
            lots.c.source_transaction_id.not_in(_TRANSFERS.where(transactions.c.business_time >= as_of)),
        )
        .group_by(lots.c.issuer_partner_id, lots.c.currency)
    )
    return {(row[0], row[1]): [int(value) for value in row[2:]] for row in connection.execute(query)}
