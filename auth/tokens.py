"""Verifies the short-lived, single-use, request-bound JWTs that partners and operator staff send."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection

from auth.principal import Principal, PrincipalKind
from common.clock import Clock
from common.errors import Unauthenticated
from common.hashing import body_sha256_b64url
from common.uow import FirstCommitWork, first_commit_carries

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
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
# The only algorithms partner and operator keys use (partners.keys), verified by PyJWT's implementations.
_ALGORITHMS = {name: jwt.get_algorithm_by_name(name) for name in ("ES256", "EdDSA")}


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
        """As ``claim``, in the transaction of ``connection``: the id is spent only if it commits.

        The claim may travel with the transaction's next statement (``common.sql.Prebuilt.queue``), so
        instead of an answer it calls ``refused`` (which raises) when the id was already used: by the
        time the next statement returns, and always before the transaction commits."""
        ...


@dataclass(frozen=True)
class TokenClaim:
    """A verified token's id, still to be spent (``TokenVerifier.verify_unclaimed``)."""

    issuer: str
    jti: str
    expires_at: datetime
    key: VerificationKey

    @property
    def partner_key_id(self) -> str | None:
        # Operator keys come from configuration; a partner key is confirmed unrevoked as the id is claimed.
        return self.key.key_id if self.key.kind is PrincipalKind.PARTNER else None


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
        principal, claim = self.verify_unclaimed(authorization, method=method, body=body)
        self.spend(claim)
        return principal

    def verify_unclaimed(self, authorization: str | None, *, method: str, body: bytes) -> tuple[Principal, TokenClaim]:
        """As ``verify``, but the token id is left for the caller to spend: with ``spend``, or with the
        request's first committed transaction (``spent_by_first_commit``)."""
        token = _CompactJws.parse(_bearer_token(authorization))
        key = self._find_key(token.key_id())
        try:
            claims = token.verified_claims(key)
            self._check_claims(claims, key, method=method, body=body)
            return _principal(claims, key), _claim_of(claims, key)
        except Unauthenticated:
            self._refuse_if_revoked(key)
            raise

    def spend(self, claim: TokenClaim) -> None:
        """Claims the token id on its own; refuses a token used before, or whose key was revoked."""
        claimed = self._replay_guard.claim(
            claim.issuer, claim.jti, claim.expires_at, partner_key_id=claim.partner_key_id
        )
        if not claimed:
            self._refuse_if_revoked(claim.key)
            raise TokenReplayed("the token has already been used")

    @contextmanager
    def spent_by_first_commit(self, claim: TokenClaim) -> Iterator[None]:
        """Runs the request inside the block with its token id claimed by its first committed transaction.

        Every transaction the request opens in this thread begins with the claim until one commits, so
        no effect commits before the id is spent. The claim travels with the transaction's first
        statement, so a replayed token is refused when that statement returns, before the work goes on.
        A request that commits nothing (a read, a refusal) spends the id on the way out, as ``verify``
        would have: a refused request uses its token up too, and a replay outranks any other answer.
        """

        def refused() -> None:
            carried.refuse(TokenReplayed("the token has already been used"))

        def claim_in(connection: Connection) -> None:
            self._replay_guard.claim_in(
                connection, claim.issuer, claim.jti, claim.expires_at, refused=refused,
                partner_key_id=claim.partner_key_id,
            )  # fmt: skip

        carried = FirstCommitWork(claim_in)
        try:
            with first_commit_carries(carried):
                yield
        except TokenReplayed:
            if not carried.committed:
                self._refuse_if_revoked(claim.key)  # outside the rolled-back transaction
            raise
        except BaseException:
            if not carried.committed:
                self.spend(claim)
            raise
        if not carried.committed:
            self.spend(claim)

    def _refuse_if_revoked(self, key: VerificationKey) -> None:
        if key.kind is PrincipalKind.PARTNER:
            # The key may have come from a cache and been revoked since (a refused claim is one sign of
            # it): a revoked key is refused as KEY_REVOKED before anything else, as a fresh lookup says.
            self._find_key(key.key_id, fresh=True)

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


def _claim_of(claims: Mapping[str, Any], key: VerificationKey) -> TokenClaim:
    jti = _string_claim(claims, "jti")
    if len(jti) > MAX_JTI_LENGTH:
        raise MalformedToken(f"the token id is longer than {MAX_JTI_LENGTH} characters")
    expires_at = datetime.fromtimestamp(_time_claim(claims, "exp"), UTC)
    return TokenClaim(_string_claim(claims, "iss"), jti, expires_at, key)


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise MissingToken("the call carries no bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or _WHITESPACE.search(token):
        raise MalformedToken("the authorization header is not 'Bearer <token>'")
    return token


@dataclass(frozen=True)
class _CompactJws:
    """A JWT in JWS compact serialisation (RFC 7515), read once: PyJWT reads a token twice to verify
    it (once for the key id, once to verify) and checks its base64 a character at a time, which cost
    about 150 us a request. Read as strictly as PyJWT reads it: canonical base64url, padding only to a
    multiple of four, a JSON object header and payload; the signature is PyJWT's algorithm's check.
    """

    header: dict[str, Any]
    signing_input: bytes
    payload: bytes  # JSON text, parsed once the signature verifies
    signature: bytes

    @classmethod
    def parse(cls, token: str) -> _CompactJws:
        segments = token.encode("ascii", "replace").split(b".")
        if len(segments) != 3:
            raise MalformedToken("the token is not a well-formed JWT")
        header_segment, payload_segment, signature_segment = segments
        try:
            header = json.loads(_base64url(header_segment))
        except (ValueError, RecursionError):
            raise MalformedToken("the token is not a well-formed JWT") from None
        if not isinstance(header, dict):
            raise MalformedToken("the token is not a well-formed JWT")
        # An unencoded payload (RFC 7797) or any other critical extension is not something we accept.
        if "crit" in header or header.get("b64", True) is not True:
            raise MalformedToken("the token uses a JWS extension this service does not accept")
        signing_input = header_segment + b"." + payload_segment
        return cls(header, signing_input, _base64url(payload_segment), _base64url(signature_segment))

    def key_id(self) -> str:
        key_id = self.header.get("kid")
        if not isinstance(key_id, str) or not key_id:
            raise MalformedToken("the token header names no key id")
        if not key_id.isprintable():  # a NUL reaching PostgreSQL would be an internal error, not a refusal
            raise MalformedToken("the token's key id holds control characters")
        return key_id

    def verified_claims(self, key: VerificationKey) -> dict[str, Any]:
        # Pinning the algorithm to the key's own refuses "none", HS256-with-the-public-key and RS256.
        if self.header.get("alg") != key.algorithm:
            raise BadSignature("the token's signature does not verify with its key")
        if not _ALGORITHMS[key.algorithm].verify(self.signing_input, _public_key(key), self.signature):
            raise BadSignature("the token's signature does not verify with its key")
        try:
            claims = json.loads(self.payload)
        except (ValueError, RecursionError):
            raise MalformedToken("the token is not a well-formed JWT") from None
        if not isinstance(claims, dict):
            raise MalformedToken("the token is not a well-formed JWT")
        return claims


def _base64url(segment: bytes) -> bytes:
    """Decodes one segment, refusing anything but canonical base64url (as PyJWT does)."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1 or not _BASE64URL.fullmatch(stripped):
        raise MalformedToken("the token is not a well-formed JWT")
    decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    # Set bits beyond the last byte would let one token be spelled several ways.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        raise MalformedToken("the token is not a well-formed JWT")
    return decoded


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
