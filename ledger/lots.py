"""Which lots a spend consumes: available, unexpired, first to expire first, ties oldest first. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LotBalance:
    lot_id: int
    remaining_points: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime

    def is_spendable(self, now: datetime) -> bool:
        return self.remaining_points > 0 and self.available_at <= now < self.expires_at


def consumption_order(lots: list[LotBalance]) -> list[LotBalance]:
    return sorted(lots, key=lambda lot: (lot.expires_at, lot.earned_at, lot.lot_id))


def plan_up_to(lots: list[LotBalance], points: int, now: datetime) -> list[tuple[int, int]]:
    """(lot_id, points) pairs supplying up to ``points`` from spendable lots, in consumption order."""
    plan: list[tuple[int, int]] = []
    needed = points
    for lot in consumption_order([lot for lot in lots if lot.is_spendable(now)]):
        if needed == 0:
            break
        take = min(needed, lot.remaining_points)
        plan.append((lot.lot_id, take))
        needed -= take
    return plan


def plan_consumption(lots: list[LotBalance], points: int, now: datetime) -> list[tuple[int, int]] | None:
    """The pairs that supply exactly ``points``, or None when the spendable lots cannot."""
    plan = plan_up_to(lots, points, now)
    return plan if sum(taken for _, taken in plan) == points else None
