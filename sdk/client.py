"""A small gRPC client for partners and operator tools.

It signs a fresh token for every attempt over the exact bytes it sends, fills in and keeps the
idempotency key (``request_id``) across retries, sets a deadline on every call, and retries only
what is safe: transient failures of reads and of writes that carry an idempotency key. A call that
streams its response (``settlement.ClosePeriod``) returns an iterator of messages and is not retried:
a failure can come after messages were read, so the caller decides (a close is safe to call again).
Every call takes ``timeout=`` seconds to override the default deadline, for example for a long close.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loyalty.v1 import (
    card_service_pb2,
    checkout_service_pb2,
    household_service_pb2,
    member_service_pb2,
    network_policy_service_pb2,
    partner_admin_service_pb2,
    partner_programme_service_pb2,
    settlement_service_pb2,
    support_service_pb2,
)

from common.clock import Clock
from common.ids import new_id
from sdk.tokens import TYP_OPERATOR, TYP_PARTNER, SigningKey, sign_request_token

RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


@dataclass(frozen=True)
class Credentials:
    """Who signs: a partner (issuer = partner id) or an operator staff member (with roles)."""

    issuer: str
    key_id: str
    private_key: SigningKey
    token_type: str = TYP_PARTNER
    subject: str | None = None
    roles: Sequence[str] = ()

    @classmethod
    def operator(cls, staff_id: str, key_id: str, private_key: SigningKey, roles: Sequence[str]) -> Credentials:
        return cls("coalition-operator", key_id, private_key, TYP_OPERATOR, staff_id, tuple(roles))


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the server: which CA to trust and, for mutual TLS, this partner's certificate and key (PEM files).

    ``ca_file=None`` trusts the usual public roots. ``server_name`` overrides the host name the server's
    certificate must carry, for when the target is an address the certificate does not name.
    """

    ca_file: str | Path | None = None
    client_cert_file: str | Path | None = None
    client_key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("give both client_cert_file and client_key_file, or neither")

    def channel(self, target: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file), private_key=_read(self.client_key_file),
            certificate_chain=_read(self.client_cert_file),
        )  # fmt: skip
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(target, credentials, options=options)


def open_channel(target: str, tls: TlsOptions | None = None) -> grpc.Channel:
    """A channel to ``target``: plaintext without ``tls`` (local development), TLS with it."""
    return tls.channel(target) if tls else grpc.insecure_channel(target)


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carried, if any (its ``reason`` is the stable error code)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


class CoalitionClient:
    """``client.checkout.EarnPoints(request)``, ``client.partner_admin.CreatePartner(request)`` and
    ``client.settlement.GetStatement(request)``.

    ``clock`` is where token times come from (the system clock unless a test moves the server's).
    ``tls`` turns on TLS (and mutual TLS with a client certificate); without it the channel is plaintext.
    """

    def __init__(
        self,
        target: str,
        credentials: Credentials,
        *,
        audience: str = "coalition",
        deadline_seconds: float = 5.0,
        max_attempts: int = 3,
        channel: grpc.Channel | None = None,
        clock: Clock | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        self.credentials = credentials
        self.audience = audience
        self.deadline_seconds = deadline_seconds
        self.max_attempts = max_attempts
        self.channel = channel or open_channel(target, tls)
        self.clock = clock
        self.checkout = ServiceClient(self, checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"])
        self.partner_admin = ServiceClient(
            self, partner_admin_service_pb2.DESCRIPTOR.services_by_name["PartnerAdminService"]
        )
        self.settlement = ServiceClient(self, settlement_service_pb2.DESCRIPTOR.services_by_name["SettlementService"])
        self.support = ServiceClient(self, support_service_pb2.DESCRIPTOR.services_by_name["SupportService"])
        self.network_policy = ServiceClient(
            self, network_policy_service_pb2.DESCRIPTOR.services_by_name["NetworkPolicyService"]
        )
        self.cards = ServiceClient(self, card_service_pb2.DESCRIPTOR.services_by_name["CardService"])
        self.members = ServiceClient(self, member_service_pb2.DESCRIPTOR.services_by_name["MemberService"])
        self.partner_programme = ServiceClient(
            self, partner_programme_service_pb2.DESCRIPTOR.services_by_name["PartnerProgrammeService"]
        )
        self.households = ServiceClient(self, household_service_pb2.DESCRIPTOR.services_by_name["HouseholdService"])

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CoalitionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, request: Message, response_type: type[Message], *, timeout: float | None = None) -> Any:
        """One RPC with signing, a deadline and safe retries."""
        body = _body(request)
        stub = self.channel.unary_unary(
            method, request_serializer=_raw_bytes, response_deserializer=response_type.FromString
        )
        for attempt in range(1, self.max_attempts + 1):
            try:
                return stub(body, timeout=timeout or self.deadline_seconds, metadata=self._authorization(method, body))
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE_CODES or attempt == self.max_attempts:
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def call_streaming(
        self, method: str, request: Message, response_type: type[Message], *, timeout: float | None = None
    ) -> Iterator[Any]:
        """One RPC whose response is a stream: its messages as they arrive, within one deadline."""
        body = _body(request)
        stub = self.channel.unary_stream(
            method, request_serializer=_raw_bytes, response_deserializer=response_type.FromString
        )
        # The call object itself: iterating reads messages, and it can also cancel() the call.
        return iter(stub(body, timeout=timeout or self.deadline_seconds, metadata=self._authorization(method, body)))

    def call_bidirectional(
        self, method: str, requests: Iterable[Message], response_type: type[Message], *, timeout: float | None = None
    ) -> Iterator[Any]:
        """A call streaming both ways: its token binds the method and an empty body, and opens this call only.

        Responses arrive as the server answers; not retried (the caller resends what got no answer:
        items of such streams are idempotent).
        """
        stub = self.channel.stream_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        return iter(stub(iter(requests), timeout=timeout, metadata=self._authorization(method, b"")))

    def _authorization(self, method: str, body: bytes) -> tuple[tuple[str, str]]:
        credentials = self.credentials
        now: datetime | None = self.clock.now() if self.clock else None
        token = sign_request_token(
            private_key=credentials.private_key, key_id=credentials.key_id, issuer=credentials.issuer,
            audience=self.audience, method=method, body=body, token_type=credentials.token_type,
            subject=credentials.subject, roles=credentials.roles, now=now,
        )  # fmt: skip
        return (("authorization", f"Bearer {token}"),)


def _body(request: Message) -> bytes:
    if "request_id" in request.DESCRIPTOR.fields_by_name and not getattr(request, "request_id"):  # noqa: B009
        request = _with_request_id(request, new_id())
    return request.SerializeToString()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _raw_bytes(body: bytes) -> bytes:
    # The body is serialized once, before signing, so the token's hash covers exactly what is sent.
    return body


def _with_request_id(request: Message, request_id: str) -> Message:
    copy = type(request)()
    copy.CopyFrom(request)
    setattr(copy, "request_id", request_id)  # noqa: B010 - the field is found through the descriptor
    return copy


class ServiceClient:
    """One attribute per RPC of a service, named as in the proto: ``method(request, timeout=None)``."""

    def __init__(self, client: CoalitionClient, service: ServiceDescriptor) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        for method in service.methods:
            self._methods[method.name] = _bind(client, f"/{service.full_name}/{method.name}", method)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError(name) from None


def _bind(client: CoalitionClient, path: str, method: MethodDescriptor) -> Callable[..., Any]:
    response_type = message_factory.GetMessageClass(method.output_type)
    if method.client_streaming and method.server_streaming:

        def bound_stream(requests: Iterable[Message], *, timeout: float | None = None) -> Any:
            return client.call_bidirectional(path, requests, response_type, timeout=timeout)

        return bound_stream
    if method.client_streaming:
        raise ValueError(f"{path}: client-streaming calls without a response stream are not supported")
    call = client.call_streaming if method.server_streaming else client.call

    def bound(request: Message, *, timeout: float | None = None) -> Any:
        return call(path, request, response_type, timeout=timeout)

    return bound
