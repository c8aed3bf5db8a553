"""The card stream's read-ahead: batches of what has arrived, in order, every request answered once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from loyalty.v1 import card_service_pb2 as pb

from cards.commands import CardItemCommand, CardItemResult, ItemStatus
from server.cards_convert import MAX_BATCH_ITEMS, item_responses


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
