"""Card numbers (PANs) are never accepted: text holding 13-19 digits that pass the Luhn check is refused."""

from __future__ import annotations

import re

from common.errors import InvalidArgument

# Digits, optionally grouped by single spaces or dashes, as card numbers are printed.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")


class PanNotAllowed(InvalidArgument):
    reason = "PAN_NOT_ALLOWED"


def passes_luhn(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def looks_like_pan(text: str) -> bool:
    for run in _DIGIT_RUN.findall(text):
        digits = run.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and passes_luhn(digits):
            return True
    return False


def refuse_pan(field: str, text: str) -> None:
    """Raises PanNotAllowed naming the field (never the value)."""
    if looks_like_pan(text):
        raise PanNotAllowed(f"{field} looks like a card number; send a card token instead", field=field)
