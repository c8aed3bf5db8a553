"""Test data builders: partners with contracts, members, unique ids."""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

from checkout.session import PartnerRef
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from members.identifiers import IdentifierKind, MemberIdentifier
from partners import services
from partners.rates import ContractTerms

EUR_TERMS = ContractTerms(
    currency="EUR",
    earn_rate=Decimal("1"),
    redeem_value=Decimal("0.01"),
    issuance_price=Decimal("0.012"),
    reimbursement_rate=Decimal("0.010"),
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def request_key(scope: str = "operator:tests") -> RequestKey:
    return RequestKey(scope, uuid.uuid4().hex)


# Sequential from a random start: random numbers alone collide across a full run (birthday odds).
_phone_numbers = itertools.count(random.randrange(10**7))


def phone() -> MemberIdentifier:
    return MemberIdentifier(IdentifierKind.PHONE, f"+4477{next(_phone_numbers):08d}")


def email() -> MemberIdentifier:
    return MemberIdentifier(IdentifierKind.EMAIL, f"{uuid.uuid4().hex[:12]}@Example.com")


def create_partner(
    uow: UnitOfWork, *, kind: str = "ONLINE_SHOP", terms: ContractTerms = EUR_TERMS, **overrides: Any
) -> PartnerRef:
    """A partner with one contract version in force now."""
    code = unique("partner")
    partner = services.create_partner(uow, request_key(), partner_code=code, display_name=code, kind=kind).result
    services.create_contract_version(
        uow,
        request_key(),
        partner_code=code,
        terms=replace(terms, **overrides),
        effective_from=None,
        created_by="tests",
    )
    return PartnerRef(partner.id, f"partner:{code}")
