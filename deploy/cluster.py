"""A Coalition cluster on this machine, without containers: replicas over PostgreSQL, HAProxy, Prometheus.

`make cluster` runs ``main``; tests and benchmarks drive ``Cluster``. Each replica is `coalition serve`
configured only by LOYALTY_* variables, as in production. HAProxy runs deploy/haproxy/haproxy.cfg as
shipped (the replica addresses come from COALITION_REPLICA_<n> variables) and Prometheus runs
deploy/prometheus/prometheus.yml and alerts.yml copied unchanged next to the targets files written here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, make_url, text

REPO_ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
PROMETHEUS_CONFIG_DIR = REPO_ROOT / "deploy" / "prometheus"
#: haproxy.cfg has this many COALITION_REPLICA_<n> slots; on two cores more would only compete anyway.
MAX_REPLICAS = 8
#: How long HAProxy takes to see a replica's health turn NOT_SERVING (two failed checks, haproxy.cfg).
HAPROXY_NOTICES_SECONDS = 6.0
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATABASE_NAME = "coalition_cluster"
STARTUP_TIMEOUT_SECONDS = 30.0
LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster could not start, or a part of it did not come up or go down in time."""


@dataclass(frozen=True)
class Ports:
    """Where everything listens on loopback: the balancer, its stats page, Prometheus, each replica."""

    balancer: int
    stats: int
    prometheus: int
    replicas: tuple[tuple[int, int], ...]  # (gRPC, metrics) per replica, replica 1 first

    @classmethod
    def standard(cls, replicas: int) -> Ports:
        """Fixed ports for `make cluster`: 50060 in front, replicas on 50061.. with metrics on 9461.."""
        return cls(50060, 8404, 9090, tuple((50060 + number, 9460 + number) for number in range(1, replicas + 1)))

    @classmethod
    def free(cls, replicas: int) -> Ports:
        """Ports nobody listens on now, for tests that must not collide with a running `make cluster`."""
        with ExitStack() as stack:
            probes = [stack.enter_context(socket.socket()) for _ in range(3 + 2 * replicas)]
            for probe in probes:  # all bound at once, so no port is handed out twice
                probe.bind((LOOPBACK, 0))
            ports = [int(probe.getsockname()[1]) for probe in probes]
        pairs = tuple((ports[3 + 2 * index], ports[4 + 2 * index]) for index in range(replicas))
        return cls(ports[0], ports[1], ports[2], pairs)


@dataclass(frozen=True)
class ClusterSettings:
    replicas: int = 3
    #: Empty: a fresh database named DEFAULT_DATABASE_NAME on the server of ``admin_url``, dropped first.
    database_url: str = ""
    admin_url: str = DEFAULT_ADMIN_URL
    state_dir: Path = REPO_ROOT / "var" / "cluster"
    #: None: Ports.standard(replicas).
    ports: Ports | None = None
    shutdown_grace_seconds: float = 10.0
    workers: int = 16
    log_level: str = "INFO"


@dataclass
class Replica:
    number: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        """As HAProxy and Prometheus name it."""
        return f"replica{self.number}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """``start()``, then traffic to ``balancer_address``; ``kill_replica``, ``stop_replica`` and
    ``start_replica`` take a replica number (1-based, as HAProxy's replica1..); ``stop()`` ends all."""

    def __init__(self, settings: ClusterSettings) -> None:
        if not 1 <= settings.replicas <= MAX_REPLICAS:
            raise ClusterError(f"between 1 and {MAX_REPLICAS} replicas (haproxy.cfg has {MAX_REPLICAS} slots)")
        self.settings = settings
        self.ports = settings.ports or Ports.standard(settings.replicas)
        self.state_dir = settings.state_dir.resolve()
        self.keys_dir = self.state_dir / "keys"
        self.logs_dir = self.state_dir / "logs"
        self.database_url = settings.database_url
        self.replicas = [
            Replica(number, grpc_port, metrics_port, self.logs_dir / f"replica{number}.log")
            for number, (grpc_port, metrics_port) in enumerate(self.ports.replicas, start=1)
        ]
        self._haproxy: subprocess.Popen[bytes] | None = None
        self._prometheus: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def balancer_address(self) -> str:
        return f"{LOOPBACK}:{self.ports.balancer}"

    @property
    def stats_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.stats}/"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.prometheus}"

    @property
    def haproxy_pid(self) -> int:
        if self._haproxy is None:
            raise ClusterError("HAProxy is not running")
        return self._haproxy.pid

    def replica(self, number: int) -> Replica:
        if not 1 <= number <= len(self.replicas):
            raise ClusterError(f"no replica {number}; replicas are 1..{len(self.replicas)}")
        return self.replicas[number - 1]

    # -- whole cluster ---------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Database, migration, demo network, replicas, HAProxy, Prometheus; returns when all answer."""
        haproxy, prometheus = _tool("haproxy"), _tool("prometheus")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = self.database_url or _fresh_database(self.settings.admin_url)
        if not make_url(self.database_url).drivername.startswith("postgresql"):
            raise ClusterError("replicas share one database: LOYALTY_DATABASE_URL must be PostgreSQL")
        try:
            self._run_once("migrate")
            self._run_once("seed-demo")
            for replica in self.replicas:
                self._spawn_replica(replica)
            for replica in self.replicas:
                self._wait_serving(replica)
            self._haproxy = _spawn([haproxy, "-db", "-f", str(HAPROXY_CONFIG)], self._haproxy_environment(),
                                   self.logs_dir / "haproxy.log")  # fmt: skip
            self._prometheus = self._spawn_prometheus(prometheus)
            self.wait_for_balancer({replica.name for replica in self.replicas})
            self._wait_prometheus_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """HAProxy first (no new calls), then every replica drains on SIGTERM at once, then Prometheus."""
        _terminate(self._haproxy, signal.SIGTERM, 10.0)
        for replica in self.replicas:
            if replica.process is not None and replica.is_running:
                replica.process.send_signal(signal.SIGTERM)  # all drain at once; waited for below
        for replica in self.replicas:
            _terminate(replica.process, signal.SIGTERM, self.settings.shutdown_grace_seconds + 10.0)
        _terminate(self._prometheus, signal.SIGTERM, 10.0)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- one replica -----------------------------------------------------------------------------

    def kill_replica(self, number: int) -> None:
        """SIGKILL: the replica dies at once, in the middle of whatever it was doing."""
        _terminate(self.replica(number).process, signal.SIGKILL, 10.0)

    def stop_replica(self, number: int) -> int:
        """SIGTERM: the replica drains (NOT_SERVING, in-flight calls finish) and exits; its exit code."""
        replica = self.replica(number)
        _terminate(replica.process, signal.SIGTERM, self.settings.shutdown_grace_seconds + 10.0)
        assert replica.process is not None
        return int(replica.process.returncode)

    def start_replica(self, number: int) -> None:
        """Starts a stopped replica on its old ports and returns once HAProxy routes to it again."""
        replica = self.replica(number)
        if replica.is_running:
            raise ClusterError(f"{replica.name} is running")
        self._spawn_replica(replica)
        self._wait_serving(replica)
        self.wait_for_balancer({replica.name})

    # -- what HAProxy sees -----------------------------------------------------------------------

    def balancer_status(self) -> dict[str, str]:
        """Replica name -> HAProxy's status for it (UP, DOWN, "UP 1/2" while going down, ...)."""
        with urllib.request.urlopen(f"{self.stats_url};csv", timeout=2) as response:  # noqa: S310 - our http URL
            rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
            servers = [row for row in rows if row["pxname"] == "coalition"]
        return {row["svname"]: row["status"] for row in servers if row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_for_balancer(self, up: set[str], timeout_seconds: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Waits until HAProxy marks every replica named in ``up`` UP (its checks need `rise` passes)."""
        deadline = time.monotonic() + timeout_seconds
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                status = self.balancer_status()
            except OSError:
                status = {}
            if all(status.get(name) == "UP" for name in up):
                return
            self._check_alive()
            time.sleep(0.2)
        raise ClusterError(f"HAProxy does not route to all of {sorted(up)}: {status}")

    # -- internals -------------------------------------------------------------------------------

    def _base_environment(self) -> dict[str, str]:
        """The parent's environment without LOYALTY_* and COALITION_* settings, which we set ourselves."""
        environment = {
            name: value for name, value in os.environ.items() if not name.startswith(("LOYALTY_", "COALITION_"))
        }
        python_path = [str(REPO_ROOT), str(REPO_ROOT / "proto"), environment.get("PYTHONPATH", "")]
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, python_path))
        return environment

    def _loyalty_environment(self) -> dict[str, str]:
        return self._base_environment() | {
            "LOYALTY_DATABASE_URL": self.database_url,
            "LOYALTY_IDENTIFIER_PEPPER": self._identifier_pepper(),
            "LOYALTY_KEYS_DIR": str(self.keys_dir),
            "LOYALTY_OPERATOR_PUBLIC_KEYS": f"operator-demo={self.keys_dir / 'operator-demo.pub.pem'}",
            "LOYALTY_LOG_LEVEL": self.settings.log_level,
        }

    def _identifier_pepper(self) -> str:
        """Generated once and kept (0600): a database seeded with one pepper can't be read with another."""
        path = self.state_dir / "identifier-pepper"
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _run_once(self, command: str) -> None:
        """`coalition migrate` or `coalition seed-demo`, as a deployment's one-shot job runs it."""
        log_path = self.logs_dir / f"{command}.log"
        with log_path.open("ab") as log:
            finished = subprocess.run(  # noqa: S603 - our own command line
                [sys.executable, "-m", "server.cli", command], env=self._loyalty_environment(), cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False,
            )  # fmt: skip
        if finished.returncode != 0:
            raise ClusterError(f"`coalition {command}` failed ({finished.returncode}):\n{_tail(log_path)}")

    def _spawn_replica(self, replica: Replica) -> None:
        environment = self._loyalty_environment() | {
            "LOYALTY_LISTEN_ADDRESS": replica.address,
            "LOYALTY_METRICS_ADDRESS": f"{LOOPBACK}:{replica.metrics_port}",
            "LOYALTY_WORKERS": str(self.settings.workers),
            "LOYALTY_SHUTDOWN_GRACE_SECONDS": str(self.settings.shutdown_grace_seconds),
            # HAProxy takes a NOT_SERVING replica out within about 5 s (haproxy.cfg): serve until then.
            "LOYALTY_SHUTDOWN_DRAIN_SECONDS": str(HAPROXY_NOTICES_SECONDS),
        }
        replica.process = _spawn([sys.executable, "-m", "server.cli", "serve"], environment, replica.log_path)

    def _wait_serving(self, replica: Replica) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with grpc.insecure_channel(replica.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if not replica.is_running:
                    raise ClusterError(f"{replica.name} exited:\n{_tail(replica.log_path)}")
                try:
                    if (
                        health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise ClusterError(
            f"{replica.name} not SERVING after {STARTUP_TIMEOUT_SECONDS:.0f} s:\n{_tail(replica.log_path)}"
        )

    def _haproxy_environment(self) -> dict[str, str]:
        environment = self._base_environment() | {
            "COALITION_LB_BIND": self.balancer_address,
            "COALITION_LB_STATS_BIND": f"{LOOPBACK}:{self.ports.stats}",
        }
        for replica in self.replicas:
            environment[f"COALITION_REPLICA_{replica.number}"] = replica.address
        return environment

    def _spawn_prometheus(self, prometheus: str) -> subprocess.Popen[bytes]:
        """deploy/prometheus/*.yml copied unchanged, with targets files beside them (paths are relative)."""
        config_dir = self.state_dir / "prometheus"
        (config_dir / "targets").mkdir(parents=True, exist_ok=True)
        for source in PROMETHEUS_CONFIG_DIR.glob("*.yml"):
            shutil.copyfile(source, config_dir / source.name)
        replicas = [{"targets": [f"{LOOPBACK}:{r.metrics_port}"], "labels": {"replica": r.name}} for r in self.replicas]
        _write_json(config_dir / "targets" / "coalition.json", replicas)
        _write_json(config_dir / "targets" / "haproxy.json", [{"targets": [f"{LOOPBACK}:{self.ports.stats}"]}])
        command = [
            prometheus, f"--config.file={config_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={config_dir / 'data'}", "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={LOOPBACK}:{self.ports.prometheus}",
        ]  # fmt: skip
        return _spawn(command, self._base_environment(), self.logs_dir / "prometheus.log")

    def _wait_prometheus_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                ready_url = f"{self.prometheus_url}/-/ready"
                with urllib.request.urlopen(ready_url, timeout=2) as response:  # noqa: S310 - our http URL
                    if response.status == 200:
                        return
            except OSError:
                pass
            self._check_alive()
            time.sleep(0.2)
        raise ClusterError(f"Prometheus not ready:\n{_tail(self.logs_dir / 'prometheus.log')}")

    def _check_alive(self) -> None:
        for name, process in (("haproxy", self._haproxy), ("prometheus", self._prometheus)):
            if process is not None and process.poll() is not None:
                raise ClusterError(f"{name} exited ({process.returncode}):\n{_tail(self.logs_dir / f'{name}.log')}")


def find_tool(name: str) -> str | None:
    """The executable, also where Debian installs haproxy (/usr/sbin), which a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise ClusterError(f"{name} is not installed: `make deploy-tools` (apt-get install haproxy prometheus)")
    return path


def _fresh_database(admin_url: str) -> str:
    """Drops and creates DEFAULT_DATABASE_NAME next to ``admin_url``'s database; returns its URL."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{DEFAULT_DATABASE_NAME}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{DEFAULT_DATABASE_NAME}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=DEFAULT_DATABASE_NAME).render_as_string(hide_password=False)


def _spawn(command: list[str], environment: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    # A process group of its own: Ctrl-C in the terminal reaches only us, and we stop the parts in order.
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own command lines
            command, env=dict(environment), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )


def _terminate(process: subprocess.Popen[bytes] | None, signum: signal.Signals, timeout_seconds: float) -> None:
    """Sends ``signum`` (if still running) and waits; SIGKILL if it is not gone in time."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _write_json(path: Path, content: object) -> None:
    # Written aside and renamed: Prometheus watches the directory and must never read half a file.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    temporary.replace(path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM both raise KeyboardInterrupt, so both take the same way out.

    Set explicitly: a process started in the background by a shell inherits SIGINT ignored.
    """

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3, help=f"replicas to start (1..{MAX_REPLICAS})")
    parser.add_argument(
        "--database-url", default=os.environ.get("LOYALTY_DATABASE_URL", ""),
        help=f"PostgreSQL URL to use (default: LOYALTY_DATABASE_URL, else a fresh {DEFAULT_DATABASE_NAME} database)",
    )  # fmt: skip
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="where the fresh database is created")
    parser.add_argument("--grace-seconds", type=float, default=10.0, help="LOYALTY_SHUTDOWN_GRACE_SECONDS")
    arguments = parser.parse_args(argv)
    settings = ClusterSettings(
        replicas=arguments.replicas, database_url=arguments.database_url, admin_url=arguments.admin_url,
        shutdown_grace_seconds=arguments.grace_seconds,
    )  # fmt: skip
    cluster = Cluster(settings)
    with _stop_on_signals():
        try:
            cluster.start()
            _print_addresses(cluster)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping: HAProxy, then the replicas drain, then Prometheus", flush=True)
        finally:
            cluster.stop()
    return 0


def _print_addresses(cluster: Cluster) -> None:
    database = make_url(cluster.database_url).render_as_string(hide_password=True)
    lines = [
        f"coalition cluster: {len(cluster.replicas)} replicas over {database}",
        f"  gRPC (HAProxy)     {cluster.balancer_address}",
        f"  HAProxy stats      {cluster.stats_url}   (its metrics: {cluster.stats_url}metrics)",
        f"  Prometheus         {cluster.prometheus_url}",
    ]
    for replica in cluster.replicas:
        lines.append(f"  {replica.name:18} {replica.address}   metrics {replica.metrics_url}")
    lines += [
        f"  keys               {cluster.keys_dir}",
        f"  logs               {cluster.logs_dir}",
        f"try: LOYALTY_KEYS_DIR={cluster.keys_dir} coalition demo --target {cluster.balancer_address}",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
