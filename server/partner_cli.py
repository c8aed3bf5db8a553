"""`coalition partner ...`: the operator's partner administration over gRPC, signed with an operator key."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from loyalty.v1 import partner_admin_service_pb2 as pb

from sdk.client import CoalitionClient, Credentials, error_info
from sdk.tokens import load_private_key
from server.config import Settings

KINDS = {"online-shop": pb.PARTNER_KIND_ONLINE_SHOP, "store-chain": pb.PARTNER_KIND_STORE_CHAIN,
         "card-issuer": pb.PARTNER_KIND_CARD_ISSUER, "charity": pb.PARTNER_KIND_CHARITY}  # fmt: skip
ROUNDING = {"down": pb.ROUNDING_MODE_DOWN, "half-up": pb.ROUNDING_MODE_HALF_UP, "up": pb.ROUNDING_MODE_UP}
BILLING = {"on-issuance": pb.BILLING_MODE_ON_ISSUANCE, "on-redemption": pb.BILLING_MODE_ON_REDEMPTION}


def add_partner_commands(commands: Any) -> None:
    partner = commands.add_parser("partner", help="onboard partners, manage their keys and contracts")
    connection_options(partner)
    actions = partner.add_subparsers(title="actions", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="onboard a partner")
    create.add_argument("partner_id")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--kind", choices=sorted(KINDS), required=True)
    create.set_defaults(run=_run(lambda a: ("CreatePartner", pb.CreatePartnerRequest(
        request_id=a.request_id, partner_id=a.partner_id, display_name=a.name, kind=KINDS[a.kind]))))  # fmt: skip
    for name, rpc, request_type in (
        ("get", "GetPartner", pb.GetPartnerRequest),
        ("suspend", "SuspendPartner", pb.SuspendPartnerRequest),
        ("reactivate", "ReactivatePartner", pb.ReactivatePartnerRequest),
    ):
        action = actions.add_parser(name, help=f"{name} a partner")
        action.add_argument("partner_id")
        action.set_defaults(run=_run(_simple(rpc, request_type)))
    listing = actions.add_parser("list", help="list partners")
    paging_options(listing)
    listing.set_defaults(run=_run(lambda a: ("ListPartners", pb.ListPartnersRequest(
        page_size=a.page_size, page_token=a.page_token))))  # fmt: skip
    _key_commands(actions)
    _contract_commands(actions)


def connection_options(parser: argparse.ArgumentParser) -> None:
    settings = Settings.from_environment()
    keys_dir = Path(settings.keys_dir)
    parser.add_argument("--target", default=settings.listen_address)
    parser.add_argument("--operator-key", type=Path, default=keys_dir / "operator-demo.pem")
    parser.add_argument("--operator-key-id", default="operator-demo")
    parser.add_argument("--staff-id", default=getpass.getuser(), help="who is acting (token subject)")
    parser.add_argument("--request-id", default="", help="idempotency key (default: a new one)")


def paging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=0)
    parser.add_argument("--page-token", default="")


def _key_commands(actions: Any) -> None:
    keys = actions.add_parser("key", help="partner signing keys").add_subparsers(metavar="KEY_ACTION", required=True)
    add = keys.add_parser("add", help="register a public key (PEM file)")
    add.add_argument("partner_id")
    add.add_argument("--key-id", required=True)
    add.add_argument("--public-key", type=Path, required=True)
    add.set_defaults(run=_run(lambda a: ("RegisterPartnerKey", pb.RegisterPartnerKeyRequest(
        request_id=a.request_id, partner_id=a.partner_id, key_id=a.key_id,
        public_key_pem=a.public_key.read_text()))))  # fmt: skip
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("partner_id")
    revoke.add_argument("--key-id", required=True)
    revoke.set_defaults(run=_run(lambda a: ("RevokePartnerKey", pb.RevokePartnerKeyRequest(
        request_id=a.request_id, partner_id=a.partner_id, key_id=a.key_id))))  # fmt: skip
    listing = keys.add_parser("list", help="list a partner's keys")
    listing.add_argument("partner_id")
    paging_options(listing)
    listing.set_defaults(run=_run(lambda a: ("ListPartnerKeys", pb.ListPartnerKeysRequest(
        partner_id=a.partner_id, page_size=a.page_size, page_token=a.page_token))))  # fmt: skip


def _contract_commands(actions: Any) -> None:
    contracts = actions.add_parser("contract", help="contract versions (exchange rates and limits)")
    contract_actions = contracts.add_subparsers(metavar="CONTRACT_ACTION", required=True)
    create = contract_actions.add_parser("set", help="add a contract version")
    create.add_argument("partner_id")
    create.add_argument("--currency", required=True, help="ISO 4217 code, e.g. EUR")
    create.add_argument("--earn-rate", required=True, help="points per 1.00 spent, e.g. 1")
    create.add_argument("--redeem-value", required=True, help="discount per point, e.g. 0.01")
    create.add_argument("--issuance-price", required=True, help="price per point funded, e.g. 0.012")
    create.add_argument("--reimbursement-rate", required=True, help="paid per point redeemed, e.g. 0.010")
    create.add_argument("--rounding", choices=sorted(ROUNDING), default="down")
    create.add_argument("--billing", choices=sorted(BILLING), default="on-issuance")
    create.add_argument("--pending-days", type=int, default=0)
    create.add_argument("--max-points-per-transaction", type=int, default=0)
    create.add_argument("--daily-issuance-cap", type=int, default=0)
    create.add_argument("--max-points-share-of-basket", default="", help="e.g. 0.5")
    create.add_argument("--effective-time", default="", help="RFC 3339, e.g. 2026-12-01T00:00:00Z (default: now)")
    create.set_defaults(run=_run(_contract_request))
    listing = contract_actions.add_parser("list", help="list contract versions")
    listing.add_argument("partner_id")
    paging_options(listing)
    listing.set_defaults(run=_run(lambda a: ("ListContractVersions", pb.ListContractVersionsRequest(
        partner_id=a.partner_id, page_size=a.page_size, page_token=a.page_token))))  # fmt: skip


def _contract_request(a: argparse.Namespace) -> tuple[str, Any]:
    from server.cli import timestamp_argument

    terms = pb.ContractTerms(
        currency_code=a.currency, earn_rate=a.earn_rate, earn_rounding=ROUNDING[a.rounding],
        redeem_value=a.redeem_value, issuance_price=a.issuance_price, reimbursement_rate=a.reimbursement_rate,
        billing=BILLING[a.billing], pending_days=a.pending_days,
        max_points_per_transaction=a.max_points_per_transaction, daily_issuance_cap=a.daily_issuance_cap,
        max_points_share_of_basket=a.max_points_share_of_basket,
    )  # fmt: skip
    request = pb.CreateContractVersionRequest(request_id=a.request_id, partner_id=a.partner_id, terms=terms)
    if a.effective_time:
        request.effective_time.CopyFrom(timestamp_argument(a.effective_time))
    return "CreateContractVersion", request


def _simple(rpc: str, request_type: Any) -> Any:
    def build(a: argparse.Namespace) -> tuple[str, Any]:
        fields = {"partner_id": a.partner_id}
        if "request_id" in request_type.DESCRIPTOR.fields_by_name:
            fields["request_id"] = a.request_id
        return rpc, request_type(**fields)

    return build


def _run(build: Any) -> Any:
    return operator_call(build, service="partner_admin", roles=("admin",))


def operator_call(build: Any, *, service: str, roles: Sequence[str]) -> Any:
    """A command that signs one call to ``service`` as operator staff and prints the answer as JSON.

    ``build(arguments)`` returns the method name and the request.
    """

    def run(arguments: argparse.Namespace) -> int:
        rpc, request = build(arguments)
        with operator_client(arguments, roles) as client:
            return call_and_print(lambda: getattr(getattr(client, service), rpc)(request))

    return run


def operator_client(arguments: argparse.Namespace, roles: Sequence[str]) -> CoalitionClient:
    credentials = Credentials.operator(
        arguments.staff_id, arguments.operator_key_id, load_private_key(arguments.operator_key), list(roles)
    )
    return CoalitionClient(arguments.target, credentials)


def call_and_print(call: Callable[[], Message]) -> int:
    """Prints the answer as JSON, or the error's status and reason; the exit code says which."""
    from server.cli import print_message

    try:
        print_message(call())
    except grpc.RpcError as error:
        info = error_info(error)
        reason = info.reason if info else "-"
        print(f"error: {error.code().name} {reason}: {error.details()}")
        return 1
    return 0
