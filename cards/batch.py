"""Card items applied set-based: read once what the batch needs, decide item by item in memory, write in bulk.

The rules are the item-by-item path's (feed.py), applied in arrival order; only the database work is
grouped: a dozen statements for a batch instead of a dozen per item. An item this path does not
decide alone (any rejection, a reversal that would reach beyond its own lot, a lot that lost points,
a purchase with a tier bonus to take back) stops it there: what came before is written, and the feed
applies that item on its own, after which a new batch reads the database again for the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from cards.commands import CardItemCommand, CardItemResult, ItemStatus, ItemType
from cards.errors import CardNotLinked, ReversalExceedsClearing, ReversalWindowClosed
from cards.items import BatchReads, CardSettings, cleared_values, fingerprint, receipt, replay, result, validate
from cards.links import CardToken
from cards.repository import ITEM_CHANGES, TRANSACTION_CHANGES, CardRepository, StoredItem
from cards.rules import points_to_reverse
from common.errors import CoalitionError
from common.ids import new_id
from common.sql import pipelined
from ledger.posting import CREDIT, DEBIT
from ledger.repository import LedgerRepository, MemberAccounts
from programme.bonuses import earns_with_returnable_bonuses, purchase_recipients

Row = dict[str, Any]
_Key = tuple[str, str, str]  # bank transaction id, item type, item id


class _ItemPath(Exception):
    """This item goes through the item-by-item path."""


@dataclass(frozen=True)
class _Member:
    accounts: MemberAccounts
    debt_points: int
    # Spendable points less those open holds reserve (below zero when holds reserve more); None: not read
    # (no reversal in the batch).
    free_points: int | None
    points_delta: int = 0
    debt_delta: int = 0


@dataclass(frozen=True)
class _Lot:
    ref: int  # the lot's id, or (negative) the index of a lot this batch creates
    member_id: int
    remaining_points: int
    available_at: datetime
    expires_at: datetime
    contract_version_id: int | None
    lost_points: int

    def is_spendable(self, now: datetime) -> bool:
        return self.remaining_points > 0 and self.available_at <= now < self.expires_at


class _State:
    """Everything the items change, in memory until written, with the undo of the current item's changes."""

    def __init__(self) -> None:
        self.items: dict[_Key, Row] = {}
        self.transactions: dict[str, Row] = {}  # by bank transaction id
        self.members: dict[int, _Member] = {}
        self.lots: dict[int, _Lot] = {}  # by earn (journal transaction) reference
        self.lot_deltas: dict[int, int] = {}  # changes to lots that already existed
        self.member_partners: set[tuple[int, int]] = set()
        self.changed: set[tuple[str, Any]] = set()  # ("item", key) or ("transaction", bank transaction id)
        self.journal: list[Row] = []  # new journal transactions; reference -(index + 1)
        self.new_lots: list[Row] = []  # reference -(index + 1)
        self.entries: list[Row] = []
        self.movements: list[Row] = []
        self._undo: list[Callable[[], object]] = []

    def begin_item(self) -> None:
        self._undo.clear()

    def undo_item(self) -> None:
        while self._undo:
            self._undo.pop()()

    def put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if key in table:
            old = table[key]
            self._undo.append(lambda: table.__setitem__(key, old))
        else:
            self._undo.append(lambda: table.pop(key))
        table[key] = value

    def add(self, target: set[Any], value: Any) -> None:
        if value not in target:
            target.add(value)
            self._undo.append(lambda: target.discard(value))

    def append(self, target: list[Row], value: Row) -> None:
        target.append(value)
        self._undo.append(target.pop)


class CardBatch:
    """Items of one issuer from one database transaction, decided in memory and then written in bulk."""

    def __init__(self, connection: Connection, settings: CardSettings, now: datetime, issuer: int,
                 reads: BatchReads) -> None:  # fmt: skip
        self.connection, self.settings, self.now, self.issuer, self.reads = connection, settings, now, issuer, reads
        self.cards = CardRepository(connection)
        self.ledger = LedgerRepository(connection)
        self.links: dict[str, tuple[int, int]] = {}  # token hash -> issuer, member
        self.state = _State()
        # Bank transactions that had a waiting item at some point of the batch: others have none to apply.
        self.ever_waiting: set[str] = set()
        self.issued_accounts: dict[int, int] = {}  # PARTNER_ISSUED account by partner
        self.token_hashes: dict[str, str | None] = {}  # lookup hash by card token (None: not a valid token)
        self.earns_with_bonuses: set[int] = set()  # earns whose bonuses a reversal takes back (the item path)

    def apply(self, items: Sequence[CardItemCommand]) -> list[CardItemResult]:
        """Results of the items this batch decides, from the first on: it stops before the first it does not."""
        self._read(items)
        results = []
        for item in items:
            self.state.begin_item()
            try:
                results.append(self._apply(item))
            except (_ItemPath, CoalitionError):
                self.state.undo_item()
                break
        self._write()
        return results

    def _read(self, items: Sequence[CardItemCommand]) -> None:
        state = self.state
        transactions = [item.bank_transaction_id for item in items]
        for row in self.cards.items_of_transactions(self.issuer, transactions):
            state.items[(row["bank_transaction_id"], row["item_type"], row["item_id"])] = row
            if row["status"] == ItemStatus.WAITING:
                self.ever_waiting.add(row["bank_transaction_id"])
        for row in self.cards.transactions_for_update(self.issuer, transactions):
            state.transactions[row["bank_transaction_id"]] = row
        self.reads.merchant_partners |= self.cards.merchant_partners(
            sorted({item.merchant_id for item in items} - self.reads.merchant_partners.keys())
        )
        hashes = [self._token_hash(item) for item in items if item.card_token]
        for token_hash, link in self.cards.active_links([found for found in hashes if found]).items():
            self.links[token_hash] = (link.issuer_partner_id, link.member_id)
        member_ids = [member for _, member in self.links.values()]
        member_ids += [row["member_id"] for row in state.transactions.values()]
        keys = [(item.bank_transaction_id, item.item_type.value, item.item_id) for item in items]
        is_new = any(key not in state.items for key in keys)
        is_reversing = any(item.item_type.is_reversal for item in items) or any(
            row["status"] == ItemStatus.WAITING for row in state.items.values()
        )
        earn_ids = [row[name] for row in state.transactions.values()
                    for name in ("merchant_earn_transaction_id", "bank_earn_transaction_id") if row[name]]  # fmt: skip
        if is_new and is_reversing:  # members given a purchase's points, which the item path takes back
            member_ids += purchase_recipients(self.connection, earn_ids)
        accounts = self.ledger.lock_members(member_ids) if is_new else {}  # replays change no member
        spendable: dict[int, int] = {}
        if is_reversing:  # a reversal never takes points an open hold has reserved: what is free to take
            spendable = self.ledger.spendable_by_member(list(accounts), self.now, self.now)
            held = self.cards.held_by_member(list(accounts), self.now)
            spendable = {member: points - held[member] for member, points in spendable.items()}
        for member_id, found in accounts.items():
            state.members[member_id] = _Member(found, found.debt_points, spendable.get(member_id))
        for earn_id, lot in self.ledger.earn_lots(earn_ids).items():
            state.lots[earn_id] = _Lot(lot.lot_id, lot.member_id, lot.remaining_points, lot.available_at,
                                       lot.expires_at, lot.contract_version_id, lot.lost_points)  # fmt: skip
        if is_reversing:  # bonuses a tier programme gave when the purchase cleared, whatever it gives today
            self.earns_with_bonuses = earns_with_returnable_bonuses(self.connection, earn_ids)

    def _token_hash(self, item: CardItemCommand) -> str | None:
        # Asked when reading and again when applying, and a card buys again and again: an HMAC each.
        if item.card_token in self.token_hashes:
            return self.token_hashes[item.card_token]
        try:
            found: str | None = CardToken.of(item.card_token, self.settings.identifier_pepper).lookup_hash
        except CoalitionError:
            found = None  # refused when the item is applied, on the item-by-item path
        self.token_hashes[item.card_token] = found
        return found

    def _apply(self, item: CardItemCommand) -> CardItemResult:
        validate(item, self.now)
        key = (item.bank_transaction_id, item.item_type.value, item.item_id)
        stored = self.state.items.get(key)
        if stored is not None:
            return replay(item, _stored(stored))
        if item.item_type is ItemType.AUTHORISATION:
            outcome = self._authorise(item)
        elif item.item_type is ItemType.CLEARING:
            outcome = self._clear(item)
        else:
            outcome = self._reverse_or_wait(item)
        self._record(key, item, outcome)
        return outcome

    def _authorise(self, item: CardItemCommand) -> CardItemResult:
        if item.bank_transaction_id in self.state.transactions:  # its clearing came first and already earned
            return result(item, ItemStatus.IGNORED, reason="ALREADY_CLEARED")
        member_id = self._linked_member(item)
        merchant_partner, earn = self.reads.earn(self.issuer, item, item.amount_minor)
        self._set_transaction({
            "id": None, "issuer_partner_id": self.issuer, "bank_transaction_id": item.bank_transaction_id,
            "member_id": member_id, "merchant_id": item.merchant_id, "merchant_partner_id": merchant_partner,
            "currency": item.currency, "authorised_minor": item.amount_minor, "pending_points": earn.total,
            "authorised_at": item.transaction_time, "cleared_minor": None, "cleared_at": None, "merchant_points": 0,
            "bank_points": 0, "merchant_earn_transaction_id": None, "bank_earn_transaction_id": None,
            "reversed_minor": 0,
        })  # fmt: skip
        return result(item, ItemStatus.APPLIED, pending_points=earn.total)

    def _clear(self, item: CardItemCommand) -> CardItemResult:
        existing = self.state.transactions.get(item.bank_transaction_id)
        # The card that authorised the purchase earns for it, even if it was unlinked since.
        member_id = existing["member_id"] if existing is not None else self._linked_member(item)
        merchant_partner, earn = self.reads.earn(self.issuer, item, item.amount_minor)
        merchant_posted = bank_posted = None
        if merchant_partner is not None and earn.merchant_points > 0:
            merchant_posted = self._post_earn(item, member_id, merchant_partner, earn.merchant_points)
            self.state.add(self.state.member_partners, (member_id, merchant_partner))
        if earn.bank_points > 0:
            bank_posted = self._post_earn(item, member_id, self.issuer, earn.bank_points)
        cleared = cleared_values(item, earn, merchant_partner, merchant_posted, bank_posted)
        if existing is None:
            existing = {
                "id": None, "issuer_partner_id": self.issuer, "bank_transaction_id": item.bank_transaction_id,
                "member_id": member_id, "merchant_id": item.merchant_id, "currency": item.currency,
                "authorised_minor": None, "authorised_at": None, "reversed_minor": 0,
            }  # fmt: skip
        self._set_transaction(existing | cleared)
        self._apply_waiting(item.bank_transaction_id)
        return result(item, ItemStatus.APPLIED, points_earned=earn.total)

    def _reverse_or_wait(self, item: CardItemCommand) -> CardItemResult:
        transaction = self.state.transactions.get(item.bank_transaction_id)
        if transaction is None or transaction["cleared_at"] is None:
            return result(item, ItemStatus.WAITING, reason="WAITING_FOR_CLEARING")
        reversed_points, debt = self._reverse(transaction, item.amount_minor, item.transaction_time)
        return result(item, ItemStatus.APPLIED, points_reversed=reversed_points, debt_points=debt)

    def _record(self, key: _Key, item: CardItemCommand, outcome: CardItemResult) -> None:
        if outcome.status is ItemStatus.WAITING:
            self.ever_waiting.add(item.bank_transaction_id)
        self._set_item(key, {
            "id": None, "issuer_partner_id": self.issuer, "bank_transaction_id": item.bank_transaction_id,
            "item_type": item.item_type.value, "item_id": item.item_id, "request_hash": fingerprint(item),
            "status": outcome.status.value, "reason": outcome.reason, "amount_minor": item.amount_minor,
            "transaction_time": item.transaction_time, "pending_points": outcome.pending_points,
            "points_earned": outcome.points_earned, "points_reversed": outcome.points_reversed,
            "debt_points": outcome.debt_points, "recorded_at": self.now,
            "applied_at": self.now if outcome.status is ItemStatus.APPLIED else None,
        })  # fmt: skip

    def _apply_waiting(self, bank_transaction_id: str) -> None:
        """Reversals that arrived before this clearing take effect now, in the order they arrived."""
        if bank_transaction_id not in self.ever_waiting:
            return
        waiting = [(key, row) for key, row in self.state.items.items()
                   if key[0] == bank_transaction_id and row["status"] == ItemStatus.WAITING]  # fmt: skip
        # Stored ones arrived first (in id order), then this batch's (in arrival order: dict order).
        waiting.sort(key=lambda pair: (pair[1]["id"] is None, pair[1]["id"] or 0))
        for key, row in waiting:
            transaction = self.state.transactions[bank_transaction_id]
            try:
                reversed_points, debt = self._reverse(transaction, row["amount_minor"], row["transaction_time"])
            except (ReversalWindowClosed, ReversalExceedsClearing) as error:
                self._set_item(key, row | {"status": "REJECTED", "reason": error.reason})
                continue
            self._set_item(key, row | {"status": "APPLIED", "reason": "", "points_reversed": reversed_points,
                                       "debt_points": debt, "applied_at": self.now})  # fmt: skip

    def _reverse(self, transaction: Row, amount_minor: int, business_time: datetime) -> tuple[int, int]:
        cleared_minor, reversed_minor = transaction["cleared_minor"], transaction["reversed_minor"]
        if business_time > transaction["cleared_at"] + timedelta(days=self.settings.reversal_window_days):
            raise ReversalWindowClosed(
                f"refunds and chargebacks reverse points up to {self.settings.reversal_window_days} days after clearing"
            )
        after = reversed_minor + amount_minor
        if after > cleared_minor:
            raise ReversalExceedsClearing(
                f"reversals would total {after}, more than the {cleared_minor} cleared",
                remaining_minor=cleared_minor - reversed_minor,
            )
        if transaction["merchant_earn_transaction_id"] in self.earns_with_bonuses:
            raise _ItemPath  # its bonuses go back with its points: take_back_purchase_bonuses
        reversed_points = 0
        lots = (
            (transaction["merchant_earn_transaction_id"], transaction["merchant_points"],
             transaction["merchant_partner_id"]),
            (transaction["bank_earn_transaction_id"], transaction["bank_points"], self.issuer),
        )  # fmt: skip
        for earn_id, points, issuer in lots:
            take = points_to_reverse(points, cleared_minor, reversed_minor, after)
            if earn_id is None or take <= 0:
                continue
            self._post_reversal(transaction, earn_id, issuer, take, amount_minor, business_time)
            reversed_points += take
        self._set_transaction(transaction | {"reversed_minor": after})
        return reversed_points, 0

    def _post_reversal(
        self, transaction: Row, earn_id: int, issuer: int | None, points: int, amount_minor: int,
        business_time: datetime,
    ) -> None:  # fmt: skip
        """Takes the points back from the earn's own lot; anything else (other lots, debt) is the item path's."""
        lot = self.state.lots.get(earn_id)
        member = self.state.members.get(transaction["member_id"])
        if lot is None or member is None or lot.lost_points or lot.remaining_points < points:
            raise _ItemPath
        if lot.is_spendable(self.now):  # a reversal never takes points an open hold has reserved
            if member.free_points is None or points > max(member.free_points, 0):
                raise _ItemPath
            member = replace(member, free_points=member.free_points - points)
        reversal = self._journal(
            kind="EARN_REVERSAL", member_id=member.accounts.member_id, partner_id=issuer,
            contract_version_id=lot.contract_version_id, business_time=business_time,
            receipt_id=receipt(transaction["bank_transaction_id"]), amount_minor=amount_minor,
            currency=transaction["currency"], references_transaction_id=earn_id, points=points,
        )  # fmt: skip
        issued = self._issued_account(issuer if issuer is not None else 0)
        self._entries(reversal, [(member.accounts.points_account_id, DEBIT, points), (issued, CREDIT, points)])
        state = self.state
        state.append(state.movements, {"lot_id": lot.ref, "transaction_id": reversal, "kind": "REVERSED",
                                       "points_delta": -points})  # fmt: skip
        state.put(state.lots, earn_id, replace(lot, remaining_points=lot.remaining_points - points))
        if lot.ref > 0:
            state.put(state.lot_deltas, lot.ref, state.lot_deltas.get(lot.ref, 0) - points)
        state.put(state.members, member.accounts.member_id, replace(member, points_delta=member.points_delta - points))

    def _post_earn(self, item: CardItemCommand, member_id: int, partner_id: int, points: int) -> int:
        member = self.state.members.get(member_id)
        if member is None:
            raise _ItemPath
        version = self.reads.terms_of(partner_id, item.transaction_time)
        terms, time = version.terms, item.transaction_time
        repaid = min(member.debt_points, points)
        credited = points - repaid
        earn = self._journal(
            kind="EARN", member_id=member_id, partner_id=partner_id, contract_version_id=version.id,
            business_time=time, receipt_id=receipt(item.bank_transaction_id), amount_minor=item.amount_minor,
            currency=terms.currency, references_transaction_id=None, points=points,
        )  # fmt: skip
        issued = self._issued_account(partner_id)
        self._entries(earn, [(issued, DEBIT, points), (member.accounts.points_account_id, CREDIT, credited),
                             (member.accounts.debt_account_id, CREDIT, repaid)])  # fmt: skip
        lot = _Lot(
            -(len(self.state.new_lots) + 1), member_id, credited, max(time + timedelta(days=terms.pending_days), time),
            self.reads.lot_expiry(time), version.id, 0,
        )  # fmt: skip
        self.state.append(self.state.new_lots, {
            "member_id": member_id, "issuer_partner_id": partner_id, "source_transaction_id": earn,
            "contract_version_id": version.id, "points": points, "issuance_price": terms.issuance_price,
            "currency": terms.currency, "earned_at": time, "available_at": lot.available_at,
            "expires_at": lot.expires_at,
        })  # fmt: skip
        self.state.put(self.state.lots, earn, lot)
        if repaid:
            self.state.append(self.state.movements, {"lot_id": lot.ref, "transaction_id": earn,
                                                     "kind": "DEBT_REPAYMENT", "points_delta": -repaid})  # fmt: skip
        free = member.free_points
        if free is not None and lot.is_spendable(self.now):
            free += credited
        self.state.put(self.state.members, member_id, replace(
            member, debt_points=member.debt_points - repaid, free_points=free,
            points_delta=member.points_delta + credited, debt_delta=member.debt_delta - repaid,
        ))  # fmt: skip
        return earn

    def _issued_account(self, partner_id: int) -> int:
        # Asked for every earn and reversal: kept for the batch, which runs inside no savepoint, so an
        # account the batch's transaction created cannot have been rolled back under it.
        found = self.issued_accounts.get(partner_id)
        if found is None:
            found = self.issued_accounts[partner_id] = self.ledger.account_id("PARTNER_ISSUED", partner_id)
        return found

    def _journal(self, **values: Any) -> int:
        self.state.append(self.state.journal, values | {"public_id": new_id(), "recorded_at": self.now})
        return -len(self.state.journal)

    def _entries(self, transaction: int, lines: list[tuple[int, str, int]]) -> None:
        for account, side, amount in lines:
            if amount > 0:
                self.state.append(self.state.entries, {"transaction_id": transaction, "account_id": account,
                                                       "side": side, "amount_points": amount})  # fmt: skip

    def _linked_member(self, item: CardItemCommand) -> int:
        link = self.links.get(self._token_hash(item) or "")
        if link is None or link[0] != self.issuer:
            raise CardNotLinked("no member has this card linked")
        return link[1]

    def _set_transaction(self, row: Row) -> None:
        self.state.put(self.state.transactions, row["bank_transaction_id"], row)
        self.state.add(self.state.changed, ("transaction", row["bank_transaction_id"]))

    def _set_item(self, key: _Key, row: Row) -> None:
        self.state.put(self.state.items, key, row)
        self.state.add(self.state.changed, ("item", key))

    def _write(self) -> None:
        state = self.state
        if not state.changed:  # replays only
            return
        journal_ids = self._write_journal()

        def journal_id(reference: int | None) -> int | None:
            return journal_ids[-reference - 1] if reference is not None and reference < 0 else reference

        lot_rows = [row | {"source_transaction_id": journal_id(row["source_transaction_id"]),
                           "remaining_points": state.lots[row["source_transaction_id"]].remaining_points}
                    for row in state.new_lots]  # fmt: skip
        lot_ids = self.ledger.insert_lots(lot_rows)

        def lot_id(reference: int) -> int:
            return lot_ids[-reference - 1] if reference < 0 else reference

        # Inserts of many rows go as COPY (little client CPU a row); the updates wait for the database once.
        self.ledger.copy_entries([row | {"transaction_id": journal_id(row["transaction_id"])} for row in state.entries])
        self.ledger.copy_movements([row | {"lot_id": lot_id(row["lot_id"]),
                                           "transaction_id": journal_id(row["transaction_id"])}
                                    for row in state.movements])  # fmt: skip
        changed_transactions, changed_items = self._changed_cards(journal_id)
        self.cards.insert_transactions([_without_id(row) for row in changed_transactions if row["id"] is None])
        self.cards.insert_items([_without_id(row) for row in changed_items if row["id"] is None])
        with pipelined(self.connection):
            self.ledger.change_lots(sorted(state.lot_deltas.items()))
            self.ledger.change_member_balances(sorted(
                (member_id, member.points_delta, member.debt_delta) for member_id, member in state.members.items()
                if member.points_delta or member.debt_delta
            ))  # fmt: skip
            self.cards.update_transactions(
                [_only(row, TRANSACTION_CHANGES) for row in changed_transactions if row["id"]]
            )
            self.cards.update_items([_only(row, ITEM_CHANGES) for row in changed_items if row["id"]])
            self.cards.link_members_to_partners(state.member_partners, self.now)

    def _write_journal(self) -> list[int]:
        """Earns first, then the reversals that refer to them (a reversal's reference must exist)."""
        journal = self.state.journal
        first = [index for index, row in enumerate(journal) if (row["references_transaction_id"] or 0) >= 0]
        then = [index for index, row in enumerate(journal) if (row["references_transaction_id"] or 0) < 0]
        ids: list[int] = [0] * len(journal)
        for index, found in zip(first, self.ledger.insert_transactions([journal[i] for i in first]), strict=True):
            ids[index] = found
        rows = [journal[i] | {"references_transaction_id": ids[-journal[i]["references_transaction_id"] - 1]}
                for i in then]  # fmt: skip
        for index, found in zip(then, self.ledger.insert_transactions(rows), strict=True):
            ids[index] = found
        return ids

    def _changed_cards(self, journal_id: Callable[[int | None], int | None]) -> tuple[list[Row], list[Row]]:
        """The card transactions and items to write, in the order they were first changed (arrival order)."""
        state = self.state
        earn_columns = ("merchant_earn_transaction_id", "bank_earn_transaction_id")
        changed = [row for key, row in state.transactions.items() if ("transaction", key) in state.changed]
        transactions = [row | {name: journal_id(row[name]) for name in earn_columns} for row in changed]
        return transactions, [row for key, row in state.items.items() if ("item", key) in state.changed]


def _without_id(row: Row) -> Row:
    return {name: value for name, value in row.items() if name != "id"}


def _only(row: Row, names: tuple[str, ...]) -> Row:
    return {"id": row["id"]} | {name: row[name] for name in names}


def _stored(row: Row) -> StoredItem:
    return StoredItem(
        row["id"] or 0, row["item_type"], row["item_id"], row["request_hash"], row["status"], row["reason"],
        row["amount_minor"], row["transaction_time"], row["pending_points"], row["points_earned"],
        row["points_reversed"], row["debt_points"],
    )  # fmt: skip
