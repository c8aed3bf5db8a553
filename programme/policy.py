"""The network policy: programme rules the operator sets for every partner, in immutable versions.

A version takes effect at its ``effective_from`` and stays in force until a later one does, like a
partner's contract (DESIGN.md section 3). Before the operator sets any, version 0 (the defaults
below) is in force. Pure, no I/O, apart from the calendar arithmetic.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime

from common.errors import InvalidArgument
from partners.rates import UnsupportedCurrency, currency_exponent

MAX_MONTHS = 240
_REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")


class InvalidPolicy(InvalidArgument):
    reason = "INVALID_POLICY"


@dataclass(frozen=True)
class ExpiryPolicy:
    """When earned points lapse.

    ``lifetime_months``: a lot expires this many calendar months after it was earned (its expiry is
    fixed at earning, so a later policy never shortens points a member already has).
    ``inactivity_months``: when set, all of a member's points lapse once this many months pass with
    no earn, spend or return by the member at any partner.
    ``expiring_soon_days``: how far ahead balance answers report points as expiring soon.
    """

    lifetime_months: int = 24
    inactivity_months: int | None = None
    expiring_soon_days: int = 30

    def validate(self) -> None:
        if not 1 <= self.lifetime_months <= MAX_MONTHS:
            raise InvalidPolicy(f"expiry.lifetime_months must be 1-{MAX_MONTHS}", field="expiry.lifetime_months")
        if self.inactivity_months is not None and not 1 <= self.inactivity_months <= MAX_MONTHS:
            raise InvalidPolicy(
                f"expiry.inactivity_months must be 1-{MAX_MONTHS} or unset", field="expiry.inactivity_months"
            )
        if not 1 <= self.expiring_soon_days <= 366:
            raise InvalidPolicy("expiry.expiring_soon_days must be 1-366", field="expiry.expiring_soon_days")


@dataclass(frozen=True)
class GoodwillPolicy:
    """Support staff's point adjustments (grants and deductions with a reason code).

    An adjustment of more than ``approval_threshold_points`` waits as pending until a second person
    approves it. ``reason_codes`` are the reasons support may give.
    """

    approval_threshold_points: int = 1_000
    reason_codes: tuple[str, ...] = ("SERVICE_RECOVERY", "TECHNICAL_ERROR", "MISSING_POINTS", "CORRECTION")
    # Granted points are funded by the operator at no price; lots still name a currency, the one
    # settlement reports them in (cross-brand matrix, liability report).
    currency: str = "EUR"

    def validate(self) -> None:
        try:
            currency_exponent(self.currency)
        except UnsupportedCurrency:
            raise InvalidPolicy(
                f"goodwill.currency {self.currency!r} is not supported", field="goodwill.currency"
            ) from None
        if self.approval_threshold_points < 0:
            raise InvalidPolicy(
                "goodwill.approval_threshold_points must not be negative", field="goodwill.approval_threshold_points"
            )
        if not self.reason_codes or any(not _REASON_CODE.match(code) for code in self.reason_codes):
            raise InvalidPolicy(
                "goodwill.reason_codes must be one or more UPPER_SNAKE codes", field="goodwill.reason_codes"
            )
        if len(set(self.reason_codes)) != len(self.reason_codes):
            raise InvalidPolicy("goodwill.reason_codes repeats a code", field="goodwill.reason_codes")


@dataclass(frozen=True)
class PrivacyPolicy:
    """What a partner may see of a member.

    A partner sees only its own share of a member's statement (its transactions, its lifetime figures).
    When ``statement_consent_shows_all_partners`` is on, a partner that looks the member up with the
    member's consent (``member_consent`` on the request, logged with the partner and member) sees the
    whole network-wide statement. The partner asserts that consent (the log line is the record); an
    operator whose partner agreements do not cover it turns the switch off.
    """

    statement_consent_shows_all_partners: bool = True

    def validate(self) -> None:
        return None


MAX_OFFLINE_ALLOWANCE_POINTS = 10_000_000


@dataclass(frozen=True)
class OfflinePolicy:
    """How many points store terminals may let members redeem while offline (checkout/offline.py).

    A terminal without a connection cannot see a member's balance, so what it lets them spend is a
    risk the network takes: bounded per member (all of the member's offline redemptions anywhere in
    the network) and per store (a partner's store id), in points per UTC day of the redemption's
    business time. A redemption beyond either is refused when it syncs; one within both that the
    member's points no longer cover becomes member debt. 0 turns offline redemption off.
    """

    member_daily_points: int = 2_000
    store_daily_points: int = 50_000

    def validate(self) -> None:
        for name in ("member_daily_points", "store_daily_points"):
            if not 0 <= getattr(self, name) <= MAX_OFFLINE_ALLOWANCE_POINTS:
                raise InvalidPolicy(f"offline.{name} must be 0-{MAX_OFFLINE_ALLOWANCE_POINTS}", field=f"offline.{name}")


MAX_BONUS_PERCENT = 900  # a x10 multiplier: beyond it a typo, not a programme
MAX_BONUS_POINTS = 1_000_000
_TIER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 _-]{0,39}$")


@dataclass(frozen=True)
class Tier:
    """A status level: reached with ``qualifying_points`` in the window, it adds ``bonus_percent`` of
    every purchase's earn as an operator-funded bonus lot (50: Silver's +50%, 100: Gold's x2)."""

    name: str
    qualifying_points: int
    bonus_percent: int


@dataclass(frozen=True)
class TierPolicy:
    """Tiers by qualifying points (points earned on purchases, net of returns, across all partners)
    in a rolling window of ``window_months``, never by balance.

    Promotion happens on the earn that qualifies. A tier lapses ``grace_days`` after the day the
    member's qualifying points would fall below it as old earns leave the window; the tier review
    (programme/tiers.py) then moves them to the tier their points still reach. No tiers: no tier
    programme. The first tier is the base every member starts in: 0 points, usually 0 percent.
    """

    tiers: tuple[Tier, ...] = ()
    window_months: int = 12
    grace_days: int = 30

    def validate(self) -> None:
        if not 1 <= self.window_months <= MAX_MONTHS:
            raise InvalidPolicy(f"tiers.window_months must be 1-{MAX_MONTHS}", field="tiers.window_months")
        if not 0 <= self.grace_days <= 366:
            raise InvalidPolicy("tiers.grace_days must be 0-366", field="tiers.grace_days")
        if not self.tiers:
            return
        if self.tiers[0].qualifying_points != 0:
            raise InvalidPolicy("the first tier is the base tier: 0 qualifying points", field="tiers.tiers")
        names = [tier.name.lower() for tier in self.tiers]
        if len(set(names)) != len(names) or any(not _TIER_NAME.match(tier.name) for tier in self.tiers):
            raise InvalidPolicy("tier names must be distinct, 1-40 letters, digits, spaces", field="tiers.tiers")
        for lower, higher in zip(self.tiers, self.tiers[1:], strict=False):
            if higher.qualifying_points <= lower.qualifying_points:
                raise InvalidPolicy("tiers go up in qualifying points", field="tiers.tiers")
            if higher.bonus_percent < lower.bonus_percent:
                raise InvalidPolicy("a higher tier never gives a smaller bonus", field="tiers.tiers")
        if any(not 0 <= tier.bonus_percent <= MAX_BONUS_PERCENT for tier in self.tiers):
            raise InvalidPolicy(f"tier bonus_percent must be 0-{MAX_BONUS_PERCENT}", field="tiers.tiers")

    def tier_for(self, qualifying_points: int) -> Tier | None:
        """The highest tier the points reach (None without a tier programme)."""
        reached = [tier for tier in self.tiers if tier.qualifying_points <= qualifying_points]
        return reached[-1] if reached else None

    def rank(self, name: str) -> int:
        """A tier's place, 0 for the base; a tier no longer in the policy ranks as the base."""
        return next((index for index, tier in enumerate(self.tiers) if tier.name == name), 0)


@dataclass(frozen=True)
class BonusPolicy:
    """Operator-funded bonuses: ``sign_up_points`` once to every new member, spendable at once."""

    sign_up_points: int = 0

    def validate(self) -> None:
        if not 0 <= self.sign_up_points <= MAX_BONUS_POINTS:
            raise InvalidPolicy(f"bonuses.sign_up_points must be 0-{MAX_BONUS_POINTS}", field="bonuses.sign_up_points")


@dataclass(frozen=True)
class ReferralPolicy:
    """Member referrals: when a member who enrolled with another's referral code makes a first
    qualifying purchase (one that earns points) at any partner, the referrer gets ``referrer_points``
    and the new member ``referred_points``, both operator-funded and spendable when that purchase's
    points are. A referrer is rewarded at most ``rewards_per_referrer_per_month`` times per calendar
    month (UTC); later ones are refused, not deferred. Both 0: referrals off."""

    referrer_points: int = 0
    referred_points: int = 0
    rewards_per_referrer_per_month: int = 5

    def validate(self) -> None:
        for name in ("referrer_points", "referred_points"):
            if not 0 <= getattr(self, name) <= MAX_BONUS_POINTS:
                raise InvalidPolicy(f"referrals.{name} must be 0-{MAX_BONUS_POINTS}", field=f"referrals.{name}")
        if not 0 <= self.rewards_per_referrer_per_month <= 1_000:
            raise InvalidPolicy(
                "referrals.rewards_per_referrer_per_month must be 0-1000",
                field="referrals.rewards_per_referrer_per_month",
            )

    @property
    def enabled(self) -> bool:
        return self.referrer_points > 0 or self.referred_points > 0


@dataclass(frozen=True)
class TransferPolicy:
    """Point transfers between members of one household, and the limits against abuse.

    - ``daily_points_per_sender``: most points one member may send per UTC day (0: transfers off).
    - ``min_account_age_days``: sender and recipient must have been members this long (fresh
      accounts are how points farmed by sign-up bonuses get pooled).
    - ``min_membership_days``: and in the household this long (no hopping between households).
    - ``max_senders_per_recipient``: distinct members who may send to one member within 30 days
      (many-to-one pooling).
    - ``max_household_members``: the size of a household.
    """

    daily_points_per_sender: int = 5_000
    min_account_age_days: int = 30
    min_membership_days: int = 7
    max_senders_per_recipient: int = 2
    max_household_members: int = 6

    def validate(self) -> None:
        bounds = {"daily_points_per_sender": MAX_BONUS_POINTS, "min_account_age_days": 3_660,
                  "min_membership_days": 3_660, "max_senders_per_recipient": 100}  # fmt: skip
        for name, upper in bounds.items():
            if not 0 <= getattr(self, name) <= upper:
                raise InvalidPolicy(f"transfers.{name} must be 0-{upper}", field=f"transfers.{name}")
        if not 2 <= self.max_household_members <= 20:
            raise InvalidPolicy("transfers.max_household_members must be 2-20", field="transfers.max_household_members")


@dataclass(frozen=True)
class NetworkPolicy:
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    goodwill: GoodwillPolicy = field(default_factory=GoodwillPolicy)
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    # Versions stored before a section existed read back with its defaults.
    offline: OfflinePolicy = field(default_factory=OfflinePolicy)
    tiers: TierPolicy = field(default_factory=TierPolicy)
    bonuses: BonusPolicy = field(default_factory=BonusPolicy)
    referrals: ReferralPolicy = field(default_factory=ReferralPolicy)
    transfers: TransferPolicy = field(default_factory=TransferPolicy)

    def validate(self) -> None:
        self.expiry.validate()
        self.goodwill.validate()
        self.privacy.validate()
        self.offline.validate()
        self.tiers.validate()
        self.bonuses.validate()
        self.referrals.validate()
        self.transfers.validate()

    @property
    def operator_currency(self) -> str:
        """The currency of operator-funded lots (goodwill, tier, sign-up and referral bonuses): they
        cost no partner anything; settlement reports them in it."""
        return self.goodwill.currency


DEFAULT_POLICY = NetworkPolicy()


@dataclass(frozen=True)
class PolicyVersionView:
    version: int  # 0: the built-in defaults, before the operator set any version
    effective_from: datetime | None
    policy: NetworkPolicy
    created_at: datetime | None
    created_by: str


DEFAULT_VERSION = PolicyVersionView(0, None, DEFAULT_POLICY, None, "")


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months later, on the month's last day if it is shorter."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
