"""`coalition settlement` as finance runs it: the real CLI in a subprocess against a server on a ledger of its own.

A close reads the whole ledger, so the server here has a database to itself. Its books run on a manual
clock set inside March 2026 and then moved past the month's end; tokens are still checked on the real
clock, because the CLI signs them with the real time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loyalty.v1 import checkout_service_pb2 as pb
from loyalty.v1 import partner_admin_service_pb2 as admin_pb

from auth.tokens import TokenVerifier
from common.clock import ManualClock, SystemClock
from migrations.runner import upgrade
from sdk.client import CoalitionClient, Credentials
from sdk.tokens import generate_key_pair, write_private_key
from server.app import Application, RunningServer, create_server
from server.auth_stores import PartnerKeySource, load_operator_keys
from tests.e2e.conftest import DEFAULT_TERMS, OPERATOR_KEY_ID, OperatorKey, server_settings
from tests.e2e.test_cli import COMMAND, REPOSITORY
from tests.factories import phone

PERIOD = "2026-03"
IN_MARCH = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
AFTER_MARCH = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Finance:
    """The server, its books' clock, and the CLI's command line up to the action."""

    running: RunningServer
    clock: ManualClock
    directory: Path
    prefix: tuple[str, ...]
    environment: dict[str, str]
    issuer_id: str  # billed on issuance: earns the member's points
    redeemer_id: str  # billed on redemption: where the member spends them

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *arguments], cwd=self.directory, env=self.environment, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    def ok(self, *arguments: str) -> str:
        result = self.run(*arguments)
        assert result.returncode == 0, f"settlement {' '.join(arguments)}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def statement_id(self, partner_id: str) -> str:
        return f"{PERIOD}/{partner_id}/EUR"


def error_of(result: subprocess.CompletedProcess[str], exit_code: int = 1) -> str:
    """The error a failed run printed: last on stderr, with nothing on stdout (which may be an export)."""
    assert result.returncode == exit_code, f"{result.stdout}\n{result.stderr}"
    assert result.stdout == "" and "Traceback" not in result.stderr, f"{result.stdout}\n{result.stderr}"
    return result.stderr.splitlines()[-1]


def start_finance_server(database_url: str, operator_key: OperatorKey, clock: ManualClock) -> RunningServer:
    settings = server_settings(database_url, operator_key)
    app = Application.build(settings, clock)
    app.verifier = TokenVerifier(
        audience=settings.network_audience, clock=SystemClock(), partner_keys=PartnerKeySource(app.uow),
        operator_keys=load_operator_keys(settings.operator_key_paths()), replay_guard=app.replay_guard,
    )  # fmt: skip
    running = create_server(app)
    running.start()
    return running


def start_own_server(
    database_url: str, operator_key: OperatorKey, start: datetime
) -> tuple[RunningServer, ManualClock, str]:  # fmt: skip
    """Migrates a database of the module's own and serves it on a clock the tests move; (server, clock, target)."""
    upgrade(database_url)
    clock = ManualClock(start)
    running = start_finance_server(database_url, operator_key, clock)
    return running, clock, f"127.0.0.1:{running.port}"


def cli_connection(
    directory: Path, operator_key: OperatorKey, target: str, staff_id: str
) -> tuple[tuple[str, ...], dict[str, str]]:  # fmt: skip
    """What a `coalition` subprocess needs to call ``target`` as operator staff: its connection options
    (after the command's name) and an environment without this process's LOYALTY_ settings."""
    key_path = directory / "operator.pem"
    write_private_key(key_path, operator_key.private_key)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LOYALTY_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "proto")])
    options = ("--target", target, "--operator-key", str(key_path), "--operator-key-id", OPERATOR_KEY_ID,
               "--staff-id", staff_id)  # fmt: skip
    return options, environment


def onboard(
    operator: CoalitionClient, target: str, billing: admin_pb.BillingMode,
    kind: admin_pb.PartnerKind = admin_pb.PARTNER_KIND_ONLINE_SHOP,
) -> tuple[str, CoalitionClient]:  # fmt: skip
    """Creates a partner with a key and a EUR contract; returns its id and a client signing as it."""
    partner_id = f"p-{uuid.uuid4().hex[:10]}"
    operator.partner_admin.CreatePartner(admin_pb.CreatePartnerRequest(
        partner_id=partner_id, display_name=f"Partner {partner_id}", kind=kind))  # fmt: skip
    private_key, public_pem = generate_key_pair("ES256")
    operator.partner_admin.RegisterPartnerKey(admin_pb.RegisterPartnerKeyRequest(
        partner_id=partner_id, key_id=f"{partner_id}-1", public_key_pem=public_pem))  # fmt: skip
    terms = admin_pb.ContractTerms()
    terms.CopyFrom(DEFAULT_TERMS)
    terms.billing = billing
    operator.partner_admin.CreateContractVersion(
        admin_pb.CreateContractVersionRequest(partner_id=partner_id, terms=terms)
    )
    return partner_id, CoalitionClient(target, Credentials(partner_id, f"{partner_id}-1", private_key))


def trade_in_march(issuer: CoalitionClient, redeemer: CoalitionClient) -> None:
    """A member earns 1,000 points at the issuer (it pays 12.00) and spends 400 at the redeemer (it gets 4.00)."""
    member = pb.MemberIdentifier(phone_number=phone().value)
    issuer.checkout.EarnPoints(pb.EarnPointsRequest(
        member=member, receipt_id="R-1", enroll_if_unknown=True,
        basket=pb.Basket(currency_code="EUR", total_minor=100_000),
    ))  # fmt: skip
    redeemer.checkout.RedeemPoints(
        pb.RedeemPointsRequest(member=member, points=400, currency_code="EUR", receipt_id="W-1")
    )


@pytest.fixture(scope="module")
def finance(tmp_path_factory: pytest.TempPathFactory, operator_key: OperatorKey) -> Iterator[Finance]:
    directory = tmp_path_factory.mktemp("settlement-cli")
    running, clock, target = start_own_server(f"sqlite:///{directory / 'ledger.db'}", operator_key, IN_MARCH)
    admin = Credentials.operator("ops-tester", OPERATOR_KEY_ID, operator_key.private_key, ["admin"])
    with CoalitionClient(target, admin) as operator:
        issuer_id, issuer = onboard(operator, target, admin_pb.BILLING_MODE_ON_ISSUANCE)
        redeemer_id, redeemer = onboard(operator, target, admin_pb.BILLING_MODE_ON_REDEMPTION)
    with issuer, redeemer:
        trade_in_march(issuer, redeemer)
    clock.set(AFTER_MARCH)
    options, environment = cli_connection(directory, operator_key, target, "fin-tester")
    prefix = (*COMMAND, "settlement", *options)
    yield Finance(running, clock, directory, prefix, environment, issuer_id, redeemer_id)
    running.stop(0)


def test_close_list_show_export_pay_until_paid_and_reconcile(finance: Finance) -> None:
    issuer_statement, redeemer_statement = (
        finance.statement_id(finance.issuer_id),
        finance.statement_id(finance.redeemer_id),
    )
    closing = finance.run("close", "--period", PERIOD)
    assert closing.returncode == 0, closing.stdout + closing.stderr
    assert f"period {PERIOD} CLOSED (closed now)" in closing.stdout
    assert re.search(r"statements\s+2\n", closing.stdout) and re.search(r"margin EUR\s+8\.00 ", closing.stdout)
    # stderr is a pipe, not a terminal: one line per stage and no carriage returns.
    assert "itemising transactions" in closing.stderr and "\r" not in closing.stderr
    assert "already closed: nothing was written" in finance.ok("close", "--period", PERIOD)

    listed = json.loads(finance.ok("list", "--period", PERIOD, "--format", "json"))
    statements = {statement["partner_id"]: statement for statement in listed["statements"]}
    assert statements[finance.issuer_id]["net_minor"] == "-1200"  # int64 prints as a JSON string
    assert statements[finance.redeemer_id]["net_minor"] == "400"
    table = finance.ok("list", "--period", PERIOD, "--partner", finance.issuer_id)
    assert re.search(rf"{issuer_statement}\s+-12\.00 EUR\s+12\.00 EUR\s+partner pays operator\s+UNPAID", table)
    assert finance.redeemer_id not in table

    shown = finance.ok("show", issuer_statement)
    assert re.search(r"ISSUANCE .* 1000\s+0\.012\s+-12\.00", shown), shown
    assert re.search(r"closing position\s+-12\.00 EUR", shown) and "none yet" in shown

    assert_exports(finance, issuer_statement, statements[finance.issuer_id]["csv_sha256"])
    pay_until_paid(finance, issuer_statement, redeemer_statement)

    reconciled = finance.run("reconcile", "--period", PERIOD)
    assert reconciled.returncode == 0, reconciled.stdout
    assert "FAIL" not in reconciled.stdout and f"reconciliation of {PERIOD}: PASSED" in reconciled.stdout

    liability = list(csv.DictReader(io.StringIO(finance.ok("liability", "--period", PERIOD, "--format", "csv"))))
    issuer_row = next(row for row in liability if row["issuer_partner_id"] == finance.issuer_id)
    assert (issuer_row["issued_points"], issuer_row["redeemed_points"], issuer_row["closing_points"]) == (
        "1000", "400", "600",
    )  # fmt: skip


def assert_exports(finance: Finance, statement_id: str, csv_sha256: str) -> None:
    out = finance.directory / "issuer.csv"
    written = finance.ok("export", statement_id, "--format", "csv", "--out", str(out))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == csv_sha256 and f"sha256 {csv_sha256}" in written

    to_stdout = subprocess.run(
        [*finance.prefix, "export", statement_id, "--out", "-"], cwd=finance.directory, env=finance.environment,
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert to_stdout.stdout == out.read_bytes() and csv_sha256.encode() in to_stdout.stderr

    finance.ok("export", statement_id, "--format", "pdf")  # the server's file name, in the current directory
    pdf = finance.directory / f"statement-{statement_id.replace('/', '-')}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")

    matrix_path = finance.directory / "matrix.csv"
    finance.ok("export", "--matrix", "--period", PERIOD, "--format", "csv", "--out", str(matrix_path))
    cells = list(csv.DictReader(io.StringIO(matrix_path.read_text())))
    assert [(cell["issuer_partner_id"], cell["redeemer_partner_id"], cell["points"]) for cell in cells] == [
        (finance.issuer_id, finance.redeemer_id, "400")
    ]


def pay_until_paid(finance: Finance, issuer_statement: str, redeemer_statement: str) -> None:
    def pay(statement_id: str, amount: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return finance.run(
            "pay", statement_id, "--amount", amount, "--value-date", "2026-04-15", "--reference", "BANK-REF", *extra
        )

    first = pay(issuer_statement, "7.00")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.match(r"request id ([0-9a-f-]{36}) \(to retry: --request-id \1\)", first.stderr), first.stderr
    assert "partner pays operator" in first.stdout and "outstanding 5.00 EUR (PARTLY PAID)" in first.stdout

    too_precise = pay(issuer_statement, "5.001")
    assert too_precise.returncode == 2 and "more decimals than EUR has (2)" in too_precise.stderr
    # Beyond int64 minor units: refused before any request is built, not a traceback.
    assert "--amount 1e30: out of range" in error_of(pay(issuer_statement, "1e30"), exit_code=2)
    too_much = error_of(pay(issuer_statement, "5.01"))
    assert too_much.startswith("error: FAILED_PRECONDITION PAYMENT_EXCEEDS_OUTSTANDING: only 5.00 EUR")

    settled = pay(issuer_statement, "5", "--request-id", "finance-retry-1")
    assert settled.returncode == 0 and "outstanding 0.00 EUR (PAID)" in settled.stdout
    assert f"period {PERIOD}: CLOSED" in settled.stdout  # the redeemer is still unpaid
    retried = pay(issuer_statement, "5", "--request-id", "finance-retry-1")
    assert retried.returncode == 0 and "nothing new was recorded" in retried.stdout

    last = pay(redeemer_statement, "4.00")
    assert last.returncode == 0 and "operator pays partner" in last.stdout
    assert f"period {PERIOD}: PAID" in last.stdout
    shown = finance.ok("show", issuer_statement)
    assert len(re.findall(r"2026-04-15\s+\S+ EUR\s+partner pays operator\s+BANK-REF", shown)) == 2, shown


def test_errors_come_back_with_their_reasons(finance: Finance) -> None:
    not_ended = error_of(finance.run("close", "--period", "2026-04"))
    assert not_ended.startswith("error: FAILED_PRECONDITION PERIOD_NOT_ENDED:")
    assert error_of(finance.run("close", "--period", "2026-13")).startswith("error: INVALID_ARGUMENT INVALID_PERIOD:")
    missing = error_of(finance.run("show", f"{PERIOD}/nobody/EUR"))
    assert missing.startswith("error: NOT_FOUND STATEMENT_NOT_FOUND:")
    # `export --out - > file.csv` must never leave an error message in the file.
    not_exported = error_of(finance.run("export", f"{PERIOD}/nobody/EUR", "--out", "-"))
    assert not_exported.startswith("error: NOT_FOUND STATEMENT_NOT_FOUND:")
    both = finance.run("export", f"{PERIOD}/nobody/EUR", "--matrix", "--period", PERIOD)
    assert both.returncode == 2 and "--matrix exports a period" in both.stderr


def test_every_action_explains_itself(finance: Finance) -> None:
    overview = finance.ok("--help")
    actions = ("close", "list", "show", "export", "pay", "reconcile", "liability")
    assert all(action in overview for action in actions)
    for action in actions:
        assert "usage: coalition settlement" in finance.ok(action, "--help")
