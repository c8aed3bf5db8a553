"""Cached partner keys (server/auth_stores.py): a revoked key still fails on the very next request.

The key source keeps found keys in memory; the replay guard claims a token id only while its key is
unrevoked, in one statement. Each replica here is a verifier of its own over the same database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import jwt
import pytest
from sqlalchemy import Connection, Engine, func, select

from auth.repository import DatabaseReplayGuard, used_token_ids
from auth.tokens import TokenVerifier
from common.clock import ManualClock
from common.errors import Unauthenticated
from common.uow import UnitOfWork
from partners import services
from sdk.tokens import SigningKey, generate_key_pair, sign_request_token
from server.auth_stores import KeyCheckedReplayGuard, PartnerKeySource
from tests.factories import create_partner, request_key, unique

AUDIENCE = "coalition"
METHOD = "/loyalty.v1.CheckoutService/EarnPoints"
BODY = b"\x0a\x03abc"

T = TypeVar("T")


class CountingUnitOfWork(UnitOfWork):
    """The real unit of work, counting the single statements it runs (key lookups and claims)."""

    statements = 0

    def run_statement(self, work: Callable[[Connection], T]) -> T:
        self.statements += 1
        return super().run_statement(work)


@dataclass
class Replica:
    uow: CountingUnitOfWork
    verifier: TokenVerifier


@dataclass(frozen=True)
class PartnerKey:
    partner_code: str
    key_id: str
    private_key: SigningKey


def replica(engine: Engine, clock: ManualClock) -> Replica:
    uow = CountingUnitOfWork(engine, clock)
    verifier = TokenVerifier(
        audience=AUDIENCE, clock=clock, partner_keys=PartnerKeySource(uow), operator_keys={},
        replay_guard=KeyCheckedReplayGuard(uow),
    )  # fmt: skip
    return Replica(uow, verifier)


def register_key(uow: UnitOfWork, partner_code: str) -> PartnerKey:
    private_key, public_pem = generate_key_pair("EdDSA")
    key_id = unique("key")
    services.register_partner_key(
        uow, request_key(), partner_code=partner_code, key_id=key_id, public_key_pem=public_pem
    )
    return PartnerKey(partner_code, key_id, private_key)


def revoke(uow: UnitOfWork, key: PartnerKey) -> None:
    services.revoke_partner_key(uow, request_key(), partner_code=key.partner_code, key_id=key.key_id)


def token(key: PartnerKey, clock: ManualClock, *, body: bytes = BODY, now: datetime | None = None) -> str:
    signed = sign_request_token(
        private_key=key.private_key, key_id=key.key_id, issuer=key.partner_code, audience=AUDIENCE, method=METHOD,
        body=body, now=now or clock.now(),
    )  # fmt: skip
    return f"Bearer {signed}"


def reason(replica: Replica, authorization: str, *, body: bytes = BODY) -> str:
    with pytest.raises(Unauthenticated) as refused:
        replica.verifier.verify(authorization, method=METHOD, body=body)
    return refused.value.reason


def claimed(engine: Engine, authorization: str) -> int:
    """How many used token ids the token's id names (0 or 1)."""
    jti = jwt.decode(authorization.removeprefix("Bearer "), options={"verify_signature": False})["jti"]
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(used_token_ids.c.jti == jti)).scalar_one())


@pytest.fixture
def key(uow: UnitOfWork) -> PartnerKey:
    partner = create_partner(uow)
    return register_key(uow, partner.idempotency_scope.removeprefix("partner:"))


def test_a_found_key_is_cached_and_its_claim_is_the_only_statement(
    engine: Engine, clock: ManualClock, key: PartnerKey
) -> None:
    server = replica(engine, clock)
    first = server.verifier.verify(token(key, clock), method=METHOD, body=BODY)
    assert server.uow.statements == 2  # the key, then the claim
    second = server.verifier.verify(token(key, clock), method=METHOD, body=BODY)
    assert server.uow.statements == 3  # the claim alone
    assert first == second and first.partner_code == key.partner_code


def test_a_revoked_key_fails_on_the_next_request_on_every_replica(
    engine: Engine, clock: ManualClock, uow: UnitOfWork, key: PartnerKey
) -> None:
    replicas = [replica(engine, clock), replica(engine, clock)]
    for server in replicas:
        server.verifier.verify(token(key, clock), method=METHOD, body=BODY)
    revoke(uow, key)
    for server in replicas:
        for _ in range(2):  # the first refusal forgets the key; the second is refused at the lookup
            authorization = token(key, clock)
            assert reason(server, authorization) == "KEY_REVOKED"
            assert claimed(engine, authorization) == 0


def test_a_cached_key_revoked_since_is_refused_before_any_other_check(
    engine: Engine, clock: ManualClock, uow: UnitOfWork, key: PartnerKey
) -> None:
    server = replica(engine, clock)
    server.verifier.verify(token(key, clock), method=METHOD, body=BODY)
    revoke(uow, key)
    expired = token(key, clock, now=clock.now() - timedelta(hours=1))
    assert reason(server, expired) == "KEY_REVOKED"
    assert reason(server, token(key, clock), body=b"another body") == "KEY_REVOKED"


def test_a_replayed_token_of_a_cached_key_is_a_replay(engine: Engine, clock: ManualClock, key: PartnerKey) -> None:
    server = replica(engine, clock)
    authorization = token(key, clock)
    server.verifier.verify(authorization, method=METHOD, body=BODY)
    assert reason(server, authorization) == "TOKEN_REPLAYED"
    assert reason(replica(engine, clock), authorization) == "TOKEN_REPLAYED"
    assert claimed(engine, authorization) == 1


def test_a_replayed_token_of_a_key_revoked_since_is_a_revoked_key(
    engine: Engine, clock: ManualClock, uow: UnitOfWork, key: PartnerKey
) -> None:
    server = replica(engine, clock)
    authorization = token(key, clock)
    server.verifier.verify(authorization, method=METHOD, body=BODY)
    revoke(uow, key)
    assert reason(server, authorization) == "KEY_REVOKED"


def test_keys_registered_later_are_found_and_unknown_keys_are_not_remembered(
    engine: Engine, clock: ManualClock, uow: UnitOfWork, key: PartnerKey
) -> None:
    server = replica(engine, clock)
    server.verifier.verify(token(key, clock), method=METHOD, body=BODY)
    private_key, public_pem = generate_key_pair("ES256")
    later = PartnerKey(key.partner_code, unique("key"), private_key)
    assert reason(server, token(later, clock)) == "UNKNOWN_KEY"
    services.register_partner_key(
        uow, request_key(), partner_code=later.partner_code, key_id=later.key_id, public_key_pem=public_pem
    )
    assert server.verifier.verify(token(later, clock), method=METHOD, body=BODY).partner_code == key.partner_code


def test_the_guard_claims_for_a_partner_key_only_while_it_is_unrevoked(
    engine: Engine, clock: ManualClock, uow: UnitOfWork, key: PartnerKey
) -> None:
    guard = KeyCheckedReplayGuard(uow)
    expires_at = clock.now() + timedelta(minutes=1)
    first, second, third = unique("jti"), unique("jti"), unique("jti")
    assert guard.claim(key.partner_code, first, expires_at, partner_key_id=key.key_id)
    assert not guard.claim(key.partner_code, first, expires_at, partner_key_id=key.key_id)
    assert not guard.claim(key.partner_code, second, expires_at, partner_key_id=unique("no-such-key"))
    revoke(uow, key)
    assert not guard.claim(key.partner_code, third, expires_at, partner_key_id=key.key_id)
    assert guard.claim(key.partner_code, third, expires_at)  # an operator token's id: no key to confirm
    with engine.connect() as connection:
        rows = connection.execute(select(used_token_ids.c.jti).where(used_token_ids.c.issuer == key.partner_code))
        assert sorted(row.jti for row in rows) == sorted([first, third])


def test_the_plain_guard_refuses_to_claim_for_a_partner_key(uow: UnitOfWork, clock: ManualClock) -> None:
    # It cannot see partner keys: claiming without confirming the key would let a cached, revoked key in.
    with pytest.raises(TypeError):
        DatabaseReplayGuard(uow).claim("acme", unique("jti"), clock.now(), partner_key_id="acme-1")
