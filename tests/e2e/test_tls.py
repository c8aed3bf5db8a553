"""TLS and mutual TLS end to end: a real server on loopback with demo certificates, called through the SDK.

The server has a TLS port and a mutual-TLS port; "tls-strict" is listed in LOYALTY_TLS_CLIENT_CERT_PARTNERS,
"tls-relaxed" is not. A refused call must write nothing.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from prometheus_client import REGISTRY

from common.db import create_engine
from common.ids import new_id
from sdk.client import CoalitionClient, Credentials, TlsOptions, error_info
from sdk.tokens import SigningKey, generate_key_pair
from server.app import Application, RunningServer, create_server
from server.cli import main
from server.tls import write_demo_certificates
from tests.e2e.conftest import DEFAULT_TERMS, OPERATOR_KEY_ID, OperatorKey, server_settings
from tests.e2e.test_cli import COMMAND, REPOSITORY, free_port
from tests.e2e.test_token_attacks import row_counts
from tests.factories import phone

STRICT, OTHER, RELAXED = "tls-strict", "tls-other", "tls-relaxed"


@dataclass(frozen=True)
class TlsServer:
    running: RunningServer
    certificates: Path
    database_url: str
    keys: dict[str, tuple[str, SigningKey]]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def mtls_target(self) -> str:
        return f"127.0.0.1:{self.running.mtls_port}"

    def trust(self, client_certificate_of: str | None = None) -> TlsOptions:
        if client_certificate_of is None:
            return TlsOptions(ca_file=self.certificates / "ca.crt")
        return TlsOptions(
            ca_file=self.certificates / "ca.crt",
            client_cert_file=self.certificates / f"client-{client_certificate_of}.crt",
            client_key_file=self.certificates / f"client-{client_certificate_of}.key",
        )

    def partner(self, partner_id: str, *, mtls: bool = False, tls: TlsOptions | None = None) -> CoalitionClient:
        key_id, private_key = self.keys[partner_id]
        target = self.mtls_target if mtls else self.target
        return CoalitionClient(target, Credentials(partner_id, key_id, private_key), tls=tls, max_attempts=1)


def wait_until_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = health.Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True)
    while response.status != health_pb2.HealthCheckResponse.SERVING:
        response = health.Check(health_pb2.HealthCheckRequest(), timeout=10)


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template_path: str, operator_key: OperatorKey
) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls")
    shutil.copyfile(sqlite_template_path, directory / "tls.db")
    database_url = f"sqlite:///{directory / 'tls.db'}"
    certificates = directory / "certs"
    write_demo_certificates(certificates, [STRICT, OTHER, RELAXED])
    settings = server_settings(
        database_url, operator_key, tls_cert_file=str(certificates / "server.crt"),
        tls_key_file=str(certificates / "server.key"), mtls_listen_address="127.0.0.1:0",
        tls_client_ca_file=str(certificates / "ca.crt"), tls_client_cert_partners=STRICT,
    )  # fmt: skip
    running = create_server(Application.build(settings))
    running.start()
    server = TlsServer(running, certificates, database_url, {})
    with server.trust().channel(server.target) as channel:
        wait_until_serving(channel)
    operator = Credentials.operator("ops-tls", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
    with CoalitionClient(server.target, operator, tls=server.trust()) as admin:
        for partner_id in (STRICT, OTHER, RELAXED):
            server.keys[partner_id] = onboard(admin, partner_id)
    yield server
    running.stop(0)


def onboard(admin: CoalitionClient, partner_id: str) -> tuple[str, SigningKey]:
    admin.partner_admin.CreatePartner(
        admin_pb.CreatePartnerRequest(
            partner_id=partner_id, display_name=partner_id, kind=admin_pb.PARTNER_KIND_ONLINE_SHOP
        )
    )
    private_key, public_pem = generate_key_pair("ES256")
    key_id = f"{partner_id}-k1"
    admin.partner_admin.RegisterPartnerKey(
        admin_pb.RegisterPartnerKeyRequest(partner_id=partner_id, key_id=key_id, public_key_pem=public_pem)
    )
    admin.partner_admin.CreateContractVersion(
        admin_pb.CreateContractVersionRequest(partner_id=partner_id, terms=DEFAULT_TERMS)
    )
    return key_id, private_key


def earn_request(request_id: str | None = None) -> pb.EarnPointsRequest:
    return pb.EarnPointsRequest(
        request_id=request_id or new_id(), member=pb.MemberIdentifier(phone_number=phone().value),
        receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=10_000),
    )  # fmt: skip


def counts(server: TlsServer) -> dict[str, int]:
    engine = create_engine(server.database_url)
    try:
        return row_counts(engine)
    finally:
        engine.dispose()


def auth_failures(reason: str) -> float:
    return REGISTRY.get_sample_value("loyalty_auth_failures_total", {"reason": reason}) or 0.0


def refused(client: CoalitionClient, request: pb.EarnPointsRequest) -> tuple[grpc.StatusCode, str]:
    with client, pytest.raises(grpc.RpcError) as raised:
        client.checkout.EarnPoints(request)
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""


# --- TLS -----------------------------------------------------------------------------------


def test_a_partner_not_listed_calls_over_tls_without_a_certificate(tls_server: TlsServer) -> None:
    with tls_server.partner(RELAXED, tls=tls_server.trust()) as relaxed:
        earned = relaxed.checkout.EarnPoints(earn_request())

    assert earned.points_earned > 0


def test_a_plaintext_client_cannot_call_the_tls_port(tls_server: TlsServer) -> None:
    before = counts(tls_server)

    code, _ = refused(tls_server.partner(RELAXED), earn_request())

    assert code is grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls_server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert counts(tls_server) == before


def test_a_client_that_trusts_another_ca_refuses_the_server(tls_server: TlsServer, tmp_path: Path) -> None:
    write_demo_certificates(tmp_path, [])

    code, _ = refused(tls_server.partner(RELAXED, tls=TlsOptions(ca_file=tmp_path / "ca.crt")), earn_request())

    assert code is grpc.StatusCode.UNAVAILABLE


# --- mutual TLS ----------------------------------------------------------------------------


def test_a_listed_partner_without_a_certificate_is_refused_and_nothing_is_written(tls_server: TlsServer) -> None:
    before, failures = counts(tls_server), auth_failures("CLIENT_CERTIFICATE_REQUIRED")
    request = earn_request()

    code, reason = refused(tls_server.partner(STRICT, tls=tls_server.trust()), request)

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CLIENT_CERTIFICATE_REQUIRED")
    assert auth_failures("CLIENT_CERTIFICATE_REQUIRED") == failures + 1
    assert counts(tls_server) == before
    # The mutual-TLS port does not even finish the handshake without a certificate.
    code, _ = refused(tls_server.partner(STRICT, mtls=True, tls=tls_server.trust()), request)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert counts(tls_server) == before


def test_a_listed_partner_with_another_partners_certificate_is_refused(tls_server: TlsServer) -> None:
    before, failures = counts(tls_server), auth_failures("CLIENT_CERTIFICATE_MISMATCH")

    code, reason = refused(tls_server.partner(STRICT, mtls=True, tls=tls_server.trust(OTHER)), earn_request())

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CLIENT_CERTIFICATE_MISMATCH")
    assert auth_failures("CLIENT_CERTIFICATE_MISMATCH") == failures + 1
    assert counts(tls_server) == before


def test_a_listed_partner_with_its_own_certificate_is_served(tls_server: TlsServer) -> None:
    request = earn_request()
    refused(tls_server.partner(STRICT, tls=tls_server.trust()), request)
    refused(tls_server.partner(STRICT, mtls=True, tls=tls_server.trust(OTHER)), request)

    with tls_server.partner(STRICT, mtls=True, tls=tls_server.trust(STRICT)) as strict:
        earned = strict.checkout.EarnPoints(request)
        balance = strict.checkout.GetBalance(pb.GetBalanceRequest(member=request.member))

    # The same request id earns for the first time: the refusals stored no outcome.
    assert earned.points_earned > 0
    assert balance.balance.available_points + balance.balance.pending_points == earned.points_earned


def test_an_unlisted_partner_may_use_the_mutual_tls_port_with_its_own_certificate(tls_server: TlsServer) -> None:
    with tls_server.partner(RELAXED, mtls=True, tls=tls_server.trust(RELAXED)) as relaxed:
        assert relaxed.checkout.EarnPoints(earn_request()).points_earned > 0

    code, reason = refused(tls_server.partner(RELAXED, mtls=True, tls=tls_server.trust(STRICT)), earn_request())
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CLIENT_CERTIFICATE_MISMATCH")


# --- coalition health ------------------------------------------------------------------------


def health(*arguments: str) -> int:
    return main(["health", "--timeout", "5", *arguments])


def test_health_is_serving_over_tls(tls_server: TlsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert health("--target", tls_server.target, "--tls-ca", str(tls_server.certificates / "ca.crt")) == 0
    assert capsys.readouterr().out.strip() == f"{tls_server.target}: SERVING"


def test_health_fails_without_trust_unknown_services_and_closed_ports(
    tls_server: TlsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(tls_server.certificates / "ca.crt")
    write_demo_certificates(tmp_path, [])

    assert health("--target", tls_server.target) == 1  # plaintext to a TLS port
    assert health("--target", tls_server.target, "--tls-ca", str(tmp_path / "ca.crt")) == 1
    assert health("--target", tls_server.target, "--tls-ca", ca, "--tls-server-name", "elsewhere.test") == 1
    assert health("--target", tls_server.target, "--tls-ca", ca, "--service", "no.such.Service") == 1
    assert health("--target", f"127.0.0.1:{free_port()}", "--tls-ca", ca) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_health_is_not_serving_before_the_database_is_confirmed(
    tls_server: TlsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Started without its maintenance loop, a server keeps the NOT_SERVING it was built with.
    running = create_server(tls_server.running.app, "127.0.0.1:0")
    running.server.start()
    try:
        assert health("--target", f"127.0.0.1:{running.port}", "--tls-ca", str(tls_server.certificates / "ca.crt")) == 1
        assert capsys.readouterr().out.strip().endswith(": NOT_SERVING")
    finally:
        running.server.stop(0).wait()


def test_health_as_a_container_runs_it(tls_server: TlsServer) -> None:
    ca = str(tls_server.certificates / "ca.crt")
    environment = {"PYTHONPATH": f"{REPOSITORY}:{REPOSITORY / 'proto'}", "LOYALTY_LISTEN_ADDRESS": tls_server.target}

    serving = subprocess.run(
        [*COMMAND, "health", "--tls-ca", ca], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    plaintext = subprocess.run(
        [*COMMAND, "health"], env=environment, capture_output=True, text=True, timeout=60, check=False
    )

    assert (serving.returncode, serving.stdout.strip()) == (0, f"{tls_server.target}: SERVING")
    assert plaintext.returncode == 1


# --- coalition serve, configured by LOYALTY_* variables only ----------------------------------------


def serve_environment(directory: Path, **variables: str) -> dict[str, str]:
    return {
        "PYTHONPATH": f"{REPOSITORY}:{REPOSITORY / 'proto'}",
        "LOYALTY_DATABASE_URL": f"sqlite:///{directory / 'serve.db'}",
        "LOYALTY_METRICS_ADDRESS": "",
        "LOYALTY_SHUTDOWN_GRACE_SECONDS": "1",
    } | {f"LOYALTY_{name.upper()}": value for name, value in variables.items()}


def test_serve_takes_tls_and_mutual_tls_from_the_environment(tmp_path: Path) -> None:
    certificates = tmp_path / "certs"
    write_demo_certificates(certificates, [])
    address, mtls_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    environment = serve_environment(
        tmp_path, listen_address=address, mtls_listen_address=mtls_address,
        tls_cert_file=str(certificates / "server.crt"), tls_key_file=str(certificates / "server.key"),
        tls_client_ca_file=str(certificates / "ca.crt"), tls_client_cert_partners="brightmart-stores",
    )  # fmt: skip
    subprocess.run([*COMMAND, "migrate"], env=environment, capture_output=True, timeout=60, check=True)
    server = subprocess.Popen([*COMMAND, "serve"], env=environment, stdout=subprocess.PIPE, text=True)
    try:
        with TlsOptions(ca_file=certificates / "ca.crt").channel(address) as channel:
            wait_until_serving(channel)
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)

    assert server.returncode == 0
    assert f"coalition serving gRPC with client certificates on port {mtls_address.rsplit(':')[1]}" in output


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"tls_cert_file": "server.crt"}, "set both LOYALTY_TLS_CERT_FILE and LOYALTY_TLS_KEY_FILE"),
        ({"tls_cert_file": "server.crt", "tls_key_file": "absent.key"}, "LOYALTY_TLS_KEY_FILE: no such file"),
        ({"tls_cert_file": "server.crt", "tls_key_file": "ca.key"}, "LOYALTY_TLS_KEY_FILE is not the key"),
    ],
    ids=["half-a-pair", "missing-file", "wrong-key"],
)
def test_serve_refuses_to_start_on_a_bad_tls_setup(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    write_demo_certificates(tmp_path, [])
    paths = {name: str(tmp_path / file_name) for name, file_name in variables.items()}
    environment = serve_environment(tmp_path, listen_address=f"127.0.0.1:{free_port()}", **paths)

    result = subprocess.run([*COMMAND, "serve"], env=environment, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert message in result.stderr
