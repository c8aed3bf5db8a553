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


@dataclass(frozen=True)
class NetworkPolicy:
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    goodwill: GoodwillPolicy = field(default_factory=GoodwillPolicy)
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    # Versions stored before offline stores existed read back with these defaults.
    offline: OfflinePolicy = field(default_factory=OfflinePolicy)

    def validate(self) -> None:
        self.expiry.validate()
        self.goodwill.validate()
        self.privacy.validate()
        self.offline.validate()


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
