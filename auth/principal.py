"""Who is calling: a partner (identified by its registered key) or an operator staff member with roles."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from common.errors import PermissionDenied


class MissingRole(PermissionDenied):
    reason = "MISSING_ROLE"


class PartnerTokenRequired(PermissionDenied):
    reason = "PARTNER_TOKEN_REQUIRED"


class PrincipalKind(StrEnum):
    PARTNER = "partner"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    subject: str
    partner_id: int | None
    partner_code: str | None
    roles: frozenset[str]

    def __post_init__(self) -> None:
        is_partner = self.kind is PrincipalKind.PARTNER
        has_partner = self.partner_id is not None and self.partner_code is not None
        if is_partner != has_partner:
            raise ValueError("a partner principal needs partner_id and partner_code; an operator has neither")
        if is_partner and self.roles:
            raise ValueError("a partner principal carries no roles")

    @property
    def idempotency_scope(self) -> str:
        """Namespace for idempotency keys, so two callers never collide on the same key."""
        if self.kind is PrincipalKind.PARTNER:
            return f"partner:{self.partner_code}"
        return f"operator:{self.subject}"

    def require_role(self, role: str) -> None:
        if self.kind is not PrincipalKind.OPERATOR or role not in self.roles:
            raise MissingRole(f"this call needs the operator role {role}", role=role)

    def require_any_role(self, *roles: str) -> None:
        """Operator staff with at least one of ``roles``; the refusal names them all."""
        if self.kind is not PrincipalKind.OPERATOR or not self.roles.intersection(roles):
            raise MissingRole(f"this call needs one of the operator roles {', '.join(roles)}", role=roles[0])

    def require_partner(self) -> tuple[int, str]:
        """Returns (partner_id, partner_code) of a partner caller; operators are refused."""
        if self.partner_id is None or self.partner_code is None:
            raise PartnerTokenRequired("this call must be made with a partner token")
        return self.partner_id, self.partner_code
