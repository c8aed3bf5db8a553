"""Interceptors: metrics and access logs (outermost), error translation, authentication, the PAN guard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from auth.principal import Principal
from auth.tokens import KeyRevoked, TokenClaim, TokenReplayed, TokenVerifier
from common.errors import CoalitionError, Unauthenticated
from common.pan import PanNotAllowed, refuse_pan
from server import metrics
from server.errors import status_for_exception
from server.tls import ClientCertificatePolicy

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
_END = object()


def _refuse_streaming(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "client-streaming calls are not served")


_REFUSE_STREAMING = grpc.stream_stream_rpc_method_handler(_refuse_streaming)


def current_principal() -> Principal:
    """The caller the auth interceptor verified for this RPC."""
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no authenticated principal: is the auth interceptor installed?")
    return principal


def _served(
    continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
    details: grpc.HandlerCallDetails,
    *,
    request_streams: bool = False,
) -> Any:
    """The handler if these interceptors wrap it: one request in, one response or a blocking stream out.

    With ``request_streams``, bidirectional calls too (the auth interceptor
    authenticates those apart, see ``_authenticated_request_stream``). Streams written through a
    callback (health's Watch) are passed through untouched.
    """
    handler = continuation(details)
    if handler is None or handler is _REFUSE_STREAMING:
        return None
    if handler.request_streaming and not (request_streams and handler.response_streaming):
        return None
    if handler.response_streaming and getattr(handler.unary_stream, "experimental_non_blocking", False):
        return None
    return handler


def _replace_behavior(handler: Any, wrap: Callable[[Behavior], Behavior]) -> Any:
    if handler.request_streaming and handler.response_streaming:
        return handler._replace(stream_stream=wrap(handler.stream_stream))
    if handler.response_streaming:
        return handler._replace(unary_stream=wrap(handler.unary_stream))
    return handler._replace(unary_unary=wrap(handler.unary_unary))


def short_method(full_method: str) -> str:
    """'/loyalty.v1.CheckoutService/EarnPoints' -> 'CheckoutService/EarnPoints' (a bounded label)."""
    service, _, method = full_method.rpartition("/")
    return f"{service.rpartition('.')[2]}/{method}"


class MetricsInterceptor(_ServerInterceptor):
    """Latency by method and code, RPCs in flight, and one access-log line per failed RPC."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = _served(continuation, details, request_streams=True)
        if handler is None:
            return continuation(details)
        method = short_method(details.method)

        def wrap(behavior: Behavior) -> Behavior:
            def measured(request: Any, context: grpc.ServicerContext) -> Any:
                with _measured(method):
                    return behavior(request, context)

            def measured_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with _measured(method):  # until the stream ends, fails or is abandoned
                    yield from behavior(request, context)

            return measured_stream if handler.response_streaming else measured

        return _replace_behavior(handler, wrap)


@contextmanager
def _measured(method: str) -> Iterator[None]:
    metrics.RPCS_IN_FLIGHT.inc()
    started = time.perf_counter()
    _status_code.set(grpc.StatusCode.OK)
    try:
        yield
    except GeneratorExit:
        # grpc drops a stream whose client cancelled or went away.
        _status_code.set(grpc.StatusCode.CANCELLED)
        raise
    finally:
        elapsed = time.perf_counter() - started
        code = _status_code.get()
        metrics.RPCS_IN_FLIGHT.dec()
        metrics.RPC_DURATION_SECONDS.labels(method=method, code=code.name).observe(elapsed)
        if code is not grpc.StatusCode.OK:
            log.info("rpc failed", extra={"rpc": method, "code": code.name, "ms": round(elapsed * 1e3, 2)})


class ErrorInterceptor(_ServerInterceptor):
    """Turns every exception into a status from the catalog, with ErrorInfo; never UNKNOWN."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = _served(continuation, details, request_streams=True)
        if handler is None:
            return continuation(details)

        def abort(error: Exception, context: grpc.ServicerContext) -> NoReturn:
            status = status_for_exception(error, details.method)
            _status_code.set(status.code)
            context.abort_with_status(status)

        def wrap(behavior: Behavior) -> Behavior:
            def translated(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except Exception as error:
                    abort(error, context)

            def translated_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(request, context)
                except Exception as error:  # raised by any step of the stream, including its first
                    abort(error, context)

            return translated_stream if handler.response_streaming else translated

        return _replace_behavior(handler, wrap)


class PanGuardInterceptor(_ServerInterceptor):
    """Refuses any request with a card number in any text field, before it reaches a service.

    In a client stream each message is checked as it is read: one holding a card number reaches the
    servicer as a ``RefusedMessage`` (answered on its own) and the stream goes on. The elements of a
    streamed message's repeated message fields (a batch of items) are checked one by one: those
    holding a card number are cleared and reported in a ``RefusedElements``, the others go on.
    """

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = _served(continuation, details, request_streams=True)
        if handler is None or details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return continuation(details)
        if handler.request_streaming:
            return _replace_behavior(
                handler, lambda behavior: lambda requests, context: behavior(_pan_checked(requests), context)
            )

        def wrap(behavior: Behavior) -> Behavior:
            def guarded(request: Message, context: grpc.ServicerContext) -> Any:
                _refuse_pans(request, "")
                return behavior(request, context)  # a response, or a stream's iterator

            return guarded

        return _replace_behavior(handler, wrap)


@dataclass(frozen=True)
class RefusedMessage:
    """A streamed request message the PAN guard refused; the servicer answers it with the error."""

    error: CoalitionError


@dataclass(frozen=True)
class RefusedElements:
    """A streamed request message some elements of whose repeated message fields the PAN guard refused.

    The refused elements are cleared in ``message`` (what they held goes no further); ``errors`` maps
    each one's (field name, index) to its error, for the servicer to answer those elements alone.
    """

    message: Message
    errors: Mapping[tuple[str, int], CoalitionError]


def _pan_checked(requests: Iterator[Message]) -> Iterator[Message | RefusedMessage | RefusedElements]:
    for request in requests:
        refused: dict[tuple[str, int], CoalitionError] = {}
        try:
            for field, value in request.ListFields():
                if not _is_element_list(field):
                    _refuse_field_pans(field, value, field.name)
                    continue
                for index, element in enumerate(value):
                    try:
                        _refuse_pans(element, f"{field.name}[{index}].")
                    except PanNotAllowed as error:
                        refused[(field.name, index)] = error
        except PanNotAllowed as error:
            yield RefusedMessage(error)  # the message itself goes no further
            continue
        if not refused:
            yield request
            continue
        for name, index in refused:
            getattr(request, name)[index].Clear()
        yield RefusedElements(request, refused)


def _is_element_list(field: FieldDescriptor) -> bool:
    if not field.is_repeated or field.message_type is None:
        return False
    return not field.message_type.GetOptions().map_entry


def _refuse_pans(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        _refuse_field_pans(field, value, prefix + field.name)


def _refuse_field_pans(field: FieldDescriptor, value: Any, name: str) -> None:
    values = value if field.is_repeated else [value]
    for item in values:
        if field.type == FieldDescriptor.TYPE_STRING:
            refuse_pan(name, item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            _refuse_pans(item, name + ".")


class AuthInterceptor(_ServerInterceptor):
    """Verifies the bearer token against the raw request bytes before the request is parsed.

    With a certificate policy, the verified caller must also match the client certificate of the
    connection, for the partners that asked for mutual TLS.

    For unary methods under ``claim_with_work`` (the checkout API: a dozen statements a call, every
    one of its transactions on the RPC's own thread), the token id is claimed by the call's first
    committed transaction rather than on its own beforehand (``TokenVerifier.spent_by_first_commit``):
    one database round trip and connection checkout fewer on the hot path, with the same guarantees.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        certificate_policy: ClientCertificatePolicy | None = None,
        *,
        claim_with_work: tuple[str, ...] = (),
    ) -> None:
        self.verifier = verifier
        self.certificate_policy = certificate_policy
        self.claim_with_work = claim_with_work

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return continuation(details)
        found = continuation(details)
        # Bidirectional streams are authenticated below; client-streaming calls with one response stay refused.
        if found is not None and found.request_streaming and found.response_streaming:
            return self._authenticated_request_stream(found, details)
        continuation = lambda _details: found  # noqa: E731 - asked once, answered twice below
        handler = _served(continuation, details)
        if handler is None:
            # Fail closed: a client-streaming method added later is refused until it is authenticated here.
            return None if continuation(details) is None else _REFUSE_STREAMING
        deserialize: Callable[[bytes], Any] = handler.request_deserializer
        behavior: Behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary

        def verify(raw_request: bytes, context: grpc.ServicerContext) -> tuple[Principal, TokenClaim]:
            authorization = dict(context.invocation_metadata()).get("authorization")
            try:
                principal, claim = self.verifier.verify_unclaimed(
                    str(authorization) if authorization else None, method=details.method, body=raw_request
                )
                if self.certificate_policy is not None:
                    # grpc-stubs type the values as bytes; gRPC gives a list of values per property.
                    auth_context = cast(Mapping[str, Iterable[bytes]], context.auth_context())
                    self.certificate_policy.check(principal, auth_context)
                return principal, claim
            except Unauthenticated as error:
                metrics.AUTH_FAILURES_TOTAL.labels(reason=error.reason).inc()
                raise

        claims_with_work = details.method.startswith(self.claim_with_work)

        def spent(claim: TokenClaim) -> Any:
            """Where the claim is spent: now, or by the call's first committed transaction."""
            if not claims_with_work:
                self.verifier.spend(claim)
                return nullcontext()
            return self.verifier.spent_by_first_commit(claim)

        def authenticated(raw_request: bytes, context: grpc.ServicerContext) -> Any:
            principal, claim = verify(raw_request, context)
            token = _principal.set(principal)
            try:
                with _counting_auth_failures(), spent(claim):
                    return behavior(deserialize(raw_request), context)
            finally:
                _principal.reset(token)

        def authenticated_stream(raw_request: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            principal, claim = verify(raw_request, context)
            with _counting_auth_failures():
                self.verifier.spend(claim)
            request = deserialize(raw_request)
            return _steps_as(principal, lambda: behavior(request, context))

        # No deserializer: gRPC hands over the raw bytes, which the token's body hash must match.
        if handler.response_streaming:
            return handler._replace(unary_stream=authenticated_stream, request_deserializer=None)
        return handler._replace(unary_unary=authenticated, request_deserializer=None)

    def _authenticated_request_stream(self, handler: Any, details: grpc.HandlerCallDetails) -> Any:
        return _authenticate_stream_call(self, handler, details)


@contextmanager
def _counting_auth_failures() -> Iterator[None]:
    """Counts a refusal of the token's claim (a replay, a key revoked since) like any auth failure."""
    try:
        yield
    except (TokenReplayed, KeyRevoked) as error:
        metrics.AUTH_FAILURES_TOTAL.labels(reason=error.reason).inc()
        raise


def _authenticate_stream_call(interceptor: AuthInterceptor, handler: Any, details: grpc.HandlerCallDetails) -> Any:
    """A bidirectional call: the token is signed over the method and an empty
    body, checked once when the call starts, and used once (its ``jti``) like any other token. The
    items are authenticated by the call that carries them."""
    behavior: Behavior = handler.stream_stream

    def verify(context: grpc.ServicerContext) -> Principal:
        authorization = dict(context.invocation_metadata()).get("authorization")
        try:
            principal = interceptor.verifier.verify(
                str(authorization) if authorization else None, method=details.method, body=b""
            )
            if interceptor.certificate_policy is not None:
                auth_context = cast(Mapping[str, Iterable[bytes]], context.auth_context())
                interceptor.certificate_policy.check(principal, auth_context)
            return principal
        except Unauthenticated as error:
            metrics.AUTH_FAILURES_TOTAL.labels(reason=error.reason).inc()
            raise

    def authenticated_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        principal = verify(context)
        return _steps_as(principal, lambda: behavior(requests, context))

    return handler._replace(stream_stream=authenticated_stream)


def _steps_as(principal: Principal, start: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """Runs a response stream with ``principal`` as the caller, setting it around each step.

    A stream is a lazy generator that grpc resumes once per message, possibly in another context, so
    the principal cannot be set once around the whole call as it is for a unary one.
    """
    responses: Iterator[Any] | None = None
    while True:
        token = _principal.set(principal)
        try:
            if responses is None:
                responses = iter(start())
            response = next(responses, _END)
        finally:
            _principal.reset(token)
        if response is _END:
            return
        yield response
