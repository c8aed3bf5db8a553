"""`coalition members ...`: finance's member reports over gRPC, signed with an operator key."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import json_format
from loyalty.v1 import member_service_pb2 as pb

from sdk.client import CoalitionClient, error_info
from server.partner_cli import connection_options, operator_client

ROLES = ("finance",)
CSV_COLUMNS = ("member_number", "last_activity_time", "last_partner", "available_points")
PAGE_SIZE = 1000


def add_members_commands(commands: Any) -> None:
    members = commands.add_parser(
        "members", help="member reports for finance (inactive members)",
        description="Member reports. Calls are signed with an operator key and the `finance` role.",
    )  # fmt: skip
    connection_options(members)
    actions = members.add_subparsers(title="actions", metavar="ACTION", required=True)
    inactive = actions.add_parser(
        "inactive", help="members with no earn, spend or return for N days, with their last partner",
        description="Every member whose last earn, spend or return at any partner is at least --days days ago: "
        "member number, last activity, last partner and available points (no personal data).",
    )  # fmt: skip
    inactive.add_argument("--days", type=int, required=True, help="days without activity (1-3660)")
    inactive.add_argument("--partner", default="", help="only members whose last activity was at this partner id")
    inactive.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: %(default)s")
    inactive.set_defaults(run=_inactive)


def _inactive(arguments: argparse.Namespace) -> int:
    with operator_client(arguments, ROLES) as client:
        try:
            pages = list(_pages(client, arguments.days, arguments.partner))
        except grpc.RpcError as error:
            info = error_info(error)
            print(f"error: {error.code().name} {info.reason if info else '-'}: {error.details()}", file=sys.stderr)
            return 1
    members = [member for page in pages for member in page.members]
    since = pages[0].inactive_since_time.ToJsonString()
    if arguments.format == "csv":
        sys.stdout.write(inactive_csv(members))
    elif arguments.format == "json":
        rows = [json_format.MessageToDict(member, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True) for member in members]  # fmt: skip
        print(json.dumps({"inactive_since_time": since, "members": rows}, indent=2))
    else:
        print(inactive_table(members, since))
    return 0


def _pages(client: CoalitionClient, days: int, partner: str) -> Iterator[pb.ListInactiveMembersResponse]:
    token = ""
    while True:
        request = pb.ListInactiveMembersRequest(
            inactive_days=days, last_partner_code=partner, page_size=PAGE_SIZE, page_token=token
        )
        response = client.members.ListInactiveMembers(request)
        yield response
        token = response.next_page_token
        if not token:
            return


def _row(member: pb.InactiveMember) -> tuple[str, str, str, str]:
    return (member.member_number, member.last_activity_time.ToJsonString(), member.last_partner_code,
            str(member.available_points))  # fmt: skip


def inactive_csv(members: list[pb.InactiveMember]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180, as spreadsheets expect
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_row(member) for member in members)
    return text.getvalue()


def inactive_table(members: list[pb.InactiveMember], since: str) -> str:
    header = ("MEMBER", "LAST ACTIVITY", "LAST PARTNER", "AVAILABLE")
    rows = [header, *(_row(member) for member in members)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) if column == 3 else cell.ljust(width)
                       for column, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]  # fmt: skip
    lines.append(f"{len(members)} members inactive since {since}")
    return "\n".join(lines)
