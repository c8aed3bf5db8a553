"""Conversions for PartnerProgrammeService messages."""

from __future__ import annotations

from loyalty.v1 import partner_programme_service_pb2 as pb

from programme.partner_programme import ActivityCommand, ActivityView, InvalidPromotion, PromotionCommand, PromotionView
from server.convert import datetime_of, timestamp

_PERIODS = {
    "DAY": pb.LIMIT_PERIOD_DAY, "MONTH": pb.LIMIT_PERIOD_MONTH, "YEAR": pb.LIMIT_PERIOD_YEAR,
    "LIFETIME": pb.LIMIT_PERIOD_LIFETIME,
}  # fmt: skip
_PERIOD_NAMES = {value: name for name, value in _PERIODS.items()}


def activity_command(message: pb.Activity) -> ActivityCommand:
    """Unknown limit periods pass as "" and are refused by the domain's validation with its reason."""
    return ActivityCommand(
        code=message.activity_code.strip(), display_name=message.display_name, points=message.points,
        max_awards_per_member=message.max_awards_per_member,
        limit_period=_PERIOD_NAMES.get(message.limit_period, ""), retired=message.retired,
    )  # fmt: skip


def activity(view: ActivityView) -> pb.Activity:
    return pb.Activity(
        activity_code=view.code, version=view.version, display_name=view.display_name, points=view.points,
        max_awards_per_member=view.max_awards_per_member, limit_period=_PERIODS[view.limit_period],
        retired=view.retired, create_time=timestamp(view.created_at),
    )  # fmt: skip


def promotion_command(message: pb.Promotion) -> PromotionCommand:
    for name in ("start_time", "end_time"):
        if not message.HasField(name):
            raise InvalidPromotion(f"promotion.{name} is required", field=f"promotion.{name}")
    return PromotionCommand(
        display_name=message.display_name, bonus_percent=message.bonus_percent,
        starts_at=datetime_of(message.start_time), ends_at=datetime_of(message.end_time),
    )  # fmt: skip


def promotion(view: PromotionView) -> pb.Promotion:
    message = pb.Promotion(
        promotion_id=view.promotion_id, display_name=view.display_name, bonus_percent=view.bonus_percent,
        start_time=timestamp(view.starts_at), end_time=timestamp(view.ends_at), create_time=timestamp(view.created_at),
    )  # fmt: skip
    if view.ended_early_at is not None:
        message.end_early_time.CopyFrom(timestamp(view.ended_early_at))
    return message
