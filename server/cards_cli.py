"""`coalition cards ...`: a bank's card-transaction file, streamed over gRPC, and the operator's merchant table."""

from __future__ import annotations

import argparse
import csv
import queue
import sys
import threading
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.v1 import card_service_pb2 as pb

from sdk.client import CoalitionClient, Credentials, TlsOptions, error_info
from sdk.tokens import load_private_key
from server.config import Settings
from server.partner_cli import connection_options, operator_call, paging_options

COLUMNS = (
    "type", "bank_transaction_id", "item_id", "card_token", "merchant_id", "currency_code", "amount_minor",
    "transaction_time",
)  # fmt: skip
TYPES = {
    "AUTHORISATION": pb.CARD_ITEM_TYPE_AUTHORISATION, "CLEARING": pb.CARD_ITEM_TYPE_CLEARING,
    "REFUND": pb.CARD_ITEM_TYPE_REFUND, "CHARGEBACK": pb.CARD_ITEM_TYPE_CHARGEBACK,
}  # fmt: skip
STATUSES = ("APPLIED", "WAITING", "IGNORED", "REJECTED")
# Lines a stream message carries: the most the server takes in one (fewer messages, fewer round trips).
BATCH_ITEMS = 500
MAX_STREAMS = 16
# Refused by this command before anything is sent; the server's reasons are its own.
INVALID_LINE = "INVALID_CSV_LINE"
FILE_FORMAT = f"""\
The file: CSV, UTF-8 (a byte-order mark is fine), comma-separated, one header line naming these
columns (any order; extra columns are ignored), then one item per line:
  type                 AUTHORISATION, CLEARING, REFUND or CHARGEBACK
  bank_transaction_id  the bank's id of the card transaction all its items share (at most 64 characters)
  item_id              the bank's id of a refund or chargeback; empty for authorisations and clearings
  card_token           the linked card's token (authorisations and clearings), never the card number
  merchant_id          the card-acceptor merchant id (authorisations and clearings)
  currency_code        ISO 4217, e.g. EUR
  amount_minor         the amount in minor units, a whole number: 1234 is 12.34 EUR
  transaction_time     RFC 3339 with a zone, e.g. 2026-03-10T12:00:00Z (keep the column as text in a spreadsheet)
Example:
  {",".join(COLUMNS)}
  AUTHORISATION,T-1001,,tok_8f2c,mid-4471,EUR,12000,2026-03-10T12:00:00Z
  CLEARING,T-1001,,tok_8f2c,mid-4471,EUR,10000,2026-03-11T08:00:00Z
  REFUND,T-1001,R-1,,,EUR,2000,2026-03-15T09:30:00Z

The items are sent as one StreamCardTransactions call signed by the bank's key, the call a stream
integration makes (--batch-items lines a message), so each has exactly one effect: running the same
file again applies nothing new and reports every line as a replay. A line holding a card number is
refused (PAN_NOT_ALLOWED) alone and its content is never printed. Exit status: 0 when no line was
rejected, 1 when some were (or the call failed: run the file again, it is safe), 2 when the file
cannot be read.
"""


@dataclass(frozen=True)
class LineResult:
    line_number: int
    status: str
    reason: str
    message: str = ""
    bank_transaction_id: str = ""
    item_type: str = ""
    item_id: str = ""
    is_replay: bool = False


class UnreadableFile(Exception):
    """The file is not a card-transaction CSV (no header, missing columns): nothing was sent."""


def add_cards_commands(commands: Any) -> None:
    cards = commands.add_parser("cards", help="co-branded cards: ingest a bank's transaction file, merchant table")
    actions = cards.add_subparsers(title="actions", metavar="ACTION", required=True)
    ingest = actions.add_parser(
        "ingest", help="send a bank's card-transaction CSV file (signed as the bank) and summarise the results",
        description="Streams the file's items to the server as the bank partner and prints the count of "
        "each outcome and every rejected line with its reason.", epilog=FILE_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _ingest_options(ingest)
    ingest.set_defaults(run=_ingest)
    _merchant_commands(actions)


def _ingest_options(parser: argparse.ArgumentParser) -> None:
    settings = Settings.from_environment()
    parser.add_argument("file", type=Path, help="the CSV file (see below)")
    parser.add_argument("--partner", required=True, help="the bank's partner id")
    parser.add_argument("--key-id", default="", help="its key id (default: <partner>-1, as seed-demo registers)")
    parser.add_argument(
        "--private-key", type=Path, default=None, help="its private key (default: LOYALTY_KEYS_DIR/<partner>.pem)"
    )
    parser.add_argument("--target", default=settings.listen_address, help="server host:port")
    parser.add_argument(
        "--batch-items", type=_batch_items, default=BATCH_ITEMS,
        help=f"items per stream message, 1 to {BATCH_ITEMS} (default {BATCH_ITEMS}; 1 sends one item a message)",
    )  # fmt: skip
    parser.add_argument(
        "--streams", type=_streams, default=1,
        help="calls side by side (default 1); a bank transaction's lines always share one, in file order, but "
        "lines of different transactions may then be applied in another order than the file's",
    )  # fmt: skip
    parser.add_argument("--tls-ca", type=Path, default=None, help="CA certificate to trust: the server speaks TLS")
    parser.add_argument("--tls-server-name", default=None, help="host name the server certificate must carry")
    parser.add_argument("--tls-cert", type=Path, default=None, help="the bank's client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, default=None, help="the key of --tls-cert")


def _batch_items(text: str) -> int:
    value = int(text)
    if not 1 <= value <= BATCH_ITEMS:
        raise argparse.ArgumentTypeError(f"between 1 and {BATCH_ITEMS}")
    return value


def _streams(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_STREAMS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_STREAMS}")
    return value


def _merchant_commands(actions: Any) -> None:
    merchant = actions.add_parser(
        "merchant", help="the operator's table of card merchant ids per partner (admin role)",
        description="Which card-acceptor merchant ids belong to which partner: card purchases there earn the "
        "partner's usual points (funded by it) besides the bank's. Signed with an operator key.",
    )  # fmt: skip
    merchant_actions = merchant.add_subparsers(title="merchant actions", metavar="MERCHANT_ACTION", required=True)
    add = merchant_actions.add_parser("add", help="map a merchant id to a partner")
    add.add_argument("merchant_id")
    add.add_argument("--partner", required=True, help="the partner id the merchant belongs to")
    connection_options(add)
    add.set_defaults(run=_admin(lambda a: ("CreateCardMerchant", pb.CreateCardMerchantRequest(
        request_id=a.request_id,
        card_merchant=pb.CardMerchant(merchant_id=a.merchant_id, partner_id=a.partner)))))  # fmt: skip
    listing = merchant_actions.add_parser("list", help="list mapped merchants in merchant-id order")
    paging_options(listing)
    connection_options(listing)
    listing.set_defaults(run=_admin(lambda a: ("ListCardMerchants", pb.ListCardMerchantsRequest(
        page_size=a.page_size, page_token=a.page_token))))  # fmt: skip
    remove = merchant_actions.add_parser(
        "remove", help="remove a mapping: later purchases there earn as at any non-partner merchant"
    )
    remove.add_argument("merchant_id")
    connection_options(remove)
    remove.set_defaults(run=_admin(lambda a: ("DeleteCardMerchant", pb.DeleteCardMerchantRequest(
        merchant_id=a.merchant_id))))  # fmt: skip


def _admin(build: Any) -> Any:
    return operator_call(build, service="cards", roles=("admin",))


# The file ingest
def _ingest(arguments: argparse.Namespace) -> int:
    settings = Settings.from_environment()
    key_path = arguments.private_key or Path(settings.keys_dir) / f"{arguments.partner}.pem"
    credentials = Credentials(
        arguments.partner, arguments.key_id or f"{arguments.partner}-1", load_private_key(key_path)
    )
    tls = None
    if arguments.tls_ca or arguments.tls_cert:
        tls = TlsOptions(arguments.tls_ca, arguments.tls_cert, arguments.tls_key, arguments.tls_server_name)
    try:
        with arguments.file.open(encoding="utf-8-sig", newline="") as source:
            lines = read_items(source)
            with CoalitionClient(arguments.target, credentials, audience=settings.network_audience, tls=tls) as client:
                summary = ingest(client, lines, batch_items=arguments.batch_items, streams=arguments.streams)
    except (UnreadableFile, UnicodeDecodeError) as error:
        print(f"error: {arguments.file}: {error}", file=sys.stderr)
        return 2
    print(summary.render(arguments.file))
    return 1 if summary.failure or summary.rejected else 0


@dataclass
class Summary:
    results: list[LineResult]
    failure: str = ""

    @property
    def rejected(self) -> list[LineResult]:
        return sorted((result for result in self.results if result.status == "REJECTED"),
                      key=lambda result: result.line_number)  # fmt: skip

    def render(self, path: Path) -> str:
        counts = Counter(result.status for result in self.results)
        replays = Counter(result.status for result in self.results if result.is_replay)
        lines = [f"{path}: {len(self.results)} items answered"]
        for status in STATUSES:
            lines.append(f"  {status:<9} {counts[status]:>9}   (replays {replays[status]})")
        lines.append(f"  replays (received before: no new effect) {sum(replays.values())}")
        if self.failure:
            lines.append(f"stopped: {self.failure}; the file is safe to send again")
        if self.rejected:
            lines.append("rejected lines:")
            lines.extend(f"  line {result.line_number}: {_describe(result)}" for result in self.rejected)
        return "\n".join(lines)


def _describe(result: LineResult) -> str:
    key = " ".join(part for part in (result.bank_transaction_id, result.item_type, result.item_id) if part)
    return f"{result.reason} {key}".rstrip() + (f": {result.message}" if result.message else "")


def read_items(source: TextIO) -> Iterator[tuple[int, pb.CardTransactionItem | LineResult]]:
    """Each data line's number and its item, or a refusal that quotes none of the line's content.

    The header is checked here, before anything is sent; the lines are read as the stream takes them.
    """
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None:
        raise UnreadableFile("empty file: the first line must name the columns")
    positions = {name.strip().lower(): index for index, name in enumerate(header)}
    missing = [column for column in COLUMNS if column not in positions]
    if missing:
        raise UnreadableFile(f"the header lacks {', '.join(missing)} (see `coalition cards ingest --help`)")
    return _rows(reader, positions)


def _rows(reader: Any, positions: dict[str, int]) -> Iterator[tuple[int, pb.CardTransactionItem | LineResult]]:
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        values = {column: (row[positions[column]].strip() if positions[column] < len(row) else "")
                  for column in COLUMNS}  # fmt: skip
        try:
            yield reader.line_num, _item(values)
        except ValueError as error:
            yield reader.line_num, LineResult(reader.line_num, "REJECTED", INVALID_LINE, str(error))


def _item(values: dict[str, str]) -> pb.CardTransactionItem:
    item_type = TYPES.get(values["type"].upper())
    if item_type is None:
        raise ValueError(f"type must be one of {', '.join(TYPES)}")
    try:
        amount_minor = int(values["amount_minor"])
    except ValueError:
        raise ValueError("amount_minor must be a whole number of minor units") from None
    try:
        moment = datetime.fromisoformat(values["transaction_time"])
    except ValueError:
        raise ValueError("transaction_time must be RFC 3339, e.g. 2026-03-10T12:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("transaction_time needs a zone, e.g. Z or +01:00")
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return pb.CardTransactionItem(
        type=item_type, bank_transaction_id=values["bank_transaction_id"], item_id=values["item_id"],
        card_token=values["card_token"], merchant_id=values["merchant_id"], currency_code=values["currency_code"],
        amount_minor=amount_minor, transaction_time=stamp,
    )  # fmt: skip


def ingest(
    client: CoalitionClient, lines: Iterable[tuple[int, pb.CardTransactionItem | LineResult]], *,
    batch_items: int = BATCH_ITEMS, streams: int = 1,
) -> Summary:  # fmt: skip
    """Streams the items, ``batch_items`` a message (1: each in its own, as a single ``item``).

    With several ``streams`` each bank transaction's lines go to one of them (by a hash of its id),
    in file order; the calls run side by side.
    """
    results: list[LineResult] = []
    if streams == 1:
        return Summary(results, _send(client, lines, batch_items, results))
    feeds = [_Feed(2 * batch_items) for _ in range(streams)]
    failures = [""] * streams

    def run(index: int) -> None:
        try:
            failures[index] = _send(client, feeds[index].lines(), batch_items, results)
        finally:
            feeds[index].close()  # a call that ended takes no more lines

    threads = [threading.Thread(target=run, args=(index,), name=f"cards-ingest-{index}") for index in range(streams)]
    for thread in threads:
        thread.start()
    unread = ""
    try:
        for line_number, item in lines:
            if isinstance(item, LineResult):
                results.append(item)
                continue
            feeds[zlib.crc32(item.bank_transaction_id.encode()) % streams].put((line_number, item))
    except (UnicodeDecodeError, csv.Error) as error:
        unread = f"the file could not be read after line {len(results)} or so ({type(error).__name__})"
    finally:
        for feed in feeds:
            feed.end()
        for thread in threads:
            thread.join()
    return Summary(results, "; ".join(found for found in (*dict.fromkeys(failures), unread) if found))


def _send(
    client: CoalitionClient, lines: Iterable[tuple[int, pb.CardTransactionItem | LineResult]], batch_items: int,
    results: list[LineResult],
) -> str:  # fmt: skip
    """Streams the lines in one call and adds their results; why it stopped early, or "".

    The server answers each message in order, with a result per item of a batch in the batch's
    order, so answers pair with sent lines.
    """
    sent: deque[list[int]] = deque()  # the line numbers of each message sent and not yet answered
    unread: list[str] = []

    def message(batch: list[tuple[int, pb.CardTransactionItem]]) -> pb.StreamCardTransactionsRequest:
        sent.append([line_number for line_number, _ in batch])
        if batch_items == 1:
            return pb.StreamCardTransactionsRequest(item=batch[0][1])
        return pb.StreamCardTransactionsRequest(items=[item for _, item in batch])

    def requests() -> Iterator[pb.StreamCardTransactionsRequest]:
        # Runs on gRPC's sending thread: a file that turns unreadable ends the stream, and is reported.
        batch: list[tuple[int, pb.CardTransactionItem]] = []
        try:
            for line_number, item in lines:
                if isinstance(item, LineResult):
                    results.append(item)
                    continue
                batch.append((line_number, item))
                if len(batch) == batch_items:
                    yield message(batch)
                    batch = []
        except (UnicodeDecodeError, csv.Error) as error:
            count = sum(map(len, sent)) + len(batch) + len(results)
            unread.append(f"the file could not be read after {count} items ({type(error).__name__})")
        if batch:  # what was read is sent, even when the rest of the file could not be
            yield message(batch)

    try:
        for response in client.cards.StreamCardTransactions(requests()):
            line_numbers = sent.popleft()
            if batch_items == 1:
                results.append(_line_result(line_numbers[0], response))
                continue
            results.extend(_line_result(number, found) for number, found in zip(line_numbers, response.results,
                                                                                   strict=True))  # fmt: skip
    except grpc.RpcError as error:
        info = error_info(error)
        return f"{error.code().name} {info.reason if info else '-'}: {error.details()}"
    return "; ".join(unread)


_END_OF_LINES = object()


class _Feed:
    """The lines of one stream, handed from the reading thread to the stream's sending thread (bounded)."""

    def __init__(self, max_lines: int) -> None:
        self.waiting: queue.Queue[object] = queue.Queue(maxsize=max_lines)
        self.is_closed = threading.Event()

    def put(self, line: object) -> None:
        while not self.is_closed.is_set():
            try:
                self.waiting.put(line, timeout=0.2)
                return
            except queue.Full:
                continue

    def end(self) -> None:
        self.put(_END_OF_LINES)

    def close(self) -> None:
        self.is_closed.set()

    def lines(self) -> Iterator[tuple[int, pb.CardTransactionItem]]:
        while (line := self.waiting.get()) is not _END_OF_LINES:
            yield line  # type: ignore[misc]


def _line_result(line_number: int, response: pb.StreamCardTransactionsResponse | pb.CardItemResult) -> LineResult:
    return LineResult(
        line_number, pb.CardItemStatus.Name(response.status).removeprefix("CARD_ITEM_STATUS_"), response.reason,
        response.message, response.bank_transaction_id,
        pb.CardItemType.Name(response.type).removeprefix("CARD_ITEM_TYPE_") if response.type else "",
        response.item_id, response.idempotent_replay,
    )  # fmt: skip
