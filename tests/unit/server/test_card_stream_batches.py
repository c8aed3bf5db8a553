"""The card stream's read-ahead: batches of what has arrived, in order, every request answered once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from loyalty.v1 import card_service_pb2 as pb

from cards.commands import CardItemCommand, CardItemResult, ItemStatus
from common.pan import PanNotAllowed
from server.cards_convert import MAX_BATCH_ITEMS, MAX_MESSAGE_ITEMS, CardBatchTooLarge, item_responses
from server.interceptors import RefusedElements


def _request(number: int, *, item_type: int = pb.CARD_ITEM_TYPE_CLEARING) -> pb.StreamCardTransactionsRequest:
    item = pb.CardTransactionItem(type=item_type, bank_transaction_id=f"T{number}", amount_minor=number)
    item.transaction_time.FromSeconds(1_700_000_000)
    return pb.StreamCardTransactionsRequest(item=item)


def test_every_request_is_answered_in_order_and_batches_stay_under_the_limit() -> None:
    batches: list[int] = []

    def apply(commands: Sequence[CardItemCommand]) -> list[CardItemResult]:
        batches.append(len(commands))
        return [CardItemResult(c.bank_transaction_id, c.item_type.value, "", ItemStatus.APPLIED) for c in commands]

    requests = [_request(number) for number in range(1, 351)]
    requests[10] = _request(11, item_type=pb.CARD_ITEM_TYPE_UNSPECIFIED)  # malformed: answered, never applied
    responses = list(item_responses(iter(requests), apply))
    assert [response.bank_transaction_id for response in responses] == [f"T{number}" for number in range(1, 351)]
    assert responses[10].status == pb.CARD_ITEM_STATUS_REJECTED and responses[11].status == pb.CARD_ITEM_STATUS_APPLIED
    assert sum(batches) == 349 and max(batches) <= MAX_BATCH_ITEMS


def test_a_failure_reading_the_call_reaches_the_caller_after_the_answers_before_it() -> None:
    def requests() -> Iterator[pb.StreamCardTransactionsRequest]:
        yield _request(1)
        raise ConnectionError("the client went away")

    def apply(commands: Sequence[CardItemCommand]) -> list[CardItemResult]:
        return [CardItemResult(c.bank_transaction_id, c.item_type.value, "", ItemStatus.APPLIED) for c in commands]

    answered = []
    with pytest.raises(ConnectionError):
        for response in item_responses(requests(), apply):
            answered.append(response.bank_transaction_id)
    assert answered == ["T1"]


def _applied(commands: Sequence[CardItemCommand]) -> list[CardItemResult]:
    return [CardItemResult(c.bank_transaction_id, c.item_type.value, "", ItemStatus.APPLIED) for c in commands]


def _batch(*numbers: int) -> pb.StreamCardTransactionsRequest:
    return pb.StreamCardTransactionsRequest(items=[_request(number).item for number in numbers])


def test_a_batch_message_is_answered_with_a_result_per_item_and_applied_whole() -> None:
    applied: list[list[str]] = []

    def apply(commands: Sequence[CardItemCommand]) -> list[CardItemResult]:
        applied.append([c.bank_transaction_id for c in commands])
        return _applied(commands)

    requests = [_request(1), _batch(*range(2, 2 + MAX_BATCH_ITEMS)), _request(1_000)]
    responses = list(item_responses(iter(requests), apply))
    assert [len(response.results) for response in responses] == [0, MAX_BATCH_ITEMS, 0]
    assert [r.bank_transaction_id for r in responses[1].results] == [f"T{n}" for n in range(2, 2 + MAX_BATCH_ITEMS)]
    assert (responses[0].bank_transaction_id, responses[2].bank_transaction_id) == ("T1", "T1000")
    assert any(len(found) == MAX_BATCH_ITEMS and found[0] == "T2" for found in applied)  # never split
    assert all(len(found) <= MAX_BATCH_ITEMS for found in applied)


def test_items_the_pan_guard_refused_are_answered_in_their_place_and_never_applied() -> None:
    message = _batch(1, 2, 3)
    message.items[1].Clear()  # as the guard leaves it
    refused = RefusedElements(message, {("items", 1): PanNotAllowed("items[1].card_token looks like a card number")})
    applied: list[str] = []

    def apply(commands: Sequence[CardItemCommand]) -> list[CardItemResult]:
        applied.extend(c.bank_transaction_id for c in commands)
        return _applied(commands)

    [response] = item_responses(iter([refused]), apply)
    assert [(r.bank_transaction_id, r.reason) for r in response.results] == [
        ("T1", ""), ("", "PAN_NOT_ALLOWED"), ("T3", ""),
    ]  # fmt: skip
    assert applied == ["T1", "T3"]


def test_a_message_over_the_limit_ends_the_stream_after_the_ones_before_it() -> None:
    answered = []
    with pytest.raises(CardBatchTooLarge):
        for response in item_responses(iter([_request(1), _batch(*range(MAX_MESSAGE_ITEMS + 1)), _request(2)]),
                                       _applied):  # fmt: skip
            answered.append(response.bank_transaction_id)
    assert answered == ["T1"]
