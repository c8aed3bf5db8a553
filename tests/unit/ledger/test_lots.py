"""Lot consumption: available, unexpired lots, first to expire first, ties oldest first then lowest id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.lots import LotBalance, MemberLot, consumption_order, plan_consumption, plan_take_back, plan_up_to

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def lot(
    lot_id: int,
    points: int,
    *,
    expires_in: timedelta = 365 * DAY,
    earned_ago: timedelta = 10 * DAY,
    available_in: timedelta | None = None,
) -> LotBalance:
    """A lot relative to NOW; available since it was earned unless ``available_in`` says otherwise."""
    earned_at = NOW - earned_ago
    available_at = earned_at if available_in is None else NOW + available_in
    return LotBalance(
        lot_id=lot_id,
        remaining_points=points,
        earned_at=earned_at,
        available_at=available_at,
        expires_at=NOW + expires_in,
    )


# --- ordering ---------------------------------------------------------------------------------


def test_first_to_expire_is_consumed_first() -> None:
    lots = [lot(1, 100, expires_in=300 * DAY), lot(2, 100, expires_in=30 * DAY), lot(3, 100, expires_in=90 * DAY)]

    assert plan_consumption(lots, 250, NOW) == [(2, 100), (3, 100), (1, 50)]


def test_expiry_ties_go_to_the_oldest_lot() -> None:
    lots = [lot(1, 100, earned_ago=5 * DAY), lot(2, 100, earned_ago=50 * DAY), lot(3, 100, earned_ago=20 * DAY)]

    assert plan_consumption(lots, 150, NOW) == [(2, 100), (3, 50)]


def test_expiry_and_age_ties_go_to_the_lowest_id() -> None:
    lots = [lot(9, 100), lot(4, 100), lot(7, 100)]

    assert plan_consumption(lots, 250, NOW) == [(4, 100), (7, 100), (9, 50)]


def test_expiry_outranks_age_and_id() -> None:
    late_old_low = lot(1, 100, expires_in=200 * DAY, earned_ago=300 * DAY)
    soon_new_high = lot(2, 100, expires_in=100 * DAY, earned_ago=1 * DAY)

    assert plan_consumption([late_old_low, soon_new_high], 100, NOW) == [(2, 100)]


def test_consumption_order_sorts_by_expiry_then_earning_then_id() -> None:
    lots = [
        lot(5, 1, expires_in=20 * DAY, earned_ago=1 * DAY),
        lot(3, 1, expires_in=10 * DAY, earned_ago=1 * DAY),
        lot(2, 1, expires_in=20 * DAY, earned_ago=1 * DAY),
        lot(1, 1, expires_in=20 * DAY, earned_ago=2 * DAY),
    ]

    assert [item.lot_id for item in consumption_order(lots)] == [3, 1, 2, 5]


def test_the_callers_list_is_left_alone() -> None:
    lots = [lot(2, 10, expires_in=90 * DAY), lot(1, 10, expires_in=30 * DAY)]
    before = list(lots)

    plan_consumption(lots, 15, NOW)

    assert lots == before


# --- what is spendable ------------------------------------------------------------------------


def test_pending_lots_are_skipped() -> None:
    pending = lot(1, 100, expires_in=10 * DAY, available_in=DAY)
    available = lot(2, 100, expires_in=20 * DAY)

    assert plan_consumption([pending, available], 100, NOW) == [(2, 100)]
    assert plan_consumption([pending, available], 101, NOW) is None


def test_a_lot_becomes_available_at_its_available_at() -> None:
    just_available = lot(1, 100, available_in=timedelta(0))
    one_tick_early = lot(2, 100, available_in=TICK)

    assert plan_consumption([just_available, one_tick_early], 100, NOW) == [(1, 100)]
    assert plan_up_to([one_tick_early], 100, NOW) == []


def test_expired_lots_are_skipped() -> None:
    expired = lot(1, 100, expires_in=-DAY)
    valid = lot(2, 100)

    assert plan_consumption([expired, valid], 100, NOW) == [(2, 100)]
    assert plan_consumption([expired, valid], 150, NOW) is None


def test_a_lot_expires_at_its_expires_at() -> None:
    expiring_now = lot(1, 100, expires_in=timedelta(0))
    expiring_next_tick = lot(2, 100, expires_in=TICK)

    assert plan_consumption([expiring_now, expiring_next_tick], 100, NOW) == [(2, 100)]
    assert plan_up_to([expiring_now], 100, NOW) == []


def test_empty_lots_are_skipped() -> None:
    lots = [lot(1, 0, expires_in=DAY), lot(2, 40, expires_in=2 * DAY)]

    assert plan_consumption(lots, 40, NOW) == [(2, 40)]


def test_is_spendable() -> None:
    assert lot(1, 1).is_spendable(NOW)
    assert not lot(1, 0).is_spendable(NOW)
    assert not lot(1, 1, available_in=DAY).is_spendable(NOW)
    assert not lot(1, 1, expires_in=timedelta(0)).is_spendable(NOW)


# --- exact plans and partial plans ------------------------------------------------------------


def test_exactly_the_spendable_total_consumes_every_lot() -> None:
    lots = [lot(1, 30, expires_in=DAY), lot(2, 70, expires_in=2 * DAY)]

    assert plan_consumption(lots, 100, NOW) == [(1, 30), (2, 70)]


def test_insufficient_points_give_none() -> None:
    lots = [lot(1, 30, expires_in=DAY), lot(2, 70, expires_in=2 * DAY)]

    assert plan_consumption(lots, 101, NOW) is None
    assert plan_consumption([], 1, NOW) is None


def test_no_points_need_no_lots() -> None:
    assert plan_consumption([lot(1, 30)], 0, NOW) == []
    assert plan_consumption([], 0, NOW) == []
    assert plan_up_to([lot(1, 30)], 0, NOW) == []


def test_the_last_lot_is_taken_only_in_part() -> None:
    lots = [lot(1, 30, expires_in=DAY), lot(2, 70, expires_in=2 * DAY), lot(3, 50, expires_in=3 * DAY)]

    assert plan_consumption(lots, 31, NOW) == [(1, 30), (2, 1)]


def test_plan_up_to_takes_what_there_is() -> None:
    lots = [lot(1, 30, expires_in=DAY), lot(2, 70, expires_in=2 * DAY), lot(3, 5, available_in=DAY)]

    assert plan_up_to(lots, 500, NOW) == [(1, 30), (2, 70)]
    assert plan_up_to(lots, 40, NOW) == [(1, 30), (2, 10)]
    assert plan_up_to([], 40, NOW) == []


# --- taking a reversal's points back ----------------------------------------------------------

BUYER, RECIPIENT, THIRD = 1, 2, 3


def test_a_reversal_takes_its_own_lot_then_the_lots_its_points_went_to_then_the_members_others() -> None:
    family = [MemberLot(BUYER, lot(10, 30)), MemberLot(RECIPIENT, lot(20, 40)), MemberLot(THIRD, lot(30, 50))]
    others = [lot(11, 100, expires_in=DAY)]  # would go first by expiry, but is not the purchase's
    budgets = {BUYER: 1_000, RECIPIENT: 1_000, THIRD: 1_000}

    assert plan_take_back(family, others, BUYER, 100, budgets, NOW) == [
        (BUYER, 10, 30), (RECIPIENT, 20, 40), (THIRD, 30, 30)
    ]  # fmt: skip
    assert plan_take_back(family, others, BUYER, 150, budgets, NOW) == [
        (BUYER, 10, 30), (RECIPIENT, 20, 40), (THIRD, 30, 50), (BUYER, 11, 30)
    ]  # fmt: skip
    assert plan_take_back(family, others, BUYER, 500, budgets, NOW)[-1] == (BUYER, 11, 100)  # the rest: debt


def test_each_owner_gives_only_what_their_open_holds_leave_free() -> None:
    pending = lot(10, 30, available_in=DAY)  # the buyer's own lot, not spendable yet: no hold rests on it
    family = [MemberLot(BUYER, pending), MemberLot(RECIPIENT, lot(20, 40)), MemberLot(THIRD, lot(30, 50))]
    budgets = {BUYER: 0, RECIPIENT: 25, THIRD: -10}  # below zero: holds reserve more than is spendable

    assert plan_take_back(family, [lot(11, 100)], BUYER, 200, budgets, NOW) == [(BUYER, 10, 30), (RECIPIENT, 20, 25)]


def test_transferred_points_back_with_the_buyer_share_the_buyers_budget() -> None:
    family = [MemberLot(BUYER, lot(10, 30)), MemberLot(RECIPIENT, lot(20, 40)), MemberLot(BUYER, lot(40, 20))]
    others = [lot(11, 100), lot(40, 20)]  # the buyer's lots include the one given back to them

    assert plan_take_back(family, others, BUYER, 200, {BUYER: 45, RECIPIENT: 40}, NOW) == [
        (BUYER, 10, 30), (RECIPIENT, 20, 40), (BUYER, 40, 15)
    ]  # fmt: skip


# --- properties -------------------------------------------------------------------------------

offsets = st.integers(min_value=-5, max_value=5).map(lambda days: days * DAY)


@st.composite
def lot_lists(draw: st.DrawFn) -> list[LotBalance]:
    """Lots with unique ids and times around NOW, on a coarse grid so ties and boundaries are common."""
    ids = draw(st.lists(st.integers(min_value=1, max_value=10_000), unique=True, max_size=12))
    lots = []
    for lot_id in ids:
        earned_at = NOW + draw(offsets)
        lots.append(
            LotBalance(
                lot_id=lot_id,
                remaining_points=draw(st.integers(min_value=0, max_value=50)),
                earned_at=earned_at,
                available_at=earned_at + draw(st.integers(min_value=0, max_value=3).map(lambda days: days * DAY)),
                expires_at=NOW + draw(offsets),
            )
        )
    return lots


def spendable_total(lots: list[LotBalance]) -> int:
    return sum(item.remaining_points for item in lots if item.is_spendable(NOW))


def assert_well_formed(plan: list[tuple[int, int]], lots: list[LotBalance]) -> None:
    """Takes are positive and within the lot, from spendable lots only, no lot twice, in consumption order."""
    by_id = {item.lot_id: item for item in lots}
    taken_ids = [lot_id for lot_id, _ in plan]
    assert len(taken_ids) == len(set(taken_ids))
    for lot_id, taken in plan:
        assert by_id[lot_id].is_spendable(NOW)
        assert 0 < taken <= by_id[lot_id].remaining_points
    ordered_spendable = [item.lot_id for item in consumption_order(lots) if item.is_spendable(NOW)]
    # The plan is a prefix of the consumption order, and every lot but the last is drained.
    assert taken_ids == ordered_spendable[: len(taken_ids)]
    for lot_id, taken in plan[:-1]:
        assert taken == by_id[lot_id].remaining_points


@PROPERTY
@given(lots=lot_lists(), points=st.integers(min_value=0, max_value=400))
def test_plan_supplies_exactly_the_points_or_is_none(lots: list[LotBalance], points: int) -> None:
    plan = plan_consumption(lots, points, NOW)

    assert (plan is None) == (spendable_total(lots) < points)
    if plan is not None:
        assert sum(taken for _, taken in plan) == points
        assert_well_formed(plan, lots)


@PROPERTY
@given(lots=lot_lists(), points=st.integers(min_value=0, max_value=400))
def test_plan_up_to_supplies_what_the_spendable_lots_allow(lots: list[LotBalance], points: int) -> None:
    plan = plan_up_to(lots, points, NOW)

    assert sum(taken for _, taken in plan) == min(points, spendable_total(lots))
    assert_well_formed(plan, lots)


@PROPERTY
@given(lots=lot_lists(), points=st.integers(min_value=0, max_value=400))
def test_plan_does_not_depend_on_the_input_order(lots: list[LotBalance], points: int) -> None:
    assert plan_consumption(lots, points, NOW) == plan_consumption(list(reversed(lots)), points, NOW)


@PROPERTY
@given(
    lots=lot_lists(), owners=st.lists(st.sampled_from([BUYER, RECIPIENT, THIRD]), min_size=12, max_size=12),
    family_size=st.integers(0, 12), points=st.integers(0, 400),
    budgets=st.fixed_dictionaries({BUYER: st.integers(-50, 300), RECIPIENT: st.integers(-50, 300),
                                   THIRD: st.integers(-50, 300)}),
)  # fmt: skip
def test_a_take_back_stays_within_points_lots_and_budgets(
    lots: list[LotBalance], owners: list[int], family_size: int, points: int, budgets: dict[int, int]
) -> None:
    family = [MemberLot(owner, item) for owner, item in zip(owners, lots[:family_size], strict=False)]
    others = lots[family_size:]
    plan = plan_take_back(family, others, BUYER, points, budgets, NOW)

    by_id = {item.lot_id: item for item in lots}
    owner_of = {owned.lot.lot_id: owned.member_id for owned in family} | {item.lot_id: BUYER for item in others}
    assert sum(part for _, _, part in plan) <= points
    assert len({lot_id for _, lot_id, _ in plan}) == len(plan)
    for member, lot_id, part in plan:
        assert owner_of[lot_id] == member and 0 < part <= by_id[lot_id].remaining_points
        assert lot_id in {owned.lot.lot_id for owned in family} or by_id[lot_id].is_spendable(NOW)
    for member, budget in budgets.items():
        spent = sum(part for owner, lot_id, part in plan if owner == member and by_id[lot_id].is_spendable(NOW))
        assert spent <= max(budget, 0)
    free = sum(item.remaining_points for item in (owned.lot for owned in family) if not item.is_spendable(NOW))
    if points <= free:  # what no hold can rest on always comes back in full
        assert sum(part for _, _, part in plan) == points
