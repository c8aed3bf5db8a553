"""A known defect, found in review and not fixed yet: a return of a purchase whose points were transferred
to a household member credits an ON_REDEMPTION issuer a CONSUMPTION_REVERSAL for points it was never
billed for. When the recipient spends them the issuer is billed and it nets out; when the recipient's
lot lapses instead, the issuer keeps money for points nobody spent.

The fix this calls for: a return takes back the still-unspent points of the purchase from the lots they
were transferred into (and settlement counts those as the purchase's own lot), so only points actually
spent are credited. Remove the xfail when it lands."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from checkout.session import CheckoutSettings
from common.idempotency import RequestKey
from partners.rates import Billing
from programme.expiry import expire_lapsed_points
from programme.households import Households, TransferCommand
from programme.visibility import OPERATOR_STAFF
from server.app import held_points
from settlement.netting import LineType
from tests.factories import phone, request_key
from tests.integration.settlement.harness import Network, new_receipt, own_network, utc

STAFF = "operator:support-alice"
SETTINGS = CheckoutSettings(identifier_pepper=b"t", points_lifetime_days=70)


@pytest.fixture
def network(isolated_database_url: str) -> Iterator[Network]:
    with own_network(isolated_database_url, start=utc("2026-01-05T10:00:00"), settings=SETTINGS) as network:
        yield network


@pytest.mark.xfail(strict=True, reason="known defect: transferred-then-returned points credit an unbilled issuer")
def test_an_issuer_is_not_paid_for_transferred_points_of_a_returned_purchase_that_lapse(network: Network) -> None:
    households = Households(network.uow, identifier_pepper=b"t", held_points=held_points)
    store = network.partner(Billing.ON_REDEMPTION, issuance_price="0.012")
    sender, recipient, receipt = phone(), phone(), new_receipt()
    network.earn(store, sender, 500, receipt=receipt)  # lot expires 2026-03-16
    network.earn(store, recipient, 1)
    network.clock.set(utc("2026-02-09T10:00:00"))
    households.create(RequestKey(STAFF, request_key().key), [sender, recipient], STAFF)
    network.clock.set(utc("2026-02-17T10:00:00"))
    households.transfer(RequestKey(STAFF, request_key().key), OPERATOR_STAFF, TransferCommand(sender, recipient, 500))
    network.clock.set(utc("2026-03-05T10:00:00"))
    returned = network.return_purchase(store, receipt)  # sender now owes 500
    assert returned.debt_created_points == 500
    network.clock.set(utc("2026-03-20T10:00:00"))
    expire_lapsed_points(network.uow, held_points)  # recipient never spent: 500 (+1) lapse
    network.clock.set(utc("2026-04-01T00:00:00"))
    labels = ("2026-01", "2026-02", "2026-03")
    for label in labels:
        network.close(label)
    views = [view for label in labels for code, view in network.statements(label).items() if code == store.code]
    lines = [line for view in views for line in view.lines]
    consumed = sum(line.points for line in lines if line.line_type == LineType.CONSUMPTION)
    credited = sum(line.points for line in lines if line.line_type == LineType.CONSUMPTION_REVERSAL)
    net = sum(view.net_minor for view in views)
    # Nobody ever spent a point of this issuer: it should neither pay nor be paid.
    assert (consumed, credited, net) == (0, 0, 0), (consumed, credited, net)
