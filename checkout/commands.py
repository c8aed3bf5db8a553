"""Checkout commands (what a partner asks) and results (what it gets back). Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from checkout.errors import InvalidBasket
from members.identifiers import MemberIdentifier
from programme.bonuses import AwardedBonus
from programme.tiers import TierStatus


@dataclass(frozen=True)
class BasketLine:
    sku: str
    amount_minor: int
    is_excluded: bool = False


@dataclass(frozen=True)
class Basket:
    """A receipt's money: total, optional lines (some excluded from earning), and what points paid."""

    currency: str
    total_minor: int
    lines: tuple[BasketLine, ...] = ()
    paid_with_points_minor: int = 0

    def validate(self) -> None:
        if self.total_minor < 0 or self.paid_with_points_minor < 0:
            raise InvalidBasket("basket amounts must not be negative")
        if any(line.amount_minor < 0 for line in self.lines):
            raise InvalidBasket("line amounts must not be negative")
        if sum(line.amount_minor for line in self.lines) > self.total_minor:
            raise InvalidBasket("basket lines add up to more than the total")
        if self.paid_with_points_minor > self.total_minor:
            raise InvalidBasket("paid_with_points exceeds the basket total")

    @property
    def eligible_minor(self) -> int:
        """Spend that earns: non-excluded lines (or the total), less what points paid."""
        base = self.total_minor
        if self.lines:
            base = sum(line.amount_minor for line in self.lines if not line.is_excluded)
        return max(base - self.paid_with_points_minor, 0)


@dataclass(frozen=True)
class EarnCommand:
    member: MemberIdentifier
    receipt_id: str
    basket: Basket
    enroll_if_unknown: bool = False
    channel: str = "UNSPECIFIED"
    store_id: str = ""


@dataclass(frozen=True)
class QuoteCommand:
    member: MemberIdentifier | None
    basket: Basket


@dataclass(frozen=True)
class HoldCommand:
    member: MemberIdentifier
    points: int
    ttl_seconds: int
    currency: str
    basket_total_minor: int = 0
    receipt_id: str = ""


@dataclass(frozen=True)
class CaptureCommand:
    hold_id: str
    points: int = 0


@dataclass(frozen=True)
class ReleaseCommand:
    hold_id: str


@dataclass(frozen=True)
class RedeemCommand:
    member: MemberIdentifier
    points: int
    currency: str
    basket_total_minor: int = 0
    receipt_id: str = ""


@dataclass(frozen=True)
class DonateCommand:
    """A member gives points to a charity partner, through the partner that calls."""

    member: MemberIdentifier
    points: int
    charity_partner_code: str


@dataclass(frozen=True)
class ReturnCommand:
    receipt_id: str
    returned_minor: int = 0
    is_full_return: bool = False


@dataclass(frozen=True)
class EnrollCommand:
    member: MemberIdentifier
    referral_code: str = ""  # another member's code: both get the referral bonus on the first purchase


@dataclass(frozen=True)
class BalanceView:
    member_number: str
    available_points: int
    pending_points: int
    held_points: int
    debt_points: int
    expiring_soon_points: int
    expiring_soon_until: datetime
    tier: TierStatus | None = None  # None without a tier programme


@dataclass(frozen=True)
class MemberView:
    member_number: str
    enrolled_at: datetime
    masked_identifiers: tuple[tuple[str, str], ...]
    balance: BalanceView
    is_newly_enrolled: bool = False


@dataclass(frozen=True)
class EarnResult:
    transaction_id: str
    member_number: str
    points_earned: int
    debt_repaid_points: int
    available_at: datetime
    expires_at: datetime
    contract_version: int
    is_newly_enrolled: bool
    # Bonus lots credited with the earn: the partner's promotion, the member's tier, a referral.
    bonuses: tuple[AwardedBonus, ...] = ()


@dataclass(frozen=True)
class QuoteResult:
    member_number: str
    currency: str
    points_to_earn: int
    available_points: int
    redeemable_points: int
    redeemable_value_minor: int
    contract_version: int


@dataclass(frozen=True)
class HoldView:
    hold_id: str
    member_number: str
    points: int
    captured_points: int
    status: str
    value_minor: int
    currency: str
    created_at: datetime
    expires_at: datetime
    contract_version: int
    capture_transaction_id: str


@dataclass(frozen=True)
class CaptureResult:
    transaction_id: str
    hold: HoldView
    points_captured: int
    value_minor: int
    points_released: int


@dataclass(frozen=True)
class RedeemResult:
    transaction_id: str
    member_number: str
    points_redeemed: int
    value_minor: int
    currency: str
    contract_version: int


@dataclass(frozen=True)
class DonationResult:
    transaction_id: str
    member_number: str
    points_donated: int
    charity_partner_code: str
    value_minor: int  # what the points are worth at the charity (its redeem value)
    currency: str
    contract_version: int  # the charity's


@dataclass(frozen=True)
class ReturnResult:
    member_number: str
    returned_minor_total: int
    points_reversed: int
    points_restored: int
    debt_created_points: int
    reversal_transaction_id: str
    refund_transaction_id: str
    bonus_points_reversed: int = 0  # the purchase's tier and promotion bonuses, in proportion


@dataclass(frozen=True)
class ActivityAwardCommand:
    member: MemberIdentifier
    activity_code: str


@dataclass(frozen=True)
class ActivityAwardResult:
    transaction_id: str
    member_number: str
    activity_code: str
    points_awarded: int
    awards_left_in_period: int
    available_at: datetime
    expires_at: datetime
    contract_version: int
