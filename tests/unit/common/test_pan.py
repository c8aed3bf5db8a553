"""Card numbers are recognised by length and Luhn check, whatever their grouping."""

from __future__ import annotations

import pytest

from common.pan import PanNotAllowed, looks_like_pan, passes_luhn, refuse_pan

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
        "",
    ],
)
def test_other_digit_runs_are_not_card_numbers(text: str) -> None:
    assert not looks_like_pan(text)


def test_luhn() -> None:
    assert passes_luhn("79927398713") and not passes_luhn("79927398710")


def test_the_refusal_names_the_field_never_the_number() -> None:
    with pytest.raises(PanNotAllowed) as raised:
        refuse_pan("receipt_id", "4111 1111 1111 1111")
    assert raised.value.metadata == {"field": "receipt_id"}
    assert "4111" not in raised.value.message
