"""The set-based batch path gives the results and the books the item-by-item path gives, item for item."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select

from cards.commands import CardItemCommand, CardItemResult, ItemType, LinkCommand
from cards.feed import CardFeed, CardSettings
from cards.repository import card_transactions, items
from cards.repository import links as card_links
from cards.services import CardService
from common.clock import ManualClock
from common.uow import UnitOfWork
from ledger.repository import accounts, balances, entries, lots, movements, transactions
from members.repository import links as member_partner_links
from tests.factories import create_partner, phone, request_key
from tests.invariants import assert_invariants

SETTINGS = CardSettings(identifier_pepper=b"t")


@dataclass(frozen=True)
class Spec:
    """An item in terms both worlds share: which transaction, card and merchant, not their ids."""

    item_type: ItemType
    transaction: int
    amount_minor: int
    item_id: str = ""
    card: int = 0  # 0 and 1 are linked; 2 is not
    at_partner: bool = True
    currency: str = "EUR"


class World:
    """A bank, a merchant partner, two linked cards: the same network twice, to apply items two ways."""

    def __init__(self, uow: UnitOfWork, *, is_set_based: bool) -> None:
        self.uow = uow
        self.bank = create_partner(uow, kind="CARD_ISSUER", issuance_price=Decimal("0.010"), earn_rate=Decimal(2))
        self.shop = create_partner(uow)
        service = CardService(uow, SETTINGS)
        self.merchant = f"mid-{uuid.uuid4().hex[:10]}"
        service.add_merchant(request_key(), self.merchant, self.shop.idempotency_scope.removeprefix("partner:"))
        self.tokens = [f"tok_{uuid.uuid4().hex}" for _ in range(3)]
        for token in self.tokens[:2]:
            service.link_card(self.bank, uuid.uuid4().hex, LinkCommand(token, phone()))
        self.feed = CardFeed(uow, SETTINGS, is_set_based=is_set_based)

    def command(self, spec: Spec) -> CardItemCommand:
        is_reversal = spec.item_type.is_reversal
        return CardItemCommand(
            item_type=spec.item_type, bank_transaction_id=f"T{spec.transaction}", item_id=spec.item_id,
            card_token="" if is_reversal else self.tokens[spec.card],
            merchant_id="" if is_reversal else (self.merchant if spec.at_partner else "mid-elsewhere"),
            currency=spec.currency, amount_minor=spec.amount_minor, transaction_time=self.uow.clock.now(),
        )  # fmt: skip

    def apply(self, specs: list[Spec]) -> list[CardItemResult]:
        return self.feed.apply_batch(self.bank.partner_id, [self.command(spec) for spec in specs])

    def books(self, engine: Engine) -> dict[str, Any]:
        """What the items did, with this world's ids replaced by names both worlds share."""
        with engine.connect() as connection:
            return _Books(connection, self).read()


class _Books:
    def __init__(self, connection: Connection, world: World) -> None:
        self.connection, self.world, self.bank = connection, world, world.bank.partner_id
        linked = select(card_links.c.member_id).where(card_links.c.issuer_partner_id == self.bank)
        self.members = {
            member: index for index, member in enumerate(connection.scalars(linked.order_by(card_links.c.id)))
        }
        self.partners = {self.bank: "bank", world.shop.partner_id: "shop", None: None}
        self.journal = connection.execute(
            select(transactions).where(transactions.c.member_id.in_(list(self.members))).order_by(transactions.c.id)
        ).all()
        self.kinds = {row.id: row.kind for row in self.journal}

    def read(self) -> dict[str, Any]:
        lot_rows = self.connection.execute(select(lots).where(lots.c.member_id.in_(list(self.members)))).all()
        return {
            "items": self._items(), "card_transactions": self._card_transactions(), "journal": self._journal(),
            "entries": self._entries(), "lots": self._lots(lot_rows), "movements": self._movements(lot_rows),
            "balances": self._balances(), "member_partners": self._member_partners(),
        }  # fmt: skip

    def _items(self) -> list[tuple[Any, ...]]:
        rows = self.connection.execute(select(items).where(items.c.issuer_partner_id == self.bank))
        return sorted(
            (row.bank_transaction_id, row.item_type, row.item_id, row.status, row.reason, row.amount_minor,
             row.pending_points, row.points_earned, row.points_reversed, row.debt_points,
             row.applied_at is None)
            for row in rows
        )  # fmt: skip

    def _card_transactions(self) -> list[tuple[Any, ...]]:
        rows = self.connection.execute(
            select(card_transactions).where(card_transactions.c.issuer_partner_id == self.bank)
        )
        return sorted(
            (row.bank_transaction_id, self.members[row.member_id], row.merchant_id == self.world.merchant,
             self.partners[row.merchant_partner_id], row.authorised_minor, row.pending_points, row.cleared_minor,
             row.merchant_points, row.bank_points, row.merchant_earn_transaction_id is None,
             row.bank_earn_transaction_id is None, row.reversed_minor)
            for row in rows
        )  # fmt: skip

    def _journal(self) -> list[tuple[Any, ...]]:
        return sorted(
            (row.kind, self.members[row.member_id], self.partners[row.partner_id], row.points, row.receipt_id,
             row.amount_minor, row.currency, self.kinds.get(row.references_transaction_id))
            for row in self.journal
        )  # fmt: skip

    def _entries(self) -> list[tuple[Any, ...]]:
        names = {}
        for row in self.connection.execute(select(accounts)):
            owners: dict[Any, Any] = self.members if row.kind.startswith("MEMBER") else self.partners
            names[row.id] = (row.kind, owners.get(row.owner_id))
        rows = self.connection.execute(select(entries).where(entries.c.transaction_id.in_(list(self.kinds))))
        return sorted((self.kinds[row.transaction_id], names[row.account_id], row.side, row.amount_points)
                      for row in rows)  # fmt: skip

    def _lots(self, lot_rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        return sorted((self.members[row.member_id], self.partners[row.issuer_partner_id], row.points,
                       row.remaining_points, row.issuance_price) for row in lot_rows)  # fmt: skip

    def _movements(self, lot_rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        lot_kinds = {row.id: (self.kinds[row.source_transaction_id], self.partners[row.issuer_partner_id])
                     for row in lot_rows}  # fmt: skip
        rows = self.connection.execute(select(movements).where(movements.c.lot_id.in_(list(lot_kinds))))
        return sorted((lot_kinds[row.lot_id], self.kinds[row.transaction_id], row.kind, row.points_delta)
                      for row in rows)  # fmt: skip

    def _balances(self) -> list[tuple[Any, ...]]:
        rows = self.connection.execute(select(balances).where(balances.c.member_id.in_(list(self.members))))
        return sorted((self.members[row.member_id], row.points_balance, row.debt_points) for row in rows)

    def _member_partners(self) -> list[tuple[Any, ...]]:
        query = select(member_partner_links).where(member_partner_links.c.member_id.in_(list(self.members)))
        return sorted((self.members[row.member_id], self.partners.get(row.partner_id))
                      for row in self.connection.execute(query))  # fmt: skip


def _answers(results: list[CardItemResult]) -> list[tuple[Any, ...]]:
    return [(r.bank_transaction_id, r.item_type, r.item_id, r.status, r.reason, r.message, r.pending_points,
             r.points_earned, r.points_reversed, r.debt_points, r.is_replay) for r in results]  # fmt: skip


def _compare(engine: Engine, uow: UnitOfWork, clock: ManualClock, batches: list[list[Spec]]) -> list[CardItemResult]:
    """Applies the batches set-based in one world and item by item (one transaction each) in another."""
    batched, one_by_one = World(uow, is_set_based=True), World(uow, is_set_based=False)
    clock.advance(timedelta(minutes=1))  # after the contracts took effect
    batched_results = [result for batch in batches for result in batched.apply(batch)]
    single_results = [result for batch in batches for spec in batch for result in one_by_one.apply([spec])]
    assert _answers(batched_results) == _answers(single_results)
    books, expected = batched.books(engine), one_by_one.books(engine)
    for name, rows in expected.items():  # one part at a time: a difference is then readable
        assert (name, books[name]) == (name, rows)
    assert_invariants(engine)
    return batched_results


AUTH, CLEAR, REFUND, CHARGEBACK = ItemType.AUTHORISATION, ItemType.CLEARING, ItemType.REFUND, ItemType.CHARGEBACK


def test_a_mixed_batch_has_the_effects_of_its_items_applied_one_by_one(
    engine: Engine, uow: UnitOfWork, clock: ManualClock
) -> None:
    batch = [
        Spec(AUTH, 1, 10_000),
        Spec(REFUND, 2, 1_000, "R1"),  # before its clearing, in the same batch: waits, then applies
        Spec(CLEAR, 1, 9_000),
        Spec(CLEAR, 1, 9_000),  # a duplicate within the batch: a replay
        Spec(CLEAR, 2, 4_000, card=1, at_partner=False),
        Spec(AUTH, 3, 2_000, card=2),  # an unlinked card among good items: refused, stored
        Spec(CLEAR, 4, 3_000),  # the same member again
        Spec(REFUND, 1, 4_500, "R1"),
        Spec(CHARGEBACK, 1, 5_000, "C1"),  # more than is left: refused
        Spec(CLEAR, 5, 1_000, currency="USD"),  # refused before any write
        Spec(REFUND, 4, 3_000, "R1"),  # all of it
        Spec(AUTH, 4, 3_000),  # after its clearing: ignored
        Spec(CLEAR, 2, 4_100, card=1, at_partner=False),  # the same key, other content: a conflict
    ]
    results = _compare(engine, uow, clock, [batch, batch])
    assert [result.status.value for result in results[: len(batch)]] == [
        "APPLIED", "WAITING", "APPLIED", "APPLIED", "APPLIED", "REJECTED", "APPLIED", "APPLIED", "REJECTED",
        "REJECTED", "APPLIED", "IGNORED", "REJECTED",
    ]  # fmt: skip
    assert all(result.is_replay or result.reason == "CARD_ITEM_CONFLICT" for result in results[len(batch) :])


_specs = st.builds(
    Spec,
    item_type=st.sampled_from(list(ItemType)),
    transaction=st.integers(1, 4),
    amount_minor=st.sampled_from([100, 999, 2_500, 4_000, 10_000]),
    card=st.sampled_from([0, 0, 1, 2]),
    at_partner=st.booleans(),
    currency=st.sampled_from(["EUR"] * 9 + ["USD"]),
).map(lambda spec: spec if not spec.item_type.is_reversal else Spec(
    spec.item_type, spec.transaction, spec.amount_minor, item_id=f"R{spec.amount_minor % 3}", currency=spec.currency,
))  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(_specs, min_size=1, max_size=16), split=st.integers(0, 16))
def test_any_items_in_any_batches_have_the_effects_of_the_items_one_by_one(
    engine: Engine, uow: UnitOfWork, clock: ManualClock, specs: list[Spec], split: int
) -> None:
    _compare(engine, uow, clock, [specs[:split], specs[split:]])
