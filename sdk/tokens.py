"""Signs the per-request tokens partners and operator tools send, and manages their signing keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.hashing import body_sha256_b64url

SigningKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey
#: Values of the ``typ`` claim.
TYP_PARTNER = "partner"
TYP_OPERATOR = "operator"


def sign_request_token(
    *,
    private_key: SigningKey,
    key_id: str,
    issuer: str,
    audience: str,
    method: str,
    body: bytes,
    token_type: str = TYP_PARTNER,
    subject: str | None = None,
    roles: Sequence[str] = (),
    lifetime_seconds: int = 60,
    now: datetime | None = None,
) -> str:
    """Returns a JWT bound to one call: its full gRPC method name and the exact serialized body."""
    if token_type == TYP_OPERATOR and not subject:
        raise ValueError("operator tokens need the staff member's id as subject")
    issued_at = int((now or datetime.now(UTC)).timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + lifetime_seconds,
        "jti": uuid.uuid4().hex,
        "typ": token_type,
        "mth": method,
        "bsh": body_sha256_b64url(body),
    }
    if subject is not None:
        claims["sub"] = subject
    if token_type == TYP_OPERATOR:
        claims["roles"] = list(roles)
    return jwt.encode(claims, private_key, algorithm=algorithm_for(private_key), headers={"kid": key_id})


def algorithm_for(private_key: SigningKey) -> str:
    if isinstance(private_key, Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("signing keys must be EC P-256 (ES256) or Ed25519 (EdDSA)")


def generate_key_pair(algorithm: str) -> tuple[SigningKey, str]:
    """Returns a new private key and the PEM public key to register with the operator."""
    private_key: SigningKey
    if algorithm == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private_key = Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported algorithm {algorithm!r}; use ES256 or EdDSA")
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_key, public_pem.decode("ascii")


def load_private_key(path: str | Path) -> SigningKey:
    """Reads an unencrypted PEM private key (EC P-256 or Ed25519)."""
    private_key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey | Ed25519PrivateKey):
        raise ValueError("signing keys must be EC P-256 (ES256) or Ed25519 (EdDSA)")
    algorithm_for(private_key)
    return private_key


def write_private_key(path: str | Path, private_key: SigningKey) -> None:
    """Writes the key as unencrypted PKCS#8 PEM readable only by its owner (mode 0o600)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its old mode through O_CREAT
        handle.write(pem)
