"""Verifies the short-lived, single-use, request-bound JWTs that partners and operator staff send."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.types import Options

from auth.principal import Principal, PrincipalKind
from common.clock import Clock
from common.errors import Unauthenticated
from common.hashing import body_sha256_b64url

OPERATOR_ISSUER = "coalition-operator"
OPERATOR_ROLES = frozenset({"admin", "finance", "support"})
REQUIRED_CLAIMS = ("iss", "aud", "iat", "exp", "jti", "typ", "mth", "bsh")
OPERATOR_REQUIRED_CLAIMS = ("sub", "roles")
#: Matches the column width of ``auth.models.UsedTokenId.jti``.
MAX_JTI_LENGTH = 128
#: 9999-12-31T23:59:59Z; larger timestamps are malformed (and do not fit a datetime).
_MAX_TIMESTAMP = 253_402_300_799
# Any character str.isspace() accepts (re's \s is the same test); a character loop cost 14 us a token.
_WHITESPACE = re.compile(r"\s")

# Signature only: every claim is checked below, against the injected clock rather than time.time().
_DECODE_OPTIONS: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


class MissingToken(Unauthenticated):
    reason = "MISSING_TOKEN"


class MalformedToken(Unauthenticated):
    reason = "MALFORMED_TOKEN"


class UnknownKey(Unauthenticated):
    reason = "UNKNOWN_KEY"


class KeyRevoked(Unauthenticated):
    reason = "KEY_REVOKED"


class BadSignature(Unauthenticated):
    reason = "BAD_SIGNATURE"


class WrongIssuer(Unauthenticated):
    reason = "WRONG_ISSUER"


class WrongAudience(Unauthenticated):
    reason = "WRONG_AUDIENCE"


class TokenExpired(Unauthenticated):
    reason = "TOKEN_EXPIRED"


class TokenNotYetValid(Unauthenticated):
    reason = "TOKEN_NOT_YET_VALID"


class TokenLifetimeTooLong(Unauthenticated):
    reason = "TOKEN_LIFETIME_TOO_LONG"


class TokenReplayed(Unauthenticated):
    reason = "TOKEN_REPLAYED"


class MethodMismatch(Unauthenticated):
    reason = "METHOD_MISMATCH"


class BodyMismatch(Unauthenticated):
    reason = "BODY_MISMATCH"


class WrongTokenType(Unauthenticated):
    reason = "WRONG_TOKEN_TYPE"


class MissingClaim(Unauthenticated):
    reason = "MISSING_CLAIM"


AUTH_FAILURES: tuple[type[Unauthenticated], ...] = (
    MissingToken,
    MalformedToken,
    UnknownKey,
    KeyRevoked,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    TokenExpired,
    TokenNotYetValid,
    TokenLifetimeTooLong,
    TokenReplayed,
    MethodMismatch,
    BodyMismatch,
    WrongTokenType,
    MissingClaim,
)
#: Every reason ``TokenVerifier.verify`` can fail with; bounded, so safe as a metrics label.
AUTH_FAILURE_REASONS: tuple[str, ...] = tuple(failure.reason for failure in AUTH_FAILURES)


@dataclass(frozen=True)
class VerificationKey:
    key_id: str
    algorithm: str
    public_key: object
    kind: PrincipalKind
    partner_id: int | None
    partner_code: str | None
    is_active: bool

    def __post_init__(self) -> None:
        if not _key_fits_algorithm(self.public_key, self.algorithm):
            raise ValueError(f"key {self.key_id} is not an {self.algorithm} public key")
        is_partner = self.kind is PrincipalKind.PARTNER
        if is_partner != (self.partner_id is not None and bool(self.partner_code)):
            raise ValueError(f"key {self.key_id}: partner keys name their partner, operator keys do not")

    @property
    def expected_issuer(self) -> str:
        """A partner signs as its partner code; operator tooling signs as the operator."""
        if self.kind is PrincipalKind.OPERATOR:
            return OPERATOR_ISSUER
        if not self.partner_code:  # excluded by __post_init__
            raise ValueError(f"partner key {self.key_id} names no partner")
        return self.partner_code


class KeySource(Protocol):
    def find_key(self, key_id: str, *, fresh: bool = False) -> VerificationKey | None:
        """The key registered as ``key_id``; unless ``fresh``, possibly from a cache.

        A cached key may have been revoked since: the replay guard's claim, given the key id, is then
        what refuses it (see ``ReplayGuard.claim``), and the verifier asks again with ``fresh`` to say why.
        """
        ...


class ReplayGuard(Protocol):
    def claim(self, issuer: str, jti: str, expires_at: datetime, *, partner_key_id: str | None = None) -> bool:
        """Records the token id; False when it was already used.

        With ``partner_key_id``, records it only while that partner key is registered and unrevoked, in
        the same atomic step, and answers False otherwise too.
        """
        ...


class TokenVerifier:
    def __init__(
        self,
        *,
        audience: str,
        clock: Clock,
        partner_keys: KeySource,
        operator_keys: Mapping[str, VerificationKey],
        replay_guard: ReplayGuard,
        max_lifetime_seconds: int = 300,
        leeway_seconds: int = 30,
    ) -> None:
        if not audience or max_lifetime_seconds <= 0 or leeway_seconds < 0:
            raise ValueError("audience must be set, lifetime positive and leeway not negative")
        for key_id, key in operator_keys.items():
            if key.kind is not PrincipalKind.OPERATOR or key.key_id != key_id:
                raise ValueError(f"operator key {key_id} is misconfigured")
        self._audience = audience
        self._clock = clock
        self._partner_keys = partner_keys
        self._operator_keys = dict(operator_keys)
        self._replay_guard = replay_guard
        self._max_lifetime_seconds = max_lifetime_seconds
        self._leeway_seconds = leeway_seconds

    def verify(self, authorization: str | None, *, method: str, body: bytes) -> Principal:
        """Returns who signed the token, or raises an ``Unauthenticated`` error naming the reason.

        The token id is claimed last so that a token rejected for any other reason stays unused.
        """
        token = _bearer_token(authorization)
        key = self._find_key(_key_id(token))
        try:
            claims = _decode(token, key)
            self._check_claims(claims, key, method=method, body=body)
            principal = _principal(claims, key)
            self._claim_token_id(claims, key)
        except Unauthenticated:
            if key.kind is PrincipalKind.PARTNER:
                # The key may have come from a cache and been revoked since (a refused claim is one sign of
                # it): a revoked key is refused as KEY_REVOKED before anything else, as a fresh lookup says.
                self._find_key(key.key_id, fresh=True)
            raise
        return principal

    def _find_key(self, key_id: str, *, fresh: bool = False) -> VerificationKey:
        key = self._operator_keys.get(key_id)
        if key is None:
            key = self._partner_keys.find_key(key_id, fresh=fresh)
            # A partner-registered key must never vouch for an operator.
            if key is not None and key.kind is not PrincipalKind.PARTNER:
                key = None
        if key is None:
            raise UnknownKey("the token's key id is not registered")
        if not key.is_active:
            raise KeyRevoked("the token's key has been revoked")
        return key

    def _check_claims(self, claims: Mapping[str, Any], key: VerificationKey, *, method: str, body: bytes) -> None:
        _require_claims(claims, key.kind)
        if claims["typ"] != key.kind.value:
            raise WrongTokenType(f"a {key.kind.value} key signs only {key.kind.value} tokens")
        if claims["iss"] != key.expected_issuer:
            raise WrongIssuer("the token's issuer does not match its key")
        if claims["aud"] != self._audience:
            raise WrongAudience("the token is meant for another audience")
        self._check_times(claims)
        if claims["mth"] != method:
            raise MethodMismatch("the token was signed for another method")
        if claims["bsh"] != body_sha256_b64url(body):
            raise BodyMismatch("the token was signed for another request body")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        issued_at, expires_at = _time_claim(claims, "iat"), _time_claim(claims, "exp")
        not_before = _time_claim(claims, "nbf") if claims.get("nbf") is not None else issued_at
        now = self._clock.now().timestamp()
        leeway = self._leeway_seconds
        if expires_at <= issued_at:
            raise MalformedToken("the token expires before it is issued")
        if expires_at <= now - leeway:
            raise TokenExpired("the token has expired")
        if max(issued_at, not_before) > now + leeway:
            raise TokenNotYetValid("the token is not valid yet")
        if expires_at - issued_at > self._max_lifetime_seconds:
            raise TokenLifetimeTooLong(f"tokens may live at most {self._max_lifetime_seconds} seconds")

    def _claim_token_id(self, claims: Mapping[str, Any], key: VerificationKey) -> None:
        jti = _string_claim(claims, "jti")
        if len(jti) > MAX_JTI_LENGTH:
            raise MalformedToken(f"the token id is longer than {MAX_JTI_LENGTH} characters")
        expires_at = datetime.fromtimestamp(_time_claim(claims, "exp"), UTC)
        # Operator keys come from configuration; a partner key is confirmed unrevoked as the id is claimed.
        partner_key_id = key.key_id if key.kind is PrincipalKind.PARTNER else None
        if not self._replay_guard.claim(_string_claim(claims, "iss"), jti, expires_at, partner_key_id=partner_key_id):
            raise TokenReplayed("the token has already been used")


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise MissingToken("the call carries no bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or _WHITESPACE.search(token):
        raise MalformedToken("the authorization header is not 'Bearer <token>'")
    return token


def _key_id(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise MalformedToken("the token is not a well-formed JWT") from None
    key_id = header.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise MalformedToken("the token header names no key id")
    if not key_id.isprintable():  # a NUL reaching PostgreSQL would be an internal error, not a refusal
        raise MalformedToken("the token's key id holds control characters")
    return key_id


def _decode(token: str, key: VerificationKey) -> dict[str, Any]:
    # Pinning algorithms to the key's own algorithm refuses "none", HS256-with-the-public-key and RS256.
    try:
        return jwt.decode(token, _public_key(key), algorithms=[key.algorithm], options=_DECODE_OPTIONS)
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise BadSignature("the token's signature does not verify with its key") from None
    except jwt.PyJWTError:
        raise MalformedToken("the token is not a well-formed JWT") from None


def _require_claims(claims: Mapping[str, Any], kind: PrincipalKind) -> None:
    names = REQUIRED_CLAIMS + (OPERATOR_REQUIRED_CLAIMS if kind is PrincipalKind.OPERATOR else ())
    for name in names:
        if claims.get(name) is None or claims.get(name) == "":
            raise MissingClaim(f"the token lacks the {name} claim", claim=name)
    for name in ("iss", "jti", "typ", "mth", "bsh"):
        _string_claim(claims, name)


def _principal(claims: Mapping[str, Any], key: VerificationKey) -> Principal:
    if key.kind is PrincipalKind.OPERATOR:
        return Principal(
            kind=PrincipalKind.OPERATOR,
            subject=_string_claim(claims, "sub"),
            partner_id=None,
            partner_code=None,
            roles=_roles(claims),
        )
    if key.partner_id is None or key.partner_code is None:  # excluded by VerificationKey itself
        raise ValueError(f"partner key {key.key_id} names no partner")
    return Principal(
        kind=PrincipalKind.PARTNER,
        subject=key.partner_code,
        partner_id=key.partner_id,
        partner_code=key.partner_code,
        roles=frozenset(),
    )


def _roles(claims: Mapping[str, Any]) -> frozenset[str]:
    roles = claims["roles"]
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise MalformedToken("the roles claim must be a list of strings")
    unknown = set(roles) - OPERATOR_ROLES
    if unknown:
        raise MalformedToken("the roles claim names unknown roles")
    return frozenset(roles)


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str):
        raise MalformedToken(f"the {name} claim must be a string")
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    # JSON allows NaN, Infinity and huge integers; NaN would slip past every comparison.
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) < _MAX_TIMESTAMP:
        raise MalformedToken(f"the {name} claim must be a finite number of seconds")
    return float(value)


def _key_fits_algorithm(public_key: object, algorithm: str) -> bool:
    if algorithm == "ES256":
        return isinstance(public_key, EllipticCurvePublicKey) and isinstance(public_key.curve, SECP256R1)
    if algorithm == "EdDSA":
        return isinstance(public_key, Ed25519PublicKey)
    return False


def _public_key(key: VerificationKey) -> EllipticCurvePublicKey | Ed25519PublicKey:
    public_key = key.public_key
    if not isinstance(public_key, EllipticCurvePublicKey | Ed25519PublicKey):
        raise TypeError(f"key {key.key_id} holds no supported public key")  # excluded by VerificationKey
    return public_key
