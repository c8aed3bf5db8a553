"""`coalition cards` against a real server: the operator's merchant table and a bank's file, sent twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loyalty.v1 import card_service_pb2 as card_pb
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from sdk.tokens import write_private_key
from server.cards_cli import COLUMNS
from server.cli import main
from tests.e2e.conftest import OPERATOR_KEY_ID, OperatorKey, Partner
from tests.factories import phone

TEST_PAN = "4111111111111111"  # Luhn-valid: the server must refuse the line and nobody may print it


@dataclass(frozen=True)
class Cli:
    target: str
    operator_key_path: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *arguments: str) -> tuple[int, str]:
        self.capsys.readouterr()
        code = main(list(arguments))
        captured = self.capsys.readouterr()
        return code, captured.out + captured.err

    def admin(self, *arguments: str) -> tuple[int, str]:
        connection = ("--target", self.target, "--operator-key", str(self.operator_key_path),
                      "--operator-key-id", OPERATOR_KEY_ID, "--staff-id", "ops-tester")  # fmt: skip
        return self.run("cards", "merchant", *arguments, *connection)


@pytest.fixture
def cli(target: str, operator_key: OperatorKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    path = tmp_path / "operator.pem"
    write_private_key(path, operator_key.private_key)
    return Cli(target, path, capsys)


def test_the_operator_maps_lists_and_removes_merchants(cli: Cli, onboard: Callable[..., Partner]) -> None:
    shop = onboard()
    merchant_id = f"mid-{uuid.uuid4().hex[:10]}"
    code, added = cli.admin("add", merchant_id, "--partner", shop.partner_id, "--request-id", f"add-{merchant_id}")
    assert code == 0 and json.loads(added)["card_merchant"]["partner_id"] == shop.partner_id
    code, again = cli.admin("add", merchant_id, "--partner", shop.partner_id, "--request-id", f"add-{merchant_id}")
    assert code == 0 and json.loads(again)["idempotent_replay"] is True
    code, taken = cli.admin("add", merchant_id, "--partner", shop.partner_id)
    assert code == 1 and "ALREADY_EXISTS MERCHANT_ALREADY_MAPPED" in taken
    code, listed = cli.admin("list", "--page-size", "1000")
    assert code == 0 and merchant_id in {row["merchant_id"] for row in json.loads(listed)["card_merchants"]}
    assert cli.admin("remove", merchant_id)[0] == 0
    code, gone = cli.admin("remove", merchant_id)
    assert code == 1 and "NOT_FOUND CARD_MERCHANT_NOT_FOUND" in gone


@pytest.mark.parametrize("batching", [(), ("--batch-items", "1"), ("--batch-items", "4"),
                                      ("--batch-items", "2", "--streams", "3")],
                         ids=["batches", "one-item-messages", "batches-of-4", "three-streams"])  # fmt: skip
def test_a_bank_file_is_applied_once_and_a_second_run_reports_replays(
    cli: Cli, onboard: Callable[..., Partner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    batching: tuple[str, ...],
) -> None:  # fmt: skip
    bank, shop = onboard(kind=admin_pb.PARTNER_KIND_CARD_ISSUER), onboard()
    merchant_id = f"mid-{uuid.uuid4().hex[:10]}"
    assert cli.admin("add", merchant_id, "--partner", shop.partner_id)[0] == 0
    token = f"tok_{uuid.uuid4().hex}"
    linked = bank.client.cards.LinkCard(card_pb.LinkCardRequest(
        card_token=token, member=pb.MemberIdentifier(phone_number=phone().value)))  # fmt: skip
    when = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    rows = [
        ("AUTHORISATION", "T1", "", token, merchant_id, "EUR", "12000", when),
        ("CLEARING", "T1", "", token, merchant_id, "EUR", "10000", when),  # less than authorised
        ("refund", "T1", "R1", "", "", "EUR", "2000", when),
        ("CHARGEBACK", "T2", "C1", "", "", "EUR", "500", when),  # before its clearing: waits
        ("CLEARING", "T3", "", token, "not-a-partner", "EUR", "5000", when),  # the bank's base only
        ("AUTHORISATION", "T4", "", TEST_PAN, merchant_id, "EUR", "100", when),
        ("CLEARING", "T5", "", "tok_nobody", merchant_id, "EUR", "100", when),
        ("CLEARING", "T6", "", token, merchant_id, "EUR", "12.50", when),
        ("AUTHORISATION", "T1", "", token, merchant_id, "EUR", "12000", when),  # again in the same file
    ]
    path = tmp_path / "cards.csv"
    # As a spreadsheet saves it: a byte-order mark, CRLF line ends, the columns in another order.
    header = list(reversed(COLUMNS))
    lines = [",".join(header)] + [",".join(dict(zip(COLUMNS, row, strict=True))[column] for column in header)
                                  for row in rows]  # fmt: skip
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    keys = tmp_path / "keys"
    write_private_key(keys / f"{bank.partner_id}.pem", bank.private_key)
    monkeypatch.setenv("LOYALTY_KEYS_DIR", str(keys))  # where the bank's key is found, as `coalition token` does
    arguments = ("cards", "ingest", str(path), "--partner", bank.partner_id, "--key-id", bank.key_id,
                 "--target", cli.target, *batching)  # fmt: skip

    code, first = cli.run(*arguments)
    assert code == 1, first  # some lines were rejected
    assert "9 items answered" in first, first
    assert _counts(first) == {"APPLIED": (5, 1), "WAITING": (1, 0), "IGNORED": (0, 0), "REJECTED": (3, 0)}
    assert "line 7: PAN_NOT_ALLOWED" in first and TEST_PAN not in first
    assert "line 8: CARD_NOT_LINKED T5 CLEARING" in first
    assert "line 9: INVALID_CSV_LINE: amount_minor must be a whole number" in first
    balance = bank.client.checkout.GetBalance(
        pb.GetBalanceRequest(member=pb.MemberIdentifier(member_number=linked.member_number))
    ).balance
    assert balance.available_points == 200 - 40 + 50

    code, second = cli.run(*arguments)
    assert code == 1, second
    assert _counts(second) == {"APPLIED": (5, 5), "WAITING": (1, 1), "IGNORED": (0, 0), "REJECTED": (3, 1)}
    again = bank.client.checkout.GetBalance(
        pb.GetBalanceRequest(member=pb.MemberIdentifier(member_number=linked.member_number))
    ).balance
    assert (again.available_points, again.pending_points) == (balance.available_points, balance.pending_points)


def _counts(output: str) -> dict[str, tuple[int, int]]:
    found = {}
    for line in output.splitlines():
        parts = line.replace("(replays", "").replace(")", "").split()
        if parts and parts[0] in ("APPLIED", "WAITING", "IGNORED", "REJECTED"):
            found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


def test_a_file_without_the_header_is_refused_before_anything_is_sent(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "cards.csv"
    path.write_text("type,amount_minor\nCLEARING,100\n")
    code, output = cli.run("cards", "ingest", str(path), "--partner", "p", "--private-key", str(cli.operator_key_path),
                           "--target", cli.target)  # fmt: skip
    assert code == 2 and "the header lacks bank_transaction_id" in output
