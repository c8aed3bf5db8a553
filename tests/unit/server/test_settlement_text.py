"""The settlement CLI's text: exact amounts in and out, tables, and the close's progress on a terminal or a pipe."""

from __future__ import annotations

import io
import re

import pytest
from loyalty.v1 import settlement_service_pb2 as pb

from server.settlement_text import ProgressDisplay, format_minor, render_table, statement_status, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "amount_minor"),
    [("260.00", "EUR", 26_000), ("260", "EUR", 26_000), ("0.1", "EUR", 10), ("1e3", "EUR", 100_000),
     (" 12.5 ", "EUR", 1_250), ("1500", "JPY", 1_500), ("1.234", "KWD", 1_234), ("-3.00", "EUR", -300)],
)  # fmt: skip
def test_amounts_convert_exactly_to_minor_units(amount: str, currency: str, amount_minor: int) -> None:
    assert to_minor(amount, currency) == amount_minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [("1.005", "EUR", "more decimals than EUR has (2)"), ("260.000", "EUR", "more decimals"),
     ("1.5", "JPY", "more decimals than JPY has (0)"), ("12,50", "EUR", "not a decimal"),
     ("NaN", "EUR", "not a decimal"), ("Infinity", "EUR", "not a decimal"), ("1", "XXX", "unknown currency")],
)  # fmt: skip
def test_amounts_that_would_need_rounding_or_guessing_are_refused(amount: str, currency: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        to_minor(amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "amount_minor"),
    [("92233720368547758.07", "EUR", 2**63 - 1), ("-92233720368547758.08", "EUR", -(2**63)),
     ("9223372036854775807", "JPY", 2**63 - 1), ("9223372036854775.807", "KWD", 2**63 - 1)],
)  # fmt: skip
def test_amounts_up_to_int64_minor_units_convert_exactly(amount: str, currency: str, amount_minor: int) -> None:
    assert to_minor(amount, currency) == amount_minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("1e30", "EUR"), ("92233720368547758.08", "EUR"), ("-92233720368547758.09", "EUR"), ("9223372036854775808", "JPY"),
     ("1e999999", "EUR"), ("-1E+99999999999", "EUR"), ("123456789012345678901234567890.12", "EUR")],
)  # fmt: skip
def test_amounts_beyond_int64_minor_units_are_refused(amount: str, currency: str) -> None:
    # A request carries int64 minor units: anything larger would crash building it, not reach the server.
    with pytest.raises(ValueError, match=re.escape("out of range")):
        to_minor(amount, currency)


def test_minor_units_print_in_the_currency_precision() -> None:
    assert [format_minor(-100_000, "EUR"), format_minor(5, "EUR"), format_minor(5, "JPY"), format_minor(5, "KWD")] == [
        "-1000.00", "0.05", "5", "0.005",
    ]  # fmt: skip


def test_tables_align_columns_and_numbers_to_the_right() -> None:
    table = render_table(("ID", "NET"), [("a", "1.00"), ("bbb", "-12.00")], right_aligned={1})
    assert table.splitlines() == ["ID      NET", "a      1.00", "bbb  -12.00"]


def test_statement_status_follows_direction_and_payments() -> None:
    def status(direction: int, paid_minor: int, outstanding_minor: int) -> str:
        statement = pb.Statement(
            payment_direction=direction, paid_minor=paid_minor, outstanding_minor=outstanding_minor
        )
        return statement_status(statement)

    assert status(pb.PAYMENT_DIRECTION_INBOUND, 0, 1_200) == "UNPAID"
    assert status(pb.PAYMENT_DIRECTION_INBOUND, 700, 500) == "PARTLY PAID"
    assert status(pb.PAYMENT_DIRECTION_OUTBOUND, 400, 0) == "PAID"
    assert status(pb.PAYMENT_DIRECTION_NONE, 0, 0) == "NOTHING TO PAY"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


STEPS = [("itemising transactions", 0, 3), ("writing statements", 1, 2), ("writing statements", 2, 2), ("closed", 3, 3)]


def test_progress_on_a_terminal_redraws_one_line() -> None:
    terminal = Terminal()
    display = ProgressDisplay(terminal)
    for stage, completed, total in STEPS:
        display.show(pb.CloseProgress(stage=stage, completed=completed, total=total))
    display.finish()
    frames = terminal.getvalue().split("\r")[1:]
    assert terminal.getvalue().count("\n") == 1 and terminal.getvalue().endswith("\n")
    assert frames[1].startswith("writing statements       [" + "#" * 15 + "-" * 15 + "] 1/2")
    assert frames[-1].rstrip("\n").endswith("] 3/3") and len(frames[-1]) >= len(frames[-2])  # nothing left behind


def test_progress_into_a_pipe_prints_one_line_per_stage() -> None:
    pipe = io.StringIO()
    display = ProgressDisplay(pipe)
    for stage, completed, total in STEPS:
        display.show(pb.CloseProgress(stage=stage, completed=completed, total=total))
    display.finish()
    assert pipe.getvalue().splitlines() == ["itemising transactions (0/3)", "writing statements (1/2)", "closed (3/3)"]
