"""Figures from load results, the table they print as, and the issue's targets with PASS or MISS."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.load import LoadResult


@dataclass(frozen=True)
class Row:
    label: str
    completed: int
    errors: int
    error_codes: str
    per_second: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float
    server_cores: float
    client_cpu_us: float
    server_cores_by_process: tuple[float, ...] = ()  # largest first: how evenly the work spread

    @classmethod
    def of(cls, label: str, result: LoadResult) -> Row:
        ordered = sorted(result.latencies_seconds)
        count = max(result.completed, 1)
        return cls(
            label=label, completed=result.completed, errors=sum(result.errors.values()),
            error_codes=", ".join(f"{code}={n}" for code, n in result.errors.most_common()),
            per_second=result.completed / result.elapsed_seconds if result.elapsed_seconds else 0.0,
            p50_ms=percentile(ordered, 50) * 1e3, p99_ms=percentile(ordered, 99) * 1e3,
            server_cpu_us=result.server_cpu_seconds / count * 1e6,
            server_cores=result.server_cpu_seconds / result.elapsed_seconds if result.elapsed_seconds else 0.0,
            client_cpu_us=result.client_cpu_seconds / count * 1e6,
            server_cores_by_process=tuple(sorted(
                (seconds / result.elapsed_seconds for seconds in result.server_cpu_by_process.values()), reverse=True
            )) if result.elapsed_seconds else (),
        )  # fmt: skip


def percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


HEADER = (
    f"{'scenario':34} {'done':>7} {'errors':>6} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'srv CPU us/op':>13} {'srv cores':>9} {'load CPU us/op':>14}"
)


def format_row(row: Row) -> str:
    return (
        f"{row.label:34} {row.completed:7d} {row.errors:6d} {row.per_second:8.1f} {row.p50_ms:8.2f} "
        f"{row.p99_ms:8.2f} {row.server_cpu_us:13.0f} {row.server_cores:9.2f} {row.client_cpu_us:14.0f}"
    )


def verdict(is_met: bool) -> str:
    return "PASS" if is_met else "MISS"


def targets(
    open_loop: Row, closed_loop: Row, cpu_pairs: list[tuple[Row, Row]], pgbench_tps: float, open_rate: float
) -> list[str]:
    """The issue's three targets, each with the figures it is judged on. CPU per earn is judged on the
    median of earn/empty ratios of pairs measured in turns (each pair a few seconds apart)."""
    share = closed_loop.per_second / pgbench_tps if pgbench_tps else 0.0
    ratios = sorted(earn.server_cpu_us / empty.server_cpu_us if empty.server_cpu_us else float("inf")
                    for empty, earn in cpu_pairs)  # fmt: skip
    cpu_ratio = statistics.median(ratios)
    earn_cpu = statistics.median(earn.server_cpu_us for _, earn in cpu_pairs)
    empty_cpu = statistics.median(empty.server_cpu_us for empty, _ in cpu_pairs)
    return [
        f"[{verdict(open_loop.p99_ms < 50 and open_loop.errors == 0)}] earn open loop at {open_rate:.0f}/s: "
        f"p99 {open_loop.p99_ms:.1f} ms (target < 50 ms), errors {open_loop.errors} (target 0), "
        f"achieved {open_loop.per_second:.1f}/s",
        f"[{verdict(share >= 0.10)}] {closed_loop.label} throughput {closed_loop.per_second:.1f}/s = "
        f"{share:.1%} of pgbench accrual {pgbench_tps:.0f} tps (target >= 10%)",
        f"[{verdict(cpu_ratio <= 5)}] server CPU per earn {cpu_ratio:.2f}x the empty call's (target <= 5x): median "
        f"of {len(ratios)} pairs measured in turns ({ratios[0]:.2f}-{ratios[-1]:.2f}x; medians {earn_cpu:.0f} and "
        f"{empty_cpu:.0f} us)",
    ]
