"""Durable single use of token ids, shared by every replica through the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from auth.models import UsedTokenId
from common.db import table_of
from common.sql import Prebuilt, insert_ignoring_conflict_statement
from common.uow import UnitOfWork

used_token_ids = table_of(UsedTokenId)


class DatabaseReplayGuard:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def claim(self, issuer: str, jti: str, expires_at: datetime, *, partner_key_id: str | None = None) -> bool:
        """Records the token id; False if any replica recorded it before.

        Partner keys live in another package: confirming one unrevoked as the id is claimed is the work of
        the composition root's guard (server.auth_stores.KeyCheckedReplayGuard). This one refuses to
        claim for a partner key rather than skip that check.
        """

        def claimed(connection: Connection) -> bool:
            statement, values = self.claim_statement(connection, issuer, jti, expires_at, partner_key_id)
            return statement.first(connection, values) is not None

        return self.uow.run_statement(claimed)

    def claim_in(
        self,
        connection: Connection,
        issuer: str,
        jti: str,
        expires_at: datetime,
        *,
        refused: Callable[[], None],
        partner_key_id: str | None = None,
    ) -> None:
        """As ``claim``, in the transaction of ``connection``. The claim is queued: it is sent with the
        transaction's next statement, or before its COMMIT, and ``refused`` is called when its result
        shows the id already used."""
        statement, values = self.claim_statement(connection, issuer, jti, expires_at, partner_key_id)
        statement.queue(connection, values, then=lambda claimed: None if claimed else refused())

    def claim_statement(
        self, connection: Connection, issuer: str, jti: str, expires_at: datetime, partner_key_id: str | None
    ) -> tuple[Prebuilt, dict[str, Any]]:
        """The statement that records the id (returning a row only if it did) and its values."""
        if partner_key_id is not None:
            raise TypeError(
                "this replay guard cannot confirm partner keys; use server.auth_stores.KeyCheckedReplayGuard"
            )
        values = {"issuer": issuer, "jti": jti, "expires_at": expires_at}
        return insert_ignoring_conflict_statement(connection, used_token_ids), values

    def purge_expired(self, now: datetime, *, leeway_seconds: int = 60) -> int:
        """Forgets ids of tokens that have expired anyway (with the verifier's leeway to spare)."""
        cutoff = now - timedelta(seconds=leeway_seconds)

        def work(connection: Connection) -> int:
            return int(connection.execute(used_token_ids.delete().where(used_token_ids.c.expires_at < cutoff)).rowcount)

        return self.uow.run(work)
