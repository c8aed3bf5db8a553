"""Conversions between protobuf messages and domain commands/results. No rules live here."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.v1 import checkout_service_pb2 as pb

from checkout import commands, offline
from common.errors import CoalitionError, InvalidArgument
from members.identifiers import IdentifierKind, InvalidIdentifier, MemberIdentifier
from programme.bonuses import AwardedBonus
from programme.tiers import TierStatus
from server.errors import status_code_for

_HOLD_STATES = {
    "HELD": pb.HOLD_STATE_HELD,
    "CAPTURED": pb.HOLD_STATE_CAPTURED,
    "RELEASED": pb.HOLD_STATE_RELEASED,
    "EXPIRED": pb.HOLD_STATE_EXPIRED,
}
_IDENTIFIER_KINDS = {
    "PHONE": pb.IDENTIFIER_KIND_PHONE_NUMBER,
    "EMAIL": pb.IDENTIFIER_KIND_EMAIL,
    "CARD_TOKEN": pb.IDENTIFIER_KIND_CARD_TOKEN,
}
_ONEOF_KINDS = {
    "phone_number": IdentifierKind.PHONE,
    "email": IdentifierKind.EMAIL,
    "member_number": IdentifierKind.MEMBER_NUMBER,
    "card_token": IdentifierKind.CARD_TOKEN,
}


class MissingField(InvalidArgument):
    reason = "MISSING_FIELD"


class UnknownEnumValue(InvalidArgument):
    reason = "UNKNOWN_ENUM_VALUE"


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def datetime_of(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def member_identifier(message: pb.MemberIdentifier) -> MemberIdentifier:
    which = message.WhichOneof("kind")
    if which is None:
        raise InvalidIdentifier("member: set one of phone_number, email or member_number")
    return MemberIdentifier(_ONEOF_KINDS[which], getattr(message, which))


def optional_member(request: pb.QuoteBasketRequest) -> MemberIdentifier | None:
    return member_identifier(request.member) if request.HasField("member") else None


def basket(message: pb.Basket) -> commands.Basket:
    lines = tuple(commands.BasketLine(line.sku, line.amount_minor, line.excluded) for line in message.lines)
    return commands.Basket(message.currency_code, message.total_minor, lines, message.paid_with_points_minor)


def require_text(value: str, name: str) -> str:
    if not value:
        raise MissingField(f"{name} is required", field=name)
    return value


def earn_command(request: pb.EarnPointsRequest) -> commands.EarnCommand:
    return commands.EarnCommand(
        member=member_identifier(request.member),
        receipt_id=require_text(request.receipt_id, "receipt_id"),
        basket=basket(request.basket),
        enroll_if_unknown=request.enroll_if_unknown,
        channel=_channel(request.channel),
        store_id=request.store_id,
    )


def _channel(value: int) -> str:
    # proto3 enums are open: a newer client may send a number this server does not know.
    if value not in pb.Channel.values():
        raise UnknownEnumValue(f"channel {value} is not a known Channel", field="channel")
    return pb.Channel.Name(value).removeprefix("CHANNEL_")


def hold_command(request: pb.HoldPointsRequest) -> commands.HoldCommand:
    return commands.HoldCommand(
        member=member_identifier(request.member), points=request.points, ttl_seconds=request.ttl_seconds,
        currency=request.currency_code, basket_total_minor=request.basket_total_minor, receipt_id=request.receipt_id,
    )  # fmt: skip


def redeem_command(request: pb.RedeemPointsRequest) -> commands.RedeemCommand:
    return commands.RedeemCommand(
        member=member_identifier(request.member), points=request.points, currency=request.currency_code,
        basket_total_minor=request.basket_total_minor, receipt_id=request.receipt_id,
    )  # fmt: skip


def donate_command(request: pb.DonatePointsRequest) -> commands.DonateCommand:
    return commands.DonateCommand(
        member=member_identifier(request.member), points=request.points,
        charity_partner_code=require_text(request.charity_partner_id, "charity_partner_id"),
    )  # fmt: skip


def donate_response(result: commands.DonationResult, is_replay: bool) -> pb.DonatePointsResponse:
    return pb.DonatePointsResponse(
        transaction_id=result.transaction_id, member_number=result.member_number,
        points_donated=result.points_donated, charity_partner_id=result.charity_partner_code,
        value_minor=result.value_minor, currency_code=result.currency, contract_version=result.contract_version,
        idempotent_replay=is_replay,
    )  # fmt: skip


def return_command(request: pb.ReturnPurchaseRequest) -> commands.ReturnCommand:
    return commands.ReturnCommand(
        receipt_id=require_text(request.receipt_id, "receipt_id"),
        returned_minor=request.returned_amount_minor,
        is_full_return=request.full_return,
    )


def balance(view: commands.BalanceView) -> pb.Balance:
    message = pb.Balance(
        member_number=view.member_number, available_points=view.available_points,
        pending_points=view.pending_points, held_points=view.held_points, debt_points=view.debt_points,
        expiring_soon_points=view.expiring_soon_points,
        expiring_soon_until_time=timestamp(view.expiring_soon_until),
    )  # fmt: skip
    if view.tier is not None:
        message.tier.CopyFrom(tier_status(view.tier))
    return message


def tier_status(status: TierStatus) -> pb.TierStatus:
    message = pb.TierStatus(
        tier_name=status.tier, bonus_percent=status.bonus_percent, qualifying_points=status.qualifying_points,
        next_tier_name=status.next_tier, points_to_next_tier=status.points_to_next_tier,
        window_months=status.window_months,
    )  # fmt: skip
    if status.lapses_at is not None:
        message.lapse_time.CopyFrom(timestamp(status.lapses_at))
    return message


_BONUS_KINDS = {
    "TIER": pb.BONUS_KIND_TIER, "SIGN_UP": pb.BONUS_KIND_SIGN_UP, "ACTIVITY": pb.BONUS_KIND_ACTIVITY,
    "PROMOTION": pb.BONUS_KIND_PROMOTION, "REFERRAL": pb.BONUS_KIND_REFERRAL,
}  # fmt: skip


def bonus(awarded: AwardedBonus) -> pb.Bonus:
    return pb.Bonus(
        kind=_BONUS_KINDS.get(awarded.kind, pb.BONUS_KIND_UNSPECIFIED), points=awarded.points, detail=awarded.detail,
        transaction_id=awarded.transaction_id,
    )  # fmt: skip


def member(view: commands.MemberView) -> pb.Member:
    return pb.Member(
        member_number=view.member_number,
        enroll_time=timestamp(view.enrolled_at),
        identifiers=[
            pb.MaskedIdentifier(kind=_IDENTIFIER_KINDS.get(kind, pb.IDENTIFIER_KIND_UNSPECIFIED), masked_value=masked)
            for kind, masked in view.masked_identifiers
        ],
        balance=balance(view.balance),
    )


def hold(view: commands.HoldView) -> pb.Hold:
    return pb.Hold(
        hold_id=view.hold_id, member_number=view.member_number, points=view.points,
        captured_points=view.captured_points, state=_HOLD_STATES[view.status], value_minor=view.value_minor,
        currency_code=view.currency, create_time=timestamp(view.created_at), expire_time=timestamp(view.expires_at),
        contract_version=view.contract_version, capture_transaction_id=view.capture_transaction_id,
    )  # fmt: skip


def quote_response(result: commands.QuoteResult) -> pb.QuoteBasketResponse:
    return pb.QuoteBasketResponse(
        member_number=result.member_number, currency_code=result.currency, points_to_earn=result.points_to_earn,
        available_points=result.available_points, redeemable_points=result.redeemable_points,
        redeemable_value_minor=result.redeemable_value_minor, contract_version=result.contract_version,
    )  # fmt: skip


def earn_response(result: commands.EarnResult, is_replay: bool) -> pb.EarnPointsResponse:
    return pb.EarnPointsResponse(
        transaction_id=result.transaction_id, member_number=result.member_number,
        points_earned=result.points_earned, debt_repaid_points=result.debt_repaid_points,
        available_time=timestamp(result.available_at), expire_time=timestamp(result.expires_at),
        contract_version=result.contract_version, newly_enrolled=result.is_newly_enrolled,
        idempotent_replay=is_replay, bonuses=[bonus(awarded) for awarded in result.bonuses],
    )  # fmt: skip


def capture_response(result: commands.CaptureResult, is_replay: bool) -> pb.CaptureHoldResponse:
    return pb.CaptureHoldResponse(
        transaction_id=result.transaction_id, hold=hold(result.hold), points_captured=result.points_captured,
        value_minor=result.value_minor, points_released=result.points_released, idempotent_replay=is_replay,
    )  # fmt: skip


def redeem_response(result: commands.RedeemResult, is_replay: bool) -> pb.RedeemPointsResponse:
    return pb.RedeemPointsResponse(
        transaction_id=result.transaction_id, member_number=result.member_number,
        points_redeemed=result.points_redeemed, value_minor=result.value_minor, currency_code=result.currency,
        contract_version=result.contract_version, idempotent_replay=is_replay,
    )  # fmt: skip


def return_response(result: commands.ReturnResult, is_replay: bool) -> pb.ReturnPurchaseResponse:
    return pb.ReturnPurchaseResponse(
        member_number=result.member_number, returned_total_minor=result.returned_minor_total,
        points_reversed=result.points_reversed, points_restored=result.points_restored,
        debt_created_points=result.debt_created_points, reversal_transaction_id=result.reversal_transaction_id,
        refund_transaction_id=result.refund_transaction_id, idempotent_replay=is_replay,
        bonus_points_reversed=result.bonus_points_reversed,
    )  # fmt: skip


def offline_items(request: pb.SubmitOfflineBatchRequest) -> list[offline.OfflineItem | offline.RefusedItem]:
    """The batch's items; one that cannot be read is refused on its own, not with the batch."""
    items: list[offline.OfflineItem | offline.RefusedItem] = []
    for message in request.items:
        try:
            items.append(_offline_item(message))
        except CoalitionError as error:
            items.append(offline.RefusedItem(message.request_id, error))
    return items


def _offline_item(message: pb.OfflineItem) -> offline.OfflineItem:
    business_time = datetime_of(message.business_time) if message.HasField("business_time") else None
    which = message.WhichOneof("operation")
    operation: offline.OfflineOperation
    if which == "earn":
        earn = message.earn
        operation = commands.EarnCommand(
            member=member_identifier(earn.member), receipt_id=require_text(earn.receipt_id, "receipt_id"),
            basket=basket(earn.basket), enroll_if_unknown=earn.enroll_if_unknown,
        )  # fmt: skip
    elif which == "purchase_return":
        returned = message.purchase_return
        operation = commands.ReturnCommand(
            receipt_id=require_text(returned.receipt_id, "receipt_id"),
            returned_minor=returned.returned_amount_minor, is_full_return=returned.full_return,
        )  # fmt: skip
    elif which == "redemption":
        redemption = message.redemption
        operation = commands.RedeemCommand(
            member=member_identifier(redemption.member), points=redemption.points,
            currency=redemption.currency_code, basket_total_minor=redemption.basket_total_minor,
            receipt_id=redemption.receipt_id,
        )  # fmt: skip
    else:
        raise MissingField("an item is one of earn, purchase_return or redemption", field="operation")
    return offline.OfflineItem(message.request_id, business_time, operation)


def offline_results(results: list[offline.OfflineItemResult]) -> pb.SubmitOfflineBatchResponse:
    return pb.SubmitOfflineBatchResponse(results=[_offline_result(result) for result in results])


def _offline_result(result: offline.OfflineItemResult) -> pb.OfflineItemResult:
    message = pb.OfflineItemResult(request_id=result.request_id, idempotent_replay=result.is_replay)
    if result.error is not None:
        error = result.error
        message.status = pb.OFFLINE_ITEM_STATUS_REJECTED
        message.error_code = status_code_for(error).name
        message.reason, message.message = error.reason, error.message
        message.metadata.update(error.metadata)
        return message
    message.status = pb.OFFLINE_ITEM_STATUS_APPLIED
    if result.earn is not None:
        earned = earn_response(result.earn, result.is_replay)
        message.earn.CopyFrom(pb.OfflineEarnResult(
            transaction_id=earned.transaction_id, member_number=earned.member_number,
            points_earned=earned.points_earned, debt_repaid_points=earned.debt_repaid_points,
            available_time=earned.available_time, expire_time=earned.expire_time,
            contract_version=earned.contract_version, newly_enrolled=earned.newly_enrolled,
        ))  # fmt: skip
    elif result.purchase_return is not None:
        returned = result.purchase_return
        message.purchase_return.CopyFrom(pb.OfflineReturnResult(
            member_number=returned.member_number, returned_total_minor=returned.returned_minor_total,
            points_reversed=returned.points_reversed, points_restored=returned.points_restored,
            debt_created_points=returned.debt_created_points,
            reversal_transaction_id=returned.reversal_transaction_id,
            refund_transaction_id=returned.refund_transaction_id,
        ))  # fmt: skip
    elif result.redemption is not None:
        redeemed = result.redemption
        message.redemption.CopyFrom(pb.OfflineRedemptionResult(
            transaction_id=redeemed.transaction_id, member_number=redeemed.member_number,
            points_redeemed=redeemed.points_redeemed, debt_points=redeemed.debt_points,
            value_minor=redeemed.value_minor, currency_code=redeemed.currency,
            contract_version=redeemed.contract_version,
        ))  # fmt: skip
    return message


def activity_award_response(result: commands.ActivityAwardResult, is_replay: bool) -> pb.AwardActivityPointsResponse:
    return pb.AwardActivityPointsResponse(
        transaction_id=result.transaction_id, member_number=result.member_number, activity_code=result.activity_code,
        points_awarded=result.points_awarded, awards_left_in_period=result.awards_left_in_period,
        expire_time=timestamp(result.expires_at), contract_version=result.contract_version,
        idempotent_replay=is_replay,
    )  # fmt: skip
