"""Every gauge says how several server processes' values combine into one (LOYALTY_SERVER_PROCESSES)."""

from __future__ import annotations

from prometheus_client import Gauge

from server import metrics


def test_every_gauge_combines_without_a_pid_label() -> None:
    gauges = [value for value in vars(metrics).values() if isinstance(value, Gauge)]

    # "all" and "liveall" export one series per process (a pid label): dashboards and alerts would split.
    assert gauges
    assert not [gauge._name for gauge in gauges if gauge._multiprocess_mode in ("all", "liveall")]


def test_database_up_is_zero_when_any_process_cannot_reach_it() -> None:
    assert metrics.DATABASE_UP._multiprocess_mode == "livemin"
