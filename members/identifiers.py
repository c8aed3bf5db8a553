"""Normalising, hashing and masking member identifiers. Pure."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

from common.errors import InvalidArgument


class InvalidIdentifier(InvalidArgument):
    reason = "INVALID_MEMBER_IDENTIFIER"


class IdentifierKind(StrEnum):
    PHONE = "PHONE"
    EMAIL = "EMAIL"
    MEMBER_NUMBER = "MEMBER_NUMBER"
    # A bank's token for a linked co-branded card (never the card number itself).
    CARD_TOKEN = "CARD_TOKEN"  # noqa: S105 - a kind of identifier, not a secret


@dataclass(frozen=True)
class MemberIdentifier:
    kind: IdentifierKind
    value: str


_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_MEMBER_NUMBER = re.compile(r"^M\d{9}$")
_CARD_TOKEN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def normalise(identifier: MemberIdentifier) -> MemberIdentifier:
    """E.164 for phones (with the leading +), lower case for emails, upper case for member numbers."""
    value = identifier.value.strip()
    if identifier.kind is IdentifierKind.PHONE:
        # "+44 (0)7700 900123": the bracketed trunk zero is dialled nationally, never after the country code.
        value = _PHONE_PUNCTUATION.sub("", value.replace("(0)", ""))
        if value.startswith("00"):
            value = "+" + value[2:]
        if not _E164.match(value):
            raise InvalidIdentifier("phone numbers must be in E.164 form, e.g. +447700900123")
    elif identifier.kind is IdentifierKind.EMAIL:
        value = value.lower()
        if len(value) > 254 or not _EMAIL.match(value):
            raise InvalidIdentifier("that is not an email address")
    elif identifier.kind is IdentifierKind.CARD_TOKEN:
        if not _CARD_TOKEN.match(value):
            raise InvalidIdentifier("card tokens are 1 to 64 letters, digits and _ . : -")
    else:
        value = value.upper()
        if not _MEMBER_NUMBER.match(value):
            raise InvalidIdentifier("member numbers look like M123456789")
    return MemberIdentifier(identifier.kind, value)


def lookup_hash(identifier: MemberIdentifier, pepper: bytes) -> str:
    """A keyed hash, so the table finds a phone or email without storing it."""
    message = f"{identifier.kind}:{identifier.value}".encode()
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def mask(identifier: MemberIdentifier) -> str:
    value = identifier.value
    if identifier.kind is IdentifierKind.EMAIL:
        local, _, domain = value.partition("@")
        return f"{local[0]}***@{domain}"
    if identifier.kind is IdentifierKind.PHONE:
        return value[:3] + "*" * (len(value) - 6) + value[-3:]
    if identifier.kind is IdentifierKind.CARD_TOKEN:
        return "card token ..." + value[-4:]
    return value
