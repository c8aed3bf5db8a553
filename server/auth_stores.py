"""Adapters that let the token verifier find partner keys (partners package) and operator keys (config).

A partner key's facts (public key, algorithm, partner) never change once registered: only ``revoked_at``
is ever written, and key rows are never deleted. ``PartnerKeySource`` therefore keeps found keys in
memory, and ``KeyCheckedReplayGuard`` claims a token id only while its key is unrevoked, in one
statement, so a revocation takes effect on the very next request on every replica without a key
lookup on each call. The statement spans the auth and partners tables, which only this composition
root may join.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from auth.principal import PrincipalKind
from auth.repository import DatabaseReplayGuard, used_token_ids
from auth.tokens import VerificationKey
from common.sql import Prebuilt
from common.uow import UnitOfWork
from partners.keys import load_public_key
from partners.repository import PartnerRepository, partner_keys


class PartnerKeySource:
    """Partner keys, found ones cached; pair it with ``KeyCheckedReplayGuard``, which checks revocation.

    A cached key is returned as active: the claim of the token id refuses it once revoked, and the
    verifier then asks again with ``fresh``, which reads the database (and forgets a revoked key). A key
    not cached, registered after this process started say, is read from the database.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._active: dict[str, VerificationKey] = {}  # bounded by the keys registered
        self._parsed: dict[str, tuple[str, object]] = {}
        self._lock = threading.Lock()

    def find_key(self, key_id: str, *, fresh: bool = False) -> VerificationKey | None:
        if not fresh:
            cached = self._active.get(key_id)
            if cached is not None:
                return cached
        row = self.uow.run_statement(lambda connection: PartnerRepository(connection).key(key_id))
        if row is None or row.revoked_at is not None:
            with self._lock:
                self._active.pop(key_id, None)
            if row is None:
                return None
        algorithm, public_key = self._parse(row.public_key_pem)
        key = VerificationKey(
            key_id=row.key_id, algorithm=algorithm, public_key=public_key, kind=PrincipalKind.PARTNER,
            partner_id=row.partner_id, partner_code=row.partner_code, is_active=row.revoked_at is None,
        )  # fmt: skip
        if key.is_active:
            with self._lock:
                self._active[key_id] = key
        return key

    def _parse(self, pem: str) -> tuple[str, object]:
        # Parsing a PEM costs more than the lookup; the key text itself is the cache key.
        with self._lock:
            cached = self._parsed.get(pem)
        if cached is None:
            cached = load_public_key(pem)
            with self._lock:
                self._parsed[pem] = cached
        return cached


def _claim_while_unrevoked(dialect_name: str) -> Prebuilt:
    """INSERT ... SELECT ... WHERE EXISTS (unrevoked key) ON CONFLICT DO NOTHING RETURNING: one statement,
    so no revocation can commit between the key check and the claim (a row comes back only if claimed)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    unrevoked = exists().where(partner_keys.c.key_id == bindparam("key"), partner_keys.c.revoked_at.is_(None))
    values = select(
        bindparam("issuer", type_=used_token_ids.c.issuer.type),
        bindparam("jti", type_=used_token_ids.c.jti.type),
        bindparam("expires_at", type_=used_token_ids.c.expires_at.type),
    ).where(unrevoked)
    insert = dialect.insert(used_token_ids).from_select(["issuer", "jti", "expires_at"], values)
    return Prebuilt(insert.on_conflict_do_nothing().returning(used_token_ids.c.jti))


_CLAIMS = {name: _claim_while_unrevoked(name) for name in ("postgresql", "sqlite")}


class KeyCheckedReplayGuard(DatabaseReplayGuard):
    """The durable replay guard, claiming a partner token's id only while its key is unrevoked."""

    def claim_statement(
        self, connection: Connection, issuer: str, jti: str, expires_at: datetime, partner_key_id: str | None
    ) -> tuple[Prebuilt, dict[str, Any]]:
        if partner_key_id is None:
            return super().claim_statement(connection, issuer, jti, expires_at, None)
        values = {"issuer": issuer, "jti": jti, "expires_at": expires_at, "key": partner_key_id}
        return _CLAIMS[connection.dialect.name], values


def load_operator_keys(paths: dict[str, Path]) -> dict[str, VerificationKey]:
    keys: dict[str, VerificationKey] = {}
    for key_id, path in paths.items():
        algorithm, public_key = load_public_key(path.read_text())
        keys[key_id] = VerificationKey(
            key_id=key_id, algorithm=algorithm, public_key=public_key, kind=PrincipalKind.OPERATOR,
            partner_id=None, partner_code=None, is_active=True,
        )  # fmt: skip
    return keys
