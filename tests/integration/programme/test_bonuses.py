"""Bonuses on a real database: tiers, the sign-up bonus, partner activities and promotions, referrals,
returns taking bonuses back, and settlement attributing every bonus point to whoever funded it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from cards.commands import LinkCommand
from cards.links import link_card, share_a_card, unlink_card
from checkout.commands import ActivityAwardCommand, DonateCommand, EnrollCommand
from checkout.session import CheckoutSettings
from common.errors import CoalitionError
from partners.rates import Billing
from programme.expiry import expire_lapsed_points
from programme.partner_programme import ActivityCommand, PartnerProgramme, PromotionCommand
from programme.policy import BonusPolicy, NetworkPolicy, ReferralPolicy, Tier, TierPolicy
from programme.services import create_policy_version
from programme.tiers import review_tiers
from server.app import held_points
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import MARCH, Brand, Network, new_receipt, own_network, utc

TIERS = TierPolicy(tiers=(Tier("Base", 0, 0), Tier("Silver", 1_000, 50), Tier("Gold", 3_000, 100)), grace_days=10)
ZERO = Decimal(0)


SETTINGS = CheckoutSettings(identifier_pepper=b"t", same_person_checks=(share_a_card,))


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    with own_network(isolated_database_url, settings=SETTINGS) as network:
        yield network


def set_policy(network: Network, policy: NetworkPolicy) -> None:
    create_policy_version(network.uow, request_key(), policy=policy, effective_from=None, created_by="tests")


def refused(call: object) -> str:
    with pytest.raises(CoalitionError) as raised:
        call()  # type: ignore[operator]
    return raised.value.reason


def test_a_tier_is_reached_on_the_qualifying_earn_and_lapses_only_after_grace(network: Network) -> None:
    set_policy(network, NetworkPolicy(tiers=TIERS))
    shop, member = network.partner(), phone()
    first = network.earn(shop, member, 800)
    assert first.bonuses == ()
    tier = network.checkout.get_balance(shop.ref, member).tier
    assert tier is not None and (tier.tier, tier.points_to_next_tier, tier.lapses_at) == ("Base", 200, None)

    start = network.clock.now()
    network.clock.set(start + timedelta(days=1))
    second = network.earn(shop, member, 400)
    assert [(bonus.kind, bonus.points, bonus.detail) for bonus in second.bonuses] == [("TIER", 200, "Silver")]
    tier = network.checkout.get_balance(shop.ref, member).tier
    assert tier is not None and (tier.tier, tier.qualifying_points, tier.next_tier) == ("Silver", 1_200, "Gold")
    # Without more earns, the first earn leaving the window drops the points below 1,000: grace runs from then.
    assert tier.lapses_at == datetime(2027, 3, 2, 9, 0, tzinfo=start.tzinfo) + timedelta(days=10)

    network.clock.set(datetime(2027, 3, 2, 9, 0, tzinfo=start.tzinfo) + timedelta(days=9))
    assert review_tiers(network.uow) == 0  # within the grace period
    network.clock.set(datetime(2027, 3, 2, 9, 0, tzinfo=start.tzinfo) + timedelta(days=10))
    assert review_tiers(network.uow) == 1
    assert review_tiers(network.uow) == 0
    tier = network.checkout.get_balance(shop.ref, member).tier
    assert tier is not None and (tier.tier, tier.qualifying_points, tier.lapses_at) == ("Base", 0, None)


def test_a_return_takes_the_tier_bonus_back_in_proportion_and_lowers_qualifying_points(network: Network) -> None:
    set_policy(network, NetworkPolicy(tiers=TIERS))
    shop, member, receipt = network.partner(), phone(), new_receipt()
    earned = network.earn(shop, member, 3_001, receipt=receipt)  # Gold at once: x2
    assert [(bonus.kind, bonus.points) for bonus in earned.bonuses] == [("TIER", 3_001)]
    half = network.return_purchase(shop, receipt, returned_minor=150_050)
    assert (half.points_reversed, half.bonus_points_reversed) == (1_500, 1_500)
    rest = network.return_purchase(shop, receipt)
    assert (rest.points_reversed, rest.bonus_points_reversed) == (1_501, 1_501)
    balance = network.checkout.get_balance(shop.ref, member)
    assert balance.available_points == 0 and balance.debt_points == 0
    assert balance.tier is not None and balance.tier.qualifying_points == 0
    # Still Gold until the grace after the return ends: a demotion is the review's, never a return's.
    assert balance.tier.tier == "Gold" and balance.tier.lapses_at == network.clock.now() + timedelta(days=10)


def test_a_return_counts_against_its_own_purchase_which_leaves_the_window_with_it(network: Network) -> None:
    """Found in review: a return of a purchase already out of the window lowered the qualifying points of
    the purchases still in it, and the review then demoted a member whose recent earn reached the tier."""
    set_policy(network, NetworkPolicy(tiers=TIERS))
    shop, member, old = network.partner(), phone(), new_receipt()
    network.earn(shop, member, 1_000, receipt=old)  # Silver
    network.clock.set(utc("2027-02-20T09:00:00"))
    network.earn(shop, member, 1_000)  # in the window until February 2028
    network.clock.set(utc("2027-03-10T09:00:00"))  # the first purchase has left the window
    network.return_purchase(shop, old)
    tier = network.checkout.get_balance(shop.ref, member).tier
    assert tier is not None and (tier.tier, tier.qualifying_points) == ("Silver", 1_000)
    assert tier.lapses_at == utc("2028-02-20T09:00:00") + timedelta(days=10)
    network.clock.set(utc("2027-03-21T09:00:00"))
    assert review_tiers(network.uow) == 0


def test_a_returned_purchase_stops_qualifying_even_when_its_points_had_lapsed(isolated_database_url: str) -> None:
    """Found in review: a return sets lapsed points against the purchase and posts no reversal for them;
    the purchase must still stop qualifying its points for a tier."""
    settings = CheckoutSettings(identifier_pepper=b"t", points_lifetime_days=10)
    with own_network(isolated_database_url, settings=settings) as network:
        set_policy(network, NetworkPolicy(tiers=TIERS))
        shop, member, receipt = network.partner(), phone(), new_receipt()
        network.earn(shop, member, 1_000, receipt=receipt)  # Silver
        network.clock.set(network.clock.now() + timedelta(days=11))
        expire_lapsed_points(network.uow, held_points)
        half = network.return_purchase(shop, receipt, returned_minor=50_000)
        rest = network.return_purchase(shop, receipt)
        assert (half.points_reversed, rest.points_reversed) == (500, 500)
        tier = network.checkout.get_balance(shop.ref, member).tier
        assert tier is not None and (tier.tier, tier.qualifying_points) == ("Silver", 0)
        assert tier.lapses_at == network.clock.now() + timedelta(days=10)


def test_the_sign_up_bonus_comes_once_with_enrolment(network: Network) -> None:
    set_policy(network, NetworkPolicy(bonuses=BonusPolicy(sign_up_points=150)))
    shop, member = network.partner(), phone()
    enrolled = network.checkout.enroll_member(shop.ref, uuid.uuid4().hex, EnrollCommand(member)).result
    again = network.checkout.enroll_member(shop.ref, uuid.uuid4().hex, EnrollCommand(member)).result
    assert (enrolled.is_newly_enrolled, enrolled.balance.available_points) == (True, 150)
    assert (again.is_newly_enrolled, again.balance.available_points) == (False, 150)
    earned = network.earn(shop, phone(), 10)  # enrolled by the earn: the bonus is reported with it
    assert [(bonus.kind, bonus.points) for bonus in earned.bonuses] == [("SIGN_UP", 150)]


def test_the_sign_up_bonus_an_earn_enrols_with_is_spent_before_the_earns_points(network: Network) -> None:
    """Lots of one age are spent in the order they were posted, by id: an earn whose ids were reserved
    ahead (PostgreSQL) must still come after the sign-up bonus posted before it, or its issuer is billed
    for points the operator's bonus covered (found in review)."""
    set_policy(network, NetworkPolicy(bonuses=BonusPolicy(sign_up_points=150)))
    shop, member = network.partner(billing=Billing.ON_REDEMPTION), phone()
    number = network.earn(shop, member, 100).member_number  # enrols: the sign-up bonus, then the earn
    network.redeem(shop, member, 100)
    consumed = network.rows(
        "SELECT lots.issuer_partner_id, -lot_movements.points_delta FROM lot_movements "
        "JOIN lots ON lots.id = lot_movements.lot_id JOIN members ON members.id = lots.member_id "
        "WHERE lot_movements.kind = 'CONSUMED' AND members.member_number = :number",
        number=number,
    )
    assert consumed == [(None, 100)]  # the operator's bonus lot, not the shop's
    journal = network.rows(
        "SELECT kind FROM journal_transactions JOIN members ON members.id = journal_transactions.member_id "
        "WHERE members.member_number = :number ORDER BY journal_transactions.id",
        number=number,
    )
    assert journal == [("BONUS",), ("EARN",), ("REDEEM",)]


def test_activity_points_respect_the_per_member_limit_and_retirement(network: Network) -> None:
    shop, other, member = network.partner(), network.partner(), phone()
    network.earn(shop, member, 10)
    programme = PartnerProgramme(network.uow)
    review = ActivityCommand("PRODUCT_REVIEW", "Product review", points=50, max_awards_per_member=2, limit_period="DAY")
    programme.define_activity(request_key(), shop.ref.partner_id, review)

    def award(brand: Brand, code: str = "PRODUCT_REVIEW") -> object:
        return network.checkout.award_activity_points(
            brand.ref, uuid.uuid4().hex, ActivityAwardCommand(member, code)
        ).result

    first, second = award(shop), award(shop)
    assert (first.points_awarded, first.awards_left_in_period, second.awards_left_in_period) == (50, 1, 0)  # type: ignore[attr-defined]
    assert refused(lambda: award(shop)) == "ACTIVITY_LIMIT_REACHED"
    assert refused(lambda: award(other)) == "ACTIVITY_NOT_FOUND"  # another partner's code
    assert refused(lambda: award(shop, "SURVEY")) == "ACTIVITY_NOT_FOUND"
    network.clock.set(network.clock.now() + timedelta(days=1))
    assert award(shop).awards_left_in_period == 1  # type: ignore[attr-defined]
    programme.define_activity(request_key(), shop.ref.partner_id, ActivityCommand(**{**vars(review), "retired": True}))
    assert refused(lambda: award(shop)) == "ACTIVITY_RETIRED"
    assert network.checkout.get_balance(shop.ref, member).available_points == 10 + 3 * 50


def test_the_largest_running_promotion_applies_and_ending_it_stops_it(network: Network) -> None:
    shop, member = network.partner(), phone()
    programme, now = PartnerProgramme(network.uow), network.clock.now()
    week = programme.create_promotion(
        request_key(), shop.ref.partner_id, PromotionCommand("Double week", 100, now, now + timedelta(days=7))
    ).result
    programme.create_promotion(
        request_key(), shop.ref.partner_id, PromotionCommand("Small", 20, now, now + timedelta(days=7))
    )
    earned = network.earn(shop, member, 300)
    assert [(bonus.kind, bonus.points, bonus.detail) for bonus in earned.bonuses] == [
        ("PROMOTION", 300, week.promotion_id)
    ]
    ended = programme.end_promotion(request_key(), shop.ref.partner_id, week.promotion_id).result
    assert ended.ends_at == network.clock.now() and ended.ended_early_at == network.clock.now()
    assert [bonus.points for bonus in network.earn(shop, member, 300).bonuses] == [60]  # the 20% one now
    assert refused(
        lambda: programme.end_promotion(request_key(), shop.ref.partner_id, week.promotion_id)
    ) == "PROMOTION_ALREADY_ENDED"  # fmt: skip
    assert refused(
        lambda: programme.create_promotion(
            request_key(), shop.ref.partner_id, PromotionCommand("Bad", 0, now, now + timedelta(days=1))
        )
    ) == "INVALID_PROMOTION"  # fmt: skip


def test_a_promotion_counts_against_the_partners_daily_cap(network: Network) -> None:
    shop, member = network.partner(daily_issuance_cap=1_500), phone()
    now = network.clock.now()
    PartnerProgramme(network.uow).create_promotion(
        request_key(), shop.ref.partner_id, PromotionCommand("Double", 100, now, now + timedelta(days=1))
    )
    network.earn(shop, member, 700)  # 1,400 issued
    assert refused(lambda: network.earn(shop, member, 100)) == "DAILY_ISSUANCE_CAP_EXCEEDED"


def test_referrals_reward_both_once_and_refuse_self_referral_and_the_monthly_cap(network: Network) -> None:
    set_policy(network, NetworkPolicy(referrals=ReferralPolicy(referrer_points=500, referred_points=250,
                                                               rewards_per_referrer_per_month=1)))  # fmt: skip
    shop = network.partner()
    referrer = phone()
    network.earn(shop, referrer, 10)
    _, code = network.checkout.get_referral_code(shop.ref, referrer)
    assert network.checkout.get_referral_code(shop.ref, referrer)[1] == code

    def enrol(member: object, with_code: str = code) -> object:
        command = EnrollCommand(member, referral_code=with_code)  # type: ignore[arg-type]
        return network.checkout.enroll_member(shop.ref, uuid.uuid4().hex, command).result

    assert refused(lambda: enrol(referrer)) == "SELF_REFERRAL"
    existing = phone()
    network.earn(shop, existing, 10)
    assert refused(lambda: enrol(existing)) == "REFERRAL_REQUIRES_NEW_MEMBER"
    assert refused(lambda: enrol(phone(), "NOSUCHCD")) == "UNKNOWN_REFERRAL_CODE"

    friend = phone()
    enrol(friend, code.lower()[:4] + "-" + code.lower()[4:])  # as typed from a card: case and dashes ignored
    first = network.earn(shop, friend, 20)
    assert [(bonus.kind, bonus.points) for bonus in first.bonuses] == [("REFERRAL", 250)]
    assert network.earn(shop, friend, 20).bonuses == ()  # once per referred member
    assert network.checkout.get_balance(shop.ref, referrer).available_points == 10 + 500

    capped = phone()
    enrol(capped)
    assert network.earn(shop, capped, 20).bonuses == ()  # the referrer's one reward this month is taken
    assert network.checkout.get_balance(shop.ref, referrer).available_points == 10 + 500
    network.clock.set(utc("2026-04-01T00:00:00"))
    late = phone()
    enrol(late)
    assert [bonus.points for bonus in network.earn(shop, late, 20).bonuses] == [250]  # a new month
    rows = network.rows("SELECT status, refusal_reason FROM referrals ORDER BY referred_member_id")
    assert rows == [("REWARDED", None), ("REFUSED", "REFERRER_MONTHLY_CAP"), ("REWARDED", None)]


def test_a_referral_between_members_who_shared_a_card_is_refused(network: Network) -> None:
    set_policy(network, NetworkPolicy(referrals=ReferralPolicy(referrer_points=500, referred_points=250)))
    shop, referrer, twin = network.partner(), phone(), phone()
    bank = network.partner(kind="CARD_ISSUER")
    network.earn(shop, referrer, 10)
    _, code = network.checkout.get_referral_code(shop.ref, referrer)
    network.checkout.enroll_member(shop.ref, uuid.uuid4().hex, EnrollCommand(twin, referral_code=code))
    # The bank's token was the referrer's card before it was linked to the new member.
    link_card(network.uow, b"t", bank.ref, uuid.uuid4().hex, LinkCommand("tok-shared", referrer))
    unlink_card(network.uow, b"t", bank.ref, uuid.uuid4().hex, "tok-shared")
    link_card(network.uow, b"t", bank.ref, uuid.uuid4().hex, LinkCommand("tok-shared", twin))
    assert network.earn(shop, twin, 20).bonuses == ()
    assert network.rows("SELECT status, refusal_reason FROM referrals") == [("REFUSED", "SELF_REFERRAL")]
    assert network.checkout.get_balance(shop.ref, referrer).available_points == 10


def test_settlement_bills_every_bonus_point_to_whoever_funded_it(isolated_database_url: str) -> None:
    settings = CheckoutSettings(identifier_pepper=b"t", points_lifetime_days=10)
    with own_network(isolated_database_url, settings=settings) as network:
        set_policy(network, NetworkPolicy(tiers=TierPolicy(tiers=(Tier("Base", 0, 0), Tier("Gold", 500, 100)))))
        shop = network.partner(issuance_price="0.012", reimbursement_rate="0.010")
        store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012", reimbursement_rate="0.009")
        charity = network.partner(kind="CHARITY", reimbursement_rate="0.008")
        now = network.clock.now()
        PartnerProgramme(network.uow).create_promotion(
            request_key(), store.ref.partner_id, PromotionCommand("Half again", 50, now, now + timedelta(days=30))
        )
        PartnerProgramme(network.uow).define_activity(
            request_key(), shop.ref.partner_id, ActivityCommand("SURVEY", "Survey", 30, 5, "MONTH")
        )
        member, other = phone(), phone()
        network.earn(shop, member, 1_000)  # +1,000 tier bonus (operator)
        network.checkout.award_activity_points(shop.ref, uuid.uuid4().hex, ActivityAwardCommand(member, "SURVEY"))
        network.earn(store, other, 200)  # +100 promotion (store) +200 tier bonus? no: 200 < 500
        network.redeem(store, member, 1_500)
        network.checkout.donate_points(shop.ref, uuid.uuid4().hex, DonateCommand(member, 200, charity.code))
        network.clock.set(now + timedelta(days=11))
        lapsed = expire_lapsed_points(network.uow, held_points)
        assert lapsed.points_expired == (1_000 + 1_000 + 30 - 1_500 - 200) + 300
        network.clock.set(utc("2026-04-01T00:00:00"))
        network.close(MARCH)
        statements = network.statements(MARCH)

        def points(brand: Brand, line_type: LineType) -> int:
            return sum(line.points for line in statements[brand.code].lines if line.line_type == line_type)

        # Issuance: each partner's own earn and the bonuses it funded; the operator's tier bonus is on no statement.
        assert points(shop, LineType.ISSUANCE) == 1_000 + 30
        assert points(store, LineType.ISSUANCE) == 200 + 100
        assert points(store, LineType.REDEMPTION) == 1_500
        assert points(charity, LineType.REDEMPTION) == 200
        assert points(store, LineType.BREAKAGE) == 300  # its lots lapsed unspent, billed on redemption: 0
        assert all(
            line.unit_price == ZERO for line in statements[store.code].lines if line.line_type == LineType.BREAKAGE
        )
