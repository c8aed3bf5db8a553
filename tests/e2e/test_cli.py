"""The `coalition` command as an operator runs it: subprocesses, a SQLite file, a real server and SIGTERM."""

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
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.v1 import checkout_service_pb2 as pb
from sqlalchemy import text

from common.db import create_engine
from sdk.client import CoalitionClient, Credentials
from sdk.tokens import load_private_key
from server.config import Settings, env_name
from settlement.periods import PeriodLength, period_of

REPOSITORY = Path(__file__).resolve().parents[2]
ENTRY_POINT = Path(sys.executable).parent / "coalition"
COMMAND = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "server.cli"]
GRACE_SECONDS = 3.0
DEMO_PARTNERS = ("brightmart-stores", "northwind-online", "harbor-bank")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Workspace:
    directory: Path
    environment: dict[str, str]
    grpc_address: str

    @property
    def keys(self) -> Path:
        return self.directory / "keys"

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *arguments], cwd=self.directory, env=self.environment, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    def ok(self, *arguments: str) -> str:
        result = self.run(*arguments)
        assert result.returncode == 0, f"coalition {' '.join(arguments)}: {result.stdout}\n{result.stderr}"
        return result.stdout


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    grpc_address = f"127.0.0.1:{free_port()}"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LOYALTY_")}
    environment |= {
        "LOYALTY_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "LOYALTY_KEYS_DIR": str(tmp_path / "keys"),
        "LOYALTY_LISTEN_ADDRESS": grpc_address,
        "LOYALTY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "LOYALTY_OPERATOR_PUBLIC_KEYS": f"operator-demo={tmp_path / 'keys' / 'operator-demo.pub.pem'}",
        "LOYALTY_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "LOYALTY_HOLD_SWEEP_SECONDS": "0.5",
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "proto")]),
    }
    return Workspace(tmp_path, environment, grpc_address)


def is_serving(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.RpcError:
        return False  # not listening yet
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def wait_until_serving(address: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not is_serving(health):
            assert server.poll() is None, "the server exited during start-up"
            assert time.monotonic() < deadline, "the server never became SERVING"
            time.sleep(0.1)


def table_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table: int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
                for table in ("partners", "partner_keys", "contract_versions", "idempotency_records")
            }
    finally:
        engine.dispose()


@pytest.fixture
def serving(workspace: Workspace) -> Iterator[subprocess.Popen[str]]:
    """Migrates and seeds (each twice: both are safe to rerun), then runs `coalition serve` in the background.

    The test itself sends SIGTERM; this only cleans up after a failure.
    """
    assert "database at head" in workspace.ok("migrate")
    assert "database at head" in workspace.ok("migrate")
    first = workspace.ok("seed-demo")
    assert all(f"seeded {partner}" in first for partner in DEMO_PARTNERS)
    keys = {path.name: path.read_bytes() for path in workspace.keys.iterdir()}
    seeded = table_counts(workspace.environment["LOYALTY_DATABASE_URL"])
    workspace.ok("seed-demo")
    assert {path.name: path.read_bytes() for path in workspace.keys.iterdir()} == keys  # keys are not regenerated
    assert table_counts(workspace.environment["LOYALTY_DATABASE_URL"]) == seeded == {
        # 3 partners x (partner, key, contract) + the network policy + last month's 6 checkout calls.
        "partners": 3, "partner_keys": 3, "contract_versions": 3, "idempotency_records": 16,
    }  # fmt: skip
    assert {"operator-demo.pem", "operator-demo.pub.pem"} <= set(keys)
    assert all((workspace.keys / f"{partner}.pem").stat().st_mode & 0o777 == 0o600 for partner in DEMO_PARTNERS)

    log = (workspace.directory / "serve.log").open("w")
    server = subprocess.Popen(
        [*COMMAND, "serve"], cwd=workspace.directory, env=workspace.environment, stdout=log, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_until_serving(workspace.grpc_address, server)
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        log.close()


def test_help_names_every_command_and_every_setting(workspace: Workspace) -> None:
    top = workspace.ok("--help")
    for command in ("serve", "migrate", "seed-demo", "demo", "keygen", "jobs", "partner", "settlement"):
        assert command in top
    serve_help = workspace.ok("serve", "--help")
    for setting in fields(Settings):
        assert env_name(setting.name) in serve_help
    assert workspace.run().returncode == 2  # no command: usage, not a traceback


def test_a_day_of_operations_through_the_cli(workspace: Workspace, serving: subprocess.Popen[str]) -> None:
    demo = workspace.ok("demo").splitlines()
    for step in range(1, 7):
        assert any(line.startswith(f"{step}. ") for line in demo), demo
    assert sum(line.startswith("6. ") for line in demo) == 2  # both partners' view of the balance

    listed = json.loads(workspace.ok("partner", "list"))
    assert {partner["partner_id"] for partner in listed["partners"]} >= set(DEMO_PARTNERS)

    partner_id = f"cli-{uuid.uuid4().hex[:8]}"
    private_path, public_path = workspace.directory / "acme.pem", workspace.directory / "acme.pub.pem"
    workspace.ok("keygen", "--algorithm", "EdDSA", "--private-key", str(private_path), "--public-key", str(public_path))
    assert private_path.stat().st_mode & 0o777 == 0o600
    created = json.loads(workspace.ok("partner", "create", partner_id, "--name", "Acme", "--kind", "online-shop"))
    assert created["partner"]["state"] == "PARTNER_STATE_ACTIVE"
    contract = json.loads(workspace.ok(
        "partner", "contract", "set", partner_id, "--currency", "EUR", "--earn-rate", "3",
        "--redeem-value", "0.01", "--issuance-price", "0.012", "--reimbursement-rate", "0.010",
    ))  # fmt: skip
    assert contract["contract_version"]["version"] == "1"  # int64 prints as a JSON string
    key = json.loads(workspace.ok(
        "partner", "key", "add", partner_id, "--key-id", f"{partner_id}-1", "--public-key", str(public_path)
    ))  # fmt: skip
    assert key["key"]["algorithm"] == "KEY_ALGORITHM_EDDSA"
    duplicate = workspace.run("partner", "create", partner_id, "--name", "Acme", "--kind", "online-shop")
    assert (duplicate.returncode, duplicate.stdout.split()[:3]) == (
        1,
        ["error:", "ALREADY_EXISTS", "PARTNER_ALREADY_EXISTS:"],
    )

    credentials = Credentials(partner_id, f"{partner_id}-1", load_private_key(private_path))
    with CoalitionClient(workspace.grpc_address, credentials) as acme:
        earned = acme.checkout.EarnPoints(pb.EarnPointsRequest(
            member=pb.MemberIdentifier(email=f"{uuid.uuid4().hex[:8]}@example.com"), receipt_id="A-1",
            enroll_if_unknown=True, basket=pb.Basket(currency_code="EUR", total_minor=2_000),
        ))  # fmt: skip
    assert (earned.points_earned, earned.contract_version) == (60, 1)

    jobs = workspace.ok("jobs", "run")
    assert jobs.startswith("holds expired: ")
    assert "PASS  ledger: 1. every journal transaction balances" in jobs and "FAIL" not in jobs

    # seed-demo played last month's trade: finance closes it and the books reconcile.
    last_month = period_of(datetime.now(UTC), PeriodLength.MONTH).previous().label
    assert "statements" in workspace.ok("settlement", "close", "--period", last_month)
    assert workspace.run("settlement", "reconcile", "--period", last_month).returncode == 0
    assert f"{last_month}/harbor-bank/EUR" in workspace.ok("settlement", "list", "--period", last_month)
    metrics_url = f"http://{workspace.environment['LOYALTY_METRICS_ADDRESS']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        exposition = response.read().decode("utf-8")
    assert 'loyalty_rpc_duration_seconds_count{code="OK",method="CheckoutService/EarnPoints"}' in exposition

    serving.send_signal(signal.SIGTERM)
    assert serving.wait(timeout=GRACE_SECONDS + 15) == 0
    log = (workspace.directory / "serve.log").read_text()
    assert "coalition serving gRPC on port" in log and "Traceback" not in log
