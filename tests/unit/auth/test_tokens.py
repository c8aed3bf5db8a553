"""Token verification: each way a token can be wrong fails with its own reason and burns no token id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth.principal import MissingRole, PartnerTokenRequired, Principal, PrincipalKind
from auth.tokens import (
    AUTH_FAILURE_REASONS,
    AUTH_FAILURES,
    OPERATOR_ISSUER,
    REQUIRED_CLAIMS,
    TokenVerifier,
    VerificationKey,
)
from common.clock import ManualClock
from common.errors import Unauthenticated
from common.hashing import body_sha256_b64url
from sdk.tokens import generate_key_pair, load_private_key, sign_request_token, write_private_key

AUDIENCE = "coalition-network"
METHOD = "/loyalty.v1.CheckoutService/EarnPoints"
BODY = b"\x0a\x05hello"
PARTNER_KID = "acme-2026-01"
PARTNER_CODE = "acme"
OPERATOR_KID = "ops-2026-01"


class RecordingReplayGuard:
    def __init__(self) -> None:
        self.claims: list[tuple[str, str, datetime]] = []

    def claim(self, issuer: str, jti: str, expires_at: datetime, *, partner_key_id: str | None = None) -> bool:
        is_new = all((issuer, jti) != (seen[0], seen[1]) for seen in self.claims)
        self.claims.append((issuer, jti, expires_at))
        return is_new

    def claim_in(
        self, connection: Any, issuer: str, jti: str, expires_at: datetime, *, refused: Callable[[], None],
        partner_key_id: str | None = None,
    ) -> None:  # fmt: skip
        if not self.claim(issuer, jti, expires_at, partner_key_id=partner_key_id):
            refused()


class DictKeySource:
    """Keys as they stand now: every lookup is fresh, so the guard has no revocation left to confirm."""

    def __init__(self, *keys: VerificationKey) -> None:
        self.keys = {key.key_id: key for key in keys}

    def find_key(self, key_id: str, *, fresh: bool = False) -> VerificationKey | None:
        return self.keys.get(key_id)


def partner_key(public_key: object, algorithm: str = "ES256", **overrides: Any) -> VerificationKey:
    fields: dict[str, Any] = {
        "key_id": PARTNER_KID,
        "algorithm": algorithm,
        "public_key": public_key,
        "kind": PrincipalKind.PARTNER,
        "partner_id": 7,
        "partner_code": PARTNER_CODE,
        "is_active": True,
    }
    return VerificationKey(**(fields | overrides))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def guard() -> RecordingReplayGuard:
    return RecordingReplayGuard()


@pytest.fixture
def partner_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def operator_private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def partner_keys(partner_private: ec.EllipticCurvePrivateKey) -> DictKeySource:
    return DictKeySource(partner_key(partner_private.public_key()))


@pytest.fixture
def verifier(
    clock: ManualClock,
    guard: RecordingReplayGuard,
    partner_keys: DictKeySource,
    operator_private: Ed25519PrivateKey,
) -> TokenVerifier:
    operator_key = VerificationKey(
        key_id=OPERATOR_KID,
        algorithm="EdDSA",
        public_key=operator_private.public_key(),
        kind=PrincipalKind.OPERATOR,
        partner_id=None,
        partner_code=None,
        is_active=True,
    )
    return TokenVerifier(
        audience=AUDIENCE,
        clock=clock,
        partner_keys=partner_keys,
        operator_keys={OPERATOR_KID: operator_key},
        replay_guard=guard,
    )


def partner_claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    issued_at = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": PARTNER_CODE,
        "aud": AUDIENCE,
        "iat": issued_at,
        "exp": issued_at + 60,
        "jti": "jti-1",
        "typ": "partner",
        "mth": METHOD,
        "bsh": body_sha256_b64url(BODY),
    }
    return claims | overrides


def operator_claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    base = partner_claims(clock, iss=OPERATOR_ISSUER, typ="operator", sub="staff-42", roles=["finance"])
    return base | overrides


def encode(claims: dict[str, Any], key: Any, algorithm: str, kid: str | None = PARTNER_KID) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def assert_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    authorization: str | None,
    reason: str,
    *,
    method: str = METHOD,
    body: bytes = BODY,
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(authorization, method=method, body=body)
    assert caught.value.reason == reason
    assert guard.claims == [], "a rejected token must not burn its jti"
    token = (authorization or "").removeprefix("Bearer ")
    if len(token) > 10:
        assert token not in str(caught.value)
        assert all(token not in value for value in caught.value.metadata.values())


# --- tokens that verify -------------------------------------------------------------------------


def test_partner_token_verifies_and_claims_its_jti(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    claims = partner_claims(clock)
    token = encode(claims, partner_private, "ES256")

    principal = verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)

    assert principal == Principal(
        kind=PrincipalKind.PARTNER,
        subject=PARTNER_CODE,
        partner_id=7,
        partner_code=PARTNER_CODE,
        roles=frozenset(),
    )
    assert principal.idempotency_scope == "partner:acme"
    assert guard.claims == [(PARTNER_CODE, "jti-1", clock.now() + timedelta(seconds=60))]


def test_operator_token_verifies_with_roles(
    verifier: TokenVerifier, clock: ManualClock, operator_private: Ed25519PrivateKey
) -> None:
    token = encode(operator_claims(clock, roles=["finance", "support"]), operator_private, "EdDSA", OPERATOR_KID)

    principal = verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)

    assert principal.kind is PrincipalKind.OPERATOR
    assert principal.subject == "staff-42"
    assert principal.roles == frozenset({"finance", "support"})
    assert principal.idempotency_scope == "operator:staff-42"
    principal.require_role("finance")
    with pytest.raises(MissingRole):
        principal.require_role("admin")
    principal.require_any_role("admin", "support")
    with pytest.raises(MissingRole, match="admin, legal"):
        principal.require_any_role("admin", "legal")
    with pytest.raises(PartnerTokenRequired):
        principal.require_partner()


def test_ed25519_partner_key_verifies(
    clock: ManualClock, guard: RecordingReplayGuard, operator_private: Ed25519PrivateKey
) -> None:
    private_key, public_pem = generate_key_pair("EdDSA")
    public_key = serialization.load_pem_public_key(public_pem.encode())
    verifier = TokenVerifier(
        audience=AUDIENCE,
        clock=clock,
        partner_keys=DictKeySource(partner_key(public_key, "EdDSA")),
        operator_keys={},
        replay_guard=guard,
    )
    token = encode(partner_claims(clock), private_key, "EdDSA")

    principal = verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)

    assert principal.require_partner() == (7, PARTNER_CODE)
    with pytest.raises(MissingRole):
        principal.require_role("admin")
    with pytest.raises(MissingRole):  # a partner carries no roles at all
        principal.require_any_role("admin", "finance", "support")


def test_sdk_signed_tokens_verify(
    verifier: TokenVerifier,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    operator_private: Ed25519PrivateKey,
) -> None:
    common: dict[str, Any] = {"audience": AUDIENCE, "method": METHOD, "body": BODY, "now": clock.now()}
    partner_token = sign_request_token(private_key=partner_private, key_id=PARTNER_KID, issuer=PARTNER_CODE, **common)
    operator_token = sign_request_token(
        private_key=operator_private,
        key_id=OPERATOR_KID,
        issuer=OPERATOR_ISSUER,
        token_type="operator",
        subject="staff-1",
        roles=["admin"],
        **common,
    )

    assert verifier.verify(f"Bearer {partner_token}", method=METHOD, body=BODY).partner_id == 7
    assert verifier.verify(f"Bearer {operator_token}", method=METHOD, body=BODY).roles == {"admin"}


def test_leeway_tolerates_small_clock_skew(
    verifier: TokenVerifier, clock: ManualClock, partner_private: ec.EllipticCurvePrivateKey
) -> None:
    now = int(clock.now().timestamp())
    slightly_ahead = encode(partner_claims(clock, iat=now + 29, exp=now + 89, jti="a"), partner_private, "ES256")
    just_expired = encode(partner_claims(clock, iat=now - 89, exp=now - 29, jti="b"), partner_private, "ES256")
    longest = encode(partner_claims(clock, iat=now, exp=now + 300, jti="c"), partner_private, "ES256")

    for token in (slightly_ahead, just_expired, longest):
        verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)


def test_rejected_token_keeps_its_jti_for_the_genuine_request(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "BODY_MISMATCH", body=b"other")

    verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)

    assert len(guard.claims) == 1


# --- algorithm and signature ------------------------------------------------------------------


def test_alg_none_is_rejected(verifier: TokenVerifier, guard: RecordingReplayGuard, clock: ManualClock) -> None:
    token = encode(partner_claims(clock), None, "none")
    assert_rejected(verifier, guard, f"Bearer {token}", "BAD_SIGNATURE")


def test_alg_none_with_empty_signature_crafted_by_hand(
    verifier: TokenVerifier, guard: RecordingReplayGuard, clock: ManualClock
) -> None:
    header = b64url(json.dumps({"alg": "none", "kid": PARTNER_KID}).encode())
    payload = b64url(json.dumps(partner_claims(clock)).encode())
    assert_rejected(verifier, guard, f"Bearer {header}.{payload}.", "BAD_SIGNATURE")


def test_hs256_signed_with_the_public_key_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    # PyJWT refuses to sign HS256 with a PEM key, so forge the token by hand as an attacker would.
    public_pem = partner_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": PARTNER_KID}).encode())
    payload = b64url(json.dumps(partner_claims(clock)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64url(signature)}"

    assert_rejected(verifier, guard, f"Bearer {token}", "BAD_SIGNATURE")


def test_rs256_token_is_rejected(verifier: TokenVerifier, guard: RecordingReplayGuard, clock: ManualClock) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = encode(partner_claims(clock), rsa_key, "RS256")
    assert_rejected(verifier, guard, f"Bearer {token}", "BAD_SIGNATURE")


def test_token_signed_by_another_key_is_rejected(
    verifier: TokenVerifier, guard: RecordingReplayGuard, clock: ManualClock
) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    token = encode(partner_claims(clock), impostor, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "BAD_SIGNATURE")


def test_tampered_payload_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    header, _, signature = encode(partner_claims(clock), partner_private, "ES256").split(".")
    forged_payload = b64url(json.dumps(partner_claims(clock, mth="/loyalty.v1.Admin/Anything")).encode())
    assert_rejected(verifier, guard, f"Bearer {header}.{forged_payload}.{signature}", "BAD_SIGNATURE")


def _hand_signed(header: dict[str, Any], payload: bytes, private_key: ec.EllipticCurvePrivateKey) -> str:
    """A token built segment by segment and validly ES256-signed, as a sloppy or hostile signer might."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}"
    algorithm = jwt.get_algorithm_by_name("ES256")
    return f"{signing_input}.{b64url(algorithm.sign(signing_input.encode(), private_key))}"


def test_a_padded_token_verifies_as_pyjwt_accepts_it(
    verifier: TokenVerifier, clock: ManualClock, partner_private: ec.EllipticCurvePrivateKey
) -> None:
    header, payload, signature = encode(partner_claims(clock), partner_private, "ES256").split(".")
    padded = payload + "=" * (-len(payload) % 4)
    signing_input = f"{header}.{padded}".encode()
    signature = b64url(jwt.get_algorithm_by_name("ES256").sign(signing_input, partner_private))
    verifier.verify(f"Bearer {header}.{padded}.{signature}", method=METHOD, body=BODY)


_BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _flip_a_bit_past_the_last_byte(token: str) -> str:
    """An ES256 signature is 64 bytes in 86 characters: the last one's lowest bits encode nothing."""
    last = _BASE64URL_ALPHABET.index(token[-1])
    return token[:-1] + _BASE64URL_ALPHABET[last ^ 1]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda token: token + "=", id="padding-beyond-a-multiple-of-four"),
        pytest.param(_flip_a_bit_past_the_last_byte, id="bits-past-the-last-byte"),
        pytest.param(lambda token: token.replace(".", "..", 1), id="four-segments"),
        pytest.param(lambda token: token.rsplit(".", 1)[0], id="two-segments"),
        pytest.param(lambda token: token[:10] + "+" + token[11:], id="standard-base64-alphabet"),
        pytest.param(lambda token: token[:10] + "é" + token[11:], id="non-ascii"),
    ],
)
def test_a_token_that_is_not_canonical_base64url_is_malformed(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    spoil: Any,
) -> None:
    """One token must have one spelling, and the reader is no laxer than PyJWT's."""
    token = encode(partner_claims(clock), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {spoil(token)}", "MALFORMED_TOKEN")


@pytest.mark.parametrize(
    ("extra_header", "payload", "reason"),
    [
        ({"crit": ["exp"]}, None, "MALFORMED_TOKEN"),
        ({"b64": False, "crit": ["b64"]}, None, "MALFORMED_TOKEN"),
        ({"alg": "ES384"}, None, "BAD_SIGNATURE"),
        ({}, b"[1, 2]", "MALFORMED_TOKEN"),
        ({}, b"{not json", "MALFORMED_TOKEN"),
    ],
)
def test_a_signed_token_with_an_unacceptable_header_or_payload_is_refused(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    extra_header: dict[str, Any],
    payload: bytes | None,
    reason: str,
) -> None:
    """Critical extensions and unencoded payloads are refused; the header's algorithm must be the key's;
    a payload must be a JSON object even under a good signature."""
    header = {"alg": "ES256", "typ": "JWT", "kid": PARTNER_KID} | extra_header
    token = _hand_signed(header, payload or json.dumps(partner_claims(clock)).encode(), partner_private)
    assert_rejected(verifier, guard, f"Bearer {token}", reason)


# --- keys ---------------------------------------------------------------------------------------


def test_unknown_kid_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256", kid="nobody")
    assert_rejected(verifier, guard, f"Bearer {token}", "UNKNOWN_KEY")


def test_missing_kid_is_malformed(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256", kid=None)
    assert_rejected(verifier, guard, f"Bearer {token}", "MALFORMED_TOKEN")


def test_a_kid_with_control_characters_is_malformed(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    """A NUL would reach PostgreSQL as an internal error: it is refused before any lookup."""
    token = encode(partner_claims(clock), partner_private, "ES256", kid="partner-1\x00")
    assert_rejected(verifier, guard, f"Bearer {token}", "MALFORMED_TOKEN")


def test_revoked_key_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_keys: DictKeySource,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    partner_keys.keys[PARTNER_KID] = partner_key(partner_private.public_key(), is_active=False)
    token = encode(partner_claims(clock), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "KEY_REVOKED")


def test_partner_key_source_cannot_vouch_for_an_operator(
    verifier: TokenVerifier, guard: RecordingReplayGuard, clock: ManualClock, partner_keys: DictKeySource
) -> None:
    rogue = Ed25519PrivateKey.generate()
    partner_keys.keys["rogue"] = VerificationKey(
        key_id="rogue",
        algorithm="EdDSA",
        public_key=rogue.public_key(),
        kind=PrincipalKind.OPERATOR,
        partner_id=None,
        partner_code=None,
        is_active=True,
    )
    token = encode(operator_claims(clock), rogue, "EdDSA", kid="rogue")
    assert_rejected(verifier, guard, f"Bearer {token}", "UNKNOWN_KEY")


def test_verification_key_must_match_its_algorithm(partner_private: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError):
        partner_key(partner_private.public_key(), "EdDSA")
    with pytest.raises(ValueError):
        partner_key(ec.generate_private_key(ec.SECP384R1()).public_key(), "ES256")
    with pytest.raises(ValueError):
        partner_key(partner_private.public_key(), "HS256")


# --- issuer, audience, type ---------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["globex", OPERATOR_ISSUER, ""])
def test_partner_key_with_other_issuer_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    issuer: str,
) -> None:
    token = encode(partner_claims(clock, iss=issuer), partner_private, "ES256")
    expected = "MISSING_CLAIM" if issuer == "" else "WRONG_ISSUER"
    assert_rejected(verifier, guard, f"Bearer {token}", expected)


def test_operator_key_with_partner_issuer_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    operator_private: Ed25519PrivateKey,
) -> None:
    token = encode(operator_claims(clock, iss=PARTNER_CODE), operator_private, "EdDSA", OPERATOR_KID)
    assert_rejected(verifier, guard, f"Bearer {token}", "WRONG_ISSUER")


@pytest.mark.parametrize("audience", ["another-network", ["coalition-network", "x"]])
def test_wrong_audience_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    audience: Any,
) -> None:
    token = encode(partner_claims(clock, aud=audience), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "WRONG_AUDIENCE")


def test_partner_key_cannot_sign_operator_token(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(operator_claims(clock, iss=PARTNER_CODE), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "WRONG_TOKEN_TYPE")


def test_operator_key_cannot_sign_partner_token(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    operator_private: Ed25519PrivateKey,
) -> None:
    token = encode(operator_claims(clock, typ="partner"), operator_private, "EdDSA", OPERATOR_KID)
    assert_rejected(verifier, guard, f"Bearer {token}", "WRONG_TOKEN_TYPE")


def test_unknown_operator_role_is_malformed(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    operator_private: Ed25519PrivateKey,
) -> None:
    token = encode(operator_claims(clock, roles=["admin", "root"]), operator_private, "EdDSA", OPERATOR_KID)
    assert_rejected(verifier, guard, f"Bearer {token}", "MALFORMED_TOKEN")


# --- time ---------------------------------------------------------------------------------------


def test_expired_token_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256")
    clock.advance(timedelta(seconds=60 + 30))
    assert_rejected(verifier, guard, f"Bearer {token}", "TOKEN_EXPIRED")


def test_token_issued_in_the_future_beyond_leeway_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    now = int(clock.now().timestamp())
    token = encode(partner_claims(clock, iat=now + 31, exp=now + 91), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "TOKEN_NOT_YET_VALID")


def test_not_before_in_the_future_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    now = int(clock.now().timestamp())
    token = encode(partner_claims(clock, nbf=now + 31), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "TOKEN_NOT_YET_VALID")


def test_long_lived_token_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    now = int(clock.now().timestamp())
    token = encode(partner_claims(clock, iat=now, exp=now + 301), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "TOKEN_LIFETIME_TOO_LONG")


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": "tomorrow"},
        {"iat": True},
        {"exp": float("nan")},
        {"exp": float("inf")},
        {"exp": 10**30},
        {"exp": 1772366400, "iat": 1772366460},
    ],
)
def test_nonsense_times_are_malformed(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    overrides: dict[str, Any],
) -> None:
    token = encode(partner_claims(clock, **overrides), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "MALFORMED_TOKEN")


# --- binding to the call and single use -----------------------------------------------------------


def test_replayed_token_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256")
    verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)

    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(f"Bearer {token}", method=METHOD, body=BODY)

    assert caught.value.reason == "TOKEN_REPLAYED"


def test_swapped_body_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "BODY_MISMATCH", body=b"\x0a\x05HELLO")


def test_swapped_method_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256")
    other = "/loyalty.v1.CheckoutService/RedeemPoints"
    assert_rejected(verifier, guard, f"Bearer {token}", "METHOD_MISMATCH", method=other)


# --- missing pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_partner_token_missing_a_claim_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
    claim: str,
) -> None:
    claims = partner_claims(clock)
    del claims[claim]
    token = encode(claims, partner_private, "ES256")
    assert_rejected(verifier, guard, f"Bearer {token}", "MISSING_CLAIM")


@pytest.mark.parametrize("claim", ["sub", "roles"])
def test_operator_token_missing_sub_or_roles_is_rejected(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    operator_private: Ed25519PrivateKey,
    claim: str,
) -> None:
    claims = operator_claims(clock)
    del claims[claim]
    token = encode(claims, operator_private, "EdDSA", OPERATOR_KID)
    assert_rejected(verifier, guard, f"Bearer {token}", "MISSING_CLAIM")


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "MISSING_TOKEN"),
        ("", "MISSING_TOKEN"),
        ("   ", "MISSING_TOKEN"),
        ("Bearer", "MALFORMED_TOKEN"),
        ("Bearer ", "MALFORMED_TOKEN"),
        ("Basic dXNlcjpwYXNz", "MALFORMED_TOKEN"),
        ("Bearer not-a-jwt", "MALFORMED_TOKEN"),
        ("Bearer a.b.c", "MALFORMED_TOKEN"),
        ("Bearer one two", "MALFORMED_TOKEN"),
        ("eyJhbGciOiJFUzI1NiJ9.e30.sig", "MALFORMED_TOKEN"),
    ],
)
def test_missing_or_garbled_authorization_is_rejected(
    verifier: TokenVerifier, guard: RecordingReplayGuard, authorization: str | None, reason: str
) -> None:
    assert_rejected(verifier, guard, authorization, reason)


def test_token_without_bearer_scheme_is_malformed(
    verifier: TokenVerifier,
    guard: RecordingReplayGuard,
    clock: ManualClock,
    partner_private: ec.EllipticCurvePrivateKey,
) -> None:
    token = encode(partner_claims(clock), partner_private, "ES256")
    assert_rejected(verifier, guard, token, "MALFORMED_TOKEN")


def test_failure_reasons_are_a_bounded_unique_set() -> None:
    assert len(AUTH_FAILURE_REASONS) == len(set(AUTH_FAILURE_REASONS)) == 15
    assert all(issubclass(failure, Unauthenticated) for failure in AUTH_FAILURES)
    assert "TOKEN_REPLAYED" in AUTH_FAILURE_REASONS


# --- SDK key files ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_written_private_key_is_owner_only_and_loads_back(tmp_path: Path, algorithm: str) -> None:
    private_key, public_pem = generate_key_pair(algorithm)
    path = tmp_path / "keys" / "partner.pem"

    write_private_key(path, private_key)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "PUBLIC KEY" in public_pem
    loaded = load_private_key(path)
    assert (
        loaded.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        == public_pem
    )
