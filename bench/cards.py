"""`make bench-cards`: a bank's card transactions through the real server on PostgreSQL, streamed and as a file.

Creates a throwaway database, seeds a card-issuer bank, two merchant partners with mapped merchant ids
and linked cards through the services, starts `python -m server.cli serve` in a subprocess, then:

- streams --items card transactions over gRPC (StreamCardTransactions, signed as the bank), split by
  bank transaction over --streams concurrent calls, --batch-items a message (1: one item a message,
  as before batch messages): authorisations, clearings (some for another amount), refunds; half at
  partner merchants (two lots each), half elsewhere;
- writes as many more to a CSV file and runs `coalition cards ingest FILE --batch-items N --streams M`
  (M = --file-streams) on it in a subprocess, then runs the same file again (every line a replay).

Prints items per second for each and the issue's target (2,000 items/s) with PASS or MISS. It never
fails on a figure: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.v1 import card_service_pb2 as pb

from bench.database import BENCH_PEPPER, create_database, drop_database
from bench.profile import PySpy, summarise
from bench.server_process import REPO_ROOT, ServerProcess
from cards.commands import LinkCommand
from cards.feed import CardSettings
from cards.services import CardService
from checkout.session import PartnerRef
from common.clock import SystemClock
from common.db import create_engine
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from members.identifiers import IdentifierKind, MemberIdentifier
from migrations.runner import upgrade
from partners import services
from partners.rates import ContractTerms
from sdk.client import CoalitionClient, Credentials
from sdk.tokens import generate_key_pair, load_private_key, write_private_key
from server.cards_cli import BATCH_ITEMS, COLUMNS

TARGET_ITEMS_PER_SECOND = 2_000
BANK, KEY_ID = "bench-bank", "bench-bank-1"
MERCHANT_PARTNERS = ("bench-grocer", "bench-fuel")
PARTNER_MERCHANT_IDS = tuple(f"mid-{index:03d}" for index in range(20))
OTHER_MERCHANT_IDS = tuple(f"other-{index:03d}" for index in range(20))
TYPE_NAMES = {pb.CARD_ITEM_TYPE_AUTHORISATION: "AUTHORISATION", pb.CARD_ITEM_TYPE_CLEARING: "CLEARING",
              pb.CARD_ITEM_TYPE_REFUND: "REFUND"}  # fmt: skip
STATUS_NAMES = {value: name.removeprefix("CARD_ITEM_STATUS_") for name, value in pb.CardItemStatus.items()}
SEED_THREADS = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cards", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="admin URL; a fresh database is created beside it")
    parser.add_argument("--items", type=int, default=100_000, help="card items streamed, and as many in the file")
    parser.add_argument("--streams", type=int, default=4, help="concurrent StreamCardTransactions calls")
    parser.add_argument("--cards", type=int, default=2_000, help="linked cards (members)")
    parser.add_argument(
        "--file-streams", type=int, default=4,
        help="`coalition cards ingest --streams`: calls side by side for the file (default 4, as --streams)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=16, help="server RPC threads (LOYALTY_WORKERS)")
    parser.add_argument(
        "--batch-items", type=int, default=BATCH_ITEMS,
        help=f"items per stream message, streamed and from the file (default {BATCH_ITEMS}; 1: one item a message)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="sample the server with py-spy during the first seconds of the stream and write collapsed stacks here",
    )  # fmt: skip
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="how long --profile samples")
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable for --profile")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; Python {platform.python_version()}, "
          f"grpcio {grpc.__version__}; {arguments.items:,} items, {arguments.streams} streams, "
          f"{arguments.cards:,} cards, {arguments.batch_items} items a message")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="coalition-bench-cards-") as work:
        url = create_database(arguments.database_url)
        server: ServerProcess | None = None
        try:
            key_path = _seed(url, Path(work), arguments.cards)
            server = ServerProcess(url, Path(work) / "server.log", workers=arguments.workers, pepper=BENCH_PEPPER)
            server.start()
            sampler = None
            if arguments.profile is not None:
                executable = PySpy.find(arguments.py_spy)
                sampler = PySpy(executable, server.pid, arguments.profile, arguments.profile_seconds)
                sampler.start()
            streamed = _stream(server.address, key_path, arguments)
            if sampler is not None:
                problem = sampler.wait()
                print("\n".join(summarise(arguments.profile)) if not problem else f"py-spy failed: {problem}")
            file_rate, replay_rate = _file(server.address, key_path, Path(work), arguments)
        except Exception:
            if server is not None:
                print(f"server log (last lines):\n{server.log_tail(60)}", file=sys.stderr)
            raise
        finally:
            if server is not None:
                server.stop()
            drop_database(arguments.database_url, url)
    print()
    for name, rate in (("stream", streamed), ("file ingest", file_rate)):
        verdict = "PASS" if rate >= TARGET_ITEMS_PER_SECOND else "MISS"
        print(f"[{verdict}] {name}: {rate:,.0f} items/s (target >= {TARGET_ITEMS_PER_SECOND:,})")
    print(f"        file ingest run again (all replays): {replay_rate:,.0f} items/s")
    return 0


def _seed(url: str, directory: Path, cards: int) -> Path:
    upgrade(url)
    engine = create_engine(url, pool_size=SEED_THREADS)
    try:
        uow = UnitOfWork(engine, SystemClock())
        key_path = directory / f"{BANK}.pem"
        bank = _onboard(uow, BANK, "CARD_ISSUER", key_path)
        for code in MERCHANT_PARTNERS:
            _onboard(uow, code, "STORE_CHAIN", None)
        service = CardService(uow, CardSettings(identifier_pepper=BENCH_PEPPER.encode()))
        for index, merchant_id in enumerate(PARTNER_MERCHANT_IDS):
            service.add_merchant(RequestKey("operator:bench", merchant_id), merchant_id,
                                 MERCHANT_PARTNERS[index % len(MERCHANT_PARTNERS)])  # fmt: skip

        def link(index: int) -> None:
            member = MemberIdentifier(IdentifierKind.PHONE, f"+4479{index:08d}")
            service.link_card(bank, f"link-{index}", LinkCommand(_token(index), member))

        link(0)  # opens the bank's accounts before concurrent links use them
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(link, range(1, cards)))
    finally:
        engine.dispose()
    return key_path


def _onboard(uow: UnitOfWork, code: str, kind: str, key_path: Path | None) -> PartnerRef:
    scope = "operator:bench"
    created = services.create_partner(uow, RequestKey(scope, code), partner_code=code, display_name=code, kind=kind)
    if key_path is not None:
        private_key, public_pem = generate_key_pair("EdDSA")
        write_private_key(key_path, private_key)
        services.register_partner_key(uow, RequestKey(scope, f"{code}-key"), partner_code=code,
                                      key_id=f"{code}-1", public_key_pem=public_pem)  # fmt: skip
    terms = ContractTerms("EUR", Decimal(1), Decimal("0.01"), Decimal("0.012"), Decimal("0.010"))
    # In force from now: the items are stamped with the (later) time they are generated.
    services.create_contract_version(
        uow, RequestKey(scope, f"{code}-contract"), partner_code=code, terms=terms, effective_from=None,
        created_by="bench",
    )  # fmt: skip
    return PartnerRef(created.result.id, f"partner:{code}")


def _token(index: int) -> str:
    return f"tok_bench_{index:06d}"


def _transactions(prefix: str, items: int, cards: int) -> Iterator[list[pb.CardTransactionItem]]:
    """Each bank transaction's items in order: authorisation, clearing, and for one in four a refund."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    produced = number = 0
    while produced < items:
        number += 1
        merchants = PARTNER_MERCHANT_IDS if number % 2 else OTHER_MERCHANT_IDS
        purchase = pb.CardTransactionItem(
            type=pb.CARD_ITEM_TYPE_AUTHORISATION, bank_transaction_id=f"{prefix}-{number:08d}",
            card_token=_token(number % cards), merchant_id=merchants[number % len(merchants)], currency_code="EUR",
            amount_minor=1_000 + number % 9_000, transaction_time=stamp,
        )  # fmt: skip
        clearing = pb.CardTransactionItem()
        clearing.CopyFrom(purchase)
        clearing.type = pb.CARD_ITEM_TYPE_CLEARING
        clearing.amount_minor -= (number % 3) * 100  # some clear for less than was authorised
        found = [purchase, clearing]
        if number % 4 == 0:
            found.append(pb.CardTransactionItem(
                type=pb.CARD_ITEM_TYPE_REFUND, bank_transaction_id=purchase.bank_transaction_id, item_id="R1",
                currency_code="EUR", amount_minor=clearing.amount_minor // 4, transaction_time=stamp,
            ))  # fmt: skip
        found = found[: items - produced]
        produced += len(found)
        yield found


def _client(address: str, key_path: Path) -> CoalitionClient:
    return CoalitionClient(address, Credentials(BANK, KEY_ID, load_private_key(key_path)))


def _stream(address: str, key_path: Path, arguments: argparse.Namespace) -> float:
    shards: list[list[pb.CardTransactionItem]] = [[] for _ in range(arguments.streams)]
    for index, transaction in enumerate(_transactions("S", arguments.items, arguments.cards)):
        shards[index % arguments.streams].extend(transaction)
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def send(shard: list[pb.CardTransactionItem]) -> None:
        with _client(address, key_path) as client:
            responses = client.cards.StreamCardTransactions(_messages(shard, arguments.batch_items))
            counted = Counter(STATUS_NAMES[r.status] for response in responses for r in _results(response))
        with lock:
            statuses.update(counted)

    started = time.perf_counter()
    with ThreadPoolExecutor(arguments.streams) as pool:
        list(pool.map(send, shards))
    elapsed = time.perf_counter() - started
    rate = sum(statuses.values()) / elapsed
    print(f"stream: {sum(statuses.values()):,} items in {elapsed:.1f} s, {rate:,.0f} items/s; {dict(statuses)}")
    return rate


def _messages(items: list[pb.CardTransactionItem], batch_items: int) -> Iterator[pb.StreamCardTransactionsRequest]:
    if batch_items == 1:
        yield from (pb.StreamCardTransactionsRequest(item=item) for item in items)
        return
    for start in range(0, len(items), batch_items):
        yield pb.StreamCardTransactionsRequest(items=items[start : start + batch_items])


def _results(
    response: pb.StreamCardTransactionsResponse,
) -> Sequence[pb.StreamCardTransactionsResponse | pb.CardItemResult]:
    return response.results or [response]


def _file(address: str, key_path: Path, directory: Path, arguments: argparse.Namespace) -> tuple[float, float]:
    path = directory / "cards.csv"
    with path.open("w", encoding="utf-8", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(COLUMNS)
        for transaction in _transactions("F", arguments.items, arguments.cards):
            for item in transaction:
                writer.writerow((TYPE_NAMES[item.type], item.bank_transaction_id, item.item_id, item.card_token,
                                 item.merchant_id, item.currency_code, item.amount_minor,
                                 item.transaction_time.ToJsonString()))  # fmt: skip
    rates = []
    for run in ("file ingest", "file ingest again"):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", "cards", "ingest", str(path), "--partner", BANK, "--key-id", KEY_ID,
             "--private-key", str(key_path), "--target", address, "--batch-items", str(arguments.batch_items),
             "--streams", str(arguments.file_streams)],
            cwd=REPO_ROOT, env=_cli_environment(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        rates.append(arguments.items / elapsed)
        summary = " ".join(line.strip() for line in result.stdout.splitlines()[1:6])
        print(f"{run} (--streams {arguments.file_streams}): {arguments.items:,} lines in {elapsed:.1f} s "
              f"(exit {result.returncode}), "
              f"{rates[-1]:,.0f} items/s; {summary}")  # fmt: skip
        if result.returncode != 0:
            print(result.stdout[-2000:] + result.stderr[-2000:])
    return rates[0], rates[1]


def _cli_environment() -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LOYALTY_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "proto")])
    return environment


if __name__ == "__main__":
    sys.exit(main())
