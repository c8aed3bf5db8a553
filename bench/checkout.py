"""`make bench`: earn and hold+capture over gRPC against the real server on PostgreSQL.

Creates a throwaway database, seeds one partner and its members through the services, starts
`python -m server.cli serve` in a subprocess and drives it from a separate load process. Prints
throughput, p50/p99 latency and the server's CPU time per request for each scenario, two references
measured in the same run (an empty gRPC call on the same server stack, and the same accrual as one
SQL transaction driven by pgbench), and the issue's targets with PASS or MISS. It never fails on a
figure: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc

from bench import pgbench
from bench.database import BENCH_PEPPER, create_database, drop_database, seed
from bench.load import CHANNELS, LoadSpec, Target, run_load
from bench.profile import PySpy, summarise
from bench.report import HEADER, Row, format_row, targets
from bench.server_process import ServerProcess

OPEN_LOOP_RATE = 100.0
# The CPU target compares two figures. Measured once each, a minute apart, their ratio moved by a third
# from run to run on a shared host; measured in turns, a few seconds apart, each pair sees the same host.
CPU_PAIRS = 5
CPU_PAIR_SECONDS = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.checkout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="admin URL; a fresh database is created beside it")
    parser.add_argument("--duration-seconds", type=float, default=10.0, help="measured time per scenario")
    parser.add_argument("--concurrency", default="1,4,16", help="closed-loop earn concurrencies, comma separated")
    parser.add_argument("--members", type=int, default=2000, help="members enrolled before the run")
    parser.add_argument("--workers", type=int, default=16, help="server RPC threads per process (LOYALTY_WORKERS)")
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes sharing the port (LOYALTY_SERVER_PROCESSES)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s scenarios, concurrency 16, 300 members")
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="sample the server with py-spy during the highest-concurrency earn and write collapsed stacks here",
    )  # fmt: skip
    parser.add_argument("--py-spy", default="py-spy", help="py-spy executable for --profile")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.quick:
        arguments.duration_seconds, arguments.concurrency, arguments.members = 3.0, "16", 300
    concurrencies = sorted({int(item) for item in arguments.concurrency.split(",") if item.strip()})
    if not concurrencies or min(concurrencies) < 1:
        raise SystemExit("--concurrency needs positive integers")
    if arguments.processes < 1:
        raise SystemExit("--processes needs a positive integer")
    py_spy = PySpy.find(arguments.py_spy) if arguments.profile else None
    _print_machine()
    with tempfile.TemporaryDirectory(prefix="coalition-bench-") as work:
        url = create_database(arguments.database_url)
        server: ServerProcess | None = None
        try:
            target, server = _prepare(url, Path(work), arguments)
            rows, pairs = _drive(target, arguments, concurrencies, py_spy, server.pid)
            server.stop()
            tps = _pgbench(url, Path(work), arguments)
            _print_summary(rows, pairs, tps, concurrencies, arguments.processes)
        finally:
            if server is not None:
                server.stop()
            drop_database(arguments.database_url, url)
    return 0


def _print_machine() -> None:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; Python {platform.python_version()}, "
          f"grpcio {grpc.__version__}")  # fmt: skip


def _prepare(url: str, work: Path, arguments: argparse.Namespace) -> tuple[Target, ServerProcess]:
    started = time.perf_counter()
    network = seed(url, work, members=arguments.members)
    pgbench.prepare(url, arguments.members)
    print(f"database {url.rsplit('/', 1)[1]}: migrated, 1 partner, {arguments.members} members seeded "
          f"through CheckoutService in {time.perf_counter() - started:.1f} s")  # fmt: skip
    server = ServerProcess(
        url, work / "server.log", workers=arguments.workers, pepper=BENCH_PEPPER, processes=arguments.processes
    )
    server.start()
    channels = _channels(arguments.processes)
    print(f"server pid {server.pid} SERVING on {server.address} ({arguments.processes} processes x "
          f"{arguments.workers} threads; the load uses {channels} connections; server CPU counts every process); "
          f"each scenario: 1 s unmeasured warm-up, then {arguments.duration_seconds:g} s\n")  # fmt: skip
    target = Target(
        address=server.address, server_pid=server.pid, partner_code=network.partner_code, key_id=network.key_id,
        private_key_path=str(network.private_key_path), member_numbers=network.member_numbers, channels=channels,
    )  # fmt: skip
    return target, server


def _channels(processes: int) -> int:
    """Connections for the load: the kernel hashes each to one server process, so several need many to even out."""
    return CHANNELS if processes == 1 else 16 * processes


def _scenarios(duration: float, concurrencies: list[int]) -> list[tuple[str, LoadSpec]]:
    scenarios = [
        ("empty call (Health/Check) c=16", LoadSpec("empty", duration, concurrency=16)),
        (f"earn open loop {OPEN_LOOP_RATE:.0f}/s", LoadSpec("earn", duration, rate_per_second=OPEN_LOOP_RATE)),
    ]
    scenarios += [(f"earn c={c}", LoadSpec("earn", duration, concurrency=c)) for c in concurrencies]
    scenarios.append(("hold+capture c=16 (ops = pairs)", LoadSpec("hold_capture", duration, concurrency=16)))
    return scenarios


def _drive(
    target: Target, arguments: argparse.Namespace, concurrencies: list[int], py_spy: str | None, server_pid: int
) -> tuple[dict[str, Row], list[tuple[Row, Row]]]:
    """Runs every scenario in one spawned load process (kept across scenarios, so imports load once),
    then the empty call and earn at c=16 in turns: the pairs the CPU target is judged on."""
    rows: dict[str, Row] = {}
    pairs: list[tuple[Row, Row]] = []
    profiled = f"earn c={max(concurrencies)}"
    print(HEADER, flush=True)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as loader:
        for label, spec in _scenarios(arguments.duration_seconds, concurrencies):
            sampler = None
            if py_spy and label == profiled:
                sampler = PySpy(
                    py_spy, server_pid, arguments.profile, spec.duration_seconds, subprocesses=arguments.processes > 1
                )
            future = loader.submit(run_load, target, spec, 1.0)
            if sampler is not None:
                time.sleep(1.0)  # the warm-up
                sampler.start()
            rows[label] = Row.of(label, future.result())
            print(format_row(rows[label]), flush=True)
            if sampler is not None:
                problem = sampler.wait()
                if problem:
                    print(f"py-spy failed: {problem.strip()}", file=sys.stderr)
        seconds = min(CPU_PAIR_SECONDS, arguments.duration_seconds)
        print(f"\nserver CPU us/op of the empty call and earn at c=16 in turns, {seconds:g} s each "
              f"(0.5 s warm-up), {CPU_PAIRS} pairs:")  # fmt: skip
        for index in range(CPU_PAIRS):
            empty, earn = (
                Row.of(kind, loader.submit(run_load, target, LoadSpec(kind, seconds, concurrency=16), 0.5).result())
                for kind in ("empty", "earn")
            )
            pairs.append((empty, earn))
            ratio = earn.server_cpu_us / empty.server_cpu_us
            print(f"  pair {index + 1}: empty call {empty.server_cpu_us:.0f}, earn {earn.server_cpu_us:.0f} "
                  f"({earn.per_second:.0f}/s) = {ratio:.2f}x", flush=True)  # fmt: skip
    if py_spy and arguments.profile.exists():
        print(f"\nserver profile during {profiled} (py-spy, collapsed stacks in {arguments.profile}):")
        print("\n".join(summarise(arguments.profile)))
    return rows, pairs


def _pgbench(url: str, work: Path, arguments: argparse.Namespace) -> float:
    duration = max(1, round(arguments.duration_seconds))
    result = pgbench.run(url, work, members=arguments.members, clients=16, duration_seconds=duration)
    print(f"\npgbench accrual (1 transaction: idempotency insert, balance update, 2 entries), "
          f"-c 16 -j 2 -T {duration}, server stopped: {result.transactions_per_second:.0f} tps, "
          f"latency average {result.latency_average_ms:.2f} ms, failed {result.failed_transactions}")  # fmt: skip
    return result.transactions_per_second


def _print_summary(
    rows: dict[str, Row], pairs: list[tuple[Row, Row]], pgbench_tps: float, concurrencies: list[int], processes: int
) -> None:
    failing = [f"  {row.label}: {row.error_codes}" for row in rows.values() if row.errors]
    failing += [f"  {row.label} (CPU pairs): {row.error_codes}" for pair in pairs for row in pair if row.errors]
    if failing:
        print("\nerrors by status code:\n" + "\n".join(failing))
    closed = 16 if 16 in concurrencies else max(concurrencies)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\ntargets (set for the 2-core machine; this one has {os.cpu_count()} CPUs, load average now {load}; "
          f"server processes: {processes}):")  # fmt: skip
    lines = targets(
        open_loop=rows[f"earn open loop {OPEN_LOOP_RATE:.0f}/s"], closed_loop=rows[f"earn c={closed}"],
        cpu_pairs=pairs, pgbench_tps=pgbench_tps, open_rate=OPEN_LOOP_RATE,
    )  # fmt: skip
    print("\n".join(f"  {line}" for line in lines))
    if processes > 1:
        spread = rows[f"earn c={closed}"].server_cores_by_process
        print(f"  earn c={closed}: server cores by process (workers and parent, largest first): "
              + ", ".join(f"{cores:.2f}" for cores in spread))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
