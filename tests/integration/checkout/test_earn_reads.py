"""An earn reads the contract in force, the partner's best promotion, the network policy and whether the
receipt is known in one statement (CheckoutRepository.earn_reads); it must find what the four reads it
replaces find.

Policy versions apply to the whole network, so these tests have a database of their own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Connection, bindparam

from checkout.commands import Basket, EarnCommand
from checkout.repository import CheckoutRepository, EarnReads
from checkout.services import CheckoutService
from checkout.session import CheckoutSettings
from common.clock import ManualClock
from common.db import UtcDateTime, create_engine
from common.uow import UnitOfWork
from partners import services as partner_services
from partners.repository import PartnerRepository
from programme.partner_programme import PartnerProgramme, PromotionCommand, active_promotion_of, best_promotion_select
from programme.policy import NetworkPolicy
from programme.repository import PolicyRepository
from programme.services import create_policy_version
from tests.factories import create_partner, phone, request_key

# The promotion read on its own, as the earn read it before the three reads became one statement.
_BEST_PROMOTION = best_promotion_select(bindparam("partner"), bindparam("at", type_=UtcDateTime()))


@pytest.fixture
def uow(isolated_database_url: str, clock: ManualClock) -> Iterator[UnitOfWork]:
    engine = create_engine(isolated_database_url, pool_size=1)
    yield UnitOfWork(engine, clock)
    engine.dispose()


def _both_ways(
    uow: UnitOfWork, partner_id: int, business_delta: timedelta = timedelta(0), receipt_id: str = "R-1"
) -> EarnReads:
    """The one statement's reads, asserted equal to the four separate reads."""
    now = uow.clock.now()
    business_time = now + business_delta

    def read(connection: Connection) -> tuple[EarnReads, EarnReads]:
        records = CheckoutRepository(connection)
        together = records.earn_reads(partner_id, receipt_id, business_time, now)
        apart = EarnReads(
            PartnerRepository(connection).version_in_force(partner_id, business_time),
            active_promotion_of(
                connection.execute(_BEST_PROMOTION, {"partner": partner_id, "at": business_time}).first()
            ),
            PolicyRepository(connection).in_force(now),
            records.purchase(partner_id, receipt_id) is not None,
        )
        return together, apart

    together, apart = uow.run(read)
    assert together == apart
    return together


def test_a_read_that_finds_nothing_gives_none(uow: UnitOfWork) -> None:
    shop = create_partner(uow)
    reads = _both_ways(uow, shop.partner_id)
    assert reads.version is not None and reads.version[1] is True
    assert reads.promotion is None and reads.policy is None
    unknown = _both_ways(uow, shop.partner_id + 1000)
    assert unknown == EarnReads(None, None, None, receipt_known=False)


def test_a_receipt_is_known_once_its_partner_recorded_it_and_only_to_that_partner(uow: UnitOfWork) -> None:
    shop, other = create_partner(uow), create_partner(uow)
    checkout = CheckoutService(uow, CheckoutSettings(identifier_pepper=b"test"))
    assert _both_ways(uow, shop.partner_id, receipt_id="R-42").receipt_known is False
    earn = EarnCommand(phone(), "R-42", Basket("EUR", 1_000), enroll_if_unknown=True)
    checkout.earn_points(shop, request_key().key, earn)
    assert _both_ways(uow, shop.partner_id, receipt_id="R-42").receipt_known is True
    assert _both_ways(uow, other.partner_id, receipt_id="R-42").receipt_known is False
    assert _both_ways(uow, shop.partner_id, receipt_id="R-43").receipt_known is False


def test_the_contract_and_promotion_are_those_of_the_business_time_and_the_policy_that_of_now(
    uow: UnitOfWork, clock: ManualClock
) -> None:
    shop, other = create_partner(uow), create_partner(uow)
    now = clock.now()
    programme = PartnerProgramme(uow)
    for percent in (20, 50):
        command = PromotionCommand(f"{percent}% more", percent, now, now + timedelta(days=30))
        programme.create_promotion(request_key(), shop.partner_id, command)
    programme.create_promotion(
        request_key(), other.partner_id, PromotionCommand("More", 90, now, now + timedelta(days=30))
    )
    create_policy_version(uow, request_key(), policy=NetworkPolicy(), effective_from=None, created_by="tests")

    reads = _both_ways(uow, shop.partner_id)
    assert reads.promotion is not None and reads.promotion.bonus_percent == 50
    assert reads.policy is not None and reads.policy.version == 1

    clock.advance(timedelta(days=1))  # an offline purchase made before the contract and promotions began
    earlier = _both_ways(uow, shop.partner_id, business_delta=-timedelta(days=2))
    assert earlier.version is None and earlier.promotion is None
    assert earlier.policy is not None and earlier.policy.version == 1


def test_a_suspended_partner_is_read_as_inactive(uow: UnitOfWork) -> None:
    shop = create_partner(uow)
    found = uow.run(lambda connection: PartnerRepository(connection).by_id(shop.partner_id))
    assert found is not None
    partner_services.set_partner_suspended(uow, request_key(), found.partner_code, is_suspended=True)
    reads = _both_ways(uow, shop.partner_id)
    assert reads.version is not None and reads.version[1] is False
