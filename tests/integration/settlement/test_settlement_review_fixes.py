"""Review findings, each pinned: periods never close out of order, returns are priced as what they undo,
payments and closes are serialised, and the history statements rest on cannot be rewritten."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text

from partners import services as partner_services
from partners.rates import Billing
from settlement.checks import reconcile
from settlement.items import UnclassifiedLedgerFact
from settlement.netting import LineType
from settlement.services import LaterPeriodClosed
from tests.factories import EUR_TERMS, phone, request_key
from tests.integration.settlement.harness import APRIL, MARCH, MAY, Network, new_receipt, utc
from tests.integration.settlement.test_settlement_append_only import refusal


def test_a_period_cannot_be_closed_after_a_later_one(network: Network) -> None:
    a = network.partner()
    network.earn(a, phone(), 100)  # March has activity
    network.clock.set(utc("2026-04-15T09:00:00"))
    network.earn(a, phone(), 50)  # so does April
    network.clock.set(utc("2026-05-02T09:00:00"))
    network.close(MARCH)
    network.close(APRIL)
    network.clock.set(utc("2026-06-02T09:00:00"))

    with pytest.raises(LaterPeriodClosed) as raised:
        network.close("2026-02")
    assert raised.value.reason == "LATER_PERIOD_CLOSED"
    network.close(MAY)  # the next one is fine


def test_a_return_is_priced_with_the_terms_of_what_it_undoes(network: Network) -> None:
    """Redeemed under version 1, earned under version 2, returned whole: the partner ends where it started."""
    a = network.partner(issuance_price="0.012", reimbursement_rate="0.010")
    member, receipt = phone(), new_receipt()
    network.earn(a, member, 500)  # points to redeem
    network.redeem(a, member, 200, receipt=receipt)
    network.clock.set(utc("2026-03-10T09:00:00"))
    partner_services.create_contract_version(
        network.uow, request_key(), partner_code=a.code, created_by="tests", effective_from=None,
        terms=EUR_TERMS.__class__(**{**vars(EUR_TERMS), "issuance_price": Decimal("0.020"),
                                     "reimbursement_rate": Decimal("0.015")}),
    )  # fmt: skip
    network.earn(a, member, 100, receipt=receipt)
    network.return_purchase(a, receipt)
    network.clock.set(utc("2026-04-01T00:00:01"))
    network.close(MARCH)

    lines = {(line.line_type, line.unit_price): line for line in network.statement(MARCH, a).lines}
    issued, taken_back = (
        lines[(LineType.ISSUANCE, Decimal("0.020"))],
        lines[(LineType.ISSUANCE_REVERSAL, Decimal("0.020"))],
    )
    assert issued.amount_minor + taken_back.amount_minor == 0  # the 100 points issued at 0.020 are undone at 0.020
    redeemed, refunded = (lines[(LineType.REDEMPTION, Decimal("0.010"))],
                          lines[(LineType.REDEMPTION_REFUND, Decimal("0.010"))])  # fmt: skip
    assert redeemed.amount_minor + refunded.amount_minor == 0
    assert reconcile(network.uow, network.policy, MARCH).passed


def test_a_payment_between_two_closes_carries_into_the_next_opening(network: Network) -> None:
    a = network.partner()
    network.earn(a, phone(), 1_000)  # A owes 12.00 for March
    network.clock.set(utc("2026-04-01T00:00:01"))
    network.close(MARCH)
    network.pay(f"{MARCH}/{a.code}/EUR", 500)
    network.earn(a, phone(), 100)
    network.clock.set(utc("2026-05-01T00:00:01"))
    network.close(APRIL)

    april = network.statement(APRIL, a)
    assert april.opening_position_minor == -1200 + 500
    assert reconcile(network.uow, network.policy, APRIL).passed
    assert reconcile(network.uow, network.policy, MARCH).passed


def test_closed_periods_and_lot_terms_cannot_be_rewritten(network: Network) -> None:
    c = network.partner(billing=Billing.ON_REDEMPTION)
    network.earn(c, phone(), 100)
    network.clock.set(utc("2026-04-01T00:00:01"))
    network.close(MARCH)

    for statement in (
        "UPDATE settlement_periods SET ends_at = starts_at",
        "UPDATE settlement_periods SET label = '2026-02'",
        "DELETE FROM settlement_periods",
        "UPDATE lots SET issuance_price = '0'",
        "UPDATE lots SET issuer_partner_id = NULL",
        "UPDATE lots SET origin_lot_id = id",  # which purchase a transferred lot's points came from
        "DELETE FROM lots",
    ):
        assert "refused" in refusal(network, statement), statement
    # What may change still can: a lot's remaining points (spending) and a period's payment status.
    with network.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE lots SET remaining_points = remaining_points")
        connection.exec_driver_sql("UPDATE settlement_periods SET paid_at = paid_at, status = status")


def test_an_entry_without_contract_terms_stops_the_close(network: Network) -> None:
    """Settlement never drops a ledger fact it has no rule for: the close fails, loudly and with a reason."""
    a = network.partner()
    earned = network.earn(a, phone(), 100)
    with network.engine.begin() as connection:  # the shape a future kind of posting might have
        source = connection.execute(
            text("SELECT id, partner_id, member_id, business_time, recorded_at FROM journal_transactions "
                 "WHERE public_id = :id"), {"id": earned.transaction_id},
        ).one()  # fmt: skip
        issued = connection.execute(
            text("SELECT account_id FROM journal_entries WHERE transaction_id = :id AND side = 'D'"), {"id": source.id}
        ).scalar_one()
        redeemed = connection.execute(
            text("INSERT INTO ledger_accounts (kind, owner_id) VALUES ('PARTNER_REDEEMED', :owner) RETURNING id"),
            {"owner": source.partner_id},
        ).scalar_one()
        adjustment = connection.execute(
            text("INSERT INTO journal_transactions (public_id, kind, partner_id, member_id, points, business_time, "
                 "recorded_at) VALUES ('adjustment-without-terms', 'ADJUSTMENT', :partner, :member, 5, :time, :time) "
                 "RETURNING id"),
            {"partner": source.partner_id, "member": source.member_id, "time": source.business_time},
        ).scalar_one()  # fmt: skip
        connection.execute(
            text("INSERT INTO journal_entries (transaction_id, account_id, side, amount_points) VALUES "
                 "(:tx, :issued, 'D', 5), (:tx, :redeemed, 'C', 5)"),
            {"tx": adjustment, "issued": issued, "redeemed": redeemed},
        )  # fmt: skip
    network.clock.set(utc("2026-04-01T00:00:01"))

    with pytest.raises(UnclassifiedLedgerFact) as raised:
        network.close(MARCH)
    assert raised.value.reason == "UNCLASSIFIED_LEDGER_FACT"
    assert network.period(MARCH).status == "OPEN"  # nothing of the close was kept
