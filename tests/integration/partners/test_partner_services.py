"""Operator use cases for partners, keys and contract versions, against a real database on both backends."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from common.clock import ManualClock
from common.errors import InvalidArgument
from common.sql import InvalidPageToken
from common.uow import UnitOfWork
from partners import services
from partners.keys import InvalidPublicKey, KeyTypeNotAllowed, PrivateKeyNotAllowed
from partners.rates import ContractVersionView, UnsupportedCurrency
from partners.repository import PartnerKeyView, PartnerView
from tests.factories import EUR_TERMS, request_key, unique


def new_partner(uow: UnitOfWork, kind: str = "ONLINE_SHOP") -> PartnerView:
    code = unique("p")
    return services.create_partner(uow, request_key(), partner_code=code, display_name=f"  {code} ", kind=kind).result


def add_version(
    uow: UnitOfWork, partner: PartnerView, *, effective_from: datetime | None = None, **changes: Any
) -> ContractVersionView:
    return services.create_contract_version(
        uow, request_key(), partner_code=partner.partner_code, terms=replace(EUR_TERMS, **changes),
        effective_from=effective_from, created_by="tests",
    ).result  # fmt: skip


def public_pem(private_key: PrivateKeyTypes) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def register(uow: UnitOfWork, partner: PartnerView, pem: str, key_id: str = "") -> PartnerKeyView:
    return services.register_partner_key(
        uow, request_key(), partner_code=partner.partner_code, key_id=key_id or unique("key"), public_key_pem=pem
    ).result


def token(text_value: str) -> str:
    return base64.urlsafe_b64encode(text_value.encode()).decode()


# Partners


def test_create_and_get_partner(uow: UnitOfWork, clock: ManualClock) -> None:
    request = request_key()
    code = unique("shop")

    created = services.create_partner(uow, request, partner_code=code, display_name=" Shop ", kind="STORE_CHAIN")
    replayed = services.create_partner(uow, request, partner_code=code, display_name=" Shop ", kind="STORE_CHAIN")
    fetched = services.get_partner(uow, code)

    assert not created.is_replay and replayed.is_replay and replayed.result == created.result == fetched
    assert (fetched.partner_code, fetched.display_name, fetched.kind) == (code, "Shop", "STORE_CHAIN")
    assert (fetched.status, fetched.is_active, fetched.created_at, fetched.suspended_at) == (
        "ACTIVE", True, clock.now(), None,
    )  # fmt: skip
    with pytest.raises(services.PartnerNotFound):
        services.get_partner(uow, unique("missing"))


def test_duplicate_partner_is_refused(uow: UnitOfWork) -> None:
    partner = new_partner(uow)

    with pytest.raises(services.PartnerAlreadyExists) as raised:
        services.create_partner(uow, request_key(), partner_code=partner.partner_code, display_name="x", kind="CHARITY")

    assert raised.value.metadata == {"partner_id": partner.partner_code}
    assert services.get_partner(uow, partner.partner_code) == partner


@pytest.mark.parametrize(
    ("partner_code", "display_name", "kind", "field"),
    [
        ("Upper-Case", "Shop", "ONLINE_SHOP", "partner_id"),
        ("a", "Shop", "ONLINE_SHOP", "partner_id"),
        ("1shop", "Shop", "ONLINE_SHOP", "partner_id"),
        ("shop_underscore", "Shop", "ONLINE_SHOP", "partner_id"),
        ("s" * 64, "Shop", "ONLINE_SHOP", "partner_id"),
        ("valid-code", "Shop", "BANK", "kind"),
        ("valid-code", "   ", "ONLINE_SHOP", "display_name"),
    ],
)
def test_invalid_partner_fields_are_refused(
    uow: UnitOfWork, engine: Engine, partner_code: str, display_name: str, kind: str, field: str
) -> None:
    request = request_key()

    with pytest.raises(services.InvalidPartnerField) as raised:
        services.create_partner(uow, request, partner_code=partner_code, display_name=display_name, kind=kind)

    assert raised.value.metadata == {"field": field}
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT COUNT(*) FROM idempotency_records WHERE idempotency_key = :k"), {"k": request.key}
        ).scalar_one()
    assert stored == 0


def test_list_partners_pages_through_every_partner_once(uow: UnitOfWork) -> None:
    mine = [new_partner(uow).partner_code for _ in range(3)]

    pages, page_token = [], ""
    while True:
        page = services.list_partners(uow, page_size=7, page_token=page_token)
        pages.append(page.items)
        page_token = page.next_page_token
        if not page_token:
            break

    listed = [partner.id for items in pages for partner in items]
    assert listed == sorted(set(listed))
    assert all(len(items) == 7 for items in pages[:-1]) and 1 <= len(pages[-1]) <= 7
    assert set(mine) <= {partner.partner_code for items in pages for partner in items}


def test_list_partners_page_size_bounds(uow: UnitOfWork) -> None:
    for _ in range(51):
        new_partner(uow)

    default = services.list_partners(uow, page_size=0, page_token="")
    huge = services.list_partners(uow, page_size=10**6, page_token="")

    assert len(default.items) == 50 and default.next_page_token
    assert len(huge.items) <= 1000 and [p.id for p in huge.items[:50]] == [p.id for p in default.items]
    with pytest.raises(InvalidArgument):
        services.list_partners(uow, page_size=-1, page_token="")


@pytest.mark.parametrize("page_token", ["not a token!", token("before:3"), token("after:three"), "%%%"])
def test_invalid_page_token_is_refused(uow: UnitOfWork, page_token: str) -> None:
    partner = new_partner(uow)

    for call in (
        lambda: services.list_partners(uow, page_size=5, page_token=page_token),
        lambda: services.list_partner_keys(uow, partner.partner_code, page_size=5, page_token=page_token),
        lambda: services.list_contract_versions(uow, partner.partner_code, page_size=5, page_token=page_token),
    ):
        with pytest.raises(InvalidPageToken):
            call()


def test_suspend_and_reactivate(uow: UnitOfWork, clock: ManualClock) -> None:
    partner = new_partner(uow)
    clock.advance(timedelta(hours=1))

    suspended = services.set_partner_suspended(uow, request_key(), partner.partner_code, is_suspended=True).result
    assert (suspended.status, suspended.is_active, suspended.suspended_at) == ("SUSPENDED", False, clock.now())
    assert services.get_partner(uow, partner.partner_code) == suspended

    active = services.set_partner_suspended(uow, request_key(), partner.partner_code, is_suspended=False).result
    assert (active.status, active.is_active, active.suspended_at) == ("ACTIVE", True, None)
    with pytest.raises(services.PartnerNotFound):
        services.set_partner_suspended(uow, request_key(), unique("missing"), is_suspended=True)


# Keys


@pytest.mark.parametrize(
    ("private_key", "algorithm"),
    [(ec.generate_private_key(ec.SECP256R1()), "ES256"), (Ed25519PrivateKey.generate(), "EdDSA")],
    ids=["p256", "ed25519"],
)
def test_register_accepts_ec_p256_and_ed25519_public_keys(
    uow: UnitOfWork, clock: ManualClock, private_key: PrivateKeyTypes, algorithm: str
) -> None:
    partner, key_id = new_partner(uow), unique("key")

    key = register(uow, partner, public_pem(private_key), key_id)

    assert (key.key_id, key.partner_id, key.partner_code, key.algorithm) == (
        key_id, partner.id, partner.partner_code, algorithm,
    )  # fmt: skip
    assert (key.created_at, key.revoked_at) == (clock.now(), None)
    assert key.public_key_pem.strip() == public_pem(private_key).strip()
    with pytest.raises(services.KeyAlreadyExists):
        register(uow, new_partner(uow), public_pem(Ed25519PrivateKey.generate()), key_id)


def _private_pem() -> str:
    private_key = ec.generate_private_key(ec.SECP256R1())
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("pem", "key_id", "error"),
    [
        (public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "", KeyTypeNotAllowed),
        (public_pem(ec.generate_private_key(ec.SECP384R1())), "", KeyTypeNotAllowed),
        (_private_pem(), "", PrivateKeyNotAllowed),
        ("c2VjcmV0LWhtYWMta2V5LXNoYXJlZC13aXRoLXRoZS1wYXJ0bmVy", "", InvalidPublicKey),
        (public_pem(Ed25519PrivateKey.generate()), "operator-admin", services.InvalidPartnerField),
        (public_pem(Ed25519PrivateKey.generate()), "has space", services.InvalidPartnerField),
    ],
    ids=["rsa", "p384", "private-key", "hmac-secret", "operator-prefix", "bad-key-id"],
)
def test_register_refuses_other_keys(uow: UnitOfWork, pem: str, key_id: str, error: type[Exception]) -> None:
    partner = new_partner(uow)

    with pytest.raises(error):
        register(uow, partner, pem, key_id)

    assert services.list_partner_keys(uow, partner.partner_code, page_size=10, page_token="").items == []


def test_register_for_unknown_partner_is_refused(uow: UnitOfWork) -> None:
    ghost = PartnerView(0, unique("ghost"), "Ghost", "ONLINE_SHOP", "ACTIVE", ManualClock().now(), None)

    with pytest.raises(services.PartnerNotFound):
        register(uow, ghost, public_pem(Ed25519PrivateKey.generate()))


def test_revoke_key(uow: UnitOfWork, clock: ManualClock) -> None:
    partner, other = new_partner(uow), new_partner(uow)
    key = register(uow, partner, public_pem(Ed25519PrivateKey.generate()))
    clock.advance(timedelta(minutes=5))
    revoke_time = clock.now()

    revoked = services.revoke_partner_key(uow, request_key(), partner_code=partner.partner_code, key_id=key.key_id)
    clock.advance(timedelta(minutes=5))
    again = services.revoke_partner_key(uow, request_key(), partner_code=partner.partner_code, key_id=key.key_id)

    assert revoked.result.revoked_at == again.result.revoked_at == revoke_time
    assert revoked.result.created_at == key.created_at
    for partner_code, key_id in ((other.partner_code, key.key_id), (partner.partner_code, unique("key"))):
        with pytest.raises(services.KeyNotFound):
            services.revoke_partner_key(uow, request_key(), partner_code=partner_code, key_id=key_id)


def test_list_keys_is_paginated_and_per_partner(uow: UnitOfWork) -> None:
    partner, other = new_partner(uow), new_partner(uow)
    registered = [register(uow, partner, public_pem(Ed25519PrivateKey.generate())).key_id for _ in range(5)]
    register(uow, other, public_pem(Ed25519PrivateKey.generate()))

    pages, page_token = [], ""
    while True:
        page = services.list_partner_keys(uow, partner.partner_code, page_size=2, page_token=page_token)
        pages.append([key.key_id for key in page.items])
        page_token = page.next_page_token
        if not page_token:
            break

    assert pages == [registered[0:2], registered[2:4], registered[4:]]
    with pytest.raises(services.PartnerNotFound):
        services.list_partner_keys(uow, unique("missing"), page_size=2, page_token="")


# Contract versions


def test_contract_versions_are_numbered_from_one(uow: UnitOfWork, clock: ManualClock) -> None:
    partner = new_partner(uow)

    created = [add_version(uow, partner, earn_rate=Decimal(rate)) for rate in ("1", "1.5", "2", "0.25")]
    first_page = services.list_contract_versions(uow, partner.partner_code, page_size=3, page_token="")
    second_page = services.list_contract_versions(
        uow, partner.partner_code, page_size=3, page_token=first_page.next_page_token
    )

    assert [version.version for version in created] == [1, 2, 3, 4]
    assert first_page.items + second_page.items == created and second_page.next_page_token == ""
    assert [version.terms.earn_rate for version in created] == [
        Decimal("1"),
        Decimal("1.5"),
        Decimal("2"),
        Decimal("0.25"),
    ]
    assert all(version.effective_from == clock.now() and version.partner_id == partner.id for version in created)
    assert created[0].terms == EUR_TERMS


def test_contract_version_cannot_take_effect_in_the_past(uow: UnitOfWork, clock: ManualClock) -> None:
    partner = new_partner(uow)

    with pytest.raises(services.EffectiveTimeInPast):
        add_version(uow, partner, effective_from=clock.now() - timedelta(seconds=1))
    with pytest.raises(UnsupportedCurrency):
        add_version(uow, partner, currency="XXX")

    assert services.list_contract_versions(uow, partner.partner_code, page_size=10, page_token="").items == []


def test_terms_in_force_follow_the_effective_time(uow: UnitOfWork, clock: ManualClock) -> None:
    partner = new_partner(uow)
    start = clock.now()

    def in_force() -> int:
        return uow.run(lambda c: services.partner_terms_in_force(c, partner.id, clock.now())).version

    with pytest.raises(services.NoContractInForce):
        in_force()
    add_version(uow, partner)
    add_version(uow, partner, earn_rate=Decimal("2"), effective_from=start + timedelta(days=7))
    add_version(uow, partner, earn_rate=Decimal("3"), effective_from=start + timedelta(days=3))

    assert in_force() == 1
    clock.set(start + timedelta(days=3) - timedelta(microseconds=1))
    assert in_force() == 1
    clock.set(start + timedelta(days=3))
    assert in_force() == 3
    clock.set(start + timedelta(days=7))
    assert in_force() == 2
    services.set_partner_suspended(uow, request_key(), partner.partner_code, is_suspended=True)
    with pytest.raises(services.PartnerSuspended):
        in_force()


def _rows(connection: Connection, partner_id: int) -> list[tuple[object, ...]]:
    query = text("SELECT * FROM contract_versions WHERE partner_id = :p ORDER BY id")
    return [tuple(row) for row in connection.execute(query, {"p": partner_id})]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE contract_versions SET earn_rate = '100' WHERE partner_id = :p",
        "DELETE FROM contract_versions WHERE partner_id = :p",
    ],
    ids=["update", "delete"],
)
def test_contract_versions_are_immutable_in_the_database(uow: UnitOfWork, engine: Engine, statement: str) -> None:
    partner = new_partner(uow)
    add_version(uow, partner)
    with engine.connect() as connection:
        before = _rows(connection, partner.id)

    with engine.connect() as connection, connection.begin() as transaction:
        try:
            with pytest.raises(DBAPIError, match="append-only"):
                connection.execute(text(statement), {"p": partner.id})
        finally:
            transaction.rollback()

    with engine.connect() as connection:
        assert _rows(connection, partner.id) == before and len(before) == 1
