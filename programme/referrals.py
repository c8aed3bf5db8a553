"""Referrals: a member shares a code; a new member who enrols with it and then makes a first purchase
that earns points, at any partner, brings both of them the bonus the network policy sets.

Guards:
- **New members only, never oneself.** A code given at the enrolment of an existing member is refused:
  SELF_REFERRAL when it is the member's own code (the same identifier), REFERRAL_REQUIRES_NEW_MEMBER
  otherwise. When the reward falls due, a shared card token (or another sign of one person that the
  ``same_person`` checks know, see server/app.py) refuses it as SELF_REFERRAL.
- **Once per referred member:** the referral is decided once, REWARDED or REFUSED, on the first
  purchase that earns points; a refused one is never retried.
- **A cap per referrer:** at most ``rewards_per_referrer_per_month`` rewards in a calendar month
  (UTC), counted under the referrer's balance lock so two referrals cannot both take the last one.

Both bonuses are operator-funded lots that become spendable with the purchase's own points.
The referred member's lock is held (the earn took it) when the referrer's is taken: the referrer
enrolled first, so locks go from the newer member to the older, and a deadlock with another order
is detected by the database and retried (common/uow.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection, func, select

from common.db import table_of
from common.errors import FailedPrecondition, InvalidArgument
from ledger.posting import Ledger, NewLot
from ledger.repository import MemberAccounts
from members.repository import MemberRepository
from programme.bonuses import REFERRAL, AwardedBonus, operator_lot, post_bonus
from programme.models import Referral, ReferralCode
from programme.partner_programme import period_start
from programme.policy import NetworkPolicy

referral_codes = table_of(ReferralCode)
referrals = table_of(Referral)

# No 0/O, 1/I/L: codes are read aloud at tills and typed on phones.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8

# (connection, referrer id, referred id) -> whether the two look like one person.
SamePerson = Callable[[Connection, int, int], bool]


class UnknownReferralCode(InvalidArgument):
    reason = "UNKNOWN_REFERRAL_CODE"


class SelfReferral(FailedPrecondition):
    reason = "SELF_REFERRAL"


class ReferralRequiresNewMember(FailedPrecondition):
    reason = "REFERRAL_REQUIRES_NEW_MEMBER"


def normalise_code(code: str) -> str:
    return "".join(character for character in code.upper() if character.isalnum())


def referral_code(connection: Connection, member_id: int, now: datetime) -> str:
    """The member's code, made the first time it is asked for (the member's balance row is locked)."""
    known = connection.execute(select(referral_codes.c.code).where(referral_codes.c.member_id == member_id)).scalar()
    if known is not None:
        return str(known)
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        taken = connection.execute(select(referral_codes.c.member_id).where(referral_codes.c.code == code)).first()
        if taken is None:
            connection.execute(referral_codes.insert().values(member_id=member_id, code=code, created_at=now))
            return code


def record_referral(
    connection: Connection, code: str, *, referred_member_id: int, is_new_member: bool, now: datetime
) -> None:
    """Notes that a member enrolled with a referral code; refused unless they are new and someone else."""
    referrer = connection.execute(
        select(referral_codes.c.member_id).where(referral_codes.c.code == normalise_code(code))
    ).scalar()
    if referrer is None:
        raise UnknownReferralCode("no member has that referral code", field="referral_code")
    if int(referrer) == referred_member_id:
        raise SelfReferral("a member cannot use their own referral code")
    if not is_new_member:
        raise ReferralRequiresNewMember("referral codes are for members enrolling now, not existing members")
    connection.execute(
        referrals.insert().values(
            referred_member_id=referred_member_id, referrer_member_id=int(referrer), enrolled_at=now, status="PENDING"
        )
    )


def reward_first_purchase(
    ledger: Ledger, member: MemberAccounts, policy: NetworkPolicy, *, earn_lot: NewLot, business_time: datetime,
    same_person: Sequence[SamePerson] = (),
) -> AwardedBonus | None:  # fmt: skip
    """Decides the member's pending referral on their first purchase that earns points (already posted,
    member locked). Returns the new member's bonus; the referrer's goes to the referrer."""
    settings = policy.referrals
    if not settings.enabled:
        return None  # referrals are off: a pending one waits for them to be on again
    connection, now = ledger.repository.connection, ledger.recorded_at
    pending = connection.execute(
        select(referrals.c.referrer_member_id)
        .where(referrals.c.referred_member_id == member.member_id, referrals.c.status == "PENDING")
    ).scalar()  # fmt: skip
    if pending is None:
        return None
    referrer_id = int(pending)
    referrer = ledger.repository.lock_member(referrer_id)
    refusal = _refusal(connection, referrer_id, member.member_id, now, settings.rewards_per_referrer_per_month,
                       same_person)  # fmt: skip
    connection.execute(
        referrals.update()
        .where(referrals.c.referred_member_id == member.member_id)
        .values(status="REFUSED" if refusal else "REWARDED", decided_at=now, refusal_reason=refusal)
    )
    if refusal:
        return None
    members = MemberRepository(connection)
    referred_number = _number(members, member.member_id)
    lot = operator_lot(
        policy, earned_at=earn_lot.earned_at, available_at=earn_lot.available_at, expires_at=earn_lot.expires_at
    )
    if settings.referrer_points > 0:
        post_bonus(
            ledger, referrer, kind=REFERRAL, points=settings.referrer_points, detail=referred_number, lot=lot,
            partner_id=None, business_time=business_time,
        )  # fmt: skip
    if settings.referred_points <= 0:
        return None
    return post_bonus(
        ledger, ledger.repository.member_accounts(member.member_id), kind=REFERRAL, points=settings.referred_points,
        detail=_number(members, referrer_id), lot=lot, partner_id=None, business_time=business_time,
    )  # fmt: skip


def _refusal(
    connection: Connection, referrer_id: int, referred_id: int, now: datetime, monthly_cap: int,
    same_person: Sequence[SamePerson],
) -> str | None:  # fmt: skip
    if any(check(connection, referrer_id, referred_id) for check in same_person):
        return SelfReferral.reason
    month_start = period_start("MONTH", now)
    rewarded = connection.execute(
        select(func.count()).where(
            referrals.c.referrer_member_id == referrer_id, referrals.c.status == "REWARDED",
            referrals.c.decided_at >= month_start,
        )
    ).scalar_one()  # fmt: skip
    return "REFERRER_MONTHLY_CAP" if int(rewarded) >= monthly_cap else None


def _number(members: MemberRepository, member_id: int) -> str:
    row = members.find_by_id(member_id)
    assert row is not None
    return row.member_number


def referral_status(connection: Connection, member_id: int) -> tuple[str, str | None] | None:
    """The member's own referral as (status, refusal reason), if they enrolled with a code."""
    row = connection.execute(
        select(referrals.c.status, referrals.c.refusal_reason).where(referrals.c.referred_member_id == member_id)
    ).first()
    return (row.status, row.refusal_reason) if row is not None else None
