"""Identifiers we generate: random, and free of long digit runs so none can look like a card number."""

from __future__ import annotations

import base64
import secrets


def new_id() -> str:
    """128 random bits as 26 lower-case base32 characters (a-z, 2-7).

    Hex ids would put a 13-19 digit run that passes the Luhn check into about one id in 500, and the
    PAN guard refuses requests carrying one (a hold id sent back to capture it, say).
    """
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
