"""Core statements on ledger tables; the checkout hot path runs through here."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, and_, bindparam, case, func, or_, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from common.db import table_of
from common.sql import Prebuilt, insert_ignoring_conflict, inserted_id
from ledger.earn_statement import RESERVE_EARN_IDS, EarnIds, earn_statement
from ledger.lots import LotBalance, MemberLot
from ledger.models import JournalEntry, JournalTransaction, LedgerAccount, Lot, LotMovement, MemberBalance

accounts = table_of(LedgerAccount)
balances = table_of(MemberBalance)
transactions = table_of(JournalTransaction)
entries = table_of(JournalEntry)
lots = table_of(Lot)
movements = table_of(LotMovement)

# Hot-path statements are built once (on this machine building a Core statement costs as much as
# running it) and run as Prebuilt: on PostgreSQL straight on the driver. Values arrive as bind parameters.
# What MemberAccounts holds, in its order.
_MEMBER_ACCOUNTS = (
    balances.c.member_id,
    balances.c.points_account_id,
    balances.c.debt_account_id,
    balances.c.points_balance,
    balances.c.debt_points,
)
_LOCK_MEMBER = Prebuilt(select(*_MEMBER_ACCOUNTS).where(balances.c.member_id == bindparam("member")).with_for_update())
_LOTS_WITH_POINTS = Prebuilt(
    select(lots.c.id, lots.c.remaining_points, lots.c.earned_at, lots.c.available_at, lots.c.expires_at).where(
        lots.c.member_id == bindparam("member"), lots.c.remaining_points > 0
    )
)
_IS_LIVE = lots.c.expires_at > bindparam("now")
_IS_AVAILABLE = and_(_IS_LIVE, lots.c.available_at <= bindparam("now"))
_LOT_SUMMARY = Prebuilt(
    select(
        func.coalesce(func.sum(case((_IS_AVAILABLE, lots.c.remaining_points), else_=0)), 0),
        func.coalesce(func.sum(case((and_(_IS_LIVE, ~_IS_AVAILABLE), lots.c.remaining_points), else_=0)), 0),
        func.coalesce(
            func.sum(
                case((and_(_IS_AVAILABLE, lots.c.expires_at <= bindparam("soon")), lots.c.remaining_points), else_=0)
            ),
            0,
        ),
    ).where(lots.c.member_id == bindparam("member"), lots.c.remaining_points > 0)
)
_SPENDABLE = Prebuilt(
    select(func.coalesce(func.sum(lots.c.remaining_points), 0)).where(
        lots.c.member_id == bindparam("member"),
        lots.c.remaining_points > 0,
        lots.c.available_at <= bindparam("now"),
        lots.c.expires_at > bindparam("live_until"),
    )
)
# The new id comes back through RETURNING; rows inserted in a batch return nothing (inline).
_INSERT_TRANSACTION = Prebuilt(transactions.insert().returning(transactions.c.id))
_INSERT_ENTRIES = Prebuilt(entries.insert().inline())
_INSERT_LOT = Prebuilt(lots.insert().returning(lots.c.id))
_INSERT_MOVEMENTS = Prebuilt(movements.insert().inline())
_CHANGE_LOT = Prebuilt(
    lots.update()
    .where(lots.c.id == bindparam("lot"))
    .values(remaining_points=lots.c.remaining_points + bindparam("delta"))
)
_CHANGE_BALANCE = Prebuilt(
    balances.update()
    .where(balances.c.member_id == bindparam("member"))
    .values(
        points_balance=balances.c.points_balance + bindparam("points_delta"),
        debt_points=balances.c.debt_points + bindparam("debt_delta"),
    )
)


# Batch statements (a batch of card items): one statement for many members, lots or transactions.
_LOCK_MEMBERS = (
    select(*_MEMBER_ACCOUNTS)
    .where(balances.c.member_id.in_(bindparam("members", expanding=True)))
    .order_by(balances.c.member_id)  # every batch locks in the same order: two batches never deadlock here
    .with_for_update()
)
_SPENDABLE_BY_MEMBER = (
    select(lots.c.member_id, func.sum(lots.c.remaining_points))
    .where(
        lots.c.member_id.in_(bindparam("members", expanding=True)),
        lots.c.remaining_points > 0,
        lots.c.available_at <= bindparam("now"),
        lots.c.expires_at > bindparam("live_until"),
    )
    .group_by(lots.c.member_id)
)
# The lots a transfer made of another lot's points, through any number of transfers.
_MOVED_ON = aliased(lots, name="moved_on")
_LOST_KINDS = ("EXPIRED", "ADJUSTED")
# Points of an earn's lot, and of the lots its points were transferred into, that lapsed or support deducted.
_LOST = (
    select(func.coalesce(func.sum(-movements.c.points_delta), 0))
    .where(movements.c.lot_id == lots.c.id, movements.c.kind.in_(_LOST_KINDS))
    .scalar_subquery()
) + (
    select(func.coalesce(func.sum(-movements.c.points_delta), 0))
    .join(_MOVED_ON, _MOVED_ON.c.id == movements.c.lot_id)
    .where(_MOVED_ON.c.origin_lot_id == lots.c.id, movements.c.kind.in_(_LOST_KINDS))
    .scalar_subquery()
)
# What a reversal of an earn may take back, in one statement: the member's lots, and the lots a
# transfer made of the earn's lot, whoever owns them.
_LOTS_TO_TAKE_BACK = Prebuilt(
    select(lots.c.member_id, lots.c.origin_lot_id, lots.c.id, lots.c.remaining_points, lots.c.earned_at,
           lots.c.available_at, lots.c.expires_at)
    .where(or_(lots.c.member_id == bindparam("member"), lots.c.origin_lot_id == bindparam("origin")),
           lots.c.remaining_points > 0)
    .order_by(lots.c.id)
)  # fmt: skip
_EARN_LOT = select(
    lots.c.source_transaction_id,
    lots.c.id,
    lots.c.member_id,
    lots.c.remaining_points,
    lots.c.available_at,
    lots.c.expires_at,
    transactions.c.contract_version_id,
    _LOST,
).join(transactions, transactions.c.id == lots.c.source_transaction_id)
_EARN_LOTS = _EARN_LOT.where(lots.c.source_transaction_id.in_(bindparam("transactions", expanding=True)))
# PostgreSQL: one index probe per earn, whatever the statistics say (a ledger filled faster than
# autovacuum analyses it has none, and an IN list of a card batch's earns was then planned as a
# read of every lot, compared with each id).
_WANTED_EARNS = (
    func.unnest(bindparam("transactions", type_=postgresql.ARRAY(BigInteger)))
    .table_valued("id")
    .render_derived(name="wanted")
)
_EARN_LOT_FOUND = (
    _EARN_LOT.where(lots.c.source_transaction_id == _WANTED_EARNS.c.id)
    .offset(0)  # keeps it a lookup per id rather than one join planned as a whole
    .lateral("found")
)
_EARN_LOTS_PG = select(_EARN_LOT_FOUND).select_from(_WANTED_EARNS).join(_EARN_LOT_FOUND, true())

# Partner and operator account ids never change once created; cached per engine (so per database) by
# the engine itself: rendering its URL for a key cost about 10 us a posting.
_account_ids: weakref.WeakKeyDictionary[Engine, dict[tuple[str, int], int]] = weakref.WeakKeyDictionary()
_account_ids_lock = threading.Lock()
_CREATED_ACCOUNTS = "ledger.accounts_created"


def _accounts_created_in_transaction(connection: Connection) -> set[tuple[str, int]]:
    """The accounts the connection's current transaction inserted (kept in the pooled connection's info)."""
    transaction = connection.get_transaction()
    found = connection.info.get(_CREATED_ACCOUNTS)
    if found is None or found[0] is not transaction:  # a later transaction: its own, empty set
        found = (transaction, set())
        connection.info[_CREATED_ACCOUNTS] = found
    created: set[tuple[str, int]] = found[1]
    return created


@dataclass(frozen=True)
class MemberAccounts:
    member_id: int
    points_account_id: int
    debt_account_id: int
    points_balance: int
    debt_points: int


@dataclass(frozen=True)
class LotTerms:
    """A lot's issuer and price, its earning and expiry times, and the lot its points came from if a
    transfer made it."""

    issuer_partner_id: int | None
    contract_version_id: int | None
    issuance_price: Decimal
    currency: str
    earned_at: datetime
    expires_at: datetime
    origin_lot_id: int | None


@dataclass(frozen=True)
class LotSummary:
    """A member's lots at one instant: spendable, pending and soon-to-expire remaining points."""

    spendable: int
    pending: int
    expiring_soon: int


@dataclass(frozen=True)
class EarnLot:
    """The lot an earn created, as a reversal of that earn needs it."""

    earn_transaction_id: int
    lot_id: int
    member_id: int
    remaining_points: int
    available_at: datetime
    expires_at: datetime
    contract_version_id: int | None
    lost_points: int  # expired or deducted by support, here or where it was transferred: gone unspent


class LedgerRepository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def account_id(self, kind: str, owner_id: int) -> int:
        """The account's id, creating the account on first use.

        Only ids of rows that were already committed are cached: an id created in this transaction
        is invisible to others (and gone if it rolls back) until the transaction commits. That holds
        for a second ask in the same transaction too, which finds the row the first one inserted.
        """
        cache_key = (kind, owner_id)
        with _account_ids_lock:
            cache = _account_ids.setdefault(self.connection.engine, {})
            cached = cache.get(cache_key)
        if cached is not None:
            return cached
        created = insert_ignoring_conflict(self.connection, accounts, {"kind": kind, "owner_id": owner_id})
        account_id = int(
            self.connection.execute(
                select(accounts.c.id).where(accounts.c.kind == kind, accounts.c.owner_id == owner_id)
            ).scalar_one()
        )
        uncommitted = _accounts_created_in_transaction(self.connection)
        if created:
            uncommitted.add(cache_key)
        elif cache_key not in uncommitted:
            with _account_ids_lock:
                cache[cache_key] = account_id
        return account_id

    def open_member(self, member_id: int) -> None:
        points_id = self._insert_account("MEMBER_POINTS", member_id)
        debt_id = self._insert_account("MEMBER_DEBT", member_id)
        self.connection.execute(
            balances.insert().values(
                member_id=member_id,
                points_account_id=points_id,
                debt_account_id=debt_id,
                points_balance=0,
                debt_points=0,
            )
        )

    def _insert_account(self, kind: str, owner_id: int) -> int:
        result = self.connection.execute(accounts.insert().values(kind=kind, owner_id=owner_id))
        return inserted_id(result)

    def lock_member(self, member_id: int) -> MemberAccounts:
        """Every change to a member's points starts here, so changes to one member serialise."""
        return MemberAccounts(*_LOCK_MEMBER.one(self.connection, {"member": member_id}))

    def member_accounts(self, member_id: int) -> MemberAccounts:
        row = self.connection.execute(select(balances).where(balances.c.member_id == member_id)).one()
        return MemberAccounts(
            row.member_id, row.points_account_id, row.debt_account_id, row.points_balance, row.debt_points
        )

    def lots_with_points(self, member_id: int) -> list[LotBalance]:
        return [LotBalance(*row) for row in _LOTS_WITH_POINTS.rows(self.connection, {"member": member_id})]

    def spendable(self, member_id: int, now: datetime, live_until: datetime) -> int:
        """Points of lots available now that are still unexpired at ``live_until``."""
        parameters = {"member": member_id, "now": now, "live_until": live_until}
        return int(_SPENDABLE.scalar_one(self.connection, parameters))

    def lot_summary(self, member_id: int, now: datetime, soon: datetime) -> LotSummary:
        row = _LOT_SUMMARY.one(self.connection, {"member": member_id, "now": now, "soon": soon})
        return LotSummary(int(row[0]), int(row[1]), int(row[2]))

    def lot_terms(self, lot_ids: list[int]) -> dict[int, LotTerms]:
        """Who funded each lot and on what terms: what a lot made from it (a transfer) must carry over."""
        rows = self.connection.execute(
            select(
                lots.c.id, lots.c.issuer_partner_id, lots.c.contract_version_id, lots.c.issuance_price,
                lots.c.currency, lots.c.earned_at, lots.c.expires_at, lots.c.origin_lot_id,
            ).where(lots.c.id.in_(lot_ids))
        )  # fmt: skip
        return {int(row[0]): LotTerms(*row[1:]) for row in rows}

    def lot_of_transaction(self, transaction_id: int) -> int | None:
        lot_id = self.connection.execute(
            select(lots.c.id).where(lots.c.source_transaction_id == transaction_id)
        ).scalar()
        return int(lot_id) if lot_id is not None else None

    def insert_transaction(self, **values: Any) -> int:
        return int(_INSERT_TRANSACTION.scalar_one(self.connection, values))

    def insert_entries(self, rows: list[dict[str, Any]]) -> None:
        _INSERT_ENTRIES.run_many(self.connection, rows)

    def insert_posting(self, transaction: dict[str, Any], lines: list[tuple[int, str, int]]) -> int:
        """A journal transaction and its entries (account, side, amount); the transaction's id."""
        transaction_id = self.insert_transaction(**transaction)
        self.insert_entries([
            {"transaction_id": transaction_id, "account_id": account, "side": side, "amount_points": amount}
            for account, side, amount in lines
        ])  # fmt: skip
        return transaction_id

    def insert_earn(
        self, transaction: dict[str, Any], lines: list[tuple[int, str, int]], lot: dict[str, Any],
        points_delta: int, debt_delta: int, ids: EarnIds | None = None,
    ) -> tuple[int, int]:  # fmt: skip
        """An earn's journal transaction with its entries (account, side, amount), the lot it credits and
        the change to the lot owner's balances; the new transaction's and lot's ids.

        The same rows as insert_posting, insert_lot and change_member_balance write, on PostgreSQL in one
        statement (the checkout's hottest path, ledger/earn_statement.py), elsewhere in four. With ``ids``
        reserved ahead (``reserve_earn_ids_ahead``) the rows take them, and the one statement is queued:
        it goes with the transaction's next round trip, its COMMIT if nothing else comes first.
        """
        member_id = lot["member_id"]
        found = None
        if self.connection.dialect.name == "postgresql":
            found = earn_statement(transaction, lines, lot, member_id=member_id, points_delta=points_delta,
                                   debt_delta=debt_delta, ids=ids)  # fmt: skip
        if found is None:
            reserved = {} if ids is None else {"id": ids.transaction_id}
            transaction_id = self.insert_posting(transaction | reserved, lines)
            reserved = {} if ids is None else {"id": ids.lot_id}
            lot_id = self.insert_lot(source_transaction_id=transaction_id, **lot, **reserved)
            self.change_member_balance(member_id, points_delta, debt_delta)
            return transaction_id, lot_id
        statement, parameters = found
        if ids is not None:
            statement.queue(self.connection, parameters)
            return ids.transaction_id, ids.lot_id
        transaction_id, lot_id = statement.one(self.connection, parameters)
        return int(transaction_id), int(lot_id)

    def reserve_earn_ids_ahead(self) -> Callable[[], EarnIds] | None:
        """On PostgreSQL, ids for an earn's journal transaction and lot, drawn from their sequences with the
        transaction's next round trip (``Prebuilt.read_ahead``): what gives them, for ``insert_earn``.
        None elsewhere: SQLite has no sequences, nor round trips to save."""
        if self.connection.dialect.name != "postgresql":
            return None
        rows = RESERVE_EARN_IDS.read_ahead(self.connection, {})
        return lambda: EarnIds(*(int(drawn) for drawn in rows()[0]))

    def insert_lot(self, **values: Any) -> int:
        return int(_INSERT_LOT.scalar_one(self.connection, values))

    def change_lots(self, changes: list[tuple[int, int]]) -> None:
        if changes:
            _CHANGE_LOT.run_many(self.connection, [{"lot": lot_id, "delta": delta} for lot_id, delta in changes])

    def insert_movements(self, rows: list[dict[str, Any]]) -> None:
        _INSERT_MOVEMENTS.run_many(self.connection, rows)

    def change_member_balance(self, member_id: int, points_delta: int, debt_delta: int) -> None:
        _CHANGE_BALANCE.run(
            self.connection, {"member": member_id, "points_delta": points_delta, "debt_delta": debt_delta}
        )

    def lock_members(self, member_ids: Iterable[int]) -> dict[int, MemberAccounts]:
        """Locks many members at once, in ascending id order, so that two transactions locking the same
        members (a transfer each way, two card batches) never wait on each other in a cycle; their
        accounts by member id."""
        member_ids = list(member_ids)
        if not member_ids:
            return {}
        rows = self.connection.execute(_LOCK_MEMBERS, {"members": sorted(set(member_ids))})
        return {row[0]: MemberAccounts(*row) for row in rows}

    def spendable_by_member(self, member_ids: list[int], now: datetime, live_until: datetime) -> dict[int, int]:
        """``spendable`` of many members in one statement (members without spendable points: 0)."""
        found = dict.fromkeys(member_ids, 0)
        if member_ids:
            parameters = {"members": sorted(set(member_ids)), "now": now, "live_until": live_until}
            found |= {int(member): int(points) for member, points in self.connection.execute(
                _SPENDABLE_BY_MEMBER, parameters)}  # fmt: skip
        return found

    def earn_lots(self, earn_transaction_ids: list[int]) -> dict[int, EarnLot]:
        """The lots of these earns, by earn transaction id (an earn without a lot is absent)."""
        if not earn_transaction_ids:
            return {}
        statement = _EARN_LOTS_PG if self.connection.dialect.name == "postgresql" else _EARN_LOTS
        rows = self.connection.execute(statement, {"transactions": sorted(set(earn_transaction_ids))})
        return {int(row[0]): EarnLot(*row) for row in rows}

    def insert_transactions(self, rows: list[dict[str, Any]]) -> list[int]:
        """Inserts many journal transactions in one batch; their ids, in order."""
        return _INSERT_TRANSACTION.copy_rows_returning_ids(self.connection, rows)

    def insert_lots(self, rows: list[dict[str, Any]]) -> list[int]:
        """Inserts many lots in one batch; their ids, in order."""
        return _INSERT_LOT.copy_rows_returning_ids(self.connection, rows)

    def copy_entries(self, rows: list[dict[str, Any]]) -> None:
        """insert_entries for a large batch (COPY on PostgreSQL)."""
        _INSERT_ENTRIES.copy_rows(self.connection, rows)

    def copy_movements(self, rows: list[dict[str, Any]]) -> None:
        """insert_movements for a large batch (COPY on PostgreSQL)."""
        _INSERT_MOVEMENTS.copy_rows(self.connection, rows)

    def change_member_balances(self, changes: list[tuple[int, int, int]]) -> None:
        """(member_id, points_delta, debt_delta) for many members in one batch."""
        rows = [{"member": member, "points_delta": points, "debt_delta": debt} for member, points, debt in changes]
        if rows:
            _CHANGE_BALANCE.run_many(self.connection, rows)

    def lot_points_removed(self, lot_id: int, *, kinds: tuple[str, ...]) -> int:
        """Points the lot, and the lots its points were transferred into, lost through movements of these
        kinds."""
        family = select(lots.c.id).where(or_(lots.c.id == lot_id, lots.c.origin_lot_id == lot_id))
        removed = select(func.coalesce(func.sum(-movements.c.points_delta), 0)).where(
            movements.c.lot_id.in_(family), movements.c.kind.in_(kinds)
        )
        return int(self.connection.execute(removed).scalar_one())

    def lots_to_take_back(self, member_id: int, earn_lot_id: int | None) -> tuple[list[LotBalance], list[MemberLot]]:
        """The member's lots with points, and the lots with points that hold ``earn_lot_id``'s: the lot
        itself, then those transfers moved its points into (through any number of transfers), whoever
        owns them, oldest first."""
        rows = _LOTS_TO_TAKE_BACK.rows(self.connection, {"member": member_id, "origin": earn_lot_id})
        members_lots = [LotBalance(*row[2:]) for row in rows if row[0] == member_id]
        family = [MemberLot(int(row[0]), LotBalance(*row[2:])) for row in rows
                  if earn_lot_id is not None and earn_lot_id in (row[1], row[2])]  # fmt: skip
        return members_lots, family

    def lock_with_recipients(self, member_id: int, recipients: Callable[[], set[int]]) -> dict[int, MemberAccounts]:
        """Locks the member and the members ``recipients`` names (whoever a transfer gave points that a
        return takes back from them), all in ascending id order like ``lock_members``; their accounts by
        id.

        The recipients are read before they are locked, so a transfer meanwhile may add one (from the
        member, or onwards): it is locked next, until a read under the locks finds nobody new (any
        further transfer waits for them).
        """
        locked: dict[int, MemberAccounts] = {}
        wanted = {member_id} | recipients()
        while missing := wanted - locked.keys():
            if missing == {member_id}:  # the usual case: nobody but the member has the points
                locked[member_id] = self.lock_member(member_id)
            else:
                locked |= self.lock_members(missing)
            wanted |= recipients()
        return locked

    def lost_unspent(self, earn_transaction_id: int, lot_id: int, shares_reversed_before: int) -> int:
        """Points of an earn's own lot, and of the lots its points were transferred into, that lapsed or
        that support deducted, not yet set against earlier reversals of the earn (whose shares came to
        ``shares_reversed_before``).

        A reversal counts them as taken back: they already left the member (or the household member
        they were given to) unspent, and taking them again would cost the member twice (and credit an
        issuer billed on redemption for points it never paid for).
        """
        lost = self.lot_points_removed(lot_id, kinds=_LOST_KINDS)
        if lost == 0:
            return 0  # the usual case: no need to look for earlier reversals
        set_against = shares_reversed_before - self.reversed_points(earn_transaction_id)
        return max(lost - set_against, 0)

    def reversed_points(self, earn_transaction_id: int) -> int:
        """Points the reversals of an earn took back so far."""
        taken = select(func.coalesce(func.sum(transactions.c.points), 0)).where(
            transactions.c.references_transaction_id == earn_transaction_id, transactions.c.kind == "EARN_REVERSAL"
        )
        return int(self.connection.execute(taken).scalar_one())

    def transaction_public_id(self, transaction_id: int) -> str:
        return str(
            self.connection.execute(
                select(transactions.c.public_id).where(transactions.c.id == transaction_id)
            ).scalar_one()
        )

    def contract_version_of(self, transaction_id: int) -> int | None:
        """The contract version a transaction was priced with."""
        value = self.connection.execute(
            select(transactions.c.contract_version_id).where(transactions.c.id == transaction_id)
        ).scalar()
        return None if value is None else int(value)

    def first_redemption(self, partner_id: int, receipt_id: str) -> int | None:
        """The receipt's first redemption: what a refund of its points refers back to."""
        value = self.connection.execute(
            select(func.min(transactions.c.id)).where(
                transactions.c.partner_id == partner_id,
                transactions.c.receipt_id == receipt_id,
                transactions.c.kind == "REDEEM",
            )
        ).scalar()
        return None if value is None else int(value)

    def receipt_debt_points(self, partner_id: int, receipt_id: str, debt_account_id: int) -> int:
        """Points of a receipt's redemptions booked to the member's debt and not yet refunded."""
        signed = case((entries.c.side == "D", entries.c.amount_points), else_=-entries.c.amount_points)
        query = (
            select(func.coalesce(func.sum(signed), 0))
            .select_from(transactions)
            .join(entries, entries.c.transaction_id == transactions.c.id)
            .where(
                transactions.c.partner_id == partner_id,
                transactions.c.receipt_id == receipt_id,
                transactions.c.kind.in_(("REDEEM", "REDEMPTION_REFUND")),
                entries.c.account_id == debt_account_id,
            )
        )
        return int(self.connection.execute(query).scalar_one())

    def receipt_repayments_restored(self, partner_id: int, receipt_id: str) -> int:
        """Points the refunds of a receipt gave back into lots that had repaid the member's debt."""
        query = (
            select(func.coalesce(func.sum(movements.c.points_delta), 0))
            .join(transactions, transactions.c.id == movements.c.transaction_id)
            .where(
                transactions.c.partner_id == partner_id,
                transactions.c.receipt_id == receipt_id,
                transactions.c.kind == "REDEMPTION_REFUND",
                movements.c.kind == "REPAYMENT_RESTORED",
            )
        )
        return int(self.connection.execute(query).scalar_one())

    def repayment_lots(self, member_id: int) -> list[tuple[int, int]]:
        """(lot_id, points) of the member's lots that repaid debt and were not given those points back,
        newest first: where a refund of a redemption made on credit gives back what was repaid."""
        net = func.sum(movements.c.points_delta)
        rows = self.connection.execute(
            select(movements.c.lot_id, net)
            .join(lots, lots.c.id == movements.c.lot_id)
            .where(lots.c.member_id == member_id, movements.c.kind.in_(("DEBT_REPAYMENT", "REPAYMENT_RESTORED")))
            .group_by(movements.c.lot_id)
            .having(net < 0)
            .order_by(movements.c.lot_id.desc())
        )
        return [(int(lot_id), -int(points)) for lot_id, points in rows]

    def restorable_lots(self, partner_id: int, receipt_id: str) -> list[tuple[int, int]]:
        """(lot_id, points) spent on this receipt and not yet given back, latest-expiring first."""
        net = func.sum(movements.c.points_delta)
        rows = self.connection.execute(
            select(movements.c.lot_id, net)
            .join(transactions, transactions.c.id == movements.c.transaction_id)
            .join(lots, lots.c.id == movements.c.lot_id)
            .where(
                transactions.c.partner_id == partner_id,
                transactions.c.receipt_id == receipt_id,
                transactions.c.kind.in_(("REDEEM", "REDEMPTION_REFUND")),
            )
            .group_by(movements.c.lot_id, lots.c.expires_at)
            .having(net < 0)
            .order_by(lots.c.expires_at.desc(), movements.c.lot_id.desc())
        )
        return [(lot_id, -int(points)) for lot_id, points in rows]
