"""Co-branded cards over a real server: linking, the card lifecycle in any order, duplicates, the PAN guard."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from loyalty.v1 import card_service_pb2 as card_pb
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from sqlalchemy import select

from common.pan import looks_like_pan
from migrations.schema import metadata
from sdk.client import CoalitionClient, error_info
from server.app import RunningServer
from server.cards_convert import MAX_MESSAGE_ITEMS
from tests.e2e.conftest import DEFAULT_TERMS, Partner
from tests.factories import phone

APPLIED, WAITING, IGNORED, REJECTED = (
    card_pb.CARD_ITEM_STATUS_APPLIED, card_pb.CARD_ITEM_STATUS_WAITING, card_pb.CARD_ITEM_STATUS_IGNORED,
    card_pb.CARD_ITEM_STATUS_REJECTED,
)  # fmt: skip
AUTH, CLEAR, REFUND, CHARGEBACK = (
    card_pb.CARD_ITEM_TYPE_AUTHORISATION, card_pb.CARD_ITEM_TYPE_CLEARING, card_pb.CARD_ITEM_TYPE_REFUND,
    card_pb.CARD_ITEM_TYPE_CHARGEBACK,
)  # fmt: skip
# A Luhn-valid test card number, written only in requests the server must refuse.
TEST_PAN = "4111 1111 1111 1111"


class Bank:
    """A card-issuer partner with a linked member, a mapped partner merchant and a helper to stream items."""

    def __init__(self, onboard: Callable[..., Partner], operator: CoalitionClient) -> None:
        self.partner = onboard(kind=admin_pb.PARTNER_KIND_CARD_ISSUER)
        self.merchant = onboard()  # earn_rate 1 point per EUR
        self.merchant_id = f"mid-{uuid.uuid4().hex[:10]}"
        mapping = card_pb.CardMerchant(merchant_id=self.merchant_id, partner_id=self.merchant.partner_id)
        operator.cards.CreateCardMerchant(card_pb.CreateCardMerchantRequest(card_merchant=mapping))
        self.token = f"tok_{uuid.uuid4().hex}"
        self.phone = phone()
        linked = self.partner.client.cards.LinkCard(card_pb.LinkCardRequest(
            card_token=self.token, member=pb.MemberIdentifier(phone_number=self.phone.value)))  # fmt: skip
        self.member_number = linked.member_number
        self.time = datetime.now(UTC)  # a redelivered item is the same item, time included

    def item(self, item_type: int, transaction: str, amount_minor: int, *, item_id: str = "",
             merchant_id: str | None = None) -> card_pb.StreamCardTransactionsRequest:  # fmt: skip
        stamp = card_pb.CardTransactionItem(
            type=item_type, bank_transaction_id=transaction, item_id=item_id, card_token=self.token,
            merchant_id=self.merchant_id if merchant_id is None else merchant_id, currency_code="EUR",
            amount_minor=amount_minor,
        )  # fmt: skip
        stamp.transaction_time.FromDatetime(self.time)
        return card_pb.StreamCardTransactionsRequest(item=stamp)

    def send(self, *requests: card_pb.StreamCardTransactionsRequest) -> list[card_pb.StreamCardTransactionsResponse]:
        return list(self.partner.client.cards.StreamCardTransactions(iter(requests)))

    def balance(self) -> pb.Balance:
        member = pb.MemberIdentifier(member_number=self.member_number)
        return self.partner.client.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance


@pytest.fixture
def bank(onboard: Callable[..., Partner], operator: CoalitionClient) -> Iterator[Bank]:
    yield Bank(onboard, operator)


def transaction() -> str:
    return f"T{uuid.uuid4().hex[:12]}"


def test_lifecycle_in_order_authorisation_pending_then_clearing_earns_two_lots(bank: Bank) -> None:
    txn = transaction()
    [auth] = bank.send(bank.item(AUTH, txn, 10_000))
    assert (auth.status, auth.pending_points) == (APPLIED, 200)  # merchant 100 + bank 100
    balance = bank.balance()
    assert (balance.pending_points, balance.available_points) == (200, 0)
    # The clearing is for less than was authorised: the earn follows the cleared amount.
    [clear] = bank.send(bank.item(CLEAR, txn, 8_050))
    assert (clear.status, clear.points_earned) == (APPLIED, 160)
    balance = bank.balance()
    assert (balance.pending_points, balance.available_points) == (0, 160)
    # Partial refund: proportional; then a chargeback for the rest takes exactly what is left.
    [refund] = bank.send(bank.item(REFUND, txn, 4_025, item_id="R1"))
    assert (refund.status, refund.points_reversed) == (APPLIED, 80)
    [chargeback] = bank.send(bank.item(CHARGEBACK, txn, 4_025, item_id="C1"))
    assert (chargeback.status, chargeback.points_reversed) == (APPLIED, 80)
    assert bank.balance().available_points == 0
    [too_much] = bank.send(bank.item(REFUND, txn, 1, item_id="R2"))
    assert (too_much.status, too_much.reason) == (REJECTED, "REVERSAL_EXCEEDS_CLEARING")


def test_out_of_order_refund_waits_for_its_clearing_and_a_late_authorisation_is_ignored(bank: Bank) -> None:
    txn = transaction()
    responses = bank.send(bank.item(REFUND, txn, 2_000, item_id="R1"), bank.item(CLEAR, txn, 10_000),
                          bank.item(AUTH, txn, 10_000))  # fmt: skip
    assert [(r.status, r.reason) for r in responses] == [
        (WAITING, "WAITING_FOR_CLEARING"), (APPLIED, ""), (IGNORED, "ALREADY_CLEARED"),
    ]  # fmt: skip
    assert responses[1].points_earned == 200
    assert bank.balance().available_points == 160  # the waiting refund took its 40 with the clearing
    [replayed] = bank.send(bank.item(REFUND, txn, 2_000, item_id="R1"))
    assert (replayed.status, replayed.points_reversed, replayed.idempotent_replay) == (APPLIED, 40, True)


def test_every_item_once_however_often_it_is_delivered(bank: Bank) -> None:
    txn = transaction()
    items = [bank.item(AUTH, txn, 5_000), bank.item(CLEAR, txn, 5_000), bank.item(REFUND, txn, 1_000, item_id="R1")]
    first = bank.send(*items)
    again = bank.send(*items, *items)
    assert [r.idempotent_replay for r in first] == [False] * 3
    assert all(r.idempotent_replay for r in again)
    assert [r.status for r in again] == [r.status for r in first] * 2
    assert bank.balance().available_points == 80
    changed = bank.item(CLEAR, txn, 6_000)
    [conflict] = bank.send(changed)
    assert (conflict.status, conflict.reason) == (REJECTED, "CARD_ITEM_CONFLICT")


def test_non_partner_merchant_earns_only_the_bank_base(bank: Bank) -> None:
    txn = transaction()
    [clear] = bank.send(bank.item(CLEAR, txn, 3_000, merchant_id="not-a-partner"))
    assert (clear.status, clear.points_earned) == (APPLIED, 30)


def test_linked_card_token_finds_the_member_at_checkout_and_unlink_frees_it(bank: Bank) -> None:
    member = pb.MemberIdentifier(card_token=bank.token)
    found = bank.partner.client.checkout.LookupMember(pb.LookupMemberRequest(member=member))
    assert found.member.member_number == bank.member_number
    with pytest.raises(grpc.RpcError) as taken:
        bank.partner.client.cards.LinkCard(card_pb.LinkCardRequest(
            card_token=bank.token, member=pb.MemberIdentifier(phone_number=phone().value)))  # fmt: skip
    assert error_info(taken.value).reason == "CARD_TOKEN_ALREADY_LINKED"
    bank.partner.client.cards.UnlinkCard(card_pb.UnlinkCardRequest(card_token=bank.token))
    [unlinked] = bank.send(bank.item(AUTH, transaction(), 1_000))
    assert (unlinked.status, unlinked.reason) == (REJECTED, "CARD_NOT_LINKED")
    relinked = bank.partner.client.cards.LinkCard(card_pb.LinkCardRequest(
        card_token=bank.token, member=pb.MemberIdentifier(phone_number=bank.phone.value)))  # fmt: skip
    assert relinked.member_number == bank.member_number


def test_another_bank_cannot_unlink_or_use_the_token(bank: Bank, onboard: Callable[..., Partner]) -> None:
    other = onboard(kind=admin_pb.PARTNER_KIND_CARD_ISSUER)
    with pytest.raises(grpc.RpcError) as refused:
        other.client.cards.UnlinkCard(card_pb.UnlinkCardRequest(card_token=bank.token))
    assert (refused.value.code(), error_info(refused.value).reason) == (grpc.StatusCode.NOT_FOUND,
                                                                       "CARD_LINK_NOT_FOUND")  # fmt: skip
    [item] = list(other.client.cards.StreamCardTransactions(iter([bank.item(AUTH, transaction(), 1_000)])))
    assert item.reason == "CARD_NOT_LINKED"


def test_a_shop_is_not_a_card_issuer(onboard: Callable[..., Partner]) -> None:
    shop = onboard(terms=DEFAULT_TERMS)
    with pytest.raises(grpc.RpcError) as refused:
        shop.client.cards.LinkCard(card_pb.LinkCardRequest(
            card_token="tok_x", member=pb.MemberIdentifier(phone_number=phone().value)))  # fmt: skip
    assert error_info(refused.value).reason == "NOT_A_CARD_ISSUER"


def test_a_card_number_in_any_streamed_item_is_refused_alone(bank: Bank) -> None:
    txn = transaction()
    with_pan = bank.item(AUTH, transaction(), 1_000)
    with_pan.item.card_token = TEST_PAN
    in_id = bank.item(AUTH, TEST_PAN.replace(" ", ""), 1_000)
    responses = bank.send(with_pan, in_id, bank.item(AUTH, txn, 1_000))
    assert [(r.status, r.reason) for r in responses] == [
        (REJECTED, "PAN_NOT_ALLOWED"), (REJECTED, "PAN_NOT_ALLOWED"), (APPLIED, ""),
    ]  # fmt: skip
    assert responses[1].bank_transaction_id == ""  # never echoed back
    with pytest.raises(grpc.RpcError) as refused:
        bank.partner.client.cards.LinkCard(card_pb.LinkCardRequest(
            card_token=TEST_PAN, member=pb.MemberIdentifier(phone_number=phone().value)))  # fmt: skip
    assert error_info(refused.value).reason == "PAN_NOT_ALLOWED"


def test_merchant_table_is_the_operators(operator: CoalitionClient, bank: Bank) -> None:
    listed = operator.cards.ListCardMerchants(card_pb.ListCardMerchantsRequest(page_size=1000))
    assert bank.merchant_id in {merchant.merchant_id for merchant in listed.card_merchants}
    with pytest.raises(grpc.RpcError) as refused:
        bank.partner.client.cards.ListCardMerchants(card_pb.ListCardMerchantsRequest())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    operator.cards.DeleteCardMerchant(card_pb.DeleteCardMerchantRequest(merchant_id=bank.merchant_id))
    [clear] = bank.send(bank.item(CLEAR, transaction(), 1_000))
    assert clear.points_earned == 10  # the bank's base only, now


def batch(*requests: card_pb.StreamCardTransactionsRequest) -> card_pb.StreamCardTransactionsRequest:
    return card_pb.StreamCardTransactionsRequest(items=[request.item for request in requests])


def test_a_batch_is_answered_per_item_in_order_and_a_card_number_refuses_its_item_alone(bank: Bank) -> None:
    first, second, third = transaction(), transaction(), transaction()
    with_pan = bank.item(AUTH, transaction(), 1_000)
    with_pan.item.card_token = TEST_PAN
    items = batch(
        bank.item(AUTH, first, 10_000), bank.item(AUTH, first, 10_000),  # the same item twice
        bank.item(REFUND, second, 2_000, item_id="R1"),  # before its clearing: waits
        with_pan, bank.item(CLEAR, second, 10_000), bank.item(AUTH, third, 0),  # an invalid amount
    )  # fmt: skip
    [response] = bank.send(items)
    assert (response.status, response.bank_transaction_id) == (card_pb.CARD_ITEM_STATUS_UNSPECIFIED, "")
    answers = [(r.bank_transaction_id, r.status, r.reason, r.idempotent_replay) for r in response.results]
    assert answers == [
        (first, APPLIED, "", False), (first, APPLIED, "", True), (second, WAITING, "WAITING_FOR_CLEARING", False),
        ("", REJECTED, "PAN_NOT_ALLOWED", False), (second, APPLIED, "", False),
        (third, REJECTED, "INVALID_CARD_ITEM", False),
    ]  # fmt: skip
    assert [r.pending_points for r in response.results[:2]] == [200, 200]
    assert response.results[4].points_earned == 200
    balance = bank.balance()
    # The refund (a fifth of the clearing) took its 40 points when the clearing came, in the same batch.
    assert (balance.pending_points, balance.available_points) == (200, 160)

    [again] = bank.send(items)  # the whole batch again: the stored answers, nothing applied twice
    replayed = [(r.bank_transaction_id, r.status, r.reason, r.idempotent_replay) for r in again.results]
    assert replayed == [
        (first, APPLIED, "", True), (first, APPLIED, "", True), (second, APPLIED, "", True),
        ("", REJECTED, "PAN_NOT_ALLOWED", False), (second, APPLIED, "", True),
        (third, REJECTED, "INVALID_CARD_ITEM", False),
    ]  # fmt: skip
    assert (again.results[2].points_reversed, again.results[4].points_earned) == (40, 200)
    assert (bank.balance().pending_points, bank.balance().available_points) == (200, 160)


def test_single_items_and_batches_share_a_stream_each_answered_in_its_form(bank: Bank) -> None:
    txn = transaction()
    responses = bank.send(bank.item(AUTH, txn, 5_000), batch(bank.item(CLEAR, txn, 5_000)),
                          bank.item(REFUND, txn, 1_000, item_id="R1"))  # fmt: skip
    assert (responses[0].status, responses[0].pending_points, list(responses[0].results)) == (APPLIED, 100, [])
    assert [(r.status, r.points_earned) for r in responses[1].results] == [(APPLIED, 100)]
    assert (responses[2].status, responses[2].points_reversed, list(responses[2].results)) == (APPLIED, 20, [])
    assert bank.balance().available_points == 80


def test_a_batch_over_the_limit_ends_the_call_after_the_requests_before_it_are_answered(bank: Bank) -> None:
    txn = transaction()
    oversize = batch(*(bank.item(AUTH, transaction(), 100) for _ in range(MAX_MESSAGE_ITEMS + 1)))
    answered = []
    with pytest.raises(grpc.RpcError) as refused:
        for response in bank.partner.client.cards.StreamCardTransactions(
            iter([bank.item(CLEAR, txn, 1_000), oversize, bank.item(AUTH, transaction(), 100)])
        ):
            answered.append(response)  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "CARD_BATCH_TOO_LARGE"
    assert [(r.bank_transaction_id, r.status) for r in answered] == [(txn, APPLIED)]
    assert bank.balance().available_points == 20  # the oversize batch and what followed it: not applied
    both = batch(bank.item(AUTH, transaction(), 100))
    both.item.CopyFrom(bank.item(AUTH, transaction(), 100).item)
    with pytest.raises(grpc.RpcError) as ambiguous:
        bank.send(both)
    assert error_info(ambiguous.value).reason == "INVALID_CARD_BATCH"


_SQLITE_TIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{6})?")
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The message and any extra fields (the logging internals, thread ids and times, are not ours).
        extras = {key: value for key, value in vars(record).items() if key not in _RECORD_FIELDS}
        self.lines.append(record.getMessage() + " " + " ".join(f"{key}={value}" for key, value in extras.items()))


@pytest.fixture(scope="module", autouse=True)
def captured_logs() -> Iterator[_Captured]:
    handler = _Captured()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


def test_zz_no_card_number_in_the_database_or_the_logs(server: RunningServer, captured_logs: _Captured) -> None:
    """Runs last in this module: after the card tests (which sent card numbers), scan everything."""
    with server.app.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    assert not looks_like_pan(str(value)), f"a card number in {table.name}"
    database = server.app.engine.url.database or ""
    if server.app.engine.dialect.name == "sqlite":
        for path in Path(database).parent.glob(Path(database).name + "*"):
            # Each run of printable bytes on its own: a binary length byte is no separator a card number has.
            # SQLite stores times as text, back to back in a record: "...52.8521212026-11-22 21..." reads
            # as a 16-digit run. Times are no card data, so they are taken out first.
            content = _SQLITE_TIME.sub(b"|", path.read_bytes())
            runs = re.findall(rb"[ -~]{13,}", content)
            assert not [run for run in runs if looks_like_pan(run.decode())], f"a card number in {path.name}"
    assert not any(looks_like_pan(line) for line in captured_logs.lines)
