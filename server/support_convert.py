"""Conversions for SupportService messages."""

from __future__ import annotations

from loyalty.v1 import support_service_pb2 as pb

from programme.goodwill import APPLIED, DEDUCT, GRANT, PENDING, REJECTED, AdjustmentView
from server.convert import UnknownEnumValue, timestamp

_DIRECTIONS: dict[int, str] = {pb.ADJUSTMENT_DIRECTION_GRANT: GRANT, pb.ADJUSTMENT_DIRECTION_DEDUCT: DEDUCT}
_DIRECTION_VALUES = {GRANT: pb.ADJUSTMENT_DIRECTION_GRANT, DEDUCT: pb.ADJUSTMENT_DIRECTION_DEDUCT}
_STATES: dict[int, str] = {pb.ADJUSTMENT_STATE_PENDING: PENDING, pb.ADJUSTMENT_STATE_APPLIED: APPLIED,
           pb.ADJUSTMENT_STATE_REJECTED: REJECTED}  # fmt: skip
_STATE_VALUES = {PENDING: pb.ADJUSTMENT_STATE_PENDING, APPLIED: pb.ADJUSTMENT_STATE_APPLIED,
                 REJECTED: pb.ADJUSTMENT_STATE_REJECTED}  # fmt: skip


def direction(value: int) -> str:
    if value not in _DIRECTIONS:
        raise UnknownEnumValue("direction must be GRANT or DEDUCT", field="direction")
    return _DIRECTIONS[value]


def state_filter(value: int) -> str:
    """ "" (every state) for unspecified."""
    if value == pb.ADJUSTMENT_STATE_UNSPECIFIED:
        return ""
    if value not in _STATES:
        raise UnknownEnumValue(f"state {value} is not a known value", field="state")
    return _STATES[value]


def adjustment(view: AdjustmentView) -> pb.PointsAdjustment:
    message = pb.PointsAdjustment(
        adjustment_id=view.adjustment_id, member_number=view.member_number,
        direction=_DIRECTION_VALUES[view.direction], points=view.points, reason_code=view.reason_code,
        note=view.note, requester=view.requested_by, request_time=timestamp(view.requested_at),
        needs_approval=view.needs_approval, state=_STATE_VALUES[view.status], decider=view.decided_by,
        decision_note=view.decision_note, transaction_id=view.transaction_id,
    )  # fmt: skip
    if view.decided_at is not None:
        message.decision_time.CopyFrom(timestamp(view.decided_at))
    return message
