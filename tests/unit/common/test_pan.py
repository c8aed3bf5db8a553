"""Card numbers are recognised by length and Luhn check, whatever their grouping."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.pan import PanNotAllowed, _holds_pan, looks_like_pan, passes_luhn, refuse_pan

# Well-known test card numbers (Visa, Mastercard, Amex, 19-digit Visa): all pass Luhn.
TEST_PANS = ["4111111111111111", "5555 5555 5555 4444", "3782-822463-10005", "4000000000000000006"]


@pytest.mark.parametrize("text", TEST_PANS)
def test_test_card_numbers_are_recognised_in_any_grouping(text: str) -> None:
    assert looks_like_pan(text)
    assert looks_like_pan(f"receipt for card {text} at till 4")


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits: longer than any PAN
        "R-2026-000123",
        "+447700900123",
        "M123456789",
        "0411111111111111",  # no card number starts with 0
        "",
    ],
)
def test_other_digit_runs_are_not_card_numbers(text: str) -> None:
    assert not looks_like_pan(text)


@pytest.mark.parametrize(
    "text",
    [
        "4ce6a2e14111111111111111bd04c3b7",  # a uuid4 hex whose digits happen to pass Luhn
        "41111111-1111-1111-ad6e-5c3d4a9b2f10",  # the same in canonical form
        "key-41111111-1111-1111-ad6e-5c3d4a9b2f10-retry",
        "+8613812345678",  # a 13-digit mobile number that passes Luhn
        "+86 138 1234 5678",
        "0086 138 1234 5678",
    ],
)
def test_digits_inside_identifiers_and_phone_numbers_are_not_card_numbers(text: str) -> None:
    assert not looks_like_pan(text)


@given(st.uuids())
def test_no_uuid_is_ever_taken_for_a_card_number(value: uuid.UUID) -> None:
    assert not looks_like_pan(value.hex)
    assert not looks_like_pan(str(value))
    assert not looks_like_pan(f"R-{value.hex[:8]}")


def test_a_card_number_next_to_a_uuid_is_still_found() -> None:
    assert looks_like_pan(f"{uuid.uuid4()} 4111 1111 1111 1111")


def test_luhn() -> None:
    assert passes_luhn("79927398713") and not passes_luhn("79927398710")


def test_the_refusal_names_the_field_never_the_number() -> None:
    with pytest.raises(PanNotAllowed) as raised:
        refuse_pan("receipt_id", "4111 1111 1111 1111")
    assert raised.value.metadata == {"field": "receipt_id"}
    assert "4111" not in raised.value.message


_pieces = st.one_of(st.text("0123456789", min_size=1, max_size=20), st.sampled_from([" ", "-", "+", "x", "a", "--"]),
                    st.sampled_from(TEST_PANS))  # fmt: skip


@given(st.lists(_pieces, max_size=8).map("".join))
def test_the_quick_check_before_the_rules_changes_no_answer(text: str) -> None:
    assert looks_like_pan(text) == _holds_pan(text)
