"""The server under test: `python -m server.cli serve` in a subprocess, as it runs in production."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """Starts the server with its own LOYALTY_* settings, waits for SERVING, stops it with SIGTERM.

    With several processes ``pid`` is the parent's; its workers are its children (bench.cpu sums them).
    """

    def __init__(self, database_url: str, log_path: Path, *, workers: int, pepper: str, processes: int = 1) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        environment = {name: value for name, value in os.environ.items() if not name.startswith("LOYALTY_")}
        python_path = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "proto")])
        environment |= {
            "PYTHONPATH": python_path,
            "LOYALTY_DATABASE_URL": database_url,
            "LOYALTY_LISTEN_ADDRESS": self.address,
            "LOYALTY_METRICS_ADDRESS": "",
            "LOYALTY_LOG_LEVEL": "WARNING",
            "LOYALTY_WORKERS": str(workers),
            "LOYALTY_SERVER_PROCESSES": str(processes),
            "LOYALTY_HOLD_SWEEP_SECONDS": "0",
            "LOYALTY_IDENTIFIER_PEPPER": pepper,
        }
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve"], env=self.environment, cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"server not SERVING after {STARTUP_TIMEOUT_SECONDS:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
