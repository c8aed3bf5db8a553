"""DESIGN.md section 9 invariants, checked with SQL against the real database (ledger/checks.py)."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from ledger.checks import LEDGER_CHECKS as CHECKS


def violations(connection: Connection) -> list[str]:
    broken = []
    for name, query in CHECKS.items():
        rows = connection.execute(text(query)).fetchmany(5)
        if rows:
            broken.append(f"{name}: {[tuple(row) for row in rows]}")
    return broken


def assert_invariants(engine: Engine) -> None:
    with engine.connect() as connection:
        broken = violations(connection)
    assert not broken, "ledger invariants broken:\n" + "\n".join(broken)
