"""Every Prometheus metric the service exports, in one place. Labels are bounded: no member or request ids.

With LOYALTY_SERVER_PROCESSES > 1 every process writes its samples to files (prometheus_client's
multiprocess mode) and the parent exports their sum; each gauge names how its processes' values
combine (ignored in a single process). Counters and histograms add up.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_DURATION_SECONDS = Histogram(
    "loyalty_rpc_duration_seconds",
    "Server-side latency of one RPC, by method and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RPCS_IN_FLIGHT = Gauge("loyalty_rpcs_in_flight", "RPCs being served now.", multiprocess_mode="livesum")
POINTS_TOTAL = Counter(
    "loyalty_points_total",
    "Points moved by checkout, by operation (earned, redeemed, donated, reversed, restored) and partner.",
    ["operation", "partner"],
)
IDEMPOTENT_REPLAYS_TOTAL = Counter(
    "loyalty_idempotent_replays_total", "Writes answered from a stored outcome, by method.", ["method"]
)
AUTH_FAILURES_TOTAL = Counter("loyalty_auth_failures_total", "Rejected tokens, by reason (a bounded set).", ["reason"])
HOLDS_EXPIRED_TOTAL = Counter("loyalty_holds_expired_total", "Holds marked EXPIRED by the sweeper.")
HOLDS_EXPIRY_BACKLOG = Gauge(
    "loyalty_holds_expiry_backlog",
    "Holds past their time not yet marked EXPIRED (the sweep's backlog).",
    multiprocess_mode="livemostrecent",  # measured by the one process that runs the sweep
)
LEDGER_CHECK_FAILURES = Gauge(
    "loyalty_ledger_check_failures",
    "Ledger invariants broken at the last check (0 when every one holds, -1 when the check could not run).",
    # One process runs the check; the others' untouched 0 must not hide its -1 (min) or its count (max).
    multiprocess_mode="livemostrecent",
)
LEDGER_CHECK_LAST_RUN_SECONDS = Gauge(
    "loyalty_ledger_check_last_run_timestamp_seconds",
    "When the ledger invariants were last checked (Unix time).",
    multiprocess_mode="max",
)
POINTS_EXPIRED_TOTAL = Counter(
    "loyalty_points_expired_total", "Points booked as expired by the expiry job (network policy)."
)
EXPIRY_LAST_RUN_SECONDS = Gauge(
    "loyalty_expiry_last_run_timestamp_seconds",
    "When the expiry job last finished (Unix time).",
    multiprocess_mode="max",
)
DATABASE_UP = Gauge(
    "loyalty_database_up",
    "1 when the last health probe reached the database (of every server process).",
    multiprocess_mode="livemin",  # 0 as soon as one process cannot reach it: that process answers NOT_SERVING
)
RECONCILIATION_FAILURES_TOTAL = Counter(
    "loyalty_reconciliation_failures_total", "Failed settlement reconciliation checks, by check name.", ["check"]
)


def record_points(operation: str, partner: str, points: int) -> None:
    if points > 0:
        POINTS_TOTAL.labels(operation=operation, partner=partner).inc(points)


TIER_DEMOTIONS_TOTAL = Counter(
    "loyalty_tier_demotions_total", "Members the tier review moved down after their tier lapsed (network policy)."
)
