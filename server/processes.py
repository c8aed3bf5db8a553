"""Several server processes on one port (LOYALTY_SERVER_PROCESSES): start, watch, drain, one set of metrics.

One Python process serves on about one core (the GIL). gRPC Python is not fork-safe once a gRPC object
exists, so the parent here never creates one: it spawns each worker as a fresh interpreter, which
builds its own application (engine and pool included) and binds the same port with SO_REUSEPORT; the
kernel spreads connections over the workers. The parent reserves the port, serves the workers'
metrics as one set (prometheus_client's multiprocess mode), forwards SIGTERM and SIGINT so that every
worker drains, and exits 1 when a worker dies on its own: the orchestrator restarts the whole server.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from server.config import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.2
# After its grace period a worker still stops its server and closes its pool before it exits.
EXIT_MARGIN_SECONDS = 10.0
# The worker that runs the hold sweep, the ledger check and the expiry job: safe from several
# processes at once, but every extra run is wasted work.
BACKGROUND_JOBS_WORKER = 0


def stop_on_signals(stopped: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stopped``: the server drains instead of dying mid-call."""

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("draining after signal %s", signal.Signals(signum).name)
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def reserve_port(address: str) -> tuple[socket.socket, str]:
    """Binds ``host:port`` with SO_REUSEPORT without listening; returns the socket and the address with its port.

    Port 0 thus becomes one free port that every worker then binds, and holding the socket keeps
    any program without SO_REUSEPORT off it. A socket that never listens receives no connections.
    """
    host, _, port = address.rpartition(":")
    family, kind, protocol, _, socket_address = socket.getaddrinfo(
        host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reserved = socket.socket(family, kind, protocol)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(socket_address)
    except OSError:
        reserved.close()
        raise
    return reserved, f"{host}:{reserved.getsockname()[1]}"


def serve_processes(settings: Settings) -> int:
    """Runs ``settings.server_processes`` workers on one port until SIGTERM/SIGINT (0) or a worker's death (1)."""
    stopped = threading.Event()
    stop_on_signals(stopped)  # before the workers start: a signal during start-up still drains them
    with ExitStack() as resources:
        reserved, listen_address = reserve_port(settings.listen_address)
        resources.callback(reserved.close)
        mtls_address = settings.mtls_listen_address
        if mtls_address:
            reserved_mtls, mtls_address = reserve_port(mtls_address)
            resources.callback(reserved_mtls.close)
        metrics_dir = tempfile.mkdtemp(prefix="coalition-metrics-")
        resources.callback(shutil.rmtree, metrics_dir, ignore_errors=True)
        # prometheus_client reads this when it is first imported; spawned workers inherit it, so each
        # writes its samples to files there, which the parent's exporter adds up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        worker_settings = dataclasses.replace(
            settings, listen_address=listen_address, mtls_listen_address=mtls_address, metrics_address=""
        )
        supervisor = Supervisor(worker_settings, settings.server_processes, metrics_dir)
        is_clean = supervisor.run(stopped, metrics_address=settings.metrics_address)
    log.info("stopped")
    return 0 if is_clean else 1


@dataclasses.dataclass
class Worker:
    index: int
    process: BaseProcess
    connection: Connection  # the parent's end; when it closes, the worker drains (the parent is gone)


class Supervisor:
    """Spawns the workers, waits until each serves, watches them and stops them all with a drain."""

    def __init__(self, settings: Settings, count: int, metrics_dir: str) -> None:
        self.settings = settings
        self.count = count
        self.metrics_dir = metrics_dir
        self.workers: list[Worker] = []

    def run(self, stopped: threading.Event, *, metrics_address: str) -> bool:
        """True when the workers were stopped on request and each exited cleanly."""
        try:
            self._spawn()
            if metrics_address:
                _export_metrics(metrics_address, self.metrics_dir)
            ports = self._wait_until_serving(stopped)
            if ports is not None:
                self._announce(*ports)
                is_requested = self._watch(stopped)
            else:
                is_requested = stopped.is_set()
        finally:
            exited_cleanly = self._stop()
        return is_requested and exited_cleanly

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of gRPC is inherited
        for index in range(self.count):
            parent_end, worker_end = context.Pipe()
            process = context.Process(
                target=run_worker, args=(self.settings, index, worker_end), name=f"coalition-worker-{index}"
            )
            process.start()
            worker_end.close()  # only the worker holds its end: its EOF tells the parent it is gone, and back
            self.workers.append(Worker(index, process, parent_end))

    def _wait_until_serving(self, stopped: threading.Event) -> tuple[int, int | None] | None:
        """Each worker's (port, mutual-TLS port) once it serves; None if one failed or a signal came first."""
        ports: dict[int, tuple[int, int | None]] = {}
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while len(ports) < self.count:
            if stopped.is_set() or time.monotonic() > deadline:
                log.error("server processes did not all start", extra={"started": len(ports)})
                return None
            waiting = [worker for worker in self.workers if worker.index not in ports]
            wait([w.connection for w in waiting] + [w.process.sentinel for w in waiting], POLL_SECONDS)
            for worker in waiting:
                if worker.connection.poll():
                    with suppress(EOFError):  # it died before it served: its exit code says so below
                        ports[worker.index] = worker.connection.recv()
                if worker.index not in ports and worker.process.exitcode is not None:
                    log.error("server process exited during start-up", extra=self._describe(worker))
                    return None
        return ports[0]

    def _announce(self, port: int, mtls_port: int | None) -> None:
        pids = [worker.process.pid for worker in self.workers]
        log.info("serving", extra={"address": self.settings.listen_address, "processes": self.count, "pids": pids})
        print(f"coalition serving gRPC on port {port} with {self.count} processes", flush=True)
        if mtls_port is not None:
            print(f"coalition serving gRPC with client certificates on port {mtls_port}", flush=True)

    def _watch(self, stopped: threading.Event) -> bool:
        """Until a signal (True) or a worker's death (False)."""
        while not stopped.wait(POLL_SECONDS):
            for worker in self.workers:
                if worker.process.exitcode is not None:
                    log.error("server process died; stopping the others", extra=self._describe(worker))
                    return False
        return True

    def _stop(self) -> bool:
        """SIGTERM to every worker (each drains for LOYALTY_SHUTDOWN_GRACE_SECONDS), then waits; True if all exit 0."""
        for worker in self.workers:
            if worker.process.exitcode is None:
                worker.process.terminate()
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + EXIT_MARGIN_SECONDS
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                log.error("server process did not stop in time; killing it", extra=self._describe(worker))
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
            _mark_dead(worker, self.metrics_dir)
        return all(worker.process.exitcode == 0 for worker in self.workers)

    @staticmethod
    def _describe(worker: Worker) -> dict[str, object]:
        return {"worker": worker.index, "worker_pid": worker.process.pid, "exit_code": worker.process.exitcode}


def _export_metrics(address: str, metrics_dir: str) -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from server.metrics_http import start_metrics_server

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    start_metrics_server(address, registry)


def _mark_dead(worker: Worker, metrics_dir: str) -> None:
    """Drops a dead worker's live gauges; its counters stay, so totals never go backwards."""
    from prometheus_client.multiprocess import mark_process_dead

    if worker.process.pid is not None:
        mark_process_dead(worker.process.pid, metrics_dir)  # type: ignore[no-untyped-call]


def run_worker(settings: Settings, index: int, parent: Connection) -> None:
    """One server process: serves until SIGTERM/SIGINT, or until the parent is gone, then drains."""
    stopped = threading.Event()
    stop_on_signals(stopped)
    from server.logs import configure_logging

    configure_logging(settings.log_level)
    _tag_logs(index)
    from server.app import Application, create_server
    from server.collector import settle_for_serving

    app = Application.build(settings)
    running = create_server(app, shares_port=True, runs_background_jobs=index == BACKGROUND_JOBS_WORKER)
    settle_for_serving()
    running.start()
    log.info("worker serving", extra={"port": running.port})
    parent.send((running.port, running.mtls_port))
    threading.Thread(target=_stop_when_orphaned, args=(parent, stopped), name="parent-watch", daemon=True).start()
    stopped.wait()
    running.stop()
    log.info("stopped")


def _tag_logs(index: int) -> None:
    """Every log line of a worker says which one wrote it."""
    pid = os.getpid()

    def tag(record: logging.LogRecord) -> bool:
        record.worker = index
        record.pid = pid
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)


def _stop_when_orphaned(parent: Connection, stopped: threading.Event) -> None:
    """A worker whose parent died (even by SIGKILL) drains instead of serving on unsupervised."""
    try:
        while True:
            parent.recv()
    except (EOFError, OSError):
        if not stopped.is_set():
            log.warning("the parent process is gone; draining")
            stopped.set()
