"""A real server on 127.0.0.1:0 per backend, an operator client, and partners onboarded over gRPC."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from sdk.client import CoalitionClient, Credentials, error_info
from sdk.tokens import SigningKey, generate_key_pair
from server.app import Application, RunningServer, create_server
from server.config import Settings

OPERATOR_KEY_ID = "operator-tests"


@dataclass(frozen=True)
class OperatorKey:
    private_key: SigningKey
    public_path: Path


@dataclass
class Partner:
    partner_id: str
    key_id: str
    private_key: SigningKey
    client: CoalitionClient


@pytest.fixture(scope="session")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> OperatorKey:
    private_key, public_pem = generate_key_pair("ES256")
    path = tmp_path_factory.mktemp("keys") / "operator.pub.pem"
    path.write_text(public_pem)
    return OperatorKey(private_key, path)


def server_settings(database_url: str, operator_key: OperatorKey, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "listen_address": "127.0.0.1:0",
        "metrics_address": "",
        "operator_public_keys": f"{OPERATOR_KEY_ID}={operator_key.public_path}",
        "identifier_pepper": "e2e-pepper",
        "workers": 8,
        # The shared server runs on the real clock over the database the integration tests use with
        # clocks in 2026-03: its sweep would expire their holds mid-test. test_operations.py tests
        # the sweep on a server of its own.
        "hold_sweep_seconds": 0.0,
        "expiry_job_seconds": 0.0,  # likewise: its clock would lapse their points
        "shutdown_grace_seconds": 2.0,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def start_server(settings: Settings) -> RunningServer:
    running = create_server(Application.build(settings))
    running.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 10
    while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "server never became SERVING"
        time.sleep(0.05)
    channel.close()
    return running


@pytest.fixture(scope="session")
def server(database_url: str, operator_key: OperatorKey) -> Iterator[RunningServer]:
    running = start_server(server_settings(database_url, operator_key))
    yield running
    running.stop(0)


@pytest.fixture(scope="session")
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def operator(target: str, operator_key: OperatorKey) -> Iterator[CoalitionClient]:
    credentials = Credentials.operator("ops-tester", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
    with CoalitionClient(target, credentials) as client:
        yield client


DEFAULT_TERMS = admin_pb.ContractTerms(
    currency_code="EUR", earn_rate="1", redeem_value="0.01", issuance_price="0.012", reimbursement_rate="0.010"
)


@pytest.fixture(scope="session")
def onboard(operator: CoalitionClient, target: str) -> Iterator[Callable[..., Partner]]:
    """Onboards a partner over the admin API: creates it, registers a key, sets a contract."""
    clients: list[CoalitionClient] = []

    def make(
        *,
        kind: admin_pb.PartnerKind = admin_pb.PARTNER_KIND_ONLINE_SHOP,
        terms: admin_pb.ContractTerms = DEFAULT_TERMS,
        algorithm: str = "ES256",
    ) -> Partner:
        partner_id = f"p-{uuid.uuid4().hex[:12]}"
        operator.partner_admin.CreatePartner(
            admin_pb.CreatePartnerRequest(partner_id=partner_id, display_name=partner_id, kind=kind)
        )
        private_key, public_pem = generate_key_pair(algorithm)
        key_id = f"{partner_id}-k1"
        operator.partner_admin.RegisterPartnerKey(
            admin_pb.RegisterPartnerKeyRequest(partner_id=partner_id, key_id=key_id, public_key_pem=public_pem)
        )
        operator.partner_admin.CreateContractVersion(
            admin_pb.CreateContractVersionRequest(partner_id=partner_id, terms=terms)
        )
        client = CoalitionClient(target, Credentials(partner_id, key_id, private_key))
        clients.append(client)
        return Partner(partner_id, key_id, private_key, client)

    yield make
    for client in clients:
        client.close()


def reason_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason a call fails with."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""
