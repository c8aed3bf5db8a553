"""The error catalog: each domain error kind maps to one gRPC status; the reason travels in ErrorInfo."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common import errors

log = logging.getLogger(__name__)

ERROR_DOMAIN = "coalition.loyalty"

STATUS_BY_KIND: dict[type[errors.CoalitionError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

# PostgreSQL query_canceled (statement_timeout) and lock_not_available (lock_timeout).
_TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})


def status_code_for(error: errors.CoalitionError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        code = STATUS_BY_KIND.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> grpc.Status:
    """A google.rpc.Status carrying ErrorInfo, as AIP-193 asks."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


def status_for_exception(error: BaseException, method: str) -> grpc.Status:
    """Translates anything a handler raised; what the catalog does not know becomes INTERNAL."""
    if isinstance(error, errors.CoalitionError):
        return rich_status(status_code_for(error), error.message, error.reason, error.metadata)
    if isinstance(error, DecodeError):
        return rich_status(
            grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid message", "MALFORMED_REQUEST", {}
        )
    if isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) in _TIMEOUT_SQLSTATES:
        return rich_status(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the server's deadline passed", "SERVER_DEADLINE_EXCEEDED", {}
        )
    if isinstance(error, PoolTimeout | OperationalError):
        log.warning("database unavailable during %s: %s", method, type(error).__name__)
        return rich_status(grpc.StatusCode.UNAVAILABLE, "the ledger is unavailable; retry", "DATABASE_UNAVAILABLE", {})
    log.exception("unhandled error in %s", method)
    return rich_status(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL", {})
