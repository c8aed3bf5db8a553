"""One exception root for the domain; each concrete error states a fact and a stable reason."""

from __future__ import annotations

from typing import Any, ClassVar


class CoalitionError(Exception):
    """Root of every error the domain raises on purpose.

    Subclasses pick a kind (one of the classes below) and a stable UPPER_SNAKE ``reason``;
    the server's catalog maps the kind to a gRPC status code.
    """

    reason: ClassVar[str] = "COALITION_ERROR"
    #: Whether an idempotent write stores this outcome so that a retry cannot flip it.
    is_business_outcome: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[CoalitionError]]] = {}

    def __init__(self, message: str, **metadata: Any) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {key: str(value) for key, value in metadata.items()}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" in cls.__dict__:
            if cls.reason in CoalitionError.registry:
                raise TypeError(f"duplicate error reason {cls.reason}")
            CoalitionError.registry[cls.reason] = cls

    @classmethod
    def from_stored(cls, reason: str, message: str, metadata: dict[str, str]) -> CoalitionError:
        """Rebuilds an error stored with an idempotency record."""
        error_class = CoalitionError.registry.get(reason, CoalitionError)
        error = error_class.__new__(error_class)
        CoalitionError.__init__(error, message, **metadata)
        return error


# Kinds. Concrete errors subclass exactly one of these.
class InvalidArgument(CoalitionError):
    reason = "INVALID_ARGUMENT"


class NotFound(CoalitionError):
    reason = "NOT_FOUND"


class AlreadyExists(CoalitionError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(CoalitionError):
    reason = "FAILED_PRECONDITION"
    is_business_outcome = True


class PermissionDenied(CoalitionError):
    reason = "PERMISSION_DENIED"


class Unauthenticated(CoalitionError):
    reason = "UNAUTHENTICATED"


class Conflict(CoalitionError):
    reason = "CONFLICT"


class RateLimited(CoalitionError):
    reason = "RATE_LIMITED"
    is_business_outcome = True


class Unavailable(CoalitionError):
    reason = "UNAVAILABLE"


ERROR_KINDS: tuple[type[CoalitionError], ...] = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    Conflict,
    RateLimited,
    Unavailable,
)


class IdempotencyKeyReused(Conflict):
    reason = "IDEMPOTENCY_KEY_REUSED"


class TransactionContention(Unavailable):
    reason = "TRANSACTION_CONTENTION"
