"""A throwaway PostgreSQL database for one benchmark run, migrated and seeded through the services."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import make_url, text

from checkout.commands import Basket, EarnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings, PartnerRef
from common.clock import SystemClock
from common.db import create_engine
from common.idempotency import RequestKey
from common.uow import UnitOfWork
from members.identifiers import IdentifierKind, MemberIdentifier
from migrations.runner import upgrade
from partners import services
from partners.rates import ContractTerms
from sdk.tokens import generate_key_pair, write_private_key

BENCH_PEPPER = "coalition-bench-pepper"
PARTNER_CODE = "bench-shop"
KEY_ID = "bench-shop-1"
CURRENCY = "EUR"
TERMS = ContractTerms(CURRENCY, Decimal(1), Decimal("0.01"), Decimal("0.012"), Decimal("0.010"))
SEED_THREADS = 4


@dataclass(frozen=True)
class SeededNetwork:
    partner_code: str
    key_id: str
    private_key_path: Path
    member_numbers: tuple[str, ...]


def create_database(admin_url: str) -> str:
    """Creates ``coalition_bench_<random>`` next to the admin URL's database and returns its URL."""
    name = f"coalition_bench_{uuid.uuid4().hex[:10]}"
    engine = sa_create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = sa_create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def seed(url: str, keys_dir: Path, *, members: int, points_each: int = 100) -> SeededNetwork:
    """Migrates, onboards one EdDSA partner and enrols ``members`` members holding ``points_each`` points."""
    upgrade(url)
    engine = create_engine(url, pool_size=SEED_THREADS)
    try:
        uow = UnitOfWork(engine, SystemClock())
        partner = _onboard(uow, keys_dir)
        checkout = CheckoutService(uow, CheckoutSettings(identifier_pepper=BENCH_PEPPER.encode()))
        phones = random.sample(range(10**8), members)

        def enrol(index: int) -> str:
            command = EarnCommand(
                member=MemberIdentifier(IdentifierKind.PHONE, f"+4477{phones[index]:08d}"),
                receipt_id=f"seed-{index}", basket=Basket(CURRENCY, points_each * 100), enroll_if_unknown=True,
            )  # fmt: skip
            return checkout.earn_points(partner, f"seed-{index}", command).result.member_number

        # The first earn creates the partner's ledger accounts; it must commit before concurrent earns
        # use them (ledger.repository caches account ids as soon as they are inserted).
        first = enrol(0)
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            numbers = (first, *pool.map(enrol, range(1, members)))
    finally:
        engine.dispose()
    return SeededNetwork(PARTNER_CODE, KEY_ID, keys_dir / f"{PARTNER_CODE}.pem", numbers)


def _onboard(uow: UnitOfWork, keys_dir: Path) -> PartnerRef:
    private_key, public_pem = generate_key_pair("EdDSA")
    write_private_key(keys_dir / f"{PARTNER_CODE}.pem", private_key)
    scope = "operator:bench"
    created = services.create_partner(
        uow, RequestKey(scope, "partner"), partner_code=PARTNER_CODE, display_name="Bench Shop", kind="ONLINE_SHOP"
    ).result
    services.register_partner_key(
        uow, RequestKey(scope, "key"), partner_code=PARTNER_CODE, key_id=KEY_ID, public_key_pem=public_pem
    )
    services.create_contract_version(
        uow, RequestKey(scope, "contract"), partner_code=PARTNER_CODE, terms=TERMS, effective_from=None,
        created_by="bench",
    )  # fmt: skip
    return PartnerRef(created.id, f"partner:{PARTNER_CODE}")
