"""The member programme's bonuses over a real server: tiers, sign-up, partner activities and promotions,
referrals, with every guard answered as a gRPC status and an ErrorInfo reason.

The server has a database of its own: the network policy is network-wide, and the tier test moves
its clock past a tier's lapse date.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from loyalty.v1 import card_service_pb2 as card_pb
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import member_service_pb2 as member_pb
from loyalty.v1 import network_policy_service_pb2 as policy_pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from loyalty.v1 import partner_programme_service_pb2 as programme_pb

from common.clock import ManualClock
from sdk.client import CoalitionClient, Credentials
from server.app import RunningServer, review_tiers_and_report
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, reason_of
from tests.e2e.test_network_policy_e2e import expiry
from tests.e2e.test_settlement_cli import onboard, start_own_server
from tests.factories import phone

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Network:
    running: RunningServer
    clock: ManualClock
    target: str
    admin: CoalitionClient

    def partner(self) -> CoalitionClient:
        return onboard(self.admin, self.target, admin_pb.BILLING_MODE_ON_ISSUANCE)[1]

    def bank(self) -> CoalitionClient:
        """A card-issuing bank, to link cards."""
        return onboard(self.admin, self.target, admin_pb.BILLING_MODE_ON_ISSUANCE, admin_pb.PARTNER_KIND_CARD_ISSUER)[1]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, operator_key: OperatorKey) -> Iterator[Network]:
    directory = tmp_path_factory.mktemp("bonuses")
    running, clock, target = start_own_server(f"sqlite:///{directory / 'ledger.db'}", operator_key, START)
    admin = Credentials.operator("ops-tester", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
    with CoalitionClient(target, admin) as client:
        policy = expiry()
        policy.tiers.tiers.extend([
            policy_pb.Tier(name="Base"), policy_pb.Tier(name="Silver", qualifying_points=1_000, bonus_percent=50),
        ])  # fmt: skip
        policy.tiers.grace_days = 7
        policy.bonuses.sign_up_points = 100
        policy.referrals.referrer_points, policy.referrals.referred_points = 500, 250
        client.network_policy.CreateNetworkPolicyVersion(
            policy_pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=policy)
        )
        yield Network(running, clock, target, client)
    running.stop(0)


def earn(shop: CoalitionClient, member: pb.MemberIdentifier, euros: int, receipt: str = "") -> pb.EarnPointsResponse:
    return shop.checkout.EarnPoints(pb.EarnPointsRequest(
        member=member, receipt_id=receipt or uuid.uuid4().hex[:12], enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=euros * 100),
    ))  # fmt: skip


def bonuses(response: pb.EarnPointsResponse) -> list[tuple[int, int]]:
    return [(bonus.kind, bonus.points) for bonus in response.bonuses]


def test_tiers_sign_up_and_returns_over_the_wire(network: Network) -> None:
    member = pb.MemberIdentifier(phone_number=phone().value)
    with network.partner() as shop:
        first = earn(shop, member, 800)
        assert bonuses(first) == [(pb.BONUS_KIND_SIGN_UP, 100)]
        base = shop.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
        assert (base.available_points, base.tier.tier_name, base.tier.points_to_next_tier) == (900, "Base", 200)
        assert not base.tier.HasField("lapse_time")

        second = earn(shop, member, 400, receipt="R-SILVER")
        assert bonuses(second) == [(pb.BONUS_KIND_TIER, 200)] and second.bonuses[0].detail == "Silver"
        silver = shop.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance.tier
        assert (silver.tier_name, silver.bonus_percent, silver.qualifying_points) == ("Silver", 50, 1_200)
        assert silver.lapse_time.ToDatetime(tzinfo=UTC) == datetime(2027, 3, 2, 9, 0, tzinfo=UTC) + timedelta(days=7)

        returned = shop.checkout.ReturnPurchase(pb.ReturnPurchaseRequest(
            request_id=uuid.uuid4().hex, receipt_id="R-SILVER", returned_amount_minor=20_000,
        ))  # fmt: skip
        assert (returned.points_reversed, returned.bonus_points_reversed) == (200, 100)

        statement = shop.members.GetMemberStatement(member_pb.GetMemberStatementRequest(member=member))
        assert statement.statement.balance.tier.tier_name == "Silver"
        activity = shop.members.ListMemberActivity(
            member_pb.ListMemberActivityRequest(member=member, kinds=[member_pb.ACTIVITY_KIND_BONUS])
        )
        # The partner sees its own share: the tier and sign-up bonuses are the operator's, not the shop's.
        assert [item.kind for item in activity.activities] == []

    network.clock.set(datetime(2027, 3, 2, 9, 0, tzinfo=UTC) + timedelta(days=8))
    assert review_tiers_and_report(network.running.app.uow) == 1
    with network.partner() as other:
        earn(other, member, 1)  # deals with the member, to read the balance
        tier = other.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance.tier
    assert (tier.tier_name, tier.qualifying_points) == ("Base", 1)
    network.clock.set(START + timedelta(days=1))


def test_activities_are_defined_by_the_partner_awarded_within_limits_and_private(network: Network) -> None:
    member = pb.MemberIdentifier(phone_number=phone().value)
    with network.partner() as shop, network.partner() as other:
        earn(shop, member, 1)
        define = programme_pb.DefineActivityRequest(request_id=uuid.uuid4().hex, activity=programme_pb.Activity(
            activity_code="CHECK_IN", display_name="Gym check-in", points=25, max_awards_per_member=1,
            limit_period=programme_pb.LIMIT_PERIOD_DAY,
        ))  # fmt: skip
        defined = shop.partner_programme.DefineActivity(define)
        assert (defined.activity.version, defined.idempotent_replay) == (1, False)
        assert shop.partner_programme.DefineActivity(define).idempotent_replay
        listed = shop.partner_programme.ListActivities(programme_pb.ListActivitiesRequest())
        assert [activity.activity_code for activity in listed.activities] == ["CHECK_IN"]
        assert list(other.partner_programme.ListActivities(programme_pb.ListActivitiesRequest()).activities) == []

        award = pb.AwardActivityPointsRequest(request_id=uuid.uuid4().hex, member=member, activity_code="CHECK_IN")
        awarded = shop.checkout.AwardActivityPoints(award)
        assert (awarded.points_awarded, awarded.awards_left_in_period, awarded.idempotent_replay) == (25, 0, False)
        assert shop.checkout.AwardActivityPoints(award).idempotent_replay
        again = pb.AwardActivityPointsRequest(request_id=uuid.uuid4().hex, member=member, activity_code="CHECK_IN")
        assert reason_of(lambda: shop.checkout.AwardActivityPoints(again)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "ACTIVITY_LIMIT_REACHED"
        )  # fmt: skip
        elsewhere = pb.AwardActivityPointsRequest(request_id=uuid.uuid4().hex, member=member, activity_code="CHECK_IN")
        assert reason_of(lambda: other.checkout.AwardActivityPoints(elsewhere)) == (
            grpc.StatusCode.NOT_FOUND, "ACTIVITY_NOT_FOUND"
        )  # fmt: skip
        bad = programme_pb.DefineActivityRequest(request_id=uuid.uuid4().hex, activity=programme_pb.Activity(
            activity_code="x", display_name="Bad", points=1, max_awards_per_member=1,
        ))  # fmt: skip
        assert reason_of(lambda: shop.partner_programme.DefineActivity(bad)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ACTIVITY"
        )  # fmt: skip
        assert shop.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance.available_points == 100 + 1 + 25


def test_promotions_multiply_the_partners_own_earns_until_ended(network: Network) -> None:
    member = pb.MemberIdentifier(phone_number=phone().value)
    with network.partner() as shop, network.partner() as other:
        promotion = programme_pb.Promotion(display_name="Double days", bonus_percent=100)
        promotion.start_time.FromDatetime(network.clock.now())
        promotion.end_time.FromDatetime(network.clock.now() + timedelta(days=3))
        created = shop.partner_programme.CreatePromotion(
            programme_pb.CreatePromotionRequest(request_id=uuid.uuid4().hex, promotion=promotion)
        ).promotion
        assert bonuses(earn(shop, member, 50))[-1:] == [(pb.BONUS_KIND_PROMOTION, 50)]
        assert bonuses(earn(other, member, 50)) == []  # another partner's earn: no promotion
        end = programme_pb.EndPromotionRequest(request_id=uuid.uuid4().hex, promotion_id=created.promotion_id)
        assert reason_of(lambda: other.partner_programme.EndPromotion(end)) == (
            grpc.StatusCode.NOT_FOUND, "PROMOTION_NOT_FOUND"
        )  # fmt: skip
        ended = shop.partner_programme.EndPromotion(end).promotion
        assert ended.HasField("end_early_time")
        assert bonuses(earn(shop, member, 50)) == []
        again = programme_pb.EndPromotionRequest(request_id=uuid.uuid4().hex, promotion_id=created.promotion_id)
        assert reason_of(lambda: shop.partner_programme.EndPromotion(again)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "PROMOTION_ALREADY_ENDED"
        )  # fmt: skip
        listed = shop.partner_programme.ListPromotions(programme_pb.ListPromotionsRequest()).promotions
        assert [item.promotion_id for item in listed] == [created.promotion_id]
        missing_end = programme_pb.Promotion(display_name="Open", bonus_percent=10)
        missing_end.start_time.FromDatetime(network.clock.now())
        assert reason_of(lambda: shop.partner_programme.CreatePromotion(
            programme_pb.CreatePromotionRequest(request_id=uuid.uuid4().hex, promotion=missing_end))
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROMOTION")  # fmt: skip


def test_referrals_and_their_guards_over_the_wire(network: Network) -> None:
    referrer = pb.MemberIdentifier(phone_number=phone().value)
    with network.partner() as shop, network.partner() as stranger:
        earn(shop, referrer, 1)
        code = shop.checkout.GetReferralCode(pb.GetReferralCodeRequest(member=referrer)).referral_code
        assert len(code) == 8
        assert reason_of(lambda: stranger.checkout.GetReferralCode(pb.GetReferralCodeRequest(member=referrer))) == (
            grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND"
        )  # fmt: skip

        def enrol(member: pb.MemberIdentifier, with_code: str = code) -> pb.EnrollMemberResponse:
            return shop.checkout.EnrollMember(
                pb.EnrollMemberRequest(request_id=uuid.uuid4().hex, member=member, referral_code=with_code)
            )

        assert reason_of(lambda: enrol(referrer)) == (grpc.StatusCode.FAILED_PRECONDITION, "SELF_REFERRAL")
        unknown = pb.MemberIdentifier(phone_number=phone().value)
        assert reason_of(lambda: enrol(unknown, "ZZZZ2222")) == (
            grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_REFERRAL_CODE"
        )  # fmt: skip
        assert reason_of(lambda: shop.checkout.GetBalance(pb.GetBalanceRequest(member=unknown))) == (
            grpc.StatusCode.NOT_FOUND,
            "MEMBER_NOT_FOUND",
        )  # the refused enrolment wrote nothing
        friend = pb.MemberIdentifier(email=f"{uuid.uuid4().hex[:8]}@example.com")
        assert enrol(friend).member.balance.available_points == 100  # the sign-up bonus
        assert reason_of(lambda: enrol(friend)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "REFERRAL_REQUIRES_NEW_MEMBER"
        )  # fmt: skip
        first = earn(shop, friend, 10)
        assert bonuses(first) == [(pb.BONUS_KIND_REFERRAL, 250)]
        assert bonuses(earn(shop, friend, 10)) == []  # once per referred member
        assert shop.checkout.GetBalance(pb.GetBalanceRequest(member=referrer)).balance.available_points == 601

        # One person under two identifiers: the bank's card was the referrer's before it was the new member's.
        twin = pb.MemberIdentifier(phone_number=phone().value)
        enrol(twin)
        with network.bank() as bank:
            bank.cards.LinkCard(
                card_pb.LinkCardRequest(request_id=uuid.uuid4().hex, card_token="tok-1", member=referrer)
            )
            bank.cards.UnlinkCard(card_pb.UnlinkCardRequest(request_id=uuid.uuid4().hex, card_token="tok-1"))
            bank.cards.LinkCard(card_pb.LinkCardRequest(request_id=uuid.uuid4().hex, card_token="tok-1", member=twin))
        assert bonuses(earn(shop, twin, 10)) == []

        # The monthly cap: with one reward a month, the referrer's next new member in March gets nothing.
        capped = expiry()
        capped.tiers.CopyFrom(network.admin.network_policy.GetNetworkPolicy(
            policy_pb.GetNetworkPolicyRequest()).policy_version.policy.tiers)  # fmt: skip
        capped.referrals.referrer_points, capped.referrals.referred_points = 500, 250
        capped.referrals.rewards_per_referrer_per_month = 1
        network.admin.network_policy.CreateNetworkPolicyVersion(
            policy_pb.CreateNetworkPolicyVersionRequest(request_id=uuid.uuid4().hex, policy=capped)
        )
        late = pb.MemberIdentifier(phone_number=phone().value)
        enrol(late)
        assert bonuses(earn(shop, late, 10)) == []
        assert shop.checkout.GetBalance(pb.GetBalanceRequest(member=referrer)).balance.available_points == 601
