"""Interceptors: metrics and access logs (outermost), error translation, authentication, the PAN guard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from auth.principal import Principal
from auth.tokens import TokenVerifier
from common.errors import Unauthenticated
from common.pan import refuse_pan
from server import metrics
from server.errors import status_for_exception

log = logging.getLogger(__name__)

# Health checks and reflection are the only calls served without a token.
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)
_status_code: ContextVar[grpc.StatusCode] = ContextVar("status_code", default=grpc.StatusCode.OK)

# grpc-stubs make ServerInterceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _refuse_streaming(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "streaming calls are not served yet")


_REFUSE_STREAMING = grpc.stream_stream_rpc_method_handler(_refuse_streaming)


def current_principal() -> Principal:
    """The caller the auth interceptor verified for this RPC."""
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no authenticated principal: is the auth interceptor installed?")
    return principal


def _unary(
    continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
    details: grpc.HandlerCallDetails,
) -> Any:
    handler = continuation(details)
    if handler is None or handler.request_streaming or handler.response_streaming:
        return None
    return handler


def short_method(full_method: str) -> str:
    """'/loyalty.v1.CheckoutService/EarnPoints' -> 'CheckoutService/EarnPoints' (a bounded label)."""
    service, _, method = full_method.rpartition("/")
    return f"{service.rpartition('.')[2]}/{method}"


class MetricsInterceptor(_ServerInterceptor):
    """Latency by method and code, RPCs in flight, and one access-log line per failed RPC."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = _unary(continuation, details)
        if handler is None:
            return continuation(details)
        method, behavior = short_method(details.method), handler.unary_unary

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            metrics.RPCS_IN_FLIGHT.inc()
            started = time.perf_counter()
            _status_code.set(grpc.StatusCode.OK)
            try:
                return behavior(request, context)
            finally:
                elapsed = time.perf_counter() - started
                code = _status_code.get()
                metrics.RPCS_IN_FLIGHT.dec()
                metrics.RPC_DURATION_SECONDS.labels(method=method, code=code.name).observe(elapsed)
                if code is not grpc.StatusCode.OK:
                    log.info("rpc failed", extra={"rpc": method, "code": code.name, "ms": round(elapsed * 1e3, 2)})

        return handler._replace(unary_unary=measured)


class ErrorInterceptor(_ServerInterceptor):
    """Turns every exception into a status from the catalog, with ErrorInfo; never UNKNOWN."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = _unary(continuation, details)
        if handler is None:
            return continuation(details)
        behavior: Behavior = handler.unary_unary

        def translated(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as error:
                status = status_for_exception(error, details.method)
                _status_code.set(status.code)
                context.abort_with_status(status)

        return handler._replace(unary_unary=translated)


class PanGuardInterceptor(_ServerInterceptor):
    """Refuses any request with a card number in any text field, before it reaches a service."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = _unary(continuation, details)
        if handler is None or details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return continuation(details)
        behavior: Behavior = handler.unary_unary

        def guarded(request: Message, context: grpc.ServicerContext) -> Any:
            _refuse_pans(request, "")
            return behavior(request, context)

        return handler._replace(unary_unary=guarded)


def _refuse_pans(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        name = prefix + field.name
        values = value if field.is_repeated else [value]
        for item in values:
            if field.type == FieldDescriptor.TYPE_STRING:
                refuse_pan(name, item)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                _refuse_pans(item, name + ".")


class AuthInterceptor(_ServerInterceptor):
    """Verifies the bearer token against the raw request bytes before the request is parsed."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return continuation(details)
        handler = _unary(continuation, details)
        if handler is None:
            # Fail closed: a streaming method added later is refused until it is authenticated here.
            return None if continuation(details) is None else _REFUSE_STREAMING
        behavior: Behavior = handler.unary_unary
        deserialize: Callable[[bytes], Any] = handler.request_deserializer

        def authenticated(raw_request: bytes, context: grpc.ServicerContext) -> Any:
            authorization = dict(context.invocation_metadata()).get("authorization")
            try:
                principal = self.verifier.verify(
                    str(authorization) if authorization else None, method=details.method, body=raw_request
                )
            except Unauthenticated as error:
                metrics.AUTH_FAILURES_TOTAL.labels(reason=error.reason).inc()
                raise
            token = _principal.set(principal)
            try:
                return behavior(deserialize(raw_request), context)
            finally:
                _principal.reset(token)

        # No deserializer: gRPC hands over the raw bytes, which the token's body hash must match.
        return handler._replace(unary_unary=authenticated, request_deserializer=None)
