"""Page tokens: what encode_page_token issues decodes back; anything else is an InvalidPageToken, never a crash."""

from __future__ import annotations

import base64

import pytest

from common.sql import InvalidPageToken, decode_page_token, encode_page_token


def token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize("last_id", [0, 1, 50, 2**31, 2**63 - 1])
def test_issued_tokens_decode_to_their_id(last_id: int) -> None:
    assert decode_page_token(encode_page_token(last_id)) == last_id


def test_no_token_is_the_first_page() -> None:
    assert decode_page_token("") == 0


@pytest.mark.parametrize(
    "page_token",
    [
        # Ids beyond a signed 64-bit integer, or negative: SQLite raised OverflowError binding the first.
        pytest.param(token(f"after:{2**63}"), id="2**63"),
        pytest.param(token(f"after:{2**64}"), id="2**64"),
        pytest.param(token("after:" + "9" * 40), id="40 digits"),
        pytest.param(token("after:" + "9" * 5000), id="past int()'s digit limit"),
        pytest.param(token("after:-1"), id="-1"),
        pytest.param(token(f"after:{-(2**63)}"), id="-2**63"),
        # Not tokens at all.
        pytest.param("not a token!", id="not base64"),
        pytest.param("%%%", id="percent signs"),
        pytest.param(token("before:3"), id="another prefix"),
        pytest.param(token("after:three"), id="not a number"),
        pytest.param(token("after:"), id="no number"),
        pytest.param(base64.urlsafe_b64encode(b"after:\xff").decode(), id="not UTF-8"),
    ],
)
def test_tokens_this_service_never_issued_are_refused(page_token: str) -> None:
    with pytest.raises(InvalidPageToken):
        decode_page_token(page_token)
