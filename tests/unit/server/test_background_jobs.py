"""Of several server processes only one runs the timers; every one keeps its health following the database."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from grpc_health.v1 import health, health_pb2

from server.app import RunningServer
from server.config import Settings


class FakeApp:
    def __init__(self) -> None:
        self.settings = Settings(hold_sweep_seconds=0.01, ledger_check_seconds=0.0, expiry_job_seconds=0.0)
        self.calls: list[str] = []
        self.clock = SimpleNamespace(now=lambda: datetime(2026, 3, 1, tzinfo=UTC))
        self.checkout = SimpleNamespace(
            expire_holds=lambda: self._record("expire_holds", 0), overdue_holds=lambda: self._record("backlog", 0)
        )
        self.replay_guard = SimpleNamespace(purge_expired=lambda now: self._record("purge", 0))

    def _record(self, name: str, result: Any) -> Any:
        self.calls.append(name)
        return result

    def database_answers(self) -> bool:
        self.calls.append("probe")
        return True


def maintained(*, runs_background_jobs: bool, until: str) -> tuple[list[str], health.HealthServicer]:
    app = FakeApp()
    servicer = health.HealthServicer()
    running = RunningServer(app, None, 0, servicer, runs_background_jobs=runs_background_jobs)  # type: ignore[arg-type]
    loop = threading.Thread(target=running._maintain)
    loop.start()
    deadline = time.monotonic() + 5
    while until not in app.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    running._stopping.set()
    loop.join(5)
    return app.calls, servicer


def test_the_jobs_process_sweeps_and_measures_the_backlog() -> None:
    calls, _ = maintained(runs_background_jobs=True, until="purge")

    assert {"probe", "backlog", "expire_holds", "purge"} <= set(calls)


def test_the_other_processes_only_follow_the_database() -> None:
    calls, servicer = maintained(runs_background_jobs=False, until="probe")

    assert set(calls) == {"probe"}
    response = servicer.Check(health_pb2.HealthCheckRequest(service=""), None)  # type: ignore[arg-type]
    assert response.status == health_pb2.HealthCheckResponse.SERVING
