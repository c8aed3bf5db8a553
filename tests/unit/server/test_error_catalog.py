"""The error catalog maps every domain error to a gRPC status with ErrorInfo; anything else is INTERNAL."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re

import grpc
import pytest
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy.exc import DBAPIError, OperationalError

from common import errors
from server.errors import ERROR_DOMAIN, STATUS_BY_KIND, status_code_for, status_for_exception

OUR_PACKAGES = (
    "common",
    "partners",
    "members",
    "ledger",
    "checkout",
    "auth",
    "settlement",
    "programme",
    "cards",
    "server",
    "sdk",
)
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
METHOD = "/loyalty.v1.CheckoutService/EarnPoints"


def import_everything() -> None:
    """Imports every module of our packages so that every error class is defined and registered."""
    for name in OUR_PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(module.name)


def all_subclasses(root: type[errors.CoalitionError]) -> set[type[errors.CoalitionError]]:
    found: set[type[errors.CoalitionError]] = set()
    pending = [root]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass not in found:
                found.add(subclass)
                pending.append(subclass)
    return found


def ours(error_class: type[errors.CoalitionError]) -> bool:
    return error_class.__module__.split(".")[0] in OUR_PACKAGES


import_everything()
ERROR_CLASSES = sorted(
    (error_class for error_class in all_subclasses(errors.CoalitionError) if ours(error_class)),
    key=lambda error_class: f"{error_class.__module__}.{error_class.__qualname__}",
)
CONCRETE_ERRORS = [error_class for error_class in ERROR_CLASSES if error_class not in errors.ERROR_KINDS]


def class_id(error_class: type[errors.CoalitionError]) -> str:
    return error_class.__qualname__


def error_info_of(status: grpc.Status) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    rich = status_pb2.Status.FromString(details)
    assert len(rich.details) == 1
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    return rich, info


def test_the_catalog_sees_the_errors_of_every_package() -> None:
    modules = {error_class.__module__ for error_class in CONCRETE_ERRORS}
    for package in ("common", "partners", "members", "checkout", "auth", "programme", "cards", "server"):
        assert any(module.startswith(f"{package}.") for module in modules), package
    assert len(CONCRETE_ERRORS) >= 50


def test_every_kind_is_in_the_catalog() -> None:
    assert set(STATUS_BY_KIND) == set(errors.ERROR_KINDS)


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=class_id)
def test_every_error_maps_to_a_deliberate_status(error_class: type[errors.CoalitionError]) -> None:
    code = status_code_for(error_class("something happened"))

    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)


@pytest.mark.parametrize("error_class", CONCRETE_ERRORS, ids=class_id)
def test_every_concrete_error_has_exactly_one_kind(error_class: type[errors.CoalitionError]) -> None:
    kinds = [kind for kind in errors.ERROR_KINDS if issubclass(error_class, kind)]

    assert len(kinds) == 1
    assert status_code_for(error_class("x")) is STATUS_BY_KIND[kinds[0]]


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=class_id)
def test_every_error_has_its_own_upper_snake_reason(error_class: type[errors.CoalitionError]) -> None:
    assert "reason" in error_class.__dict__, "inherits its parent's reason"
    assert UPPER_SNAKE.match(error_class.reason), error_class.reason
    assert errors.CoalitionError.registry[error_class.reason] is error_class


def test_reasons_are_unique() -> None:
    reasons = [error_class.reason for error_class in ERROR_CLASSES]

    assert len(reasons) == len(set(reasons))
    assert errors.CoalitionError.reason not in reasons


def test_a_duplicate_reason_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="duplicate error reason"):

        class AnotherInsufficientPoints(errors.FailedPrecondition):
            reason = "INVALID_ARGUMENT"


@pytest.mark.parametrize("error_class", CONCRETE_ERRORS, ids=class_id)
def test_a_domain_error_carries_its_reason_in_error_info(error_class: type[errors.CoalitionError]) -> None:
    error = error_class("the fact that happened", points="5", partner_id=7)

    status = status_for_exception(error, METHOD)

    rich, info = error_info_of(status)
    assert status.code is status_code_for(error)
    assert status.details == "the fact that happened"
    assert rich.code == status.code.value[0]
    assert rich.message == "the fact that happened"
    assert info.reason == error_class.reason
    assert info.domain == ERROR_DOMAIN == "coalition.loyalty"
    assert dict(info.metadata) == {"points": "5", "partner_id": "7"}


def test_a_stored_error_rebuilds_as_its_class() -> None:
    for error_class in CONCRETE_ERRORS:
        rebuilt = errors.CoalitionError.from_stored(error_class.reason, "stored", {"a": "b"})
        assert type(rebuilt) is error_class
        assert (rebuilt.message, rebuilt.metadata) == ("stored", {"a": "b"})


def test_an_unexpected_error_is_internal_with_a_generic_message(caplog: pytest.LogCaptureFixture) -> None:
    secret = "password=hunter2 at db.internal:5432"
    with caplog.at_level(logging.ERROR, logger="server.errors"):
        try:
            raise RuntimeError(secret)
        except RuntimeError as error:
            status = status_for_exception(error, METHOD)

    rich, info = error_info_of(status)
    assert status.code is grpc.StatusCode.INTERNAL
    assert rich.code == grpc.StatusCode.INTERNAL.value[0]
    assert status.details == rich.message == "internal error"
    assert info.reason == "INTERNAL"
    assert info.domain == "coalition.loyalty"
    assert dict(info.metadata) == {}
    assert secret not in str(status)
    # The stack goes to the log, not to the caller.
    assert any(record.exc_info and METHOD in record.getMessage() for record in caplog.records)


def test_a_malformed_request_is_invalid_argument() -> None:
    status = status_for_exception(DecodeError("Error parsing message"), METHOD)

    _, info = error_info_of(status)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "MALFORMED_REQUEST"


class _TimedOut(Exception):
    sqlstate = "57014"


def test_a_database_timeout_is_deadline_exceeded() -> None:
    error = OperationalError("SELECT 1", {}, _TimedOut("canceling statement due to statement timeout"))

    status = status_for_exception(error, METHOD)

    _, info = error_info_of(status)
    assert status.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.reason == "SERVER_DEADLINE_EXCEEDED"


def test_an_unreachable_database_is_unavailable() -> None:
    error = OperationalError("SELECT 1", {}, Exception("connection refused"))

    status = status_for_exception(error, METHOD)

    _, info = error_info_of(status)
    assert status.code is grpc.StatusCode.UNAVAILABLE
    assert info.reason == "DATABASE_UNAVAILABLE"
    assert "connection refused" not in status.details


def test_other_database_errors_are_internal() -> None:
    error = DBAPIError("INSERT ...", {}, Exception("constraint violated: secret_column"))

    status = status_for_exception(error, METHOD)

    _, info = error_info_of(status)
    assert status.code is grpc.StatusCode.INTERNAL
    assert info.reason == "INTERNAL"
    assert "secret_column" not in status.details
