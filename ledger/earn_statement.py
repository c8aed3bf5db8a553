"""PostgreSQL: an earn's rows in one statement, and the ids that let it wait for the COMMIT.

An earn writes a journal transaction, its entries, its lot and the member's balance change. Apart they
cost four round trips (and on a busy server each round trip costs a thread switch as well), so on
PostgreSQL they go as one statement of data-modifying CTEs. The entries and the lot take the new
transaction's id from its CTE; PostgreSQL runs every CTE once, whether the SELECT reads it or not.

The statement returns the new ids, and an earn needs them before it commits (its purchase row names
its transaction). Drawn from their sequences ahead, with a round trip the earn makes anyway
(``RESERVE_EARN_IDS``), they are known before the statement is sent, and it can go with the COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Sequence, bindparam, select

from common.db import table_of
from common.sql import Prebuilt
from ledger.models import JournalEntry, JournalTransaction, Lot, MemberBalance

balances = table_of(MemberBalance)
transactions = table_of(JournalTransaction)
entries = table_of(JournalEntry)
lots = table_of(Lot)


@dataclass(frozen=True, slots=True)
class EarnIds:
    """The ids an earn's journal transaction and lot will have, drawn ahead from their sequences. The
    lot's is there for what may follow the earn in its transaction (a debt repayment's lot movement
    names it): nothing then waits for the statement's result."""

    transaction_id: int
    lot_id: int


def _sequence_of(table: Any) -> Sequence:
    """The sequence behind a table's BIGSERIAL id, by PostgreSQL's naming (a wrong name fails the
    statement, which every earn on PostgreSQL runs)."""
    return Sequence(f"{table.name}_id_seq")


# A gap a rolled-back or unused reservation leaves is as harmless as the one a rolled-back insert leaves.
RESERVE_EARN_IDS = Prebuilt(select(_sequence_of(transactions).next_value(), _sequence_of(lots).next_value()))


def _earn_in_one_statement(entry_count: int, *, reserved: bool) -> Prebuilt:
    """The statement for an earn of ``entry_count`` entries; with ``reserved`` ids, its transaction and
    lot take them (``transaction_id``, ``lot_id``) instead of their sequences' next."""
    transaction_values = {
        column.name: _bound("transaction", column) for column in transactions.c if column.name != "id"
    }
    lot_values = {column.name: _bound("lot", column) for column in lots.c if column.name not in _LOT_NOT_BOUND}
    if reserved:
        transaction_values["id"] = _bound("transaction", transactions.c.id)
        lot_values["id"] = _bound("lot", lots.c.id)
    posted = transactions.insert().values(transaction_values).returning(transactions.c.id).cte("posted_transaction")
    posted_id = select(posted.c.id).scalar_subquery()
    entry_rows = [
        {"transaction_id": posted_id} | {name: _bound(f"entry{index}", entries.c[name]) for name in _ENTRY_VALUES}
        for index in range(entry_count)
    ]
    posted_entries = entries.insert().values(entry_rows).returning(entries.c.id).cte("posted_entries")
    new_lot = lots.insert().values(source_transaction_id=posted_id, **lot_values).returning(lots.c.id).cte("new_lot")
    changed_balance = (
        balances.update()
        .where(balances.c.member_id == bindparam("member"))
        .values(
            points_balance=balances.c.points_balance + bindparam("points_delta"),
            debt_points=balances.c.debt_points + bindparam("debt_delta"),
        )
        .returning(balances.c.member_id)
        .cte("changed_balance")
    )
    return Prebuilt(select(posted.c.id, new_lot.c.id).add_cte(posted_entries, changed_balance))


_ENTRY_VALUES = ("account_id", "side", "amount_points")
_LOT_NOT_BOUND = ("id", "source_transaction_id")


def _bound(prefix: str, column: Any) -> Any:
    return bindparam(f"{prefix}_{column.name}", type_=column.type)


# By the number of entries (an earn that repays debt has three) and whether its ids were reserved.
_EARNS = {(count, reserved): _earn_in_one_statement(count, reserved=reserved) for count in (1, 2, 3)
          for reserved in (False, True)}  # fmt: skip


def earn_statement(
    transaction: dict[str, Any], lines: list[tuple[int, str, int]], lot: dict[str, Any], *, member_id: int,
    points_delta: int, debt_delta: int, ids: EarnIds | None,
) -> tuple[Prebuilt, dict[str, Any]] | None:  # fmt: skip
    """The one statement for this earn, and its parameters; None for a number of entries it has no
    statement for (the caller writes the rows apart)."""
    statement = _EARNS.get((len(lines), ids is not None))
    if statement is None:
        return None
    parameters = {f"transaction_{name}": value for name, value in transaction.items()}
    for index, (account, side, amount) in enumerate(lines):
        parameters |= {f"entry{index}_account_id": account, f"entry{index}_side": side,
                       f"entry{index}_amount_points": amount}  # fmt: skip
    parameters |= {"lot_origin_lot_id": None} | {f"lot_{name}": value for name, value in lot.items()}
    parameters |= {"member": member_id, "points_delta": points_delta, "debt_delta": debt_delta}
    if ids is not None:
        parameters |= {"transaction_id": ids.transaction_id, "lot_id": ids.lot_id}
    return statement, parameters
