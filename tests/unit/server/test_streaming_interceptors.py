"""Server-streaming calls through the real interceptor chain: auth, PAN guard, error catalog and metrics."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from prometheus_client import REGISTRY

from auth.principal import PrincipalKind
from auth.tokens import OPERATOR_ISSUER, TokenVerifier, VerificationKey
from common.clock import SystemClock
from sdk.client import CoalitionClient, Credentials, error_info
from sdk.tokens import TYP_OPERATOR, generate_key_pair, sign_request_token
from server.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    PanGuardInterceptor,
    current_principal,
)
from settlement.periods import InvalidPeriod

OPERATOR_KID = "operator-unit"
COUNT = "/test.Streams/Count"
UPLOAD = "/test.Streams/Upload"


class MemoryReplayGuard:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def claim(self, issuer: str, jti: str, expires_at: datetime, *, partner_key_id: str | None = None) -> bool:
        assert partner_key_id is None, "only operator keys sign here, and a partner key would need confirming"
        is_new = (issuer, jti) not in self.seen
        self.seen.add((issuer, jti))
        return is_new


def count(request: StringValue, context: grpc.ServicerContext) -> Iterator[StringValue]:
    """Three messages naming the caller; "fail" fails after two, "forever" never ends."""
    step = 0
    while request.value == "forever" or step < 3:
        step += 1
        if request.value == "fail" and step == 3:
            raise InvalidPeriod("the third step fails", period="x")
        time.sleep(0.01 if request.value == "forever" else 0)
        yield StringValue(value=f"{current_principal().subject}: {step}")


def upload(requests: Iterator[StringValue], context: grpc.ServicerContext) -> StringValue:
    return StringValue(value=str(len(list(requests))))


HANDLERS = {
    "Count": grpc.unary_stream_rpc_method_handler(
        count, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
    ),
    "Upload": grpc.stream_unary_rpc_method_handler(
        upload, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
    ),
}


@pytest.fixture(scope="module")
def keys() -> tuple[Any, TokenVerifier]:
    private_key, _ = generate_key_pair("ES256")
    key = VerificationKey(
        key_id=OPERATOR_KID, algorithm="ES256", public_key=private_key.public_key(), kind=PrincipalKind.OPERATOR,
        partner_id=None, partner_code=None, is_active=True,
    )  # fmt: skip
    verifier = TokenVerifier(
        audience="coalition", clock=SystemClock(), partner_keys=MemoryKeys(), operator_keys={OPERATOR_KID: key},
        replay_guard=MemoryReplayGuard(),
    )  # fmt: skip
    return private_key, verifier


class MemoryKeys:
    def find_key(self, key_id: str, *, fresh: bool = False) -> VerificationKey | None:
        return None


@pytest.fixture(scope="module")
def target(keys: tuple[Any, TokenVerifier]) -> Iterator[str]:
    _, verifier = keys
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        interceptors=[MetricsInterceptor(), ErrorInterceptor(), AuthInterceptor(verifier), PanGuardInterceptor()],
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Streams", HANDLERS)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def client(keys: tuple[Any, TokenVerifier], target: str) -> Iterator[CoalitionClient]:
    credentials = Credentials.operator("ops-1", OPERATOR_KID, keys[0], ["finance"])
    with CoalitionClient(target, credentials) as sdk_client:
        yield sdk_client


def stream(client: CoalitionClient, value: str) -> Iterator[str]:
    for message in client.call_streaming(COUNT, StringValue(value=value), StringValue):
        yield message.value


def observed(code: str) -> float:
    return (
        REGISTRY.get_sample_value("loyalty_rpc_duration_seconds_count", {"method": "Streams/Count", "code": code}) or 0
    )


def test_each_message_is_produced_as_the_verified_caller(client: CoalitionClient) -> None:
    before = observed("OK")
    assert list(stream(client, "ok")) == ["ops-1: 1", "ops-1: 2", "ops-1: 3"]
    assert observed("OK") == before + 1


def test_an_error_mid_stream_reaches_the_client_as_its_catalog_status(client: CoalitionClient) -> None:
    before = observed("INVALID_ARGUMENT")
    received: list[str] = []
    with pytest.raises(grpc.RpcError) as raised:
        received.extend(stream(client, "fail"))
    info = error_info(raised.value)
    assert received == ["ops-1: 1", "ops-1: 2"]
    assert (raised.value.code(), info.reason if info else "") == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PERIOD")
    assert observed("INVALID_ARGUMENT") == before + 1


def test_a_stream_without_a_token_or_with_a_card_number_never_starts(client: CoalitionClient, target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        unsigned = channel.unary_stream(COUNT, StringValue.SerializeToString, StringValue.FromString)
        with pytest.raises(grpc.RpcError) as raised:
            list(unsigned(StringValue(value="ok"), timeout=5))
    info = error_info(raised.value)
    assert (raised.value.code(), info.reason if info else "") == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")
    with pytest.raises(grpc.RpcError) as refused:
        list(stream(client, "4111 1111 1111 1111"))
    info = error_info(refused.value)
    assert (refused.value.code(), info.reason if info else "") == (grpc.StatusCode.INVALID_ARGUMENT, "PAN_NOT_ALLOWED")


def test_a_cancelled_stream_is_measured_as_cancelled(client: CoalitionClient) -> None:
    before = observed("CANCELLED")
    call: Any = client.call_streaming(COUNT, StringValue(value="forever"), StringValue)
    assert next(call).value == "ops-1: 1"
    call.cancel()
    deadline = time.monotonic() + 5
    while observed("CANCELLED") == before:
        assert time.monotonic() < deadline, "the abandoned stream was never measured"
        time.sleep(0.01)


def test_client_streaming_calls_stay_refused(client: CoalitionClient) -> None:
    upload_call = client.channel.stream_unary(UPLOAD, StringValue.SerializeToString, StringValue.FromString)
    with pytest.raises(grpc.RpcError) as raised:
        upload_call(iter([StringValue(value="a")]), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_caller_is_set_for_each_step_whatever_context_resumes_the_stream(keys: tuple[Any, TokenVerifier]) -> None:
    """grpc may resume a response generator in another context: each step still sees the caller."""
    private_key, verifier = keys
    body = StringValue(value="ok").SerializeToString()
    token = sign_request_token(
        private_key=private_key, key_id=OPERATOR_KID, issuer=OPERATOR_ISSUER, audience="coalition", method=COUNT,
        body=body, token_type=TYP_OPERATOR, subject="ops-2", roles=["finance"],
    )  # fmt: skip
    handler = AuthInterceptor(verifier).intercept_service(lambda _details: HANDLERS["Count"], CallDetails(COUNT))
    responses = handler.unary_stream(body, MetadataOnlyContext((("authorization", f"Bearer {token}"),)))
    steps = [contextvars.Context().run(next, responses).value for _ in range(3)]
    assert steps == ["ops-2: 1", "ops-2: 2", "ops-2: 3"]
    with pytest.raises(RuntimeError):
        current_principal()  # nothing leaks out of the stream's steps


class CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class MetadataOnlyContext:
    """The one thing the auth interceptor reads from a servicer context."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata
