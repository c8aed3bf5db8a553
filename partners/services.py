"""Operator use cases for partners: onboarding, suspension, keys and contract versions."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Connection

from common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from common.idempotency import Outcome, RequestKey, run_once
from common.sql import Page, paginate
from common.uow import UnitOfWork
from partners.keys import load_public_key
from partners.rates import ContractTerms, ContractVersionView
from partners.repository import PartnerKeyView, PartnerRepository, PartnerView

PARTNER_KINDS = frozenset({"ONLINE_SHOP", "STORE_CHAIN", "CARD_ISSUER", "CHARITY"})
_PARTNER_CODE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class PartnerNotFound(NotFound):
    reason = "PARTNER_NOT_FOUND"


class PartnerAlreadyExists(AlreadyExists):
    reason = "PARTNER_ALREADY_EXISTS"


class PartnerSuspended(FailedPrecondition):
    reason = "PARTNER_SUSPENDED"
    is_business_outcome = False


class NoContractInForce(FailedPrecondition):
    reason = "NO_CONTRACT_IN_FORCE"
    is_business_outcome = False


class KeyNotFound(NotFound):
    reason = "KEY_NOT_FOUND"


class KeyAlreadyExists(AlreadyExists):
    reason = "KEY_ALREADY_EXISTS"


class InvalidPartnerField(InvalidArgument):
    reason = "INVALID_PARTNER_FIELD"


class EffectiveTimeInPast(InvalidArgument):
    reason = "EFFECTIVE_TIME_IN_PAST"


def create_partner(
    uow: UnitOfWork, request: RequestKey, *, partner_code: str, display_name: str, kind: str
) -> Outcome[PartnerView]:
    if not _PARTNER_CODE.match(partner_code):
        raise InvalidPartnerField("partner_id must be 2-63 lower-case letters, digits or hyphens", field="partner_id")
    if kind not in PARTNER_KINDS:
        raise InvalidPartnerField(f"kind must be one of {sorted(PARTNER_KINDS)}", field="kind")
    if not display_name.strip():
        raise InvalidPartnerField("display_name is required", field="display_name")

    def work(connection: Connection) -> PartnerView:
        repository = PartnerRepository(connection)
        if repository.by_code(partner_code) is not None:
            raise PartnerAlreadyExists(f"partner {partner_code} already exists", partner_id=partner_code)
        partner_id = repository.insert(
            partner_code=partner_code, display_name=display_name.strip(), kind=kind,
            status="ACTIVE", created_at=uow.clock.now(),
        )  # fmt: skip
        return _require(repository.by_id(partner_id), partner_code)

    command = {"partner_id": partner_code, "display_name": display_name, "kind": kind}
    return run_once(uow, request, "CreatePartner", command, PartnerView, work)


def get_partner(uow: UnitOfWork, partner_code: str) -> PartnerView:
    return uow.run(lambda connection: _require(PartnerRepository(connection).by_code(partner_code), partner_code))


def list_partners(uow: UnitOfWork, *, page_size: int, page_token: str) -> Page[PartnerView]:
    def fetch(after_id: int, limit: int) -> list[PartnerView]:
        return uow.run(lambda connection: PartnerRepository(connection).page(after_id, limit))

    return paginate(page_size, page_token, fetch, lambda partner: partner.id)


def set_partner_suspended(
    uow: UnitOfWork, request: RequestKey, partner_code: str, *, is_suspended: bool
) -> Outcome[PartnerView]:
    def work(connection: Connection) -> PartnerView:
        repository = PartnerRepository(connection)
        partner = _require(repository.by_code(partner_code), partner_code)
        status, when = ("SUSPENDED", uow.clock.now()) if is_suspended else ("ACTIVE", None)
        repository.set_status(partner.id, status, when)
        return _require(repository.by_id(partner.id), partner_code)

    operation = "SuspendPartner" if is_suspended else "ReactivatePartner"
    return run_once(uow, request, operation, {"partner_id": partner_code}, PartnerView, work)


def register_partner_key(
    uow: UnitOfWork, request: RequestKey, *, partner_code: str, key_id: str, public_key_pem: str
) -> Outcome[PartnerKeyView]:
    if not _KEY_ID.match(key_id) or key_id.startswith("operator-"):
        raise InvalidPartnerField(
            "key_id must be 1-100 letters, digits, '.', '_' or '-' and not start with operator-", field="key_id"
        )
    algorithm, _ = load_public_key(public_key_pem)

    def work(connection: Connection) -> PartnerKeyView:
        repository = PartnerRepository(connection)
        partner = _require(repository.by_code(partner_code), partner_code)
        if repository.key(key_id) is not None:
            raise KeyAlreadyExists(f"key {key_id} is already registered", key_id=key_id)
        repository.insert_key(
            partner_id=partner.id, key_id=key_id, algorithm=algorithm,
            public_key_pem=public_key_pem.strip() + "\n", created_at=uow.clock.now(),
        )  # fmt: skip
        return _require_key(repository.key(key_id), key_id)

    command = {"partner_id": partner_code, "key_id": key_id, "public_key_pem": public_key_pem}
    return run_once(uow, request, "RegisterPartnerKey", command, PartnerKeyView, work)


def revoke_partner_key(
    uow: UnitOfWork, request: RequestKey, *, partner_code: str, key_id: str
) -> Outcome[PartnerKeyView]:
    def work(connection: Connection) -> PartnerKeyView:
        repository = PartnerRepository(connection)
        key = repository.key(key_id)
        if key is None or key.partner_code != partner_code:
            raise KeyNotFound(f"partner {partner_code} has no key {key_id}", key_id=key_id)
        if key.revoked_at is None:
            repository.revoke_key(key_id, uow.clock.now())
        return _require_key(repository.key(key_id), key_id)

    command = {"partner_id": partner_code, "key_id": key_id}
    return run_once(uow, request, "RevokePartnerKey", command, PartnerKeyView, work)


def list_partner_keys(uow: UnitOfWork, partner_code: str, *, page_size: int, page_token: str) -> Page[PartnerKeyView]:
    def fetch(after_id: int, limit: int) -> list[PartnerKeyView]:
        def work(connection: Connection) -> list[PartnerKeyView]:
            repository = PartnerRepository(connection)
            return repository.keys_of(_require(repository.by_code(partner_code), partner_code).id, after_id, limit)

        return uow.run(work)

    return paginate(page_size, page_token, fetch, lambda key: key.row_id)


def create_contract_version(
    uow: UnitOfWork,
    request: RequestKey,
    *,
    partner_code: str,
    terms: ContractTerms,
    effective_from: datetime | None,
    created_by: str,
) -> Outcome[ContractVersionView]:
    """Adds an immutable version; it applies to transactions from ``effective_from`` (default: now)."""
    terms.validate()
    now = uow.clock.now()
    if effective_from is not None and effective_from < now:
        raise EffectiveTimeInPast("a contract version cannot take effect in the past")

    def work(connection: Connection) -> ContractVersionView:
        repository = PartnerRepository(connection)
        partner = _require(repository.by_code(partner_code), partner_code)
        version_id = repository.insert_version(
            partner_id=partner.id, version=repository.latest_version_number(partner.id) + 1,
            effective_from=effective_from or now, created_at=now, created_by=created_by,
            currency=terms.currency, earn_rate=terms.earn_rate, earn_rounding=terms.earn_rounding.value,
            redeem_value=terms.redeem_value, issuance_price=terms.issuance_price,
            reimbursement_rate=terms.reimbursement_rate, billing=terms.billing.value,
            pending_days=terms.pending_days, max_points_per_transaction=terms.max_points_per_transaction,
            daily_issuance_cap=terms.daily_issuance_cap,
            max_points_share_of_basket=terms.max_points_share_of_basket,
        )  # fmt: skip
        return repository.version_by_id(version_id)

    command = {"partner_id": partner_code, "terms": terms, "effective_from": effective_from}
    return run_once(uow, request, "CreateContractVersion", command, ContractVersionView, work)


def list_contract_versions(
    uow: UnitOfWork, partner_code: str, *, page_size: int, page_token: str
) -> Page[ContractVersionView]:
    def fetch(after_version: int, limit: int) -> list[ContractVersionView]:
        def work(connection: Connection) -> list[ContractVersionView]:
            repository = PartnerRepository(connection)
            partner = _require(repository.by_code(partner_code), partner_code)
            return repository.versions_page(partner.id, after_version, limit)

        return uow.run(work)

    return paginate(page_size, page_token, fetch, lambda version: version.version)


def partner_terms_in_force(connection: Connection, partner_id: int, at: datetime) -> ContractVersionView:
    """The contract version that prices a transaction of this (active) partner at ``at``."""
    found = PartnerRepository(connection).version_in_force(partner_id, at)
    return require_terms_in_force(connection, partner_id, found)


def require_terms_in_force(
    connection: Connection, partner_id: int, found: tuple[ContractVersionView, bool] | None
) -> ContractVersionView:
    """The version found in force (``PartnerRepository.version_in_force``) if the partner is active;
    else why no version prices its transactions: the partner is unknown, suspended, or has none yet."""
    if found is not None and found[1]:
        return found[0]
    partner = PartnerRepository(connection).by_id(partner_id)
    if partner is None:
        raise PartnerNotFound("partner not found")
    if not partner.is_active:
        raise PartnerSuspended(f"partner {partner.partner_code} is suspended")
    raise NoContractInForce(f"partner {partner.partner_code} has no contract in force")


def _require(partner: PartnerView | None, partner_code: str) -> PartnerView:
    if partner is None:
        raise PartnerNotFound(f"partner {partner_code} not found", partner_id=partner_code)
    return partner


def _require_key(key: PartnerKeyView | None, key_id: str) -> PartnerKeyView:
    if key is None:
        raise KeyNotFound(f"key {key_id} not found", key_id=key_id)
    return key
