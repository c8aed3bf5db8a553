"""Conversions for NetworkPolicyService messages."""

from __future__ import annotations

from loyalty.v1 import network_policy_service_pb2 as pb

from programme.policy import (
    BonusPolicy,
    ExpiryPolicy,
    GoodwillPolicy,
    InvalidPolicy,
    NetworkPolicy,
    OfflinePolicy,
    PolicyVersionView,
    PrivacyPolicy,
    ReferralPolicy,
    Tier,
    TierPolicy,
    TransferPolicy,
)
from server.convert import timestamp


def policy_of(message: pb.NetworkPolicy) -> NetworkPolicy:
    """The domain policy; every section is required, so a forgotten one is an error, not a default."""
    for section in ("expiry", "goodwill", "privacy", "offline", "tiers", "bonuses", "referrals", "transfers"):
        if not message.HasField(section):
            raise InvalidPolicy(f"policy.{section} is required", field=f"policy.{section}")
    expiry = message.expiry
    return NetworkPolicy(
        expiry=ExpiryPolicy(
            lifetime_months=expiry.lifetime_months,
            inactivity_months=expiry.inactivity_months if expiry.HasField("inactivity_months") else None,
            expiring_soon_days=expiry.expiring_soon_days,
        ),
        goodwill=GoodwillPolicy(
            approval_threshold_points=message.goodwill.approval_threshold_points,
            reason_codes=tuple(message.goodwill.reason_codes),
            currency=message.goodwill.currency_code,
        ),
        privacy=PrivacyPolicy(
            statement_consent_shows_all_partners=message.privacy.statement_consent_shows_all_partners
        ),
        offline=OfflinePolicy(
            member_daily_points=message.offline.member_daily_points,
            store_daily_points=message.offline.store_daily_points,
        ),
        tiers=TierPolicy(
            tiers=tuple(Tier(tier.name, tier.qualifying_points, tier.bonus_percent) for tier in message.tiers.tiers),
            window_months=message.tiers.window_months,
            grace_days=message.tiers.grace_days,
        ),
        bonuses=BonusPolicy(sign_up_points=message.bonuses.sign_up_points),
        referrals=ReferralPolicy(
            referrer_points=message.referrals.referrer_points,
            referred_points=message.referrals.referred_points,
            rewards_per_referrer_per_month=message.referrals.rewards_per_referrer_per_month,
        ),
        transfers=TransferPolicy(
            daily_points_per_sender=message.transfers.daily_points_per_sender,
            min_account_age_days=message.transfers.min_account_age_days,
            min_membership_days=message.transfers.min_membership_days,
            max_senders_per_recipient=message.transfers.max_senders_per_recipient,
            max_household_members=message.transfers.max_household_members,
        ),
    )


def policy_message(policy: NetworkPolicy) -> pb.NetworkPolicy:
    expiry = pb.ExpiryPolicy(
        lifetime_months=policy.expiry.lifetime_months, expiring_soon_days=policy.expiry.expiring_soon_days
    )
    if policy.expiry.inactivity_months is not None:
        expiry.inactivity_months = policy.expiry.inactivity_months
    goodwill = pb.GoodwillPolicy(
        approval_threshold_points=policy.goodwill.approval_threshold_points,
        reason_codes=policy.goodwill.reason_codes,
        currency_code=policy.goodwill.currency,
    )
    privacy = pb.PrivacyPolicy(statement_consent_shows_all_partners=policy.privacy.statement_consent_shows_all_partners)
    offline = pb.OfflinePolicy(
        member_daily_points=policy.offline.member_daily_points, store_daily_points=policy.offline.store_daily_points
    )
    tiers = pb.TierPolicy(
        tiers=[pb.Tier(name=tier.name, qualifying_points=tier.qualifying_points, bonus_percent=tier.bonus_percent)
               for tier in policy.tiers.tiers],
        window_months=policy.tiers.window_months, grace_days=policy.tiers.grace_days,
    )  # fmt: skip
    referrals = pb.ReferralPolicy(
        referrer_points=policy.referrals.referrer_points, referred_points=policy.referrals.referred_points,
        rewards_per_referrer_per_month=policy.referrals.rewards_per_referrer_per_month,
    )  # fmt: skip
    transfers = pb.TransferPolicy(**vars(policy.transfers))
    return pb.NetworkPolicy(
        expiry=expiry, goodwill=goodwill, privacy=privacy, offline=offline, tiers=tiers,
        bonuses=pb.BonusPolicy(sign_up_points=policy.bonuses.sign_up_points), referrals=referrals, transfers=transfers,
    )  # fmt: skip


def version_message(view: PolicyVersionView) -> pb.NetworkPolicyVersion:
    message = pb.NetworkPolicyVersion(version=view.version, policy=policy_message(view.policy), creator=view.created_by)
    if view.effective_from is not None:
        message.effective_time.CopyFrom(timestamp(view.effective_from))
    if view.created_at is not None:
        message.create_time.CopyFrom(timestamp(view.created_at))
    return message
