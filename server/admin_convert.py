"""Conversions for PartnerAdminService messages."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from loyalty.v1 import partner_admin_service_pb2 as pb

from partners.rates import Billing, ContractTerms, ContractVersionView, InvalidContractTerms, Rounding
from partners.repository import PartnerKeyView, PartnerView
from server.convert import UnknownEnumValue, timestamp

T = TypeVar("T")

_KINDS = {
    pb.PARTNER_KIND_ONLINE_SHOP: "ONLINE_SHOP",
    pb.PARTNER_KIND_STORE_CHAIN: "STORE_CHAIN",
    pb.PARTNER_KIND_CARD_ISSUER: "CARD_ISSUER",
    pb.PARTNER_KIND_CHARITY: "CHARITY",
}
_KIND_VALUES = {name: value for value, name in _KINDS.items()}
_STATES = {"ACTIVE": pb.PARTNER_STATE_ACTIVE, "SUSPENDED": pb.PARTNER_STATE_SUSPENDED}
_ALGORITHMS = {"ES256": pb.KEY_ALGORITHM_ES256, "EdDSA": pb.KEY_ALGORITHM_EDDSA}
_ROUNDING = {
    pb.ROUNDING_MODE_UNSPECIFIED: Rounding.DOWN,
    pb.ROUNDING_MODE_DOWN: Rounding.DOWN,
    pb.ROUNDING_MODE_HALF_UP: Rounding.HALF_UP,
    pb.ROUNDING_MODE_UP: Rounding.UP,
}
_ROUNDING_VALUES = {Rounding.DOWN: pb.ROUNDING_MODE_DOWN, Rounding.HALF_UP: pb.ROUNDING_MODE_HALF_UP,
                    Rounding.UP: pb.ROUNDING_MODE_UP}  # fmt: skip
_BILLING = {
    pb.BILLING_MODE_UNSPECIFIED: Billing.ON_ISSUANCE,
    pb.BILLING_MODE_ON_ISSUANCE: Billing.ON_ISSUANCE,
    pb.BILLING_MODE_ON_REDEMPTION: Billing.ON_REDEMPTION,
}
_BILLING_VALUES = {
    Billing.ON_ISSUANCE: pb.BILLING_MODE_ON_ISSUANCE,
    Billing.ON_REDEMPTION: pb.BILLING_MODE_ON_REDEMPTION,
}


def _known(mapping: dict[Any, T], value: int, field: str) -> T:
    # proto3 enums are open: a newer client may send a number this server does not know.
    if value not in mapping:
        raise UnknownEnumValue(f"{field} {value} is not a known value", field=field)
    return mapping[value]


def partner_kind(value: pb.PartnerKind) -> str:
    return _KINDS.get(value, "")


def partner(view: PartnerView) -> pb.Partner:
    message = pb.Partner(
        partner_id=view.partner_code, display_name=view.display_name, kind=_KIND_VALUES[view.kind],
        state=_STATES[view.status], create_time=timestamp(view.created_at),
    )  # fmt: skip
    if view.suspended_at is not None:
        message.suspend_time.CopyFrom(timestamp(view.suspended_at))
    return message


def partner_key(view: PartnerKeyView) -> pb.PartnerKey:
    message = pb.PartnerKey(
        key_id=view.key_id, partner_id=view.partner_code, algorithm=_ALGORITHMS[view.algorithm],
        public_key_pem=view.public_key_pem, create_time=timestamp(view.created_at),
    )  # fmt: skip
    if view.revoked_at is not None:
        message.revoke_time.CopyFrom(timestamp(view.revoked_at))
    return message


def _decimal(text: str, name: str, *, required: bool = True) -> Decimal | None:
    if not text and not required:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InvalidContractTerms(f"{name} must be a decimal string such as 0.012", field=name) from None


def contract_terms(message: pb.ContractTerms) -> ContractTerms:
    return ContractTerms(
        currency=message.currency_code,
        earn_rate=_decimal(message.earn_rate, "earn_rate") or Decimal(0),
        redeem_value=_decimal(message.redeem_value, "redeem_value") or Decimal(0),
        issuance_price=_decimal(message.issuance_price, "issuance_price") or Decimal(0),
        reimbursement_rate=_decimal(message.reimbursement_rate, "reimbursement_rate") or Decimal(0),
        earn_rounding=_known(_ROUNDING, message.earn_rounding, "earn_rounding"),
        billing=_known(_BILLING, message.billing, "billing"),
        pending_days=message.pending_days,
        max_points_per_transaction=message.max_points_per_transaction or None,
        daily_issuance_cap=message.daily_issuance_cap or None,
        max_points_share_of_basket=_decimal(message.max_points_share_of_basket, "share", required=False),
    )


def contract_version(view: ContractVersionView, partner_code: str) -> pb.ContractVersion:
    terms = view.terms
    share = terms.max_points_share_of_basket
    return pb.ContractVersion(
        partner_id=partner_code,
        version=view.version,
        effective_time=timestamp(view.effective_from),
        terms=pb.ContractTerms(
            currency_code=terms.currency,
            earn_rate=format(terms.earn_rate, "f"),
            earn_rounding=_ROUNDING_VALUES[terms.earn_rounding],
            redeem_value=format(terms.redeem_value, "f"),
            issuance_price=format(terms.issuance_price, "f"),
            reimbursement_rate=format(terms.reimbursement_rate, "f"),
            billing=_BILLING_VALUES[terms.billing],
            pending_days=terms.pending_days,
            max_points_per_transaction=terms.max_points_per_transaction or 0,
            daily_issuance_cap=terms.daily_issuance_cap or 0,
            max_points_share_of_basket=format(share, "f") if share is not None else "",
        ),
    )
