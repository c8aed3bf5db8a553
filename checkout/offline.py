"""Offline stores (DESIGN.md section 4): a terminal's queued earns, returns and small redemptions, synced
in one batch.

Each item is its own write with its own idempotency key and its own database transaction, so a batch
can be resent whole or in part: an item already applied answers with its stored result. Items keep
their business time (when the till rang them up, bounded below) and are recorded at the server's time,
so settlement puts an item whose business time falls in a closed period into the next open one as a
prior-period adjustment. Redemptions are bounded by the network policy's offline allowances; one within
them that the member's points no longer cover when it syncs becomes member debt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from checkout.commands import EarnCommand, EarnResult, RedeemCommand, ReturnCommand, ReturnResult
from checkout.errors import InvalidBusinessTime, InvalidOfflineBatch, OfflineAllowanceExceeded
from checkout.session import CheckoutSession, PartnerRef
from common.errors import CoalitionError, Unauthenticated
from programme.services import policy_in_force

MAX_BATCH_ITEMS = 500
MAX_STORE_ID_LENGTH = 100
# A till's clock may run a little ahead of ours; further ahead is a mistake, not a purchase.
CLOCK_SKEW = timedelta(minutes=5)
# A terminal offline for longer than this has a problem no batch should paper over; an older item
# (typically a mistyped date) is refused and has to go through support instead.
MAX_ITEM_AGE = timedelta(days=30)

OfflineOperation = EarnCommand | ReturnCommand | RedeemCommand


@dataclass(frozen=True)
class OfflineItem:
    """One queued transaction: its idempotency key, when it happened, and what it was."""

    request_id: str
    business_time: datetime | None
    operation: OfflineOperation


@dataclass(frozen=True)
class RefusedItem:
    """An item the transport could not read (no operation, no member...): answered with its error."""

    request_id: str
    error: CoalitionError


@dataclass(frozen=True)
class OfflineRedemptionResult:
    transaction_id: str
    member_number: str
    points_redeemed: int
    debt_points: int  # of those, points the member's balance no longer covered, now owed as debt
    value_minor: int
    currency: str
    contract_version: int


@dataclass(frozen=True)
class OfflineItemResult:
    """An item's answer: the result of its operation, or the error that refused it (nothing written)."""

    request_id: str
    earn: EarnResult | None = None
    purchase_return: ReturnResult | None = None
    redemption: OfflineRedemptionResult | None = None
    error: CoalitionError | None = None
    is_replay: bool = False


def require_batch(store_id: str, items: Sequence[object]) -> None:
    if not store_id or len(store_id) > MAX_STORE_ID_LENGTH or not store_id.isprintable():
        raise InvalidOfflineBatch(f"store_id is required: 1 to {MAX_STORE_ID_LENGTH} printable characters")
    if not items:
        raise InvalidOfflineBatch("a batch has at least one item")
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidOfflineBatch(f"a batch has at most {MAX_BATCH_ITEMS} items", limit=MAX_BATCH_ITEMS)


def require_business_time(business_time: datetime | None, now: datetime) -> datetime:
    """The item's own time: required, not in the future beyond clock skew, not older than the limit."""
    if business_time is None:
        raise InvalidBusinessTime("business_time is required: when the till recorded the item")
    if business_time > now + CLOCK_SKEW:
        raise InvalidBusinessTime("business_time is in the future", latest=(now + CLOCK_SKEW).isoformat())
    if business_time < now - MAX_ITEM_AGE:
        raise InvalidBusinessTime(
            f"business_time is more than {MAX_ITEM_AGE.days} days ago", earliest=(now - MAX_ITEM_AGE).isoformat()
        )
    # A till a little ahead of us must not record a purchase after the moment we record it.
    return min(business_time, now)


def charge_allowance(session: CheckoutSession, partner: PartnerRef, store_id: str, member_id: int, points: int) -> None:
    """Counts a redemption against the member's and the store's offline allowance of its business day.

    The counters are written in the item's transaction: a refusal rolls them back with everything else.
    """
    allowance = policy_in_force(session.ledger_records.connection, session.business_time).policy.offline
    day = session.business_time.date().isoformat()
    limits = (("MEMBER", member_id, "", allowance.member_daily_points),
              ("STORE", partner.partner_id, store_id, allowance.store_daily_points))  # fmt: skip
    for kind, owner_id, store, limit in limits:
        total = session.records.add_offline_redemption(kind, owner_id, store, day, points)
        if total > limit:
            raise OfflineAllowanceExceeded(
                f"the {kind.lower()}'s offline redemption allowance of {limit} points for {day} is used up",
                scope=kind, limit=limit, remaining=max(limit - (total - points), 0), day=day,
            )  # fmt: skip


def answer_each(
    items: Sequence[OfflineItem | RefusedItem], apply: Callable[[OfflineItem], OfflineItemResult]
) -> list[OfflineItemResult]:
    """One result per item, in order: a refused item never fails the batch or its neighbours; a refused
    caller fails the batch."""
    results = []
    for item in items:
        if isinstance(item, RefusedItem):
            results.append(OfflineItemResult(item.request_id, error=item.error))
            continue
        try:
            results.append(apply(item))
        except Unauthenticated:
            raise  # the caller refused (its token replayed or its key revoked as a transaction claims it)
        except CoalitionError as error:
            is_replay = error.metadata.get("idempotent_replay") == "true"
            results.append(OfflineItemResult(item.request_id, error=error, is_replay=is_replay))
    return results
