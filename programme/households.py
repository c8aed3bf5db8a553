"""Household groups, and point transfers between members of one household under anti-abuse limits.

Operator staff form households (two or more members), add members and take them out; a member is in
at most one household at a time, and each membership's start and end stay on record. A member may
send points to another member of the same household when the network policy's transfer limits
(programme/policy.py ``TransferPolicy``) allow it: transfers on, both accounts and both memberships
old enough, the sender within the daily allowance, the recipient not collecting from more members
than allowed, the household no larger than allowed. Staff may transfer for anyone; a partner only
between members who have both dealt with it (any other member looks unknown, as at checkout).

A transfer is one TRANSFER journal transaction (ledger/posting.py ``Ledger.transfer``) taking the
sender's available points, first to expire first and never held ones, into new lots of the recipient
with the same issuer and expiry; its point_transfers row is what the limits count. The limits are
checked under both members' locks, so concurrent transfers cannot slip past them together. A return
of the purchase the points were earned on takes them back from the recipient while they are unspent
(``Ledger.reverse_earn``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.idempotency import Outcome, RequestKey, run_once
from common.uow import UnitOfWork
from ledger.errors import InsufficientPoints
from ledger.lots import plan_consumption
from ledger.posting import Ledger, Posted, Posting
from ledger.repository import LedgerRepository, MemberAccounts
from members.identifiers import MemberIdentifier
from members.repository import MemberRepository, MemberRow
from members.services import MemberNotFound, find_member
from programme.expiry import HeldPoints
from programme.household_repository import HouseholdRepository, HouseholdRow, MembershipRow
from programme.policy import TransferPolicy
from programme.services import policy_in_force
from programme.visibility import OPERATOR_STAFF, Viewer, require_active_partner

MAX_TRANSFER_POINTS = 10_000_000
MAX_MEMBERS_PER_REQUEST = 20  # the policy's largest household
SENDER_WINDOW = timedelta(days=30)  # the many-to-one limit counts senders over this window


class InvalidHousehold(InvalidArgument):
    reason = "INVALID_HOUSEHOLD"


class InvalidTransfer(InvalidArgument):
    reason = "INVALID_TRANSFER"


class TransferToSelf(InvalidArgument):
    reason = "TRANSFER_TO_SELF"


class HouseholdNotFound(NotFound):
    reason = "HOUSEHOLD_NOT_FOUND"


class AlreadyInHousehold(FailedPrecondition):
    reason = "ALREADY_IN_HOUSEHOLD"


class NotInHousehold(FailedPrecondition):
    reason = "NOT_IN_HOUSEHOLD"


class HouseholdTooLarge(FailedPrecondition):
    reason = "HOUSEHOLD_TOO_LARGE"


class TransfersDisabled(FailedPrecondition):
    reason = "TRANSFERS_DISABLED"


class NotSameHousehold(FailedPrecondition):
    reason = "NOT_SAME_HOUSEHOLD"


class AccountTooNew(FailedPrecondition):
    reason = "ACCOUNT_TOO_NEW"


class MembershipTooNew(FailedPrecondition):
    reason = "HOUSEHOLD_MEMBERSHIP_TOO_NEW"


class DailyTransferLimitExceeded(FailedPrecondition):
    reason = "DAILY_TRANSFER_LIMIT_EXCEEDED"


class TooManySenders(FailedPrecondition):
    reason = "RECIPIENT_SENDER_LIMIT_REACHED"


@dataclass(frozen=True)
class HouseholdMemberView:
    member_number: str
    joined_at: datetime


@dataclass(frozen=True)
class HouseholdView:
    household_id: str
    created_at: datetime
    created_by: str
    members: list[HouseholdMemberView]  # current members, in the order they joined


@dataclass(frozen=True)
class TransferCommand:
    sender: MemberIdentifier
    recipient: MemberIdentifier
    points: int


@dataclass(frozen=True)
class TransferView:
    transaction_id: str  # the TRANSFER journal transaction
    household_id: str
    sender_member_number: str
    recipient_member_number: str
    points: int
    transferred_at: datetime


class Households:
    """Households and transfers on one database; ``held_points`` comes from checkout (see server/app.py)."""

    def __init__(self, uow: UnitOfWork, *, identifier_pepper: bytes, held_points: HeldPoints) -> None:
        self.uow = uow
        self.identifier_pepper = identifier_pepper
        self.held_points = held_points

    def create(
        self, request: RequestKey, members: Sequence[MemberIdentifier], created_by: str
    ) -> Outcome[HouseholdView]:
        """A new household of two or more members, none of them in a household yet."""
        if not 2 <= len(members) <= MAX_MEMBERS_PER_REQUEST:
            raise InvalidHousehold(f"a household starts with 2 to {MAX_MEMBERS_PER_REQUEST} members", field="members")

        def work(connection: Connection) -> HouseholdView:
            now = self.uow.clock.now()
            found = [self._member(connection, OPERATOR_STAFF, member) for member in members]
            if len({row.id for row in found}) != len(found):
                raise InvalidHousehold("a member is named twice", field="members")
            _require_size(policy_in_force(connection, now).policy.transfers, len(found))
            LedgerRepository(connection).lock_members(row.id for row in found)  # serialise with transfers
            repository = HouseholdRepository(connection)
            for row in found:
                _require_no_household(repository, row)
            household = repository.insert_household(created_at=now, created_by=created_by)
            for row in found:
                repository.join(household.id, row.id, now)
            return _view(repository, household)

        return run_once(self.uow, request, "CreateHousehold", {"members": list(members)}, HouseholdView, work)

    def add_member(self, request: RequestKey, household_id: str, member: MemberIdentifier) -> Outcome[HouseholdView]:
        def work(connection: Connection) -> HouseholdView:
            now = self.uow.clock.now()
            repository = HouseholdRepository(connection)
            household = _household(repository, household_id)
            row = self._member(connection, OPERATOR_STAFF, member)
            LedgerRepository(connection).lock_member(row.id)
            _require_no_household(repository, row)
            size = len(repository.current_members(household.id)) + 1
            _require_size(policy_in_force(connection, now).policy.transfers, size)
            repository.join(household.id, row.id, now)
            return _view(repository, household)

        command = {"household_id": household_id, "member": member}
        return run_once(self.uow, request, "AddHouseholdMember", command, HouseholdView, work)

    def remove_member(self, request: RequestKey, household_id: str, member: MemberIdentifier) -> Outcome[HouseholdView]:
        """The member leaves the household (their membership ends now; its record stays)."""

        def work(connection: Connection) -> HouseholdView:
            repository = HouseholdRepository(connection)
            household = _household(repository, household_id)
            row = self._member(connection, OPERATOR_STAFF, member)
            LedgerRepository(connection).lock_member(row.id)
            membership = repository.open_membership(row.id)
            if membership is None or membership.household_id != household.id:
                raise NotInHousehold(f"member {row.member_number} is not in this household", household_id=household_id)
            repository.leave(row.id, self.uow.clock.now())
            return _view(repository, household)

        command = {"household_id": household_id, "member": member}
        return run_once(self.uow, request, "RemoveHouseholdMember", command, HouseholdView, work)

    def get(self, viewer: Viewer, *, household_id: str = "", member: MemberIdentifier | None = None) -> HouseholdView:
        """A household by its id or by one of its members; a partner sees only the members who dealt with it,
        and a household with none of them not at all."""
        if bool(household_id) == (member is not None):
            raise InvalidHousehold("name either a household_id or a member", field="household_id")

        def work(connection: Connection) -> HouseholdView:
            if viewer.partner_id is not None:
                require_active_partner(connection, viewer.partner_id)
            repository = HouseholdRepository(connection)
            if member is not None:
                row = self._member(connection, viewer, member)
                membership = repository.open_membership(row.id)
                if membership is None:
                    raise HouseholdNotFound(f"member {row.member_number} is in no household")
                household = repository.by_id(membership.household_id)
            else:
                household = _household(repository, household_id)
            view = _view(repository, household, visible_to=_visible_numbers(connection, viewer, repository, household))
            if viewer.is_partner and not view.members:
                raise HouseholdNotFound("no household has that id", household_id=household_id)
            return view

        return self.uow.run(work)

    def transfer(self, request: RequestKey, viewer: Viewer, command: TransferCommand) -> Outcome[TransferView]:
        """Sends points from one household member to another, if every limit allows it."""
        if not 0 < command.points <= MAX_TRANSFER_POINTS:
            raise InvalidTransfer(f"points must be 1 to {MAX_TRANSFER_POINTS:,}", field="points")

        def work(connection: Connection) -> TransferView:
            now = self.uow.clock.now()
            if viewer.partner_id is not None:
                require_active_partner(connection, viewer.partner_id)
            sender = self._member(connection, viewer, command.sender)
            recipient = self._member(connection, viewer, command.recipient)
            if sender.id == recipient.id:
                raise TransferToSelf("a member cannot transfer points to themselves", field="recipient")
            policy = policy_in_force(connection, now).policy.transfers
            if policy.daily_points_per_sender == 0:
                raise TransfersDisabled("the network policy has point transfers turned off")
            locked = LedgerRepository(connection).lock_members([sender.id, recipient.id])
            households = HouseholdRepository(connection)
            household_id = _check_limits(households, policy, sender, recipient, command.points, now)
            posted = self._move(connection, locked[sender.id], locked[recipient.id], command.points, now)
            households.insert_transfer(
                transaction_id=posted.transaction_id, household_id=household_id, sender_member_id=sender.id,
                recipient_member_id=recipient.id, points=command.points, transferred_at=now,
            )  # fmt: skip
            return TransferView(
                posted.public_id, households.by_id(household_id).public_id, sender.member_number,
                recipient.member_number, command.points, now,
            )  # fmt: skip

        return run_once(self.uow, request, "TransferPoints", command, TransferView, work)

    def _move(
        self, connection: Connection, sender: MemberAccounts, recipient: MemberAccounts, points: int, now: datetime
    ) -> Posted:
        """Books the transfer: the sender's available points, first to expire first."""
        repository = LedgerRepository(connection)
        held = self.held_points(connection, sender.member_id, now)
        available = repository.spendable(sender.member_id, now, now) - held
        plan = plan_consumption(repository.lots_with_points(sender.member_id), points, now)
        if plan is None or points > available:
            raise InsufficientPoints(
                f"the sender has {max(available, 0)} points available; cannot transfer {points}",
                available_points=str(max(available, 0)),
            )
        posting = Posting(kind="TRANSFER", member_id=sender.member_id, partner_id=None, contract_version_id=None,
                          business_time=now)  # fmt: skip
        posted, _ = Ledger(repository, recorded_at=now).transfer(sender, recipient, posting, plan)
        return posted

    def _member(self, connection: Connection, viewer: Viewer, identifier: MemberIdentifier) -> MemberRow:
        """The member, if the viewer may see them: a partner sees only members who have dealt with it."""
        repository = MemberRepository(connection)
        member = find_member(repository, identifier, self.identifier_pepper)
        if member is None or (viewer.partner_id is not None and not repository.is_linked(member.id, viewer.partner_id)):
            raise MemberNotFound("no member has that identifier")
        return member


def _check_limits(
    repository: HouseholdRepository, policy: TransferPolicy, sender: MemberRow, recipient: MemberRow, points: int,
    now: datetime,
) -> int:  # fmt: skip
    """Every limit of the transfer policy, under both members' locks; returns the household's id."""
    sending, receiving = repository.open_membership(sender.id), repository.open_membership(recipient.id)
    if sending is None or receiving is None or sending.household_id != receiving.household_id:
        raise NotSameHousehold("points are transferred only between members of the same household")
    size = len(repository.current_members(sending.household_id))
    if size > policy.max_household_members:
        raise HouseholdTooLarge(
            f"the household has {size} members, more than the {policy.max_household_members} transfers allow",
            max_household_members=policy.max_household_members,
        )
    _require_age(policy, now, ((sender, sending, "sender"), (recipient, receiving, "recipient")))
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    sent_today = repository.points_sent_since(sender.id, day_start)
    if sent_today + points > policy.daily_points_per_sender:
        left = max(policy.daily_points_per_sender - sent_today, 0)
        raise DailyTransferLimitExceeded(
            f"the sender may transfer {left} more points today (UTC); {policy.daily_points_per_sender} a day",
            remaining_points=left,
        )
    senders = repository.senders_since(recipient.id, now - SENDER_WINDOW) | {sender.id}
    if len(senders) > policy.max_senders_per_recipient:
        raise TooManySenders(
            f"the recipient may receive points from at most {policy.max_senders_per_recipient} members "
            f"in {SENDER_WINDOW.days} days",
            max_senders_per_recipient=policy.max_senders_per_recipient,
        )
    return sending.household_id


def _require_age(
    policy: TransferPolicy, now: datetime, parties: tuple[tuple[MemberRow, MembershipRow, str], ...]
) -> None:
    """Both accounts old enough, then both memberships: a fresh account is the first thing to say."""
    for member, _, role in parties:
        if member.enrolled_at > now - timedelta(days=policy.min_account_age_days):
            raise AccountTooNew(
                f"the {role}'s account must be at least {policy.min_account_age_days} days old to transfer points",
                member=role, min_account_age_days=policy.min_account_age_days,
            )  # fmt: skip
    for _, membership, role in parties:
        if membership.joined_at > now - timedelta(days=policy.min_membership_days):
            raise MembershipTooNew(
                f"the {role} must have been in the household at least {policy.min_membership_days} days",
                member=role, min_membership_days=policy.min_membership_days,
            )  # fmt: skip


def _require_size(policy: TransferPolicy, size: int) -> None:
    if size > policy.max_household_members:
        raise HouseholdTooLarge(
            f"a household has at most {policy.max_household_members} members",
            max_household_members=policy.max_household_members,
        )


def _require_no_household(repository: HouseholdRepository, member: MemberRow) -> None:
    if repository.open_membership(member.id) is not None:
        raise AlreadyInHousehold(f"member {member.member_number} is already in a household; they leave it first")


def _household(repository: HouseholdRepository, household_id: str) -> HouseholdRow:
    household = repository.by_public_id(household_id)
    if household is None:
        raise HouseholdNotFound("no household has that id", household_id=household_id)
    return household


def _visible_numbers(
    connection: Connection, viewer: Viewer, repository: HouseholdRepository, household: HouseholdRow
) -> set[str] | None:
    """The member numbers a partner may see in the household (None: operator staff see all)."""
    if viewer.partner_id is None:
        return None
    members = MemberRepository(connection)
    return {
        row.member_number
        for row in repository.current_members(household.id)
        if members.is_linked(row.member_id, viewer.partner_id)
    }


def _view(
    repository: HouseholdRepository, household: HouseholdRow, visible_to: set[str] | None = None
) -> HouseholdView:
    return HouseholdView(
        household.public_id, household.created_at, household.created_by,
        [
            HouseholdMemberView(row.member_number, row.joined_at)
            for row in repository.current_members(household.id)
            if visible_to is None or row.member_number in visible_to
        ],
    )  # fmt: skip
