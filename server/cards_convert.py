"""Conversions between CardService messages and card commands/results. No rules live here."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from loyalty.v1 import card_service_pb2 as pb

from cards.commands import CardItemCommand, CardItemResult, ItemStatus, ItemType, LinkResult, MerchantView
from common.errors import CoalitionError, InvalidArgument
from server.convert import UnknownEnumValue, datetime_of, timestamp
from server.interceptors import RefusedElements, RefusedMessage

# Items of one request message at most: a bank batches its items; more is a client's mistake.
MAX_MESSAGE_ITEMS = 500
# Items applied in one database transaction at most: enough to share a commit, few enough to hold
# member locks briefly and answer the first items of a burst soon. Messages are never split, so a
# batch message is applied whole, and waiting single-item messages are grouped up to this.
MAX_BATCH_ITEMS = 500
_Request = pb.StreamCardTransactionsRequest | RefusedMessage | RefusedElements
_Fields = dict[str, Any]
_TYPES = {
    pb.CARD_ITEM_TYPE_AUTHORISATION: ItemType.AUTHORISATION,
    pb.CARD_ITEM_TYPE_CLEARING: ItemType.CLEARING,
    pb.CARD_ITEM_TYPE_REFUND: ItemType.REFUND,
    pb.CARD_ITEM_TYPE_CHARGEBACK: ItemType.CHARGEBACK,
}
_TYPE_NUMBERS = {value.value: number for number, value in _TYPES.items()}
_STATUSES = {
    ItemStatus.APPLIED: pb.CARD_ITEM_STATUS_APPLIED,
    ItemStatus.WAITING: pb.CARD_ITEM_STATUS_WAITING,
    ItemStatus.IGNORED: pb.CARD_ITEM_STATUS_IGNORED,
    ItemStatus.REJECTED: pb.CARD_ITEM_STATUS_REJECTED,
}


class CardBatchTooLarge(InvalidArgument):
    reason = "CARD_BATCH_TOO_LARGE"


class InvalidCardBatch(InvalidArgument):
    reason = "INVALID_CARD_BATCH"


def item_command(message: pb.CardTransactionItem) -> CardItemCommand:
    item_type = _TYPES.get(message.type)
    if item_type is None:
        raise UnknownEnumValue("type: set one of AUTHORISATION, CLEARING, REFUND or CHARGEBACK")
    if not message.HasField("transaction_time"):
        raise UnknownEnumValue("transaction_time is required")
    return CardItemCommand(
        item_type=item_type, bank_transaction_id=message.bank_transaction_id, item_id=message.item_id,
        card_token=message.card_token, merchant_id=message.merchant_id, currency=message.currency_code,
        amount_minor=message.amount_minor, transaction_time=datetime_of(message.transaction_time),
    )  # fmt: skip


def _result_fields(result: CardItemResult) -> _Fields:
    return {
        "bank_transaction_id": result.bank_transaction_id,
        "type": _TYPE_NUMBERS.get(result.item_type, pb.CARD_ITEM_TYPE_UNSPECIFIED),
        "item_id": result.item_id, "status": _STATUSES[result.status], "reason": result.reason,
        "message": result.message, "pending_points": result.pending_points, "points_earned": result.points_earned,
        "points_reversed": result.points_reversed, "debt_points": result.debt_points,
        "idempotent_replay": result.is_replay,
    }  # fmt: skip


def item_response(result: CardItemResult) -> pb.StreamCardTransactionsResponse:
    return pb.StreamCardTransactionsResponse(**_result_fields(result))


def _refused_fields(error: CoalitionError, item: pb.CardTransactionItem | None) -> _Fields:
    fields: _Fields = {"status": pb.CARD_ITEM_STATUS_REJECTED, "reason": error.reason, "message": error.message}
    if item is not None:  # an item refused for a card number is never echoed
        fields |= {"bank_transaction_id": item.bank_transaction_id, "type": item.type, "item_id": item.item_id}
    return fields


@dataclass(frozen=True)
class _Message:
    """One request's items: those to apply, in order, and the answers of those refused before that."""

    is_batch: bool
    commands: list[CardItemCommand]
    # One per item: its refusal, or None where the next command's result goes.
    answers: list[_Fields | None]

    def response(self, results: Iterator[CardItemResult]) -> pb.StreamCardTransactionsResponse:
        answers = [answer if answer is not None else _result_fields(next(results)) for answer in self.answers]
        if not self.is_batch:
            return pb.StreamCardTransactionsResponse(**answers[0])
        return pb.StreamCardTransactionsResponse(results=[pb.CardItemResult(**answer) for answer in answers])


def _message(request: _Request) -> _Message:
    """The request's items; raises for a request the stream cannot answer (too many items, or both forms)."""
    if isinstance(request, RefusedMessage):
        return _Message(False, [], [_refused_fields(request.error, None)])
    refused: Mapping[tuple[str, int], CoalitionError] = {}
    if isinstance(request, RefusedElements):
        refused, request = request.errors, cast(pb.StreamCardTransactionsRequest, request.message)
    if not request.items:  # one item (an empty request is one malformed item, as before batches)
        return _items(False, [request.item], {})
    if request.HasField("item"):
        raise InvalidCardBatch("set either item or items, not both")
    if len(request.items) > MAX_MESSAGE_ITEMS:
        raise CardBatchTooLarge(
            f"a request holds at most {MAX_MESSAGE_ITEMS} items, not {len(request.items)}: send smaller batches",
            max_items=MAX_MESSAGE_ITEMS,
        )  # fmt: skip
    return _items(True, request.items, {index: error for (name, index), error in refused.items() if name == "items"})


def _items(is_batch: bool, items: Sequence[pb.CardTransactionItem], refused: Mapping[int, CoalitionError]) -> _Message:
    commands: list[CardItemCommand] = []
    answers: list[_Fields | None] = []
    for index, item in enumerate(items):
        error = refused.get(index)
        if error is not None:
            answers.append(_refused_fields(error, None))
            continue
        try:
            commands.append(item_command(item))
        except CoalitionError as malformed:
            answers.append(_refused_fields(malformed, item))
            continue
        answers.append(None)
    return _Message(is_batch, commands, answers)


def item_responses(
    requests: Iterator[_Request], apply: Callable[[Sequence[CardItemCommand]], list[CardItemResult]]
) -> Iterator[pb.StreamCardTransactionsResponse]:
    """One response per request, in order: refused and malformed items get theirs without stopping the stream.

    The items already received are applied together (one database transaction, see CardFeed.apply_batch):
    a bank that streams fast or sends batches gets large transactions, one that sends an item at a
    time gets it answered at once. A request the stream cannot answer ends it, after the requests
    before it are answered.
    """
    for group in _received_groups(requests):
        messages: list[_Message] = []
        ending: CoalitionError | None = None
        for request in group:
            try:
                messages.append(_message(request))
            except CoalitionError as error:  # what came before it is still applied and answered
                ending = error
                break
        commands = [command for message in messages for command in message.commands]
        results = iter(apply(commands) if commands else [])
        for message in messages:
            yield message.response(results)
        if ending is not None:
            raise ending


_END = object()


def _weight(request: object) -> int:
    """How many items a request holds, for bounding what is buffered and applied together."""
    if isinstance(request, RefusedElements):
        request = request.message
    if isinstance(request, pb.StreamCardTransactionsRequest):
        return max(len(request.items), 1)
    return 1 if isinstance(request, RefusedMessage) else 0


class _Received:
    """Requests read from the call and not yet taken, bounded by the items they hold."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.changed = threading.Condition()
        self.waiting: deque[tuple[object, int]] = deque()
        self.items = 0
        self.is_closed = False

    def put(self, value: object) -> bool:
        """Waits for room (one request always fits an empty buffer); False once closed."""
        weight = _weight(value)
        with self.changed:
            while self.waiting and self.items + weight > self.max_items and not self.is_closed:
                self.changed.wait()
            if self.is_closed:
                return False
            self.waiting.append((value, weight))
            self.items += weight
            self.changed.notify_all()
            return True

    def take(self, max_items: int) -> list[object]:
        """Waits for one request, then takes those waiting behind it while they hold ``max_items`` at most."""
        with self.changed:
            while not self.waiting:
                self.changed.wait()
            taken: list[object] = []
            total = 0
            while self.waiting and (not taken or total + self.waiting[0][1] <= max_items):
                value, weight = self.waiting.popleft()
                taken.append(value)
                total += weight
                self.items -= weight
            self.changed.notify_all()
            return taken

    def close(self) -> None:
        with self.changed:
            self.is_closed = True
            self.changed.notify_all()


def _received_groups(requests: Iterator[_Request]) -> Iterator[list[_Request]]:
    """Groups of what has arrived: waits for one request, then takes those already waiting, up to a limit.

    A thread reads the call's requests into a bounded buffer (the client is slowed down, not buffered
    without end); it stops when the call ends or when this generator is closed.
    """
    received = _Received(2 * MAX_BATCH_ITEMS)

    def read() -> None:
        try:
            for request in requests:
                if not received.put(request):
                    return
        except Exception as error:  # handed to the call's thread, which raises it
            received.put(_Failure(error))
            return
        received.put(_END)

    threading.Thread(target=read, name="card-stream-reader", daemon=True).start()
    try:
        while True:
            taken = received.take(MAX_BATCH_ITEMS)
            group = [item for item in taken if item is not _END and not isinstance(item, _Failure)]
            if group:
                yield group  # type: ignore[misc]
            for item in taken:
                if isinstance(item, _Failure):
                    raise item.error
                if item is _END:
                    return
    finally:
        received.close()


@dataclass(frozen=True)
class _Failure:
    error: Exception


def link_response(result: LinkResult, is_replay: bool) -> pb.LinkCardResponse:
    return pb.LinkCardResponse(
        member_number=result.member_number, link_time=timestamp(result.linked_at),
        newly_enrolled=result.is_newly_enrolled, idempotent_replay=is_replay,
    )  # fmt: skip


def merchant(view: MerchantView) -> pb.CardMerchant:
    return pb.CardMerchant(
        merchant_id=view.merchant_id, partner_id=view.partner_code, create_time=timestamp(view.created_at)
    )
