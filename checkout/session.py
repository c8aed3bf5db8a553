"""What every checkout use case needs inside its transaction: repositories, terms, member, balance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from checkout.commands import BalanceView, Basket
from checkout.errors import CurrencyMismatch, DailyIssuanceCapExceeded, InsufficientPoints, TransactionLimitExceeded
from checkout.repository import CheckoutRepository, LockedMember, earn_reads_of, locked_member_of
from common.errors import CoalitionError
from common.idempotency import RequestKey
from ledger.earn_statement import EarnIds
from ledger.posting import Ledger
from ledger.repository import LedgerRepository, MemberAccounts
from members.identifiers import IdentifierKind, MemberIdentifier, lookup_hash, normalise
from members.repository import MemberRepository, MemberRow
from members.services import MemberNotFound, enroll_member, find_member
from partners.rates import ContractTerms, ContractVersionView
from partners.repository import PartnerRepository
from partners.services import partner_terms_in_force, require_terms_in_force
from programme.bonuses import AwardedBonus, award_sign_up_bonus
from programme.partner_programme import ActivePromotion
from programme.policy import DEFAULT_VERSION, ExpiryPolicy, NetworkPolicy, add_months
from programme.referrals import SamePerson
from programme.services import policy_in_force
from programme.statement import member_balance


@dataclass(frozen=True)
class CheckoutSettings:
    """How the checkout runs. How long points live and what counts as expiring soon come from the
    network policy in force (programme/policy.py); a test may pin them in days instead."""

    identifier_pepper: bytes
    points_lifetime_days: int | None = None  # None: the policy's expiry.lifetime_months
    default_hold_ttl_seconds: int = 900
    max_hold_ttl_seconds: int = 86_400
    expiring_soon_days: int | None = None  # None: the policy's expiry.expiring_soon_days
    # Points pending outside the ledger (open card authorisations), added to the balance's pending
    # figure: (connection, member id, now) -> points. Injected so checkout does not depend on cards.
    pending_sources: tuple[Callable[[Connection, int, datetime], int], ...] = ()
    # Signs that a referrer and the member they referred are one person (a shared card token), from
    # packages checkout does not depend on (programme/referrals.py).
    same_person_checks: tuple[SamePerson, ...] = ()


@dataclass(frozen=True)
class CheckoutMember:
    """The member a checkout call is about, with their balance row locked for this transaction."""

    row: MemberRow
    accounts: MemberAccounts
    is_new: bool
    sign_up_bonus: AwardedBonus | None = None  # the network's, when this call enrolled the member


@dataclass(frozen=True)
class EarnContext:
    """What an earn reads before it writes (``CheckoutSession.earn_reads``)."""

    version: ContractVersionView
    promotion: ActivePromotion | None  # the partner's best running at the business time
    receipt_known: bool  # whether the partner has recorded a purchase with the receipt


@dataclass(frozen=True)
class PartnerRef:
    """The authenticated partner: its id and the scope its idempotency keys live in."""

    partner_id: int
    idempotency_scope: str

    def request(self, request_id: str) -> RequestKey:
        return RequestKey(self.idempotency_scope, request_id)


class CheckoutSession:
    """``now`` is the server's time (when things are recorded, what is spendable); ``business_time`` when
    the event happened: the same online, the till's original time for an offline item (checkout/offline.py)."""

    def __init__(
        self, connection: Connection, settings: CheckoutSettings, now: datetime, business_time: datetime | None = None
    ) -> None:
        self.settings = settings
        self.now = now
        self.business_time = business_time or now
        self.connection = connection
        self.members = MemberRepository(connection)
        self.ledger_records = LedgerRepository(connection)
        self.records = CheckoutRepository(connection)
        self.ledger = Ledger(self.ledger_records, now)
        self._policy: NetworkPolicy | None = None
        self._earn_reads_ahead: tuple[int, str, Callable[[], list[tuple[Any, ...]]]] | None = None
        self._member_ahead: tuple[MemberIdentifier, int, Callable[[], list[tuple[Any, ...]]]] | None = None
        self._earn_ids_ahead: Callable[[], EarnIds] | None = None

    def policy(self) -> NetworkPolicy:
        """The network policy in force now (read once per transaction)."""
        if self._policy is None:
            self._policy = policy_in_force(self.ledger_records.connection, self.now).policy
        return self._policy

    def expiry_policy(self) -> ExpiryPolicy:
        return self.policy().expiry

    def new_lot_expiry(self) -> datetime:
        """When points earned at the business time expire: fixed at earning, so a later policy never
        shortens them. An offline earn's points live from the purchase, under the policy then in force."""
        earned_at = self.business_time
        if self.settings.points_lifetime_days is not None:
            return earned_at + timedelta(days=self.settings.points_lifetime_days)
        if earned_at == self.now:
            return add_months(earned_at, self.expiry_policy().lifetime_months)
        return add_months(
            earned_at, policy_in_force(self.ledger_records.connection, earned_at).policy.expiry.lifetime_months
        )

    def expiring_soon_until(self) -> datetime:
        days = self.settings.expiring_soon_days
        return self.now + timedelta(days=days if days is not None else self.expiry_policy().expiring_soon_days)

    def read_ahead_for_earn(self, partner_id: int, receipt_id: str, identifier: MemberIdentifier) -> None:
        """Queues an earn's first two reads, ``earn_reads``'s statement and the member's lock, and the
        reservation of its ledger ids (``reserved_earn_ids``), to go with the transaction's next round
        trip (the idempotency lookup's): one round trip where there were three, and the ledger's writes
        can then wait for the COMMIT (an earn of a new receipt by a known member, with no debt to repay
        and no bonus policy that reads, takes two round trips). Nothing is raised here: ``earn_reads``
        and ``member`` raise what they find, in their order. The lock read ahead skips a row another
        transaction holds (``member`` then waits for it), so a replay or a refusal, which take the lock
        too and drop it with their transaction, never wait."""
        self._earn_reads_ahead = (
            partner_id, receipt_id,
            self.records.read_earn_reads_ahead(partner_id, receipt_id, self.business_time, self.now),
        )  # fmt: skip
        self._earn_ids_ahead = self.ledger_records.reserve_earn_ids_ahead()
        try:
            identifier = normalise(identifier)
        except CoalitionError:
            return  # ``member`` raises it, after the lookup, as ever
        if identifier.kind is IdentifierKind.MEMBER_NUMBER:
            lock = self.records.lock_member_ahead(partner_id, number=identifier.value)
        else:
            lock = self.records.lock_member_ahead(partner_id, kind=identifier.kind, hashed=self._hash(identifier))
        self._member_ahead = (identifier, partner_id, lock)

    def reserved_earn_ids(self) -> EarnIds | None:
        """The ids reserved for this transaction's earn by ``read_ahead_for_earn``, once; else None."""
        ahead, self._earn_ids_ahead = self._earn_ids_ahead, None
        return None if ahead is None else ahead()

    def earn_reads(self, partner_id: int, receipt_id: str) -> EarnContext:
        """What an earn reads first, in one statement: the contract version and the partner's best
        promotion at the business time (the partner must be active now), the policy in force now, and
        whether the receipt is known."""
        ahead, self._earn_reads_ahead = self._earn_reads_ahead, None
        if ahead is not None and ahead[:2] == (partner_id, receipt_id):
            reads = earn_reads_of(ahead[2]())
        else:
            reads = self.records.earn_reads(partner_id, receipt_id, self.business_time, self.now)
        if self._policy is None:
            self._policy = (reads.policy or DEFAULT_VERSION).policy
        terms = require_terms_in_force(self.ledger_records.connection, partner_id, reads.version)
        return EarnContext(terms, reads.promotion, reads.receipt_known)

    def terms(self, partner_id: int) -> ContractVersionView:
        """The contract version in force when the event happened (the partner must be active now)."""
        return partner_terms_in_force(self.ledger_records.connection, partner_id, self.business_time)

    def contract_version(self, version_id: int) -> ContractVersionView:
        return PartnerRepository(self.ledger_records.connection).version_by_id(version_id)

    def member(self, identifier: MemberIdentifier, partner_id: int, *, enroll: bool = False) -> CheckoutMember:
        """Finds (or enrols) the member a partner names at checkout, locks their balance, records the link."""
        identifier = normalise(identifier)
        pepper = self.settings.identifier_pepper
        ahead, self._member_ahead = self._member_ahead, None
        found = locked_member_of(ahead[2]()) if ahead is not None and ahead[:2] == (identifier, partner_id) else None
        if found is None:  # not read ahead, or skipped as busy, or unknown: wait for the lock to tell
            found = self._lock_member(identifier, partner_id)
        if found is not None:
            if not found.is_linked:
                self.members.link_partner(found.member.id, partner_id, self.now)
            return CheckoutMember(found.member, found.accounts, is_new=False)
        if not enroll:
            raise MemberNotFound("no member has that identifier")
        member, is_new = enroll_member(self.members, identifier, pepper, partner_id=partner_id, now=self.now)
        if is_new:
            self.ledger_records.open_member(member.id)
        self.members.link_partner(member.id, partner_id, self.now)
        accounts = self.ledger_records.lock_member(member.id)
        sign_up = award_sign_up_bonus(self.ledger, accounts, self.policy(), self.now) if is_new else None
        if sign_up is not None:
            accounts = self.ledger_records.member_accounts(member.id)
        return CheckoutMember(member, accounts, is_new, sign_up)

    def _lock_member(self, identifier: MemberIdentifier, partner_id: int) -> LockedMember | None:
        """The member by a normalised identifier, their balance row locked (waiting for it if need be)."""
        if identifier.kind is IdentifierKind.MEMBER_NUMBER:
            return self.records.lock_member(partner_id, number=identifier.value)
        return self.records.lock_member(partner_id, kind=identifier.kind, hashed=self._hash(identifier))

    def _hash(self, identifier: MemberIdentifier) -> str:
        return lookup_hash(identifier, self.settings.identifier_pepper)

    def visible_member(self, identifier: MemberIdentifier, partner_id: int) -> MemberRow:
        """A member this partner has dealt with; any other looks exactly like an unknown one."""
        member = find_member(self.members, identifier, self.settings.identifier_pepper)
        if member is None or not self.members.is_linked(member.id, partner_id):
            raise MemberNotFound("no member has that identifier")
        return member

    def spendable_points(self, member_id: int, *, live_until: datetime | None = None) -> int:
        """Available points less open holds; with ``live_until``, only points that live that long."""
        spendable = self.ledger_records.spendable(member_id, self.now, live_until or self.now)
        return max(spendable - self.records.held_points(member_id, self.now), 0)

    def balance(self, member: MemberRow) -> BalanceView:
        figures = member_balance(
            self.ledger_records.connection, member.id, self.now, self.expiring_soon_until(),
            held_points=lambda _connection, member_id, now: self.records.held_points(member_id, now),
            pending_sources=self.settings.pending_sources, tiers=self.policy().tiers,
        )  # fmt: skip
        return BalanceView(member_number=member.member_number, **vars(figures))

    def count_issuance(self, partner_id: int, terms: ContractTerms, points: int) -> None:
        """Enforces the contract's per-transaction limit and daily issuance cap on an earn."""
        require_within_transaction_limit(points, terms)
        if terms.daily_issuance_cap is None or points == 0:
            return
        issued = self.records.add_daily_issuance(partner_id, self.now.date().isoformat(), points)
        if issued > terms.daily_issuance_cap:
            raise DailyIssuanceCapExceeded(
                "the partner's daily issuance cap is reached", limit=terms.daily_issuance_cap
            )


def require_within_transaction_limit(points: int, terms: ContractTerms) -> None:
    """The contract's most points one transaction may earn or spend."""
    limit = terms.max_points_per_transaction
    if limit is not None and points > limit:
        raise TransactionLimitExceeded(f"{points} points exceed the limit of {limit} per transaction", limit=limit)


def insufficient_points(points: int, available: int) -> InsufficientPoints:
    return InsufficientPoints(f"{points} points requested, {available} available", available=available)


def require_currency(currency: str, terms: ContractTerms) -> None:
    if currency != terms.currency:
        raise CurrencyMismatch(
            f"this partner settles in {terms.currency}, not {currency or 'an unspecified currency'}",
            expected=terms.currency,
        )


def require_basket(basket: Basket, terms: ContractTerms) -> None:
    basket.validate()
    require_currency(basket.currency, terms)
