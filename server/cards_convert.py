"""Conversions between CardService messages and card commands/results. No rules live here."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from loyalty.v1 import card_service_pb2 as pb

from cards.commands import CardItemCommand, CardItemResult, ItemStatus, ItemType, LinkResult, MerchantView
from common.errors import CoalitionError
from server.convert import UnknownEnumValue, datetime_of, timestamp
from server.interceptors import RefusedMessage

# Items applied in one database transaction at most: enough to share a commit, few enough to hold
# member locks briefly and answer the first items of a burst soon.
MAX_BATCH_ITEMS = 100
_Request = pb.StreamCardTransactionsRequest | RefusedMessage
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


def item_response(result: CardItemResult) -> pb.StreamCardTransactionsResponse:
    return pb.StreamCardTransactionsResponse(
        bank_transaction_id=result.bank_transaction_id,
        type=_TYPE_NUMBERS.get(result.item_type, pb.CARD_ITEM_TYPE_UNSPECIFIED),
        item_id=result.item_id, status=_STATUSES[result.status], reason=result.reason, message=result.message,
        pending_points=result.pending_points, points_earned=result.points_earned,
        points_reversed=result.points_reversed, debt_points=result.debt_points, idempotent_replay=result.is_replay,
    )  # fmt: skip


def _refused(
    error: CoalitionError, message: pb.StreamCardTransactionsRequest | None
) -> pb.StreamCardTransactionsResponse:
    response = pb.StreamCardTransactionsResponse(
        status=pb.CARD_ITEM_STATUS_REJECTED, reason=error.reason, message=error.message
    )
    if message is not None:  # a message refused for a card number is never echoed
        response.bank_transaction_id = message.item.bank_transaction_id
        response.type = message.item.type
        response.item_id = message.item.item_id
    return response


def item_responses(
    requests: Iterator[pb.StreamCardTransactionsRequest | RefusedMessage],
    apply: Callable[[Sequence[CardItemCommand]], list[CardItemResult]],
) -> Iterator[pb.StreamCardTransactionsResponse]:
    """One response per request, in order: refused and malformed items get theirs without stopping the stream.

    The items already received are applied together (one database transaction, see CardFeed.apply_batch):
    a bank that streams fast gets large batches, one that sends an item at a time gets it answered at once.
    """
    for batch in _received_batches(requests):
        answers: list[pb.StreamCardTransactionsResponse | None] = []
        commands: list[CardItemCommand] = []
        for request in batch:
            if isinstance(request, RefusedMessage):
                answers.append(_refused(request.error, None))
                continue
            try:
                commands.append(item_command(request.item))
            except CoalitionError as error:
                answers.append(_refused(error, request))
                continue
            answers.append(None)
        results = iter(apply(commands) if commands else [])
        for answer in answers:
            yield answer if answer is not None else item_response(next(results))


_END = object()


def _received_batches(requests: Iterator[_Request]) -> Iterator[list[_Request]]:
    """Batches of what has arrived: waits for one request, then takes those already waiting, up to a limit.

    A thread reads the call's requests into a bounded queue (the client is slowed down, not buffered
    without end); it stops when the call ends or when this generator is closed.
    """
    received: queue.Queue[object] = queue.Queue(maxsize=2 * MAX_BATCH_ITEMS)
    stopped = threading.Event()

    def put(value: object) -> bool:
        while not stopped.is_set():
            try:
                received.put(value, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for request in requests:
                if not put(request):
                    return
        except Exception as error:  # handed to the call's thread, which raises it
            put(_Failure(error))
            return
        put(_END)

    threading.Thread(target=read, name="card-stream-reader", daemon=True).start()
    try:
        while True:
            batch = [received.get()]
            while len(batch) < MAX_BATCH_ITEMS:
                try:
                    batch.append(received.get_nowait())
                except queue.Empty:
                    break
            requests_in_batch = [item for item in batch if item is not _END and not isinstance(item, _Failure)]
            if requests_in_batch:
                yield requests_in_batch  # type: ignore[misc]
            for item in batch:
                if isinstance(item, _Failure):
                    raise item.error
                if item is _END:
                    return
    finally:
        stopped.set()


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
