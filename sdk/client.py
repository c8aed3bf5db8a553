"""A small gRPC client for partners and operator tools.

It signs a fresh token for every attempt over the exact bytes it sends, fills in and keeps the
idempotency key (``request_id``) across retries, sets a deadline on every call, and retries only
what is safe: transient failures of reads and of writes that carry an idempotency key.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loyalty.v1 import checkout_service_pb2, partner_admin_service_pb2

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


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carried, if any (its ``reason`` is the stable error code)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


class CoalitionClient:
    """``client.checkout.EarnPoints(request)`` and ``client.partner_admin.CreatePartner(request)``."""

    def __init__(
        self,
        target: str,
        credentials: Credentials,
        *,
        audience: str = "coalition",
        deadline_seconds: float = 5.0,
        max_attempts: int = 3,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.credentials = credentials
        self.audience = audience
        self.deadline_seconds = deadline_seconds
        self.max_attempts = max_attempts
        self.channel = channel or grpc.insecure_channel(target)
        self.checkout = ServiceClient(self, checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"])
        self.partner_admin = ServiceClient(
            self, partner_admin_service_pb2.DESCRIPTOR.services_by_name["PartnerAdminService"]
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CoalitionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, request: Message, response_type: type[Message]) -> Any:
        """One RPC with signing, a deadline and safe retries."""
        if "request_id" in request.DESCRIPTOR.fields_by_name and not getattr(request, "request_id"):  # noqa: B009
            request = _with_request_id(request, new_id())
        body = request.SerializeToString()
        stub = self.channel.unary_unary(
            method, request_serializer=_raw_bytes, response_deserializer=response_type.FromString
        )
        for attempt in range(1, self.max_attempts + 1):
            try:
                return stub(body, timeout=self.deadline_seconds, metadata=self._authorization(method, body))
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE_CODES or attempt == self.max_attempts:
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def _authorization(self, method: str, body: bytes) -> tuple[tuple[str, str]]:
        credentials = self.credentials
        token = sign_request_token(
            private_key=credentials.private_key, key_id=credentials.key_id, issuer=credentials.issuer,
            audience=self.audience, method=method, body=body, token_type=credentials.token_type,
            subject=credentials.subject, roles=credentials.roles,
        )  # fmt: skip
        return (("authorization", f"Bearer {token}"),)


def _raw_bytes(body: bytes) -> bytes:
    # The body is serialized once, before signing, so the token's hash covers exactly what is sent.
    return body


def _with_request_id(request: Message, request_id: str) -> Message:
    copy = type(request)()
    copy.CopyFrom(request)
    setattr(copy, "request_id", request_id)  # noqa: B010 - the field is found through the descriptor
    return copy


class ServiceClient:
    """One attribute per RPC of a service, named as in the proto."""

    def __init__(self, client: CoalitionClient, service: ServiceDescriptor) -> None:
        self._methods: dict[str, Callable[[Message], Any]] = {}
        for method in service.methods:
            response_type = message_factory.GetMessageClass(method.output_type)
            path = f"/{service.full_name}/{method.name}"
            self._methods[method.name] = _bind(client, path, response_type)

    def __getattr__(self, name: str) -> Callable[[Message], Any]:
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError(name) from None


def _bind(client: CoalitionClient, path: str, response_type: type[Message]) -> Callable[[Message], Any]:
    return lambda request: client.call(path, request, response_type)
