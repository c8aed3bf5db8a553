"""Page tokens: what encode_page_token issues decodes back; anything else is an InvalidPageToken, never a crash."""

from __future__ import annotations

import base64

import pytest

from common.libpq import NumberedQuery
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


def test_a_plain_insert_is_written_for_many_rows_and_anything_else_is_not() -> None:
    one_row = NumberedQuery(b"INSERT INTO t (a, b) VALUES ($1::BIGINT, $2)", ("a", "b"))
    assert one_row.for_rows(2) == NumberedQuery(
        b"INSERT INTO t (a, b) VALUES ($1::BIGINT, $2), ($3::BIGINT, $4)", ("a#0", "b#0", "a#1", "b#1")
    )
    assert NumberedQuery(b"INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING", ("a",)).for_rows(2) is None
    assert NumberedQuery(b"INSERT INTO t (a) VALUES (lower($1))", ("a",)).for_rows(2) is None
    assert NumberedQuery(b"UPDATE t SET a = $1 WHERE b = $2", ("a", "b")).for_rows(2) is None


def test_psycopg_placeholders_become_numbered_ones_once_per_name() -> None:
    query = NumberedQuery.of("SELECT %(a)s + %(b)s + %(a)s, '100%%'")
    assert query == NumberedQuery(b"SELECT $1 + $2 + $1, '100%'", ("a", "b"))
