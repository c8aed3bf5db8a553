"""Card numbers (PANs) are never accepted: text holding 13-19 digits that pass the Luhn check is refused.

A run of digits counts only when it stands on its own, as a card number is written. Not inside a
UUID or another token of letters and digits such as a hex request id: roughly one uuid4 hex in 300
holds a Luhn-valid run of 13-19 digits, and a partner whose idempotency keys are UUIDs must never be
refused for it. Not as a phone number either ("+86 138 1234 5678", "0086 138 1234 5678"): E.164
allows 15 digits. No card number starts with 0.
"""

from __future__ import annotations

import re

from common.errors import InvalidArgument

# Digits, optionally grouped by single spaces or dashes, as card numbers are printed. Greedy, so
# each match is a maximal run and the characters around it decide whether it stands alone.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
# Thirteen digits in such a run at least: text without one holds no card number (the common case,
# checked in one scan before the exact rules below).
_LONG_ENOUGH_RUN = re.compile(r"\d(?:[ -]?\d){12}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


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
    if len(text) < 13 or _LONG_ENOUGH_RUN.search(text) is None:
        return False
    return _holds_pan(text)


def _holds_pan(text: str) -> bool:
    text = _UUID.sub("x", text)  # a letter, so digits glued to a UUID stay part of a token
    for run in _DIGIT_RUN.finditer(text):
        before = text[run.start() - 1] if run.start() > 0 else ""
        after = text[run.end()] if run.end() < len(text) else ""
        if before.isalnum() or before == "+" or after.isalnum():
            continue  # part of an identifier, or a phone number
        digits = run.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and digits[0] != "0" and passes_luhn(digits):
            return True
    return False


def refuse_pan(field: str, text: str) -> None:
    """Raises PanNotAllowed naming the field (never the value)."""
    if looks_like_pan(text):
        raise PanNotAllowed(f"{field} looks like a card number; send a card token instead", field=field)
