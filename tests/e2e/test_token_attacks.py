"""Hand-crafted tokens against the real server: every attack is refused with its reason and writes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb
from sqlalchemy import Engine, text

from common.ids import new_id
from sdk.client import CoalitionClient, error_info
from sdk.tokens import TYP_OPERATOR, sign_request_token
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, Partner
from tests.factories import phone

EARN = "/loyalty.v1.CheckoutService/EarnPoints"
BALANCE = "/loyalty.v1.CheckoutService/GetBalance"
CREATE_PARTNER = "/loyalty.v1.PartnerAdminService/CreatePartner"
AUDIENCE = "coalition"
# Everything a checkout or admin call could write; a refused call must leave every count as it was.
WRITTEN_TABLES = (
    "journal_transactions", "journal_entries", "lots", "lot_movements", "members", "member_identifiers",
    "member_partner_links", "member_balances", "purchases", "holds", "idempotency_records",
    "partner_daily_issuance", "partners", "partner_keys", "contract_versions",
)  # fmt: skip


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
            for table in WRITTEN_TABLES
        }


def earn_body() -> bytes:
    """An EarnPoints request that, if accepted, enrols a new member and writes a purchase, lots and entries."""
    request = pb.EarnPointsRequest(
        request_id=new_id(), member=pb.MemberIdentifier(phone_number=phone().value),
        receipt_id=f"R-{uuid.uuid4().hex[:8]}", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=10_000),
    )  # fmt: skip
    return request.SerializeToString()


def create_partner_body() -> bytes:
    partner_id = f"p-{uuid.uuid4().hex[:12]}"
    request = admin_pb.CreatePartnerRequest(
        request_id=new_id(), partner_id=partner_id, display_name=partner_id,
        kind=admin_pb.PARTNER_KIND_ONLINE_SHOP,
    )  # fmt: skip
    return request.SerializeToString()


def send(target: str, method: str, body: bytes, token: str | None) -> bytes:
    """One call over a raw channel: the exact bytes and the exact token, no SDK help."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        response: bytes = call(body, metadata=metadata, timeout=5)
        return response


def refusal(target: str, method: str, body: bytes, token: str | None) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        send(target, method, body, token)
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""


def partner_token(partner: Partner, body: bytes, **overrides: object) -> str:
    values: dict[str, object] = {
        "private_key": partner.private_key, "key_id": partner.key_id, "issuer": partner.partner_id,
        "audience": AUDIENCE, "method": EARN, "body": body,
    }  # fmt: skip
    return sign_request_token(**(values | overrides))  # type: ignore[arg-type]


def operator_token(operator_key: OperatorKey, method: str, body: bytes, roles: list[str]) -> str:
    return sign_request_token(
        private_key=operator_key.private_key, key_id=OPERATOR_KEY_ID, issuer="coalition-operator",
        audience=AUDIENCE, method=method, body=body, token_type=TYP_OPERATOR, subject="mallory", roles=roles,
    )  # fmt: skip


def claims_of(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hs256_token(claims: dict[str, object], secret: bytes, key_id: str) -> str:
    """Signed by hand: PyJWT itself refuses a PEM key as an HMAC secret, an attacker does not."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def public_pem(partner: Partner) -> bytes:
    return partner.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Kit:
    partner: Partner
    other: Partner
    operator_key: OperatorKey


@dataclass(frozen=True)
class Attempt:
    method: str
    body: bytes
    token: str | None
    code: grpc.StatusCode
    reason: str


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def alg_none(kit: Kit) -> Attempt:
    body = earn_body()
    claims = claims_of(partner_token(kit.partner, body))
    token = jwt.encode(claims, "", algorithm="none", headers={"kid": kit.partner.key_id})
    assert token.endswith(".")  # header.payload. with an empty signature
    return Attempt(EARN, body, token, UNAUTHENTICATED, "BAD_SIGNATURE")


def hs256_with_public_key_as_secret(kit: Kit) -> Attempt:
    body = earn_body()
    claims = claims_of(partner_token(kit.partner, body))
    token = hs256_token(claims, public_pem(kit.partner), kit.partner.key_id)
    return Attempt(EARN, body, token, UNAUTHENTICATED, "BAD_SIGNATURE")


def issuer_of_another_partner(kit: Kit) -> Attempt:
    body = earn_body()
    return Attempt(EARN, body, partner_token(kit.partner, body, issuer=kit.other.partner_id), UNAUTHENTICATED,
                   "WRONG_ISSUER")  # fmt: skip


def key_id_of_another_partner(kit: Kit) -> Attempt:
    body = earn_body()
    token = partner_token(kit.partner, body, key_id=kit.other.key_id, issuer=kit.other.partner_id)
    return Attempt(EARN, body, token, UNAUTHENTICATED, "BAD_SIGNATURE")


def expired(kit: Kit) -> Attempt:
    body = earn_body()
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    return Attempt(EARN, body, partner_token(kit.partner, body, now=ten_minutes_ago), UNAUTHENTICATED,
                   "TOKEN_EXPIRED")  # fmt: skip


def lives_301_seconds(kit: Kit) -> Attempt:
    body = earn_body()
    token = partner_token(kit.partner, body, lifetime_seconds=301)
    claims = claims_of(token)
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == 301
    return Attempt(EARN, body, token, UNAUTHENTICATED, "TOKEN_LIFETIME_TOO_LONG")


def wrong_audience(kit: Kit) -> Attempt:
    body = earn_body()
    return Attempt(EARN, body, partner_token(kit.partner, body, audience="another-network"), UNAUTHENTICATED,
                   "WRONG_AUDIENCE")  # fmt: skip


def body_swapped(kit: Kit) -> Attempt:
    token = partner_token(kit.partner, earn_body())
    return Attempt(EARN, earn_body(), token, UNAUTHENTICATED, "BODY_MISMATCH")


def method_swapped(kit: Kit) -> Attempt:
    body = earn_body()
    return Attempt(EARN, body, partner_token(kit.partner, body, method=BALANCE), UNAUTHENTICATED, "METHOD_MISMATCH")


def no_authorization_header(kit: Kit) -> Attempt:
    return Attempt(EARN, earn_body(), None, UNAUTHENTICATED, "MISSING_TOKEN")


def partner_calls_admin(kit: Kit) -> Attempt:
    body = create_partner_body()
    token = partner_token(kit.partner, body, method=CREATE_PARTNER)
    return Attempt(CREATE_PARTNER, body, token, PERMISSION_DENIED, "MISSING_ROLE")


def operator_without_admin_role(kit: Kit) -> Attempt:
    body = create_partner_body()
    token = operator_token(kit.operator_key, CREATE_PARTNER, body, ["support", "finance"])
    return Attempt(CREATE_PARTNER, body, token, PERMISSION_DENIED, "MISSING_ROLE")


def operator_calls_checkout(kit: Kit) -> Attempt:
    body = earn_body()
    token = operator_token(kit.operator_key, EARN, body, ["admin"])
    return Attempt(EARN, body, token, PERMISSION_DENIED, "PARTNER_TOKEN_REQUIRED")


ATTACKS: list[Callable[[Kit], Attempt]] = [
    alg_none, hs256_with_public_key_as_secret, issuer_of_another_partner, key_id_of_another_partner, expired,
    lives_301_seconds, wrong_audience, body_swapped, method_swapped, no_authorization_header,
    partner_calls_admin, operator_without_admin_role, operator_calls_checkout,
]  # fmt: skip


@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.__name__ for attack in ATTACKS])
def test_attack_is_refused_and_writes_nothing(
    attack: Callable[[Kit], Attempt], onboard: Callable[..., Partner], operator_key: OperatorKey, target: str,
    engine: Engine,
) -> None:  # fmt: skip
    kit = Kit(onboard(), onboard(), operator_key)
    attempt = attack(kit)
    before = row_counts(engine)

    assert refusal(target, attempt.method, attempt.body, attempt.token) == (attempt.code, attempt.reason)
    assert row_counts(engine) == before
    if attempt.method == EARN:
        # Control: the very same bytes under a proper token are accepted, so the refusal was the token's doing.
        earned = pb.EarnPointsResponse.FromString(
            send(target, EARN, attempt.body, partner_token(kit.partner, attempt.body))
        )
        assert earned.newly_enrolled and earned.points_earned == 100 and not earned.idempotent_replay


def test_a_token_is_used_once(onboard: Callable[..., Partner], target: str, engine: Engine) -> None:
    partner = onboard()
    body = earn_body()
    token = partner_token(partner, body)
    first = pb.EarnPointsResponse.FromString(send(target, EARN, body, token))
    assert first.points_earned == 100 and first.newly_enrolled
    after_first = row_counts(engine)

    assert refusal(target, EARN, body, token) == (UNAUTHENTICATED, "TOKEN_REPLAYED")
    assert row_counts(engine) == after_first


def test_a_revoked_key_fails_at_once(
    onboard: Callable[..., Partner], operator: CoalitionClient, target: str, engine: Engine
) -> None:
    partner = onboard()
    body = earn_body()
    assert pb.EarnPointsResponse.FromString(send(target, EARN, body, partner_token(partner, body))).points_earned == 100
    revoked = operator.partner_admin.RevokePartnerKey(
        admin_pb.RevokePartnerKeyRequest(partner_id=partner.partner_id, key_id=partner.key_id)
    )
    assert revoked.key.HasField("revoke_time")
    before = row_counts(engine)

    body = earn_body()
    assert refusal(target, EARN, body, partner_token(partner, body)) == (UNAUTHENTICATED, "KEY_REVOKED")
    assert row_counts(engine) == before


# --- the checkout API claims the token id with the call's first committed transaction ----------------


def test_a_refused_request_spends_its_token_all_the_same(
    onboard: Callable[..., Partner], target: str, engine: Engine
) -> None:
    """The refusal commits nothing of the request's own, yet the token is used up: sent again it is a replay."""
    partner = onboard()
    body = pb.GetBalanceRequest(member=pb.MemberIdentifier(phone_number=phone().value)).SerializeToString()
    token = partner_token(partner, body, method=BALANCE)
    assert refusal(target, BALANCE, body, token) == (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND")
    before = row_counts(engine)

    assert refusal(target, BALANCE, body, token) == (UNAUTHENTICATED, "TOKEN_REPLAYED")
    assert row_counts(engine) == before


def test_a_read_spends_its_token(onboard: Callable[..., Partner], target: str) -> None:
    partner = onboard()
    earn = earn_body()
    earned = pb.EarnPointsResponse.FromString(send(target, EARN, earn, partner_token(partner, earn)))
    member_number = earned.member_number
    body = pb.GetBalanceRequest(member=pb.MemberIdentifier(member_number=member_number)).SerializeToString()
    token = partner_token(partner, body, method=BALANCE)
    assert pb.GetBalanceResponse.FromString(send(target, BALANCE, body, token)).balance.available_points == 100

    assert refusal(target, BALANCE, body, token) == (UNAUTHENTICATED, "TOKEN_REPLAYED")


def test_one_token_sent_many_times_at_once_is_served_once(
    onboard: Callable[..., Partner], target: str, engine: Engine
) -> None:
    """Concurrent copies of one call race for its token id inside their transactions: one wins and every
    other one is refused as a replay, not answered as an idempotent replay of the winner."""
    partner = onboard()
    body = earn_body()
    token = partner_token(partner, body)
    before = row_counts(engine)

    def call(_: int) -> str:
        try:
            send(target, EARN, body, token)
            return "OK"
        except grpc.RpcError as error:
            info = error_info(error)
            return info.reason if info else str(error.code())

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(call, range(8)))

    assert outcomes == ["OK"] + ["TOKEN_REPLAYED"] * 7
    after = row_counts(engine)
    assert after["purchases"] == before["purchases"] + 1
    assert after["idempotency_records"] == before["idempotency_records"] + 1
