"""Member identifiers: E.164 phones, lower-case emails, member numbers, keyed lookup hashes, masks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from members.identifiers import (
    IdentifierKind,
    InvalidIdentifier,
    MemberIdentifier,
    lookup_hash,
    mask,
    normalise,
)

# Deterministic examples, and no per-example deadline: a loaded machine must not fail a correct test.
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

PEPPER = b"unit-test-pepper"
OTHER_PEPPER = b"another-pepper"


def phone(value: str) -> MemberIdentifier:
    return MemberIdentifier(IdentifierKind.PHONE, value)


def email(value: str) -> MemberIdentifier:
    return MemberIdentifier(IdentifierKind.EMAIL, value)


def member_number(value: str) -> MemberIdentifier:
    return MemberIdentifier(IdentifierKind.MEMBER_NUMBER, value)


def assert_invalid(identifier: MemberIdentifier) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise(identifier)
    assert caught.value.reason == "INVALID_MEMBER_IDENTIFIER"


@pytest.mark.parametrize("identifier", [phone("0799 111 2222"), email("secret.person@nowhere")], ids=str)
def test_rejection_does_not_echo_personal_data(identifier: MemberIdentifier) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise(identifier)
    assert identifier.value not in str(caught.value)
    assert all(identifier.value not in value for value in caught.value.metadata.values())


# --- phones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+44-7700-900-123", "+447700900123"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("+44.7700.900.123", "+447700900123"),
        ("  +447700900123\t", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("00 1 415 555 0123", "+14155550123"),
        ("+12345678", "+12345678"),  # shortest: 8 digits
        ("+123456789012345", "+123456789012345"),  # longest: 15 digits
    ],
)
def test_phone_is_normalised_to_e164(raw: str, expected: str) -> None:
    assert normalise(phone(raw)) == phone(expected)


@pytest.mark.parametrize(
    "raw",
    [
        "447700900123",  # no +
        "07700 900123",  # national form
        "7700900123",
        "+1234567",  # 7 digits: too short
        "+1234567890123456",  # 16 digits: too long
        "+0447700900123",  # country codes do not start with 0
        "+44 7700 90012a",
        "++447700900123",
        "+44/7700/900123",
        "+",
        "",
        "   ",
        "000447700900123",
    ],
)
def test_phone_that_is_not_e164_is_rejected(raw: str) -> None:
    assert_invalid(phone(raw))


# --- emails -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice.Smith@Example.COM", "alice.smith@example.com"),
        ("  BOB+loyalty@mail.example.co.uk ", "bob+loyalty@mail.example.co.uk"),
        ("a@b.io", "a@b.io"),
        ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalise(email(raw)) == email(expected)


@pytest.mark.parametrize(
    "raw",
    [
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "alice@example.c",  # one-letter top-level domain
        "alice@@example.com",
        "alice@bob@example.com",
        "al ice@example.com",
        "alice@exa mple.com",
        "x" * 65 + "@example.com",  # local part over 64
        "a@" + "b" * 250 + ".com",  # address over 254
        "",
        "+447700900123",
    ],
)
def test_junk_email_is_rejected(raw: str) -> None:
    assert_invalid(email(raw))


# --- member numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("M123456789", "M123456789"), ("m000000001", "M000000001"), (" M987654321 ", "M987654321")]
)
def test_member_number_is_upper_cased(raw: str, expected: str) -> None:
    assert normalise(member_number(raw)) == member_number(expected)


@pytest.mark.parametrize(
    "raw", ["M12345678", "M1234567890", "X123456789", "123456789", "M12345678a", "MM23456789", "M 123456789", ""]
)
def test_malformed_member_number_is_rejected(raw: str) -> None:
    assert_invalid(member_number(raw))


# --- lookup hash ------------------------------------------------------------------------------


def test_lookup_hash_is_stable_hex_sha256() -> None:
    identifier = phone("+447700900123")

    first = lookup_hash(identifier, PEPPER)

    assert first == lookup_hash(phone("+447700900123"), PEPPER)
    assert len(first) == 64
    int(first, 16)


def test_lookup_hash_is_keyed_by_the_pepper() -> None:
    identifier = email("alice@example.com")

    hashed = lookup_hash(identifier, PEPPER)

    assert hashed != lookup_hash(identifier, OTHER_PEPPER)
    assert hashed != lookup_hash(identifier, b"")
    # Not a plain digest anyone could compute from the address alone.
    assert hashed != hashlib.sha256(b"alice@example.com").hexdigest()
    assert hashed != hashlib.sha256(b"EMAIL:alice@example.com").hexdigest()


def test_lookup_hash_never_contains_the_value() -> None:
    assert "447700900123" not in lookup_hash(phone("+447700900123"), PEPPER)


def test_lookup_hash_separates_kinds() -> None:
    assert lookup_hash(member_number("M123456789"), PEPPER) != lookup_hash(email("M123456789"), PEPPER)


def test_spellings_of_one_phone_find_the_same_member() -> None:
    spellings = ["+44 7700 900123", "0044-7700-900-123", "+44 (7700) 900123", "+447700900123"]

    hashes = {lookup_hash(normalise(phone(raw)), PEPPER) for raw in spellings}

    assert len(hashes) == 1


def test_spellings_of_one_email_find_the_same_member() -> None:
    hashes = {lookup_hash(normalise(email(raw)), PEPPER) for raw in ["Alice@Example.com", " alice@example.COM"]}

    assert len(hashes) == 1


# --- masks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "masked"),
    [
        (phone("+447700900123"), "+44*******123"),
        (phone("+12345678"), "+12***678"),
        (email("alice@example.com"), "a***@example.com"),
        (email("a@b.io"), "a***@b.io"),
    ],
)
def test_mask_hides_the_middle(identifier: MemberIdentifier, masked: str) -> None:
    assert mask(identifier) == masked


# --- properties -------------------------------------------------------------------------------

e164 = st.builds(
    lambda first, rest: f"+{first}{rest}",
    st.integers(min_value=1, max_value=9),
    st.text(alphabet="0123456789", min_size=7, max_size=14),
)
separators = st.sampled_from(["", " ", "-", ".", "  "])


@st.composite
def spelled_phones(draw: st.DrawFn) -> tuple[str, str]:
    """An E.164 number and a way a person might type it: separators, brackets, 00 for +."""
    number = draw(e164)
    digits = number[1:]
    cut = draw(st.integers(min_value=1, max_value=len(digits) - 1))
    head, tail = digits[:cut], digits[cut:]
    if draw(st.booleans()):
        head = f"({head})"
    prefix = draw(st.sampled_from(["+", "00", "+ ", "00 "]))
    spelled = prefix + head + draw(separators) + draw(separators).join(tail)
    return number, spelled


@PROPERTY
@given(spelled_phones())
def test_any_spelling_of_a_phone_normalises_to_its_e164_form(case: tuple[str, str]) -> None:
    number, spelled = case
    assert normalise(phone(spelled)) == phone(number)


@PROPERTY
@given(e164)
def test_phone_normalisation_is_idempotent(number: str) -> None:
    once = normalise(phone(number))
    assert normalise(once) == once


@PROPERTY
@given(e164)
def test_phone_mask_never_reveals_the_number(number: str) -> None:
    masked = mask(phone(number))

    assert len(masked) == len(number)
    assert number not in masked
    assert masked.count("*") >= 2
    assert masked[:3] == number[:3] and masked[-3:] == number[-3:]


@PROPERTY
@given(
    local=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=64),
    domain=st.from_regex(r"\A[a-z0-9]{1,20}\.[a-z]{2,6}\Z"),
)
def test_email_mask_never_reveals_the_local_part(local: str, domain: str) -> None:
    address = normalise(email(f"{local}@{domain}"))

    masked = mask(address)

    assert address.value not in masked
    assert masked == f"{local[0]}***@{domain}"
    assert lookup_hash(address, PEPPER) != lookup_hash(address, OTHER_PEPPER)
