"""`coalition serve` with LOYALTY_SERVER_PROCESSES=2: one port, two processes, one set of metrics, one drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.v1 import checkout_service_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from sdk.client import TlsOptions
from sdk.tokens import load_private_key, sign_request_token
from server.processes import reserve_port
from server.tls import write_demo_certificates

REPOSITORY = Path(__file__).resolve().parents[2]
ENTRY_POINT = Path(sys.executable).parent / "coalition"
COMMAND = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "server.cli"]
GRACE_SECONDS = 3.0
EARN = "/loyalty.v1.CheckoutService/EarnPoints"
BALANCE = "/loyalty.v1.CheckoutService/GetBalance"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The kernel spreads connections, not calls: with this many connections over two processes, the
# chance that one process gets none is 2 ** -23.
CONNECTIONS = 24


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_channel(address: str) -> grpc.Channel:
    # Channels in one process share TCP connections unless each keeps its own subchannels.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


@dataclass
class Server:
    directory: Path
    environment: dict[str, str]
    process: subprocess.Popen[str]
    address: str
    metrics_url: str

    def log_entries(self) -> list[dict[str, Any]]:
        lines = (self.directory / "serve.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def workers_that_logged(self, message: str) -> set[int]:
        return {entry["worker"] for entry in self.log_entries() if entry["message"] == message and "worker" in entry}

    def log_text(self) -> str:
        return (self.directory / "serve.log").read_text()


def run(environment: dict[str, str], directory: Path, *arguments: str) -> str:
    result = subprocess.run(
        [*COMMAND, *arguments], cwd=directory, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"coalition {' '.join(arguments)}: {result.stdout}\n{result.stderr}"
    return result.stdout


def environment_for(directory: Path, database_url: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("LOYALTY_", "PROMETHEUS_"))}
    return environment | {
        "LOYALTY_DATABASE_URL": database_url,
        "LOYALTY_KEYS_DIR": str(directory / "keys"),
        "LOYALTY_LISTEN_ADDRESS": "127.0.0.1:0",  # the parent picks one free port for both processes
        "LOYALTY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "LOYALTY_OPERATOR_PUBLIC_KEYS": f"operator-demo={directory / 'keys' / 'operator-demo.pub.pem'}",
        "LOYALTY_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "LOYALTY_SERVER_PROCESSES": "2",
        "LOYALTY_IDENTIFIER_PEPPER": "processes-pepper",
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "proto")]),
    }


def start(directory: Path, environment: dict[str, str]) -> Server:
    log = (directory / "serve.log").open("w")
    process = subprocess.Popen(
        [*COMMAND, "serve"], cwd=directory, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    log.close()
    metrics_url = f"http://{environment['LOYALTY_METRICS_ADDRESS']}/metrics"
    deadline = time.monotonic() + 60
    while "coalition serving gRPC on port" not in (directory / "serve.log").read_text():
        assert process.poll() is None, (directory / "serve.log").read_text()
        assert time.monotonic() < deadline, "the server never started"
        time.sleep(0.1)
    port = (directory / "serve.log").read_text().split("coalition serving gRPC on port ")[1].split()[0]
    return Server(directory, environment, process, f"127.0.0.1:{port}", metrics_url)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.kill()  # only after a failure: the workers notice their parent is gone and drain
        server.process.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    environment = environment_for(tmp_path, f"sqlite:///{tmp_path / 'c.db'}")
    run(environment, tmp_path, "migrate")
    run(environment, tmp_path, "seed-demo")
    server = start(tmp_path, environment)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop(server)


def wait_until_serving(server: Server) -> None:
    """Until fresh connections, which land on either process, all find it SERVING."""
    deadline = time.monotonic() + 30
    while sorted(set(health_statuses(server.address, ""))) != [SERVING]:
        assert time.monotonic() < deadline, "the server never became SERVING in every process"
        time.sleep(0.2)


def health_statuses(address: str, service: str) -> list[int]:
    statuses = []
    for _ in range(CONNECTIONS):
        with fresh_channel(address) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            statuses.append(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)
    return statuses


def raw_call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
    return channel.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)


def earn_on_a_fresh_connection(server: Server, partner: str) -> None:
    body = pb.EarnPointsRequest(
        request_id=uuid.uuid4().hex, member=pb.MemberIdentifier(email=f"{uuid.uuid4().hex[:10]}@example.com"),
        enroll_if_unknown=True, receipt_id=f"R-{uuid.uuid4().hex[:10]}",
        basket=pb.Basket(currency_code="EUR", total_minor=1_000),
    ).SerializeToString()  # fmt: skip
    token = sign_request_token(
        private_key=load_private_key(server.directory / "keys" / f"{partner}.pem"), key_id=f"{partner}-1",
        issuer=partner, audience="coalition", method=EARN, body=body,
    )  # fmt: skip
    with fresh_channel(server.address) as channel:
        pb.EarnPointsResponse.FromString(
            raw_call(channel, EARN)(body, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        )


def samples(metrics_url: str) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        exposition = response.read().decode("utf-8")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    ]


def value(exported: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for sample_name, sample_labels, v in exported if sample_name == name and sample_labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def test_two_processes_share_the_port_both_take_calls_and_metrics_add_up(served: Server) -> None:
    started = [entry for entry in served.log_entries() if entry["message"] == "worker serving"]
    assert sorted(entry["worker"] for entry in started) == [0, 1]
    assert len({entry["pid"] for entry in started}) == 2
    assert {entry["port"] for entry in started} == {int(served.address.rsplit(":", 1)[1])}

    for _ in range(CONNECTIONS):
        earn_on_a_fresh_connection(served, "northwind-online")
    body = pb.GetBalanceRequest(member=pb.MemberIdentifier(email="nobody@example.com")).SerializeToString()
    for _ in range(CONNECTIONS):  # no token: each is refused and logged by the process that served it
        with fresh_channel(served.address) as channel, pytest.raises(grpc.RpcError) as refused:
            raw_call(channel, BALANCE)(body, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert served.workers_that_logged("rpc failed") == {0, 1}
    exported = samples(served.metrics_url)
    earns = value(exported, "loyalty_rpc_duration_seconds_count", method="CheckoutService/EarnPoints", code="OK")
    refused_count = value(
        exported, "loyalty_rpc_duration_seconds_count", method="CheckoutService/GetBalance", code="UNAUTHENTICATED"
    )
    assert (earns, refused_count) == (CONNECTIONS, CONNECTIONS)  # both processes' calls, added up
    assert value(exported, "loyalty_auth_failures_total", reason="MISSING_TOKEN") == CONNECTIONS
    assert value(exported, "loyalty_points_total", operation="earned", partner="northwind-online") == 10 * CONNECTIONS
    assert value(exported, "loyalty_database_up") == 1
    assert value(exported, "loyalty_rpcs_in_flight") == 0
    assert not [labels for _, labels, _ in exported if "pid" in labels]  # one set, not one per process


def test_sigterm_drains_every_process(served: Server) -> None:
    channels = [fresh_channel(served.address) for _ in range(CONNECTIONS)]
    watches = [
        health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30) for channel in channels
    ]
    assert {next(watch).status for watch in watches} == {SERVING}

    served.process.send_signal(signal.SIGTERM)

    for watch in watches:  # whichever process holds it, the drain announces NOT_SERVING
        assert next(status.status for status in watch if status.status != SERVING) == NOT_SERVING
    assert served.process.wait(timeout=GRACE_SECONDS + 20) == 0
    for channel in channels:
        channel.close()
    assert served.workers_that_logged("draining after signal SIGTERM") == {0, 1}
    assert served.workers_that_logged("stopped") == {0, 1}
    assert "Traceback" not in served.log_text()


def test_a_process_that_dies_stops_the_server_with_an_error(served: Server) -> None:
    pids = {entry["worker"]: entry["pid"] for entry in served.log_entries() if entry["message"] == "worker serving"}

    os.kill(pids[1], signal.SIGKILL)

    assert served.process.wait(timeout=GRACE_SECONDS + 20) == 1  # the orchestrator restarts it whole
    assert served.workers_that_logged("stopped") == {0}  # the survivor drained
    assert "server process died" in served.log_text()


def test_without_a_database_no_process_is_serving(tmp_path: Path) -> None:
    environment = environment_for(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/none")
    environment["LOYALTY_OPERATOR_PUBLIC_KEYS"] = ""  # nothing seeded: no keys
    server = start(tmp_path, environment)
    try:
        time.sleep(1.0)  # a few health probes in each process
        assert set(health_statuses(server.address, "")) == {NOT_SERVING}
        assert set(health_statuses(server.address, "liveness")) == {SERVING}
        assert value(samples(server.metrics_url), "loyalty_database_up") == 0
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=GRACE_SECONDS + 20) == 0
        stop(server)


def test_a_reserved_port_is_shared_only_with_sockets_that_ask_for_it() -> None:
    reserved, address = reserve_port("127.0.0.1:0")
    port = int(address.rsplit(":", 1)[1])
    try:
        assert port > 0
        with socket.socket() as sharing:
            sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sharing.bind(("127.0.0.1", port))
            sharing.listen()
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
    finally:
        reserved.close()


def test_both_tls_ports_are_shared_by_every_process(tmp_path: Path) -> None:
    certificates = tmp_path / "certs"
    write_demo_certificates(certificates, [])
    environment = environment_for(tmp_path, f"sqlite:///{tmp_path / 'c.db'}") | {
        "LOYALTY_OPERATOR_PUBLIC_KEYS": "",
        "LOYALTY_TLS_CERT_FILE": str(certificates / "server.crt"),
        "LOYALTY_TLS_KEY_FILE": str(certificates / "server.key"),
        "LOYALTY_MTLS_LISTEN_ADDRESS": "127.0.0.1:0",
        "LOYALTY_TLS_CLIENT_CA_FILE": str(certificates / "ca.crt"),
    }
    run(environment, tmp_path, "migrate")
    server = start(tmp_path, environment)
    try:
        mtls_port = server.log_text().split("with client certificates on port ")[1].split()[0]
        started = [entry for entry in server.log_entries() if entry["message"] == "worker serving"]
        assert len(started) == 2
        with TlsOptions(ca_file=certificates / "ca.crt").channel(server.address) as channel:
            request = health_pb2.HealthCheckRequest(service="liveness")
            assert health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status == SERVING
        with socket.create_connection(("127.0.0.1", int(mtls_port)), timeout=5):
            pass  # listening: the mutual-TLS port was reserved and bound by the workers too
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=GRACE_SECONDS + 20) == 0
        stop(server)
