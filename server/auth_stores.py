"""Adapters that let the token verifier find partner keys (partners package) and operator keys (config)."""

from __future__ import annotations

import threading
from pathlib import Path

from auth.principal import PrincipalKind
from auth.tokens import VerificationKey
from common.uow import UnitOfWork
from partners.keys import load_public_key
from partners.repository import PartnerRepository


class PartnerKeySource:
    """Looks a key up on every call, so a revocation takes effect on the next request."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._parsed: dict[str, tuple[str, object]] = {}
        self._lock = threading.Lock()

    def find_key(self, key_id: str) -> VerificationKey | None:
        row = self.uow.run_statement(lambda connection: PartnerRepository(connection).key(key_id))
        if row is None:
            return None
        algorithm, public_key = self._parse(row.public_key_pem)
        return VerificationKey(
            key_id=row.key_id, algorithm=algorithm, public_key=public_key, kind=PrincipalKind.PARTNER,
            partner_id=row.partner_id, partner_code=row.partner_code, is_active=row.revoked_at is None,
        )  # fmt: skip

    def _parse(self, pem: str) -> tuple[str, object]:
        # Parsing a PEM costs more than the lookup; the key text itself is the cache key.
        with self._lock:
            cached = self._parsed.get(pem)
        if cached is None:
            cached = load_public_key(pem)
            with self._lock:
                self._parsed[pem] = cached
        return cached


def load_operator_keys(paths: dict[str, Path]) -> dict[str, VerificationKey]:
    keys: dict[str, VerificationKey] = {}
    for key_id, path in paths.items():
        algorithm, public_key = load_public_key(path.read_text())
        keys[key_id] = VerificationKey(
            key_id=key_id, algorithm=algorithm, public_key=public_key, kind=PrincipalKind.OPERATOR,
            partner_id=None, partner_code=None, is_active=True,
        )  # fmt: skip
    return keys
