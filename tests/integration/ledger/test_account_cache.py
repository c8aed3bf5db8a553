"""Partner account ids are cached only once committed (a rolled-back creation must not poison the cache)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine

from checkout.commands import Basket, EarnCommand
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.uow import UnitOfWork
from ledger.repository import LedgerRepository
from tests.factories import create_partner, phone
from tests.invariants import assert_invariants


class _RolledBack(Exception):
    pass


def test_an_account_created_in_a_rolled_back_transaction_is_not_reused(uow: UnitOfWork, engine: Engine) -> None:
    partner = create_partner(uow)

    def create_then_fail(connection: object) -> None:
        LedgerRepository(connection).account_id("PARTNER_ISSUED", partner.partner_id)  # type: ignore[arg-type]
        raise _RolledBack

    with pytest.raises(_RolledBack):
        uow.run(create_then_fail)
    service = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test"))
    command = EarnCommand(phone(), uuid.uuid4().hex, Basket("EUR", 1_000), enroll_if_unknown=True)
    assert service.earn_points(partner, uuid.uuid4().hex, command).result.points_earned == 10
    assert_invariants(engine)


def test_an_account_asked_for_twice_in_a_rolled_back_transaction_is_not_reused(uow: UnitOfWork, engine: Engine) -> None:
    """The second ask finds the row this transaction inserted: it is not committed, so not cacheable either."""
    partner = create_partner(uow)

    def create_twice_then_fail(connection: object) -> None:
        ledger = LedgerRepository(connection)  # type: ignore[arg-type]
        first = ledger.account_id("PARTNER_ISSUED", partner.partner_id)
        assert ledger.account_id("PARTNER_ISSUED", partner.partner_id) == first
        raise _RolledBack

    with pytest.raises(_RolledBack):
        uow.run(create_twice_then_fail)
    service = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test"))
    command = EarnCommand(phone(), uuid.uuid4().hex, Basket("EUR", 1_000), enroll_if_unknown=True)
    assert service.earn_points(partner, uuid.uuid4().hex, command).result.points_earned == 10
    assert_invariants(engine)
