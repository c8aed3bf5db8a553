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


@dataclass(frozen=True)
class MemberLot:
    """A lot and the member it belongs to (its owner; nothing to do with holds)."""

    member_id: int
    lot: LotBalance


def plan_take_back(
    family: list[MemberLot], others: list[LotBalance], member_id: int, points: int, budgets: dict[int, int],
    now: datetime,
) -> list[tuple[int, int, int]]:  # fmt: skip
    """(member_id, lot_id, points) a reversal of ``points`` takes, up to ``points`` in all.

    First the lots the reversed points were credited into (``family``: the earn's own lot, then the
    lots a transfer moved them into), whoever owns them now; then ``member_id``'s ``others``, in
    consumption order. Points that cannot be spent now (pending, or lapsed before the expiry run got
    to them) are taken freely, since no hold can rest on them; spendable points only up to their
    owner's budget (``budgets``: spendable less what open holds reserve), so a reversal never takes
    points an open hold has reserved. What the plan does not cover is the reversed member's to owe.
    """
    left = dict(budgets)
    taken: list[tuple[int, int, int]] = []
    needed = points
    for owned in family:
        lot, owner, spendable = owned.lot, owned.member_id, owned.lot.is_spendable(now)
        room = min(lot.remaining_points, max(left.get(owner, 0), 0)) if spendable else lot.remaining_points
        take = min(needed, room)
        if take <= 0:
            continue
        taken.append((owner, lot.lot_id, take))
        needed -= take
        if spendable:
            left[owner] -= take
    in_family = {owned.lot.lot_id for owned in family}
    rest = [lot for lot in others if lot.lot_id not in in_family]
    budget = max(left.get(member_id, 0), 0)
    return taken + [(member_id, lot_id, take) for lot_id, take in plan_up_to(rest, min(needed, budget), now)]
