"""Running the service: health and draining, an unreachable database, reflection, limits and metrics."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from common.db import create_engine
from migrations.runner import upgrade
from sdk.client import CoalitionClient, Credentials, error_info
from sdk.tokens import generate_key_pair, sign_request_token
from server.app import LIVENESS_SERVICE, Application, RunningServer, create_server
from server.metrics_http import start_metrics_server
from tests.e2e.conftest import (
    DEFAULT_TERMS,
    OPERATOR_KEY_ID,
    OperatorKey,
    Partner,
    server_settings,
    start_server,
)
from tests.factories import phone

EARN = "/loyalty.v1.CheckoutService/EarnPoints"
BALANCE = "/loyalty.v1.CheckoutService/GetBalance"
CHECKOUT_SERVICE = "loyalty.v1.CheckoutService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/none"


def new_phone() -> pb.MemberIdentifier:
    return pb.MemberIdentifier(phone_number=phone().value)


def token_for(partner: Partner, method: str, body: bytes) -> str:
    return sign_request_token(
        private_key=partner.private_key, key_id=partner.key_id, issuer=partner.partner_id, audience="coalition",
        method=method, body=body,
    )  # fmt: skip


def raw_call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
    return channel.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)


def health_status(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


def address(running: RunningServer) -> str:
    return f"127.0.0.1:{running.port}"


@pytest.fixture
def stopping() -> Iterator[list[RunningServer]]:
    """Extra servers a test starts; each is stopped at the end even if the test failed."""
    servers: list[RunningServer] = []
    yield servers
    for running in servers:
        running.stop(0)


def test_health_is_serving_while_running(target: str) -> None:
    assert health_status(target, "") == SERVING
    assert health_status(target, CHECKOUT_SERVICE) == SERVING


def test_health_turns_not_serving_as_soon_as_shutdown_begins(database_url: str, operator_key: OperatorKey) -> None:
    running = start_server(server_settings(database_url, operator_key))
    with grpc.insecure_channel(address(running)) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=CHECKOUT_SERVICE), timeout=10
        )
        assert next(watch).status == SERVING
        stopper = threading.Thread(target=running.stop, args=(1.0,))
        stopper.start()
        # The maintenance loop may repeat SERVING before the drain starts; the drain itself announces NOT_SERVING.
        statuses = []
        for update in watch:
            statuses.append(update.status)
            if update.status != SERVING:
                break
        watch.cancel()
    stopper.join()
    assert statuses[-1] == NOT_SERVING and set(statuses[:-1]) <= {SERVING}
    for service in ("", CHECKOUT_SERVICE, "loyalty.v1.PartnerAdminService"):
        request = health_pb2.HealthCheckRequest(service=service)
        # The servicer reads its context only for unknown services, so none is needed here.
        assert running.health.Check(request, None).status == NOT_SERVING  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as refused:
        health_status(address(running), "")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_without_a_database_the_server_is_not_serving_and_calls_are_unavailable(
    operator_key: OperatorKey, stopping: list[RunningServer]
) -> None:
    settings = server_settings(UNREACHABLE_DATABASE, operator_key, hold_sweep_seconds=0.0)
    running = create_server(Application.build(settings))
    running.start()
    stopping.append(running)
    assert not running.app.database_answers()
    assert health_status(address(running), "") == NOT_SERVING
    assert health_status(address(running), CHECKOUT_SERVICE) == NOT_SERVING
    # Liveness does not follow the database: an outage must not get every replica restarted.
    assert health_status(address(running), LIVENESS_SERVICE) == SERVING

    body = pb.GetBalanceRequest(member=new_phone()).SerializeToString()
    # Any partner key id: finding it needs the database, which is where the call must stop.
    private_key, _ = generate_key_pair("ES256")
    partner = Partner("p-anyone", "p-anyone-k1", private_key, client=None)  # type: ignore[arg-type]
    with grpc.insecure_channel(address(running)) as channel, pytest.raises(grpc.RpcError) as raised:
        raw_call(channel, BALANCE)(body, metadata=(("authorization", f"Bearer {token_for(partner, BALANCE, body)}"),),
                                   timeout=5)  # fmt: skip
    info = error_info(raised.value)
    assert (raised.value.code(), info.reason if info else "") == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


def test_reflection_is_off_by_default(target: str) -> None:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as raised:
        list(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_services_when_enabled(
    database_url: str, operator_key: OperatorKey, stopping: list[RunningServer]
) -> None:
    running = start_server(server_settings(database_url, operator_key, enable_reflection=True))
    stopping.append(running)
    with grpc.insecure_channel(address(running)) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        checkout_file = database.FindFileContainingSymbol(CHECKOUT_SERVICE)
    assert {CHECKOUT_SERVICE, "loyalty.v1.PartnerAdminService", "grpc.health.v1.Health"} <= services
    (checkout,) = [service for service in checkout_file.service if service.name == "CheckoutService"]
    assert {"EarnPoints", "GetBalance", "HoldPoints"} <= {method.name for method in checkout.method}


def test_bytes_that_are_not_a_message_are_invalid_argument(onboard: Callable[..., Partner], target: str) -> None:
    shop = onboard()
    garbage = b"\xff\xff\xff\xff not a protobuf"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as raised:
        raw_call(channel, EARN)(garbage, metadata=(("authorization", f"Bearer {token_for(shop, EARN, garbage)}"),),
                                timeout=5)  # fmt: skip
    info = error_info(raised.value)
    assert (raised.value.code(), info.reason if info else "") == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


def test_rpcs_beyond_the_concurrency_limit_are_refused_not_failed(
    database_url: str, operator_key: OperatorKey, onboard: Callable[..., Partner], stopping: list[RunningServer]
) -> None:
    shop = onboard()
    member = new_phone()
    shop.client.checkout.EarnPoints(
        pb.EarnPointsRequest(member=member, receipt_id="R-1", enroll_if_unknown=True,
                             basket=pb.Basket(currency_code="EUR", total_minor=5_000))
    )  # fmt: skip
    limited = start_server(server_settings(database_url, operator_key, max_concurrent_rpcs=1, workers=4))
    stopping.append(limited)
    body = pb.GetBalanceRequest(member=member).SerializeToString()
    codes: Counter[grpc.StatusCode] = Counter()
    with grpc.insecure_channel(address(limited)) as channel:
        balance = raw_call(channel, BALANCE)
        for _burst in range(5):  # one burst nearly always overlaps; a few more make it certain in practice
            tokens = [token_for(shop, BALANCE, body) for _ in range(40)]
            futures = [balance.future(body, metadata=(("authorization", f"Bearer {t}"),), timeout=10) for t in tokens]
            for future in futures:
                try:
                    future.result()
                    codes[grpc.StatusCode.OK] += 1
                except grpc.RpcError as error:
                    codes[error.code()] += 1
            if codes[grpc.StatusCode.RESOURCE_EXHAUSTED]:
                break
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0 and codes[grpc.StatusCode.OK] > 0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes


@pytest.fixture(scope="module")
def metrics_url() -> str:
    return f"http://127.0.0.1:{start_metrics_server('127.0.0.1:0')}/metrics"


def samples(metrics_url: str) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        exposition = response.read().decode("utf-8")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    ]


def test_metrics_expose_rpcs_auth_failures_replays_and_points_without_personal_data(
    metrics_url: str, onboard: Callable[..., Partner], target: str
) -> None:
    shop = onboard()
    member = new_phone()
    request = pb.EarnPointsRequest(
        request_id=uuid.uuid4().hex, member=member, receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=12_345),
    )  # fmt: skip
    earned = shop.client.checkout.EarnPoints(request)
    assert shop.client.checkout.EarnPoints(request).idempotent_replay
    body = pb.GetBalanceRequest(member=member).SerializeToString()
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
        raw_call(channel, BALANCE)(body, timeout=5)

    exported = samples(metrics_url)

    def value(name: str, **labels: str) -> float:
        found = [v for sample_name, sample_labels, v in exported if sample_name == name and sample_labels == labels]
        assert found, f"no sample {name}{labels}"
        return found[0]

    assert value("loyalty_rpc_duration_seconds_count", method="CheckoutService/EarnPoints", code="OK") >= 2
    assert value("loyalty_rpc_duration_seconds_count", method="CheckoutService/GetBalance", code="UNAUTHENTICATED") >= 1
    assert value("loyalty_auth_failures_total", reason="MISSING_TOKEN") >= 1
    assert value("loyalty_idempotent_replays_total", method="EarnPoints") >= 1
    assert value("loyalty_points_total", operation="earned", partner=shop.partner_id) == earned.points_earned == 123

    personal = (earned.member_number, member.phone_number, member.phone_number.lstrip("+"))
    label_values = {label for _, labels, _ in exported for label in labels.values()}
    assert not [label for label in label_values if any(secret in label for secret in personal)]


def test_the_server_sweeps_lapsed_holds_to_expired(
    operator_key: OperatorKey, tmp_path: Path
) -> None:  # fmt: skip
    database_url = f"sqlite:///{tmp_path / 'sweep.db'}"
    upgrade(database_url)
    running = start_server(server_settings(database_url, operator_key, hold_sweep_seconds=0.2))
    target = f"127.0.0.1:{running.port}"
    try:
        credentials = Credentials.operator("ops-tester", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
        with CoalitionClient(target, credentials) as operator:
            operator.partner_admin.CreatePartner(
                admin_pb.CreatePartnerRequest(partner_id="sweeper", display_name="Sweeper", kind=1)
            )
            private_key, public_pem = generate_key_pair("EdDSA")
            operator.partner_admin.RegisterPartnerKey(
                admin_pb.RegisterPartnerKeyRequest(partner_id="sweeper", key_id="sweeper-1", public_key_pem=public_pem)
            )
            operator.partner_admin.CreateContractVersion(
                admin_pb.CreateContractVersionRequest(partner_id="sweeper", terms=DEFAULT_TERMS)
            )
        with CoalitionClient(target, Credentials("sweeper", "sweeper-1", private_key)) as shop:
            member = pb.MemberIdentifier(email="sweep@example.com")
            shop.checkout.EarnPoints(pb.EarnPointsRequest(
                member=member, receipt_id="R-1", enroll_if_unknown=True,
                basket=pb.Basket(currency_code="EUR", total_minor=10_000)))  # fmt: skip
            hold = shop.checkout.HoldPoints(
                pb.HoldPointsRequest(member=member, points=40, currency_code="EUR", ttl_seconds=1)
            ).hold
            engine = create_engine(database_url)
            status = "HELD"
            for _ in range(50):  # a bounded wait for the sweep, not a timing assertion
                time.sleep(0.1)
                with engine.connect() as connection:
                    status = connection.execute(
                        text("SELECT status FROM holds WHERE public_id = :h"), {"h": hold.hold_id}
                    ).scalar_one()
                if status == "EXPIRED":
                    break
            engine.dispose()
            assert status == "EXPIRED"
            balance = shop.checkout.GetBalance(pb.GetBalanceRequest(member=member)).balance
            assert (balance.available_points, balance.held_points) == (100, 0)
    finally:
        running.stop(0)
