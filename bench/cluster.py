"""Earn throughput through HAProxy with 1, 2 and 3 replicas: `python -m bench.cluster`, run by hand.

For each replica count it starts a cluster with deploy/cluster.py (the `make cluster` code and
configuration) over one benchmark database, seeded with members through the services, warms up for
1 s, then drives a closed loop of earns at concurrency 16 from a separate load process, each call
signed as a till would. One more row calls a lone replica directly, without HAProxy. Prints calls
per second, p50 and p99 latency, and where the machine's CPU went during the measured window:
replicas, HAProxy, PostgreSQL and the load generator (in cores, so 2.0 is all of a 2-core machine).
It never fails on a figure: they depend on the machine and whatever else runs on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from bench.cpu import CLOCK_TICKS_PER_SECOND, process_cpu_seconds
from bench.database import create_database, drop_database, seed
from bench.load import LoadResult, LoadSpec, Target, run_load
from bench.report import percentile
from deploy.cluster import DEFAULT_ADMIN_URL, Cluster, ClusterSettings, Ports

WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class Measured:
    label: str
    result: LoadResult
    cores: dict[str, float]  # part -> CPU seconds per second of the window

    def line(self) -> str:
        result, ordered = self.result, sorted(self.result.latencies_seconds)
        per_second = result.completed / result.elapsed_seconds
        errors = sum(result.errors.values())
        cores = "  ".join(f"{part} {value:.2f}" for part, value in self.cores.items())
        return (
            f"{self.label:28} {per_second:8.1f} {percentile(ordered, 50) * 1e3:8.1f} "
            f"{percentile(ordered, 99) * 1e3:8.1f} {errors:6d}   {cores}"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="a fresh database is created beside it")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts to measure, comma separated")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight (closed loop)")
    parser.add_argument("--duration-seconds", type=float, default=10.0, help="measured time per row")
    parser.add_argument("--members", type=int, default=2000, help="members enrolled before the run")
    parser.add_argument("--workers", type=int, default=16, help="RPC threads per replica (LOYALTY_WORKERS)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    counts = [int(item) for item in arguments.replicas.split(",") if item.strip()]
    print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="coalition-bench-cluster-") as work:
        url = create_database(arguments.admin_url)
        try:
            network = seed(url, Path(work), members=arguments.members)
            print(f"database {url.rsplit('/', 1)[1]}: {arguments.members} members; earn c={arguments.concurrency}, "
                  f"{WARMUP_SECONDS:g} s warm-up then {arguments.duration_seconds:g} s per row\n")  # fmt: skip
            print(f"{'setup':28} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}   CPU cores used")
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as loader:
                for count in counts:
                    settings = ClusterSettings(
                        replicas=count, database_url=url, admin_url=arguments.admin_url,
                        state_dir=Path(work) / f"cluster-{count}", ports=Ports.free(count),
                        shutdown_grace_seconds=2.0, workers=arguments.workers, log_level="WARNING",
                    )  # fmt: skip
                    with Cluster(settings) as cluster:
                        target = Target(
                            address=cluster.balancer_address, server_pid=_pid(cluster, 1),
                            partner_code=network.partner_code, key_id=network.key_id,
                            private_key_path=str(network.private_key_path), member_numbers=network.member_numbers,
                        )  # fmt: skip
                        label = f"{count} replica{'s' if count > 1 else ''} via HAProxy"
                        print(_measure(loader, label, target, cluster, arguments).line(), flush=True)
                        if count == 1:
                            direct = replace(target, address=cluster.replica(1).address)
                            print(_measure(loader, "1 replica direct", direct, cluster, arguments).line(), flush=True)
        finally:
            drop_database(arguments.admin_url, url)
    return 0


def _pid(cluster: Cluster, number: int) -> int:
    process = cluster.replica(number).process
    assert process is not None
    return process.pid


def _measure(
    loader: ProcessPoolExecutor, label: str, target: Target, cluster: Cluster, arguments: argparse.Namespace
) -> Measured:
    concurrency, duration = arguments.concurrency, arguments.duration_seconds
    loader.submit(run_load, target, LoadSpec("earn", WARMUP_SECONDS, concurrency=concurrency), 0.0).result()
    parts = _cpu_parts(cluster)
    before = {part: read() for part, read in parts.items()}
    started = time.perf_counter()
    result = loader.submit(run_load, target, LoadSpec("earn", duration, concurrency=concurrency), 0.0).result()
    elapsed = time.perf_counter() - started
    cores = {part: (read() - before[part]) / elapsed for part, read in parts.items()}
    cores["load"] = result.client_cpu_seconds / result.elapsed_seconds
    # Whatever else ran meanwhile (the kernel's own work, other programs): a busy machine skews the row.
    cores["other"] = cores.pop("machine") - sum(cores.values())
    return Measured(label, result, cores)


def _cpu_parts(cluster: Cluster) -> dict[str, Callable[[], float]]:
    """CPU seconds so far of each part of the cluster (the load process reports its own)."""
    replica_pids = [_pid(cluster, replica.number) for replica in cluster.replicas]
    haproxy = cluster.haproxy_pid
    return {
        "replicas": lambda: sum(process_cpu_seconds(pid) for pid in replica_pids),
        "haproxy": lambda: process_cpu_seconds(haproxy),
        "postgres": _postgres_cpu_seconds,
        "machine": _machine_busy_seconds,
    }


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot: /proc/stat's first line less idle and iowait."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_SECOND


def _postgres_cpu_seconds() -> float:
    """Every `postgres` process on the machine: the server, its backends and background workers."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += process_cpu_seconds(int(entry.name))
        except OSError:  # gone since the listing
            continue
    return total


if __name__ == "__main__":
    sys.exit(main())
