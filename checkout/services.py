"""Checkout use cases. Each write runs exactly once per idempotency key (checkout.idempotency)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from checkout.commands import (
    ActivityAwardCommand,
    ActivityAwardResult,
    BalanceView,
    Basket,
    CaptureCommand,
    CaptureResult,
    DonateCommand,
    DonationResult,
    EarnCommand,
    EarnResult,
    EnrollCommand,
    HoldCommand,
    HoldView,
    MemberView,
    QuoteCommand,
    QuoteResult,
    RedeemCommand,
    RedeemResult,
    ReleaseCommand,
    ReturnCommand,
    ReturnResult,
)
from checkout.errors import (
    BasketRequired,
    BasketShareExceeded,
    CaptureExceedsHold,
    HoldAlreadyResolved,
    HoldExpired,
    HoldNotFound,
    InvalidHoldTtl,
    InvalidPoints,
    NotACharity,
    ReceiptAlreadyEarned,
    ReceiptMemberMismatch,
)
from checkout.offline import (
    OfflineItem,
    OfflineItemResult,
    OfflineRedemptionResult,
    RefusedItem,
    answer_each,
    charge_allowance,
    require_batch,
    require_business_time,
)
from checkout.repository import CheckoutRepository, HoldRow
from checkout.returns import return_purchase
from checkout.session import (
    CheckoutSession,
    CheckoutSettings,
    PartnerRef,
    insufficient_points,
    require_basket,
    require_currency,
    require_within_transaction_limit,
)
from common.idempotency import Outcome, run_once
from common.ids import new_id
from common.uow import UnitOfWork
from ledger.lots import plan_consumption, plan_up_to
from ledger.posting import NewLot, Posted, Posting
from ledger.repository import MemberAccounts
from members.identifiers import MemberIdentifier
from members.repository import MemberRow
from members.services import MemberNotFound
from partners.rates import ContractVersionView, max_points_for_basket, points_for_spend, value_of_points_minor
from partners.repository import PartnerRepository
from partners.services import PartnerNotFound
from programme.bonuses import ACTIVITY, PROMOTION, AwardedBonus, count_awards, partner_lot, post_bonus
from programme.partner_programme import (
    ActivePromotion,
    ActivityLimitReached,
    activity_in_force,
    period_start,
)
from programme.referrals import record_referral, referral_code, reward_first_purchase
from programme.tiers import tier_bonus_on_earn


class CheckoutService:
    def __init__(self, uow: UnitOfWork, settings: CheckoutSettings) -> None:
        self.uow = uow
        self.settings = settings

    def _session(self, connection: Connection, business_time: datetime | None = None) -> CheckoutSession:
        return CheckoutSession(connection, self.settings, self.uow.clock.now(), business_time)

    def quote(self, partner: PartnerRef, command: QuoteCommand) -> QuoteResult:
        """What a basket would earn and how much of it points could pay. Writes nothing."""

        def work(connection: Connection) -> QuoteResult:
            session = self._session(connection)
            version = session.terms(partner.partner_id)
            require_basket(command.basket, version.terms)
            member_number, available = "", 0
            if command.member is not None:
                member = session.visible_member(command.member, partner.partner_id)
                member_number, available = member.member_number, session.spendable_points(member.id)
            redeemable = min(available, max_points_for_basket(command.basket.total_minor, version.terms))
            return QuoteResult(
                member_number=member_number, currency=version.terms.currency,
                points_to_earn=points_for_spend(command.basket.eligible_minor, version.terms),
                available_points=available, redeemable_points=redeemable,
                redeemable_value_minor=value_of_points_minor(redeemable, version.terms),
                contract_version=version.version,
            )  # fmt: skip

        return self.uow.run(work)

    def earn_points(self, partner: PartnerRef, request_id: str, command: EarnCommand) -> Outcome[EarnResult]:
        """Credits points for a paid receipt; one receipt earns at most once."""
        command.basket.validate()
        ahead: list[CheckoutSession] = []  # the attempt's session, its first reads queued with the lookup

        def read_ahead(connection: Connection) -> None:
            ahead[:] = [self._session(connection)]
            ahead[0].read_ahead_for_earn(partner.partner_id, command.receipt_id, command.member)

        def work(connection: Connection) -> EarnResult:
            session = ahead.pop() if ahead and ahead[0].connection is connection else self._session(connection)
            return _earn(session, partner, command)

        request = partner.request(request_id)
        return run_once(self.uow, request, "EarnPoints", command, EarnResult, work, read_ahead=read_ahead)

    def hold_points(self, partner: PartnerRef, request_id: str, command: HoldCommand) -> Outcome[HoldView]:
        """Reserves points for an open basket until captured, released or expired."""
        _require_positive(command.points)
        ttl_seconds = command.ttl_seconds or self.settings.default_hold_ttl_seconds
        if not 0 < ttl_seconds <= self.settings.max_hold_ttl_seconds:
            raise InvalidHoldTtl(f"ttl_seconds must be between 1 and {self.settings.max_hold_ttl_seconds}")

        def work(connection: Connection) -> HoldView:
            session = self._session(connection)
            version = session.terms(partner.partner_id)
            require_currency(command.currency, version.terms)
            member = session.member(command.member, partner.partner_id).row
            expires_at = session.now + timedelta(seconds=ttl_seconds)
            _check_limits(version, command.points, command.basket_total_minor)
            # Only points that outlive the hold can back it: a capture must not find them expired.
            available = session.spendable_points(member.id, live_until=expires_at)
            if command.points > available:
                raise insufficient_points(command.points, available)
            hold_id = session.records.insert_hold(
                public_id=new_id(), partner_id=partner.partner_id, member_id=member.id,
                contract_version_id=version.id, points=command.points, captured_points=0, status="HELD",
                receipt_id=command.receipt_id or None, created_at=session.now, expires_at=expires_at,
            )  # fmt: skip
            return _hold_view(session, session.records.hold_by_id(hold_id), member, version)

        return run_once(self.uow, partner.request(request_id), "HoldPoints", command, HoldView, work)

    def capture_hold(self, partner: PartnerRef, request_id: str, command: CaptureCommand) -> Outcome[CaptureResult]:
        """Spends all or part of a hold; the rest is released."""
        if command.points < 0:
            raise InvalidPoints("points must not be negative (0 captures the whole hold)")

        def work(connection: Connection) -> CaptureResult:
            session = self._session(connection)
            hold, member, version = _open_hold(session, partner, command.hold_id)
            points = command.points or hold.points
            if points > hold.points:
                raise CaptureExceedsHold(f"cannot capture {points} of a {hold.points}-point hold")
            accounts = session.ledger_records.lock_member(member.id)
            if hold.expires_at <= self.uow.clock.now():  # it may have lapsed while we waited for the lock
                raise HoldExpired("the hold expired and its points were released")
            posted = _spend(session, accounts, member, partner, version, points, hold.receipt_id, hold.id)
            if not session.records.resolve_hold(
                hold.id, status="CAPTURED", now=session.now, captured_points=points,
                capture_transaction_id=posted.transaction_id,
            ):  # fmt: skip
                raise HoldAlreadyResolved("the hold was resolved by another request")
            view = _hold_view(session, session.records.hold_by_id(hold.id), member, version)
            return CaptureResult(
                transaction_id=posted.public_id, hold=view, points_captured=points,
                value_minor=value_of_points_minor(points, version.terms), points_released=hold.points - points,
            )  # fmt: skip

        return run_once(self.uow, partner.request(request_id), "CaptureHold", command, CaptureResult, work)

    def release_hold(self, partner: PartnerRef, request_id: str, command: ReleaseCommand) -> Outcome[HoldView]:
        def work(connection: Connection) -> HoldView:
            session = self._session(connection)
            hold, member, version = _open_hold(session, partner, command.hold_id)
            session.ledger_records.lock_member(member.id)
            if not session.records.resolve_hold(hold.id, status="RELEASED", now=session.now):
                raise HoldAlreadyResolved("the hold was resolved by another request")
            return _hold_view(session, session.records.hold_by_id(hold.id), member, version)

        return run_once(self.uow, partner.request(request_id), "ReleaseHold", command, HoldView, work)

    def redeem_points(self, partner: PartnerRef, request_id: str, command: RedeemCommand) -> Outcome[RedeemResult]:
        """One-step redemption for simple integrations: hold and capture at once."""
        _require_positive(command.points)

        def work(connection: Connection) -> RedeemResult:
            session = self._session(connection)
            version = session.terms(partner.partner_id)
            require_currency(command.currency, version.terms)
            found = session.member(command.member, partner.partner_id)
            member, accounts = found.row, found.accounts
            _check_limits(version, command.points, command.basket_total_minor)
            posted = _spend(session, accounts, member, partner, version, command.points, command.receipt_id, None)
            return RedeemResult(
                transaction_id=posted.public_id, member_number=member.member_number, points_redeemed=command.points,
                value_minor=value_of_points_minor(command.points, version.terms), currency=version.terms.currency,
                contract_version=version.version,
            )  # fmt: skip

        return run_once(self.uow, partner.request(request_id), "RedeemPoints", command, RedeemResult, work)

    def donate_points(self, partner: PartnerRef, request_id: str, command: DonateCommand) -> Outcome[DonationResult]:
        """A member gives points to a charity partner, through the partner that calls (its app or till).

        On the ledger it is a redemption at the charity, under the charity's contract, so settlement
        reimburses the charity like any redeeming partner. The calling partner must know the member, as
        for any spend; the charity does not get to see the member.
        """
        _require_positive(command.points)

        def work(connection: Connection) -> DonationResult:
            session = self._session(connection)
            charity = PartnerRepository(connection).by_code(command.charity_partner_code)
            if charity is None:
                raise PartnerNotFound("no partner has that id", partner_id=command.charity_partner_code)
            if charity.kind != "CHARITY":
                raise NotACharity(f"{charity.partner_code} is not a charity", partner_id=charity.partner_code)
            version = session.terms(charity.id)  # refused while the charity is suspended or has no contract
            found = session.member(command.member, partner.partner_id)
            require_within_transaction_limit(command.points, version.terms)
            charity_ref = PartnerRef(charity.id, f"partner:{charity.partner_code}")
            posted = _spend(session, found.accounts, found.row, charity_ref, version, command.points, None, None)
            return DonationResult(
                transaction_id=posted.public_id, member_number=found.row.member_number,
                points_donated=command.points, charity_partner_code=charity.partner_code,
                value_minor=value_of_points_minor(command.points, version.terms), currency=version.terms.currency,
                contract_version=version.version,
            )  # fmt: skip

        return run_once(self.uow, partner.request(request_id), "DonatePoints", command, DonationResult, work)

    def return_purchase(self, partner: PartnerRef, request_id: str, command: ReturnCommand) -> Outcome[ReturnResult]:
        """A full or partial return of a receipt."""

        def work(connection: Connection) -> ReturnResult:
            session = self._session(connection)
            session.terms(partner.partner_id)  # the partner must be active
            return return_purchase(session, partner, command)

        return run_once(self.uow, partner.request(request_id), "ReturnPurchase", command, ReturnResult, work)

    def submit_offline_batch(
        self, partner: PartnerRef, store_id: str, items: Sequence[OfflineItem | RefusedItem]
    ) -> list[OfflineItemResult]:
        """A store's queued items, each applied once by its own key in its own transaction (checkout/offline.py)."""
        require_batch(store_id, items)
        return answer_each(items, lambda item: self._offline_item(partner, store_id, item))

    def _offline_item(self, partner: PartnerRef, store_id: str, item: OfflineItem) -> OfflineItemResult:
        operation, key = item.operation, partner.request(item.request_id)
        sent = {"store_id": store_id, "item": item}  # what a resend must repeat exactly

        def session(connection: Connection) -> CheckoutSession:
            now = self.uow.clock.now()
            return CheckoutSession(connection, self.settings, now, require_business_time(item.business_time, now))

        if isinstance(operation, EarnCommand):
            operation = replace(operation, channel="IN_STORE", store_id=store_id)
            operation.basket.validate()
            earned = run_once(self.uow, key, "OfflineEarn", sent, EarnResult,
                              lambda connection: _earn(session(connection), partner, operation))  # fmt: skip
            return OfflineItemResult(item.request_id, earn=earned.result, is_replay=earned.is_replay)
        if isinstance(operation, ReturnCommand):

            def give_back(connection: Connection) -> ReturnResult:
                checkout = session(connection)
                checkout.terms(partner.partner_id)  # the partner must be active
                return return_purchase(checkout, partner, operation)

            returned = run_once(self.uow, key, "OfflineReturn", sent, ReturnResult, give_back)
            return OfflineItemResult(item.request_id, purchase_return=returned.result, is_replay=returned.is_replay)
        _require_positive(operation.points)
        redeemed = run_once(
            self.uow, key, "OfflineRedeem", sent, OfflineRedemptionResult,
            lambda connection: _redeem_offline(session(connection), partner, store_id, operation),
        )  # fmt: skip
        return OfflineItemResult(item.request_id, redemption=redeemed.result, is_replay=redeemed.is_replay)

    def enroll_member(self, partner: PartnerRef, request_id: str, command: EnrollCommand) -> Outcome[MemberView]:
        """Enrols a member by phone or email, or links the existing member to this partner."""

        def work(connection: Connection) -> MemberView:
            session = self._session(connection)
            session.terms(partner.partner_id)  # a suspended partner enrols no one
            found = session.member(command.member, partner.partner_id, enroll=True)
            if command.referral_code.strip():
                record_referral(
                    connection, command.referral_code, referred_member_id=found.row.id, is_new_member=found.is_new,
                    now=session.now,
                )  # fmt: skip
            return _member_view(session, found.row, is_newly_enrolled=found.is_new)

        return run_once(self.uow, partner.request(request_id), "EnrollMember", command, MemberView, work)

    def get_referral_code(self, partner: PartnerRef, identifier: MemberIdentifier) -> tuple[str, str]:
        """The member's number and shareable referral code, made the first time it is asked for."""

        def work(connection: Connection) -> tuple[str, str]:
            session = self._session(connection)
            session.terms(partner.partner_id)
            member = session.visible_member(identifier, partner.partner_id)
            session.ledger_records.lock_member(member.id)  # one code per member, even when asked twice at once
            return member.member_number, referral_code(connection, member.id, session.now)

        return self.uow.run(work)

    def award_activity_points(
        self, partner: PartnerRef, request_id: str, command: ActivityAwardCommand
    ) -> Outcome[ActivityAwardResult]:
        """Points for an activity the partner defined, within its per-member limit, funded by the partner."""

        def work(connection: Connection) -> ActivityAwardResult:
            session = self._session(connection)
            version = session.terms(partner.partner_id)
            activity = activity_in_force(connection, partner.partner_id, command.activity_code)
            found = session.member(command.member, partner.partner_id)
            since = period_start(activity.limit_period, session.now)
            awarded = count_awards(
                connection, member_id=found.row.id, kind=ACTIVITY, detail=activity.code,
                partner_id=partner.partner_id, since=since,
            )  # fmt: skip
            if awarded >= activity.max_awards_per_member:
                raise ActivityLimitReached(
                    f"the member already had {awarded} of {activity.max_awards_per_member} awards "
                    f"for this activity ({activity.limit_period.lower()})",
                    limit=activity.max_awards_per_member, limit_period=activity.limit_period,
                )  # fmt: skip
            session.count_issuance(partner.partner_id, version.terms, activity.points)
            lot = partner_lot(
                version, earned_at=session.now, available_at=session.now, expires_at=session.new_lot_expiry()
            )
            bonus = post_bonus(
                session.ledger, found.accounts, kind=ACTIVITY, points=activity.points, detail=activity.code,
                lot=lot, partner_id=partner.partner_id, business_time=session.now,
            )  # fmt: skip
            return ActivityAwardResult(
                transaction_id=bonus.transaction_id, member_number=found.row.member_number,
                activity_code=activity.code, points_awarded=activity.points,
                awards_left_in_period=activity.max_awards_per_member - awarded - 1, available_at=lot.available_at,
                expires_at=lot.expires_at, contract_version=version.version,
            )  # fmt: skip

        return run_once(
            self.uow, partner.request(request_id), "AwardActivityPoints", command, ActivityAwardResult, work
        )

    def get_balance(self, partner: PartnerRef, identifier: MemberIdentifier) -> BalanceView:
        def work(connection: Connection) -> BalanceView:
            session = self._session(connection)
            session.terms(partner.partner_id)  # a suspended partner reads nothing
            return session.balance(session.visible_member(identifier, partner.partner_id))

        return self.uow.run(work)

    def lookup_member(self, partner: PartnerRef, identifier: MemberIdentifier) -> MemberView:
        def work(connection: Connection) -> MemberView:
            session = self._session(connection)
            session.terms(partner.partner_id)  # a suspended partner reads nothing
            return _member_view(session, session.visible_member(identifier, partner.partner_id))

        return self.uow.run(work)

    def overdue_holds(self) -> int:
        """The sweep's backlog: holds past their time still marked HELD (an operations signal)."""
        return self.uow.run_statement(
            lambda connection: CheckoutRepository(connection).overdue_holds(self.uow.clock.now())
        )

    def expire_holds(self, *, batch_size: int = 500) -> int:
        """Marks every hold past its time as EXPIRED, a batch per transaction.

        Lapsed holds already stopped counting when they lapsed; this only records it.
        """

        def expire_batch(connection: Connection) -> int:
            return CheckoutRepository(connection).expire_holds(self.uow.clock.now(), batch_size)

        expired = 0
        while True:
            batch = self.uow.run(expire_batch)
            expired += batch
            if batch < batch_size:
                return expired


def _earn(session: CheckoutSession, partner: PartnerRef, command: EarnCommand) -> EarnResult:
    context = session.earn_reads(partner.partner_id, command.receipt_id)
    version, running_promotion = context.version, context.promotion
    require_currency(command.basket.currency, version.terms)
    found = session.member(command.member, partner.partner_id, enroll=command.enroll_if_unknown)
    member, accounts, is_new = found.row, found.accounts, found.is_new
    points = points_for_spend(command.basket.eligible_minor, version.terms)
    promotion = running_promotion if points > 0 else None
    promotion_points = points * promotion.bonus_percent // 100 if promotion else 0
    # The partner funds its promotion: its limits and daily cap count those points too.
    session.count_issuance(partner.partner_id, version.terms, points + promotion_points)
    transaction_id, public_id, repaid = None, "", 0
    lot = _new_lot(partner, version, session)
    bonuses: list[AwardedBonus] = [found.sign_up_bonus] if found.sign_up_bonus else []
    if points > 0:
        posted, _, repaid = session.ledger.earn(
            accounts, _posting("EARN", member, partner, version, session, command.receipt_id, command.basket),
            points, lot, session.reserved_earn_ids(),
        )  # fmt: skip
        transaction_id, public_id = posted.transaction_id, posted.public_id
        bonuses += _purchase_bonuses(session, accounts, version, posted, points, lot, promotion, promotion_points)
    earned = {"earned_at": session.business_time, "earn_transaction_id": transaction_id, "points_earned": points,
              "total_minor": command.basket.total_minor, "channel": command.channel,
              "store_id": command.store_id or None}  # fmt: skip
    _record_earn(session, partner, member, version, command.receipt_id, earned, receipt_known=context.receipt_known)
    return EarnResult(
        transaction_id=public_id, member_number=member.member_number, points_earned=points,
        debt_repaid_points=repaid, available_at=lot.available_at, expires_at=lot.expires_at,
        contract_version=version.version, is_newly_enrolled=is_new, bonuses=tuple(bonuses),
    )  # fmt: skip


def _purchase_bonuses(
    session: CheckoutSession, accounts: MemberAccounts, version: ContractVersionView, earn: Posted, points: int,
    lot: NewLot, promotion: ActivePromotion | None, promotion_points: int,
) -> list[AwardedBonus]:  # fmt: skip
    """The bonus lots that ride on a purchase's earn, each spendable and expiring with the earn's lot:
    the partner's promotion (partner-funded), the member's tier and a referral (operator-funded)."""
    policy, awarded = session.policy(), []
    if promotion is not None and promotion_points > 0:
        awarded.append(
            post_bonus(
                session.ledger, accounts, kind=PROMOTION, points=promotion_points, detail=promotion.promotion_id,
                lot=lot, partner_id=version.partner_id, business_time=session.business_time,
                earn_transaction_id=earn.transaction_id,
            )
        )  # fmt: skip
    tier_bonus = tier_bonus_on_earn(
        session.ledger, accounts, policy, earn=earn, earned_points=points, earn_lot=lot,
        business_time=session.business_time,
    )  # fmt: skip
    referral = reward_first_purchase(
        session.ledger, accounts, policy, earn_lot=lot, business_time=session.business_time,
        same_person=session.settings.same_person_checks,
    )  # fmt: skip
    return awarded + [bonus for bonus in (tier_bonus, referral) if bonus is not None]


def _redeem_offline(
    session: CheckoutSession, partner: PartnerRef, store_id: str, command: RedeemCommand
) -> OfflineRedemptionResult:
    """A redemption a till already granted: within the allowances it is booked even when the member's
    points no longer cover it, and the shortfall becomes the member's debt."""
    version = session.terms(partner.partner_id)
    require_currency(command.currency, version.terms)
    found = session.member(command.member, partner.partner_id)
    member, points = found.row, command.points
    _check_limits(version, points, command.basket_total_minor)
    charge_allowance(session, partner, store_id, member.id, points)
    lots = session.ledger_records.lots_with_points(member.id)
    # Points open holds reserve stay reserved: the shortfall goes to debt instead.
    spendable = sum(lot.remaining_points for lot in lots if lot.is_spendable(session.now))
    budget = max(spendable - session.records.held_points(member.id, session.now), 0)
    plan = plan_up_to(lots, min(points, budget), session.now)
    debt = points - sum(taken for _, taken in plan)
    posting = _posting("REDEEM", member, partner, version, session, command.receipt_id)
    posted = session.ledger.spend_into_debt(found.accounts, posting, plan, debt)
    if command.receipt_id:
        _record_redemption(session, partner, member, version, command.receipt_id, points)
    return OfflineRedemptionResult(
        transaction_id=posted.public_id, member_number=member.member_number, points_redeemed=points,
        debt_points=debt, value_minor=value_of_points_minor(points, version.terms), currency=version.terms.currency,
        contract_version=version.version,
    )  # fmt: skip


def _require_positive(points: int) -> None:
    if points <= 0:
        raise InvalidPoints("points must be positive")


def _posting(
    kind: str, member: MemberRow, partner: PartnerRef, version: ContractVersionView, session: CheckoutSession,
    receipt_id: str | None, basket: Basket | None = None,
) -> Posting:  # fmt: skip
    return Posting(
        kind=kind, member_id=member.id, partner_id=partner.partner_id, contract_version_id=version.id,
        business_time=session.business_time, receipt_id=receipt_id or None,
        amount_minor=basket.total_minor if basket else None, currency=version.terms.currency,
    )  # fmt: skip


def _new_lot(partner: PartnerRef, version: ContractVersionView, session: CheckoutSession) -> NewLot:
    return NewLot(
        issuer_partner_id=partner.partner_id, contract_version_id=version.id,
        issuance_price=version.terms.issuance_price, currency=version.terms.currency,
        earned_at=session.business_time,
        available_at=session.business_time + timedelta(days=version.terms.pending_days),
        expires_at=session.new_lot_expiry(),
    )  # fmt: skip


def _check_limits(version: ContractVersionView, points: int, basket_total_minor: int) -> None:
    """The contract allows paying ``points`` for this basket (the member's balance is checked apart)."""
    terms = version.terms
    if basket_total_minor < 0:
        raise InvalidPoints("basket_total must not be negative")
    if terms.max_points_share_of_basket is not None and basket_total_minor == 0:
        raise BasketRequired("this partner limits the share of a basket paid with points: send basket_total")
    require_within_transaction_limit(points, terms)
    if basket_total_minor and points > (by_basket := max_points_for_basket(basket_total_minor, terms)):
        raise BasketShareExceeded(f"at most {by_basket} points can pay for this basket", limit=by_basket)


def _spend(
    session: CheckoutSession, accounts: MemberAccounts, member: MemberRow, partner: PartnerRef,
    version: ContractVersionView, points: int, receipt_id: str | None, hold_id: int | None,
) -> Posted:  # fmt: skip
    lots = session.ledger_records.lots_with_points(member.id)
    other_holds = session.records.held_points(member.id, session.now, excluding_hold_id=hold_id)
    plan = plan_consumption(lots, points, session.now)
    spendable = sum(lot.remaining_points for lot in lots if lot.is_spendable(session.now))
    if plan is None or spendable - other_holds < points:
        raise insufficient_points(points, max(spendable - other_holds, 0))
    posted = session.ledger.spend(accounts, _posting("REDEEM", member, partner, version, session, receipt_id), plan)
    if receipt_id:
        _record_redemption(session, partner, member, version, receipt_id, points)
    return posted


def _record_earn(
    session: CheckoutSession, partner: PartnerRef, member: MemberRow, version: ContractVersionView,
    receipt_id: str, earned: Mapping[str, object], *, receipt_known: bool,
) -> None:  # fmt: skip
    """Records the receipt as earned (the whole transaction, earn included, rolls back if it had earned
    already). A receipt unknown when the earn read began, as most are, is inserted with the commit: if
    a concurrent earn of it commits first, the insert fails the commit, and the unit of work's retry
    finds the receipt known."""
    values = {"partner_id": partner.partner_id, "receipt_id": receipt_id, "member_id": member.id,
              "currency": version.terms.currency, "contract_version_id": version.id, **earned}  # fmt: skip
    if not receipt_known:
        session.records.queue_purchase(**values)
        return
    purchase = session.records.purchase_for_update(partner.partner_id, receipt_id)
    assert purchase is not None, "purchases are never deleted"
    if purchase.earned_at is not None:
        raise ReceiptAlreadyEarned("this receipt has already earned points", receipt_id=receipt_id)
    if purchase.member_id != member.id:
        raise ReceiptMemberMismatch("points on this receipt were redeemed by another member")
    session.records.update_purchase(purchase.id, **earned)


def _record_redemption(
    session: CheckoutSession, partner: PartnerRef, member: MemberRow, version: ContractVersionView,
    receipt_id: str, points: int,
) -> None:  # fmt: skip
    purchase = session.records.purchase_for_update(partner.partner_id, receipt_id)
    if purchase is None:
        session.records.insert_purchase(
            partner_id=partner.partner_id, receipt_id=receipt_id, member_id=member.id,
            currency=version.terms.currency, total_minor=0, contract_version_id=version.id, points_redeemed=points,
        )  # fmt: skip
    elif purchase.member_id != member.id:
        raise ReceiptMemberMismatch("this receipt belongs to another member")
    else:
        session.records.update_purchase(purchase.id, points_redeemed=purchase.points_redeemed + points)


def _open_hold(
    session: CheckoutSession, partner: PartnerRef, hold_id: str
) -> tuple[HoldRow, MemberRow, ContractVersionView]:
    hold = session.records.hold(hold_id, partner.partner_id)
    if hold is None:
        raise HoldNotFound("no such hold", hold_id=hold_id)
    # A lapsed hold is expired whether or not the sweep has marked it yet: the answer must not depend
    # on when a background job last ran.
    if hold.status == "EXPIRED" or (hold.status == "HELD" and hold.expires_at <= session.now):
        raise HoldExpired("the hold expired and its points were released")
    if hold.status != "HELD":
        raise HoldAlreadyResolved(f"the hold is already {hold.status.lower()}", status=hold.status)
    member = session.members.find_by_id(hold.member_id)
    if member is None:
        raise MemberNotFound("the hold's member no longer exists")
    session.terms(partner.partner_id)  # the partner must still be active
    return hold, member, session.contract_version(hold.contract_version_id)


def _hold_view(session: CheckoutSession, hold: HoldRow, member: MemberRow, version: ContractVersionView) -> HoldView:
    capture_id = ""
    if hold.capture_transaction_id is not None:
        capture_id = session.ledger_records.transaction_public_id(hold.capture_transaction_id)
    return HoldView(
        hold_id=hold.public_id, member_number=member.member_number, points=hold.points,
        captured_points=hold.captured_points, status=hold.status,
        value_minor=value_of_points_minor(hold.points, version.terms), currency=version.terms.currency,
        created_at=hold.created_at, expires_at=hold.expires_at, contract_version=version.version,
        capture_transaction_id=capture_id,
    )  # fmt: skip


def _member_view(session: CheckoutSession, member: MemberRow, *, is_newly_enrolled: bool = False) -> MemberView:
    return MemberView(
        member_number=member.member_number, enrolled_at=member.enrolled_at,
        masked_identifiers=tuple(session.members.masked_identifiers(member.id)),
        balance=session.balance(member), is_newly_enrolled=is_newly_enrolled,
    )  # fmt: skip
