"""The network policy: programme rules the operator sets for every partner, in immutable versions.

A version takes effect at its ``effective_from`` and stays in force until a later one does, like a
partner's contract (DESIGN.md section 3). Before the operator sets any, version 0 (the defaults
below) is in force. Pure, no I/O, apart from the calendar arithmetic.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime

from common.errors import InvalidArgument

MAX_MONTHS = 240


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
class NetworkPolicy:
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)

    def validate(self) -> None:
        self.expiry.validate()


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
