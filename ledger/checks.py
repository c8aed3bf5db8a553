"""The ledger's invariants (DESIGN.md section 9), checked with SQL against the live database.

The test suite asserts them after every scenario; in production `coalition jobs run` and the
server's maintenance loop run them on a schedule and export the result as a metric, so a broken
invariant pages someone instead of waiting for a settlement close to trip over it. Each is a full
scan: run them as a periodic job, not per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from common.uow import UnitOfWork

# Each query returns rows only when the invariant is broken.
LEDGER_CHECKS: dict[str, str] = {
    "1. every journal transaction balances and equals its points": """
        SELECT t.id FROM journal_transactions t JOIN journal_entries e ON e.transaction_id = t.id
        GROUP BY t.id, t.points
        HAVING SUM(CASE WHEN e.side = 'D' THEN e.amount_points ELSE 0 END)
            <> SUM(CASE WHEN e.side = 'C' THEN e.amount_points ELSE 0 END)
            OR SUM(CASE WHEN e.side = 'D' THEN e.amount_points ELSE 0 END) <> t.points""",
    "1. no entry has a zero or negative amount": "SELECT id FROM journal_entries WHERE amount_points <= 0",
    "2. all accounts sum to zero": """
        SELECT total FROM (SELECT COALESCE(SUM(CASE WHEN side = 'D' THEN amount_points ELSE -amount_points END), 0)
                           AS total FROM journal_entries) sums WHERE total <> 0""",
    "2. cached member balances equal their entries": """
        SELECT b.member_id FROM member_balances b
        WHERE b.points_balance <> COALESCE((SELECT SUM(CASE WHEN e.side = 'C' THEN e.amount_points
                                                    ELSE -e.amount_points END)
                                            FROM journal_entries e WHERE e.account_id = b.points_account_id), 0)
           OR b.debt_points <> COALESCE((SELECT SUM(CASE WHEN e.side = 'D' THEN e.amount_points
                                                 ELSE -e.amount_points END)
                                         FROM journal_entries e WHERE e.account_id = b.debt_account_id), 0)""",
    "2. member balances equal the remaining points of their lots": """
        SELECT b.member_id FROM member_balances b
        WHERE b.points_balance <> COALESCE((SELECT SUM(l.remaining_points) FROM lots l
                                            WHERE l.member_id = b.member_id), 0)""",
    "3. no negative balance or debt": """
        SELECT member_id FROM member_balances WHERE points_balance < 0 OR debt_points < 0""",
    "5. captured never exceeds held, and resolves once": """
        SELECT id FROM holds WHERE captured_points > points
            OR (status = 'CAPTURED') <> (capture_transaction_id IS NOT NULL)""",
    "6. lot remaining within [0, points] and equal to points plus its lineage": """
        SELECT l.id FROM lots l
        WHERE l.remaining_points < 0 OR l.remaining_points > l.points
           OR l.remaining_points <> l.points + COALESCE((SELECT SUM(m.points_delta) FROM lot_movements m
                                                         WHERE m.lot_id = l.id), 0)""",
    # A spend's points come from lots (its lineage) except the part booked as member debt, which only
    # an offline redemption the member's points no longer covered has (Ledger.spend_into_debt).
    "6. lineage of each spend plus its debt sums to the points spent": """
        SELECT t.id FROM journal_transactions t
        WHERE t.kind = 'REDEEM' AND t.points <> -COALESCE((SELECT SUM(m.points_delta) FROM lot_movements m
                                                           WHERE m.transaction_id = t.id), 0)
                                              + COALESCE((SELECT SUM(e.amount_points) FROM journal_entries e
                                                          JOIN ledger_accounts a ON a.id = e.account_id
                                                          WHERE e.transaction_id = t.id AND e.side = 'D'
                                                            AND a.kind = 'MEMBER_DEBT'), 0)""",
    "4. one receipt, at most one earn": """
        SELECT partner_id, receipt_id FROM journal_transactions WHERE kind = 'EARN'
        GROUP BY partner_id, receipt_id HAVING COUNT(*) > 1""",
}


@dataclass(frozen=True)
class LedgerCheck:
    name: str
    passed: bool
    detail: str  # up to five offending rows when it failed


def check_ledger(uow: UnitOfWork) -> list[LedgerCheck]:
    """Every invariant, each one statement (its own consistent snapshot), in one read-only transaction."""

    def work(connection: Connection) -> list[LedgerCheck]:
        return [_run(connection, name, query) for name, query in LEDGER_CHECKS.items()]

    return uow.run(work)


def _run(connection: Connection, name: str, query: str) -> LedgerCheck:
    rows = connection.execute(text(query)).fetchmany(5)
    return LedgerCheck(name, not rows, "" if not rows else f"offending rows: {[tuple(row) for row in rows]}")
