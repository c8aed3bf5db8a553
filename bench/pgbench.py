"""The SQL reference: the same accrual as one hand-written transaction, driven by pgbench."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import make_url, text

# An accrual's writes: an idempotency row, the member's balance, a debit and a credit entry.
SCRIPT = """\\set member random(1, :members)
BEGIN;
INSERT INTO bench_idempotency (key) VALUES (md5(random()::text || clock_timestamp()::text));
UPDATE bench_members SET balance = balance + 25 WHERE id = :member;
INSERT INTO bench_entries (member, amount, side) VALUES (:member, 25, 'D');
INSERT INTO bench_entries (member, amount, side) VALUES (:member, 25, 'C');
END;
"""

SCHEMA = (
    "CREATE TABLE bench_members (id int PRIMARY KEY, balance bigint NOT NULL)",
    "CREATE TABLE bench_entries (id bigserial PRIMARY KEY, member int NOT NULL, amount bigint NOT NULL, "
    "side char(1) NOT NULL)",
    "CREATE TABLE bench_idempotency (key text PRIMARY KEY)",
)


@dataclass(frozen=True)
class PgbenchResult:
    transactions_per_second: float
    latency_average_ms: float
    failed_transactions: int


def pgbench_path() -> str:
    return shutil.which("pgbench") or "/usr/bin/pgbench"


def prepare(database_url: str, members: int) -> None:
    engine = sa_create_engine(database_url)
    try:
        with engine.begin() as connection:
            for statement in SCHEMA:
                connection.execute(text(statement))
            connection.execute(
                text("INSERT INTO bench_members SELECT n, 100 FROM generate_series(1, :members) AS n"),
                {"members": members},
            )
            connection.execute(text("ANALYZE bench_members"))
    finally:
        engine.dispose()


def run(database_url: str, work_dir: Path, *, members: int, clients: int, duration_seconds: int) -> PgbenchResult:
    script = work_dir / "accrual.sql"
    script.write_text(SCRIPT)
    url = make_url(database_url)
    command = [
        pgbench_path(), "-n", "-c", str(clients), "-j", "2", "-T", str(duration_seconds), "-D", f"members={members}",
        "-f", str(script), "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
        str(url.database),
    ]  # fmt: skip
    environment = os.environ | {"PGPASSWORD": url.password} if url.password else None
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=environment, timeout=duration_seconds + 60
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed ({completed.returncode}):\n{completed.stderr}")
    return parse(completed.stdout)


def parse(output: str) -> PgbenchResult:
    """Reads pgbench 15's summary ("tps = 1234.5 (without initial connection time)")."""
    tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    latency = re.search(r"^latency average = ([\d.]+) ms", output, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    if tps is None:
        raise RuntimeError(f"no tps line in pgbench output:\n{output}")
    return PgbenchResult(
        float(tps.group(1)), float(latency.group(1)) if latency else float("nan"), int(failed.group(1)) if failed else 0
    )
