"""`coalition settlement ...`: finance closes periods, reads, exports and pays statements over gRPC."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
import textwrap
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from loyalty.v1 import settlement_service_pb2 as pb

from sdk.client import CoalitionClient, Credentials, error_info
from sdk.tokens import load_private_key
from server import settlement_text as text
from server.cli import print_message
from server.config import Settings

ROLES = ("finance",)
DEFAULT_DEADLINE_SECONDS = 60.0
# A close reads the whole ledger for the period; on a large network that takes minutes.
CLOSE_DEADLINE_SECONDS = 1800.0
EXPORT_FORMATS = {"csv": pb.EXPORT_FORMAT_CSV, "json": pb.EXPORT_FORMAT_JSON, "pdf": pb.EXPORT_FORMAT_PDF}
PERIOD_HELP = "period label: 2026-03 (month, UTC), 2026-W10 (ISO week) or 2026-03-05 (day), as the server settles"

Handler = Callable[[CoalitionClient, argparse.Namespace], int]


class UsageError(Exception):
    """A command line the CLI refuses before calling the server (exit code 2)."""


def add_settlement_commands(commands: Any) -> None:
    settlement = commands.add_parser(
        "settlement", help="close settlement periods, read, export and pay statements, reconcile",
        description="Finance's settlement tools. Calls are signed with an operator key and the `finance` role. "
        "Amounts are shown in currency units; a positive net is owed to the partner, a negative one by it.",
    )  # fmt: skip
    _connection_options(settlement)
    actions = settlement.add_subparsers(title="actions", metavar="ACTION", required=True)
    _close_command(actions)
    _list_command(actions)
    _show_command(actions)
    _export_command(actions)
    _pay_command(actions)
    _reconcile_command(actions)
    _liability_command(actions)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    settings = Settings.from_environment()
    keys_dir = Path(settings.keys_dir)
    parser.add_argument("--target", default=settings.listen_address, help="server host:port")
    parser.add_argument("--operator-key", type=Path, default=keys_dir / "operator-demo.pem", help="private key (PEM)")
    parser.add_argument("--operator-key-id", default="operator-demo")
    parser.add_argument("--staff-id", default=getpass.getuser(), help="who is acting (token subject)")
    parser.add_argument(
        "--timeout", type=float, default=None, dest="timeout_seconds", metavar="SECONDS",
        help=f"deadline per call (default: {DEFAULT_DEADLINE_SECONDS:g}; close: {CLOSE_DEADLINE_SECONDS:g})",
    )  # fmt: skip


def _format_option(parser: argparse.ArgumentParser, choices: Sequence[str] = ("table", "json")) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0], help="output format (default: %(default)s)")


# Commands
def _close_command(actions: Any) -> None:
    close = actions.add_parser(
        "close", help="close a period and freeze its statements",
        description="Assigns every unsettled ledger transaction before the period's end to it and freezes one "
        "statement per partner and currency. Shows progress on stderr. Safe to rerun: closing a closed period "
        "changes nothing. Fails with PERIOD_NOT_ENDED before the period's end and PREVIOUS_PERIOD_OPEN while an "
        "earlier period with activity is open.",
    )  # fmt: skip
    close.add_argument("--period", required=True, help=PERIOD_HELP)
    _format_option(close)
    close.set_defaults(run=_run(_close, CLOSE_DEADLINE_SECONDS))


def _list_command(actions: Any) -> None:
    listing = actions.add_parser(
        "list", help="list statements", description="Lists statements (without lines), oldest first."
    )
    listing.add_argument("--period", default="", help="only this period (" + PERIOD_HELP + ")")
    listing.add_argument("--partner", default="", help="only this partner's statements")
    listing.add_argument("--page-size", type=int, default=0, help="statements per page (server default 50)")
    listing.add_argument("--page-token", default="", help="next_page_token of the previous page")
    _format_option(listing)
    listing.set_defaults(run=_run(_list))


def _show_command(actions: Any) -> None:
    show = actions.add_parser(
        "show", help="show a statement with its lines and payments",
        description="Shows a statement: its lines, opening, net and closing positions, and payments so far.",
    )  # fmt: skip
    show.add_argument("statement_id", help="<period>/<partner>/<currency>, e.g. 2026-03/north-shop/EUR")
    _format_option(show)
    show.set_defaults(run=_run(_show))


def _export_command(actions: Any) -> None:
    export = actions.add_parser(
        "export", help="export a statement (csv, json, pdf) or a period's cross-brand matrix",
        description=textwrap.fill(
            "Writes a statement export, or with --matrix the cross-brand matrix of a closed period, and prints the "
            "SHA-256 of what was written. A statement's CSV is canonical: its hash is the statement's csv_sha256."
        ),
        epilog="examples:\n  coalition settlement export 2026-03/north-shop/EUR --format pdf\n"
        "  coalition settlement export --matrix --period 2026-03 --format csv --out -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    export.add_argument("statement_id", nargs="?", default="", help="<period>/<partner>/<currency>")
    export.add_argument("--matrix", action="store_true", help="export the cross-brand matrix of --period instead")
    export.add_argument("--period", default="", help="with --matrix: the closed period")
    export.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="csv", help="default: %(default)s")
    export.add_argument("--out", default="", help="file to write; - for stdout (default: the server's file name)")
    export.set_defaults(run=_run(_export))


def _pay_command(actions: Any) -> None:
    pay = actions.add_parser(
        "pay", help="record a payment against a statement",
        description="Records money received from the partner (negative net) or paid to it (positive net). "
        "Never more than is outstanding. Retrying with the same --request-id never records twice.",
    )  # fmt: skip
    pay.add_argument("statement_id", help="<period>/<partner>/<currency>")
    pay.add_argument("--amount", required=True, help="in currency units, e.g. 260.00 (no more decimals than it has)")
    pay.add_argument("--value-date", required=True, type=_iso_date, help="the bank's value date, e.g. 2026-04-15")
    pay.add_argument("--reference", required=True, help="the bank transfer's reference")
    pay.add_argument("--request-id", default="", help="idempotency key; reuse it to retry (default: a new uuid)")
    _format_option(pay)
    pay.set_defaults(run=_run(_pay))


def _reconcile_command(actions: Any) -> None:
    reconcile = actions.add_parser(
        "reconcile", help="run a closed period's reconciliation checks",
        description="Runs the reconciliation checks of a closed period and prints each with PASS or FAIL. "
        "Exits with 1 if any check failed.",
    )  # fmt: skip
    reconcile.add_argument("--period", required=True, help=PERIOD_HELP)
    _format_option(reconcile)
    reconcile.set_defaults(run=_run(_reconcile))


def _liability_command(actions: Any) -> None:
    liability = actions.add_parser(
        "liability", help="outstanding points per issuer over a period",
        description="Outstanding points per issuer and currency: opening, issued, redeemed, expired, adjustments "
        "and closing, with how much of the closing is pending, available and expiring within 30/60/90 days.",
    )  # fmt: skip
    liability.add_argument("--period", required=True, help=PERIOD_HELP + "; open or closed")
    _format_option(liability, ("table", "csv", "json"))
    liability.set_defaults(run=_run(_liability))


def _run(handler: Handler, default_deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> Callable[..., int]:
    """Wraps a handler: signs as finance, prints server errors as `error: CODE REASON: details` (exit 1).

    Errors go to stderr: stdout may be the export itself (`export --out - > statement.csv`).
    """

    def run(arguments: argparse.Namespace) -> int:
        try:
            private_key = load_private_key(arguments.operator_key)
        except (OSError, ValueError) as error:
            print(f"error: cannot read the operator key {arguments.operator_key}: {error}", file=sys.stderr)
            return 1
        credentials = Credentials.operator(arguments.staff_id, arguments.operator_key_id, private_key, ROLES)
        deadline_seconds = arguments.timeout_seconds or default_deadline_seconds
        with CoalitionClient(arguments.target, credentials, deadline_seconds=deadline_seconds) as client:
            try:
                return handler(client, arguments)
            except UsageError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            except grpc.RpcError as error:
                info = error_info(error)
                print(f"error: {error.code().name} {info.reason if info else '-'}: {error.details()}", file=sys.stderr)
                return 1

    return run


# Handlers: one RPC each, output from server.settlement_text
def _close(client: CoalitionClient, a: argparse.Namespace) -> int:
    progress = text.ProgressDisplay(sys.stderr)
    final: pb.ClosePeriodResponse | None = None
    rerun_hint = f"a close the server began runs to its end; run `close --period {a.period}` again to see it"
    try:
        for message in client.settlement.ClosePeriod(pb.ClosePeriodRequest(period=a.period)):
            if message.HasField("progress"):
                progress.show(message.progress)
            if message.HasField("settlement_period"):
                final = message
    except KeyboardInterrupt:
        progress.finish()
        print(f"interrupted: {rerun_hint}", file=sys.stderr)
        return 130
    except grpc.RpcError as error:
        progress.finish()
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            print(f"note: {rerun_hint} (or give a longer --timeout)", file=sys.stderr)
        raise
    progress.finish()
    if final is None:
        print(f"error: the close of {a.period} ended without the closed period", file=sys.stderr)
        return 1
    _output(a, final, lambda: text.period_summary(final.settlement_period, idempotent_replay=final.idempotent_replay))
    return 0


def _list(client: CoalitionClient, a: argparse.Namespace) -> int:
    response = client.settlement.ListStatements(pb.ListStatementsRequest(
        period=a.period, partner_id=a.partner, page_size=a.page_size, page_token=a.page_token))  # fmt: skip
    more = f"\nmore: --page-token {response.next_page_token}" if response.next_page_token else ""
    _output(a, response, lambda: text.statements_table(response.statements) + more)
    return 0


def _show(client: CoalitionClient, a: argparse.Namespace) -> int:
    statement = client.settlement.GetStatement(pb.GetStatementRequest(statement_id=a.statement_id)).statement
    _output(a, statement, lambda: text.statement_text(statement))
    return 0


def _export(client: CoalitionClient, a: argparse.Namespace) -> int:
    if a.matrix:
        if a.statement_id or not a.period:
            raise UsageError("--matrix exports a period: give --period and no statement id")
        matrix = client.settlement.GetCrossBrandMatrix(
            pb.GetCrossBrandMatrixRequest(period=a.period, format=EXPORT_FORMATS[a.format])
        )
        filename, content, server_sha256 = matrix.filename, matrix.content, ""
    else:
        if not a.statement_id or a.period:
            raise UsageError("give a statement id (or --matrix --period P for the cross-brand matrix)")
        export = client.settlement.ExportStatement(
            pb.ExportStatementRequest(statement_id=a.statement_id, format=EXPORT_FORMATS[a.format])
        )
        filename, content, server_sha256 = export.filename, export.content, export.content_sha256
    content_sha256 = hashlib.sha256(content).hexdigest()
    if server_sha256 and server_sha256 != content_sha256:
        print(
            f"error: the export does not match the sha256 the server sent ({server_sha256}); nothing was written",
            file=sys.stderr,
        )
        return 1
    destination = write_output(content, a.out, filename)
    # With the file on stdout, the note goes to stderr so the output stays byte for byte the export.
    print(f"wrote {destination} ({len(content)} bytes) sha256 {content_sha256}",
          file=sys.stderr if a.out == "-" else sys.stdout)  # fmt: skip
    return 0


def write_output(content: bytes, out: str, server_filename: str) -> str:
    """Writes to `out`, stdout for `-`, or the server's file name in the current directory."""
    if out == "-":
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return "stdout"
    # Only the name's last part: a file name from the network never chooses the directory.
    path = Path(out) if out else Path(Path(server_filename).name or "export")
    path.write_bytes(content)
    return str(path)


def _pay(client: CoalitionClient, a: argparse.Namespace) -> int:
    try:
        # Statement ids end with the currency: <period>/<partner>/<currency>.
        amount_minor = text.to_minor(a.amount, a.statement_id.rpartition("/")[2])
    except ValueError as error:
        raise UsageError(f"--amount {a.amount}: {error}") from None
    request_id = a.request_id or str(uuid.uuid4())
    if not a.request_id:
        # Before the call: if it fails or times out, the same id retries without paying twice.
        print(f"request id {request_id} (to retry: --request-id {request_id})", file=sys.stderr, flush=True)
    response = client.settlement.RecordPayment(pb.RecordPaymentRequest(
        request_id=request_id, statement_id=a.statement_id, amount_minor=amount_minor,
        value_date=a.value_date.isoformat(), bank_reference=a.reference,
    ))  # fmt: skip
    _output(a, response, lambda: text.payment_text(response))
    return 0


def _reconcile(client: CoalitionClient, a: argparse.Namespace) -> int:
    response = client.settlement.ReconcilePeriod(pb.ReconcilePeriodRequest(period=a.period))
    _output(a, response, lambda: text.reconciliation_text(response))
    return 0 if response.passed else 1


def _liability(client: CoalitionClient, a: argparse.Namespace) -> int:
    response = client.settlement.GetLiabilityReport(pb.GetLiabilityReportRequest(period=a.period))
    if a.format == "csv":
        sys.stdout.write(text.liability_csv(response))
    else:
        _output(a, response, lambda: text.liability_table(response))
    return 0


def _output(a: argparse.Namespace, message: Message, as_table: Callable[[], str]) -> None:
    if a.format == "json":
        print_message(message)
    else:
        print(as_table())


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date such as 2026-04-15") from None
