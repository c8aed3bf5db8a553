"""Checks a partner's uploaded signing key: only ES256 (EC P-256) or EdDSA (Ed25519) public keys."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import InvalidArgument

PartnerPublicKey = EllipticCurvePublicKey | Ed25519PublicKey


class PrivateKeyNotAllowed(InvalidArgument):
    reason = "PRIVATE_KEY_NOT_ALLOWED"


class KeyTypeNotAllowed(InvalidArgument):
    reason = "KEY_TYPE_NOT_ALLOWED"


class InvalidPublicKey(InvalidArgument):
    reason = "INVALID_PUBLIC_KEY"


def load_public_key(pem: str) -> tuple[str, PartnerPublicKey]:
    """Returns (JWT algorithm, public key) for a PEM public key; the key text never enters an error."""
    # Checked before parsing so a leaked private key is refused without being loaded or echoed.
    if "PRIVATE KEY" in pem:
        raise PrivateKeyNotAllowed("send only the public half of the signing key; rotate this one now")
    try:
        public_key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise InvalidPublicKey("the key is not a PEM-encoded public key") from None
    if isinstance(public_key, EllipticCurvePublicKey) and isinstance(public_key.curve, SECP256R1):
        return "ES256", public_key
    if isinstance(public_key, Ed25519PublicKey):
        return "EdDSA", public_key
    raise KeyTypeNotAllowed("only EC P-256 (ES256) and Ed25519 (EdDSA) public keys are accepted")
