"""Digests shared by the token signer (SDK) and the token verifier (auth)."""

from __future__ import annotations

import base64
import hashlib


def body_sha256_b64url(body: bytes) -> str:
    """Base64url (no padding) of the SHA-256 of the raw request body, as carried in a token's ``bsh``."""
    digest = hashlib.sha256(body).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
