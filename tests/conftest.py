"""Shared fixtures: a fresh migrated database per backend and session, clocks and units of work.

PostgreSQL tests skip when no server answers, except when LOYALTY_TEST_REQUIRE_POSTGRES=1 (CI),
where an unreachable server fails the run and any skipped PostgreSQL test fails it too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy import create_engine as sa_create_engine

from common.clock import ManualClock
from common.db import create_engine
from common.uow import UnitOfWork
from migrations.runner import upgrade

POSTGRES_ADMIN_URL = os.environ.get("LOYALTY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("LOYALTY_TEST_REQUIRE_POSTGRES") == "1"
BACKENDS = ("sqlite", "postgresql")


def _admin_engine() -> Engine:
    return sa_create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


def postgres_reachable() -> bool:
    try:
        with _admin_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def fresh_postgres_database() -> str:
    """Creates an empty database and returns its URL; fails or skips when PostgreSQL is down."""
    if not postgres_reachable():
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " and LOYALTY_TEST_REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip(message)
    name = f"coalition_test_{uuid.uuid4().hex[:12]}"
    with _admin_engine().connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _admin_engine().connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    url = fresh_postgres_database()
    upgrade(url)
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'coalition.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session")
def postgresql_template_url() -> Iterator[str]:
    """A migrated database nobody connects to, copied for tests that need a database of their own."""
    url = fresh_postgres_database()
    upgrade(url)
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_template_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(params=BACKENDS)
def isolated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own, for work that reads the whole ledger (settlement closes)."""
    if request.param == "sqlite":
        path = f"{tmp_path}/isolated.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template_path"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("postgresql_template_url")
    name = f"coalition_test_{uuid.uuid4().hex[:12]}"
    with _admin_engine().connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template.rsplit("/", 1)[1]}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, pool_size=20)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def uow(engine: Engine, clock: ManualClock) -> UnitOfWork:
    return UnitOfWork(engine, clock)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres_only" in item.keywords and "[sqlite" in item.nodeid:
            item.add_marker(pytest.mark.skip(reason="runs only against PostgreSQL"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """In CI a skipped PostgreSQL test is a failure: the suite must prove both backends."""
    if not REQUIRE_POSTGRES:
        return
    skipped = [
        report for report in terminalreporter.stats.get("skipped", [])
        if "postgres" in str(report.longrepr).lower() and "runs only against PostgreSQL" not in str(report.longrepr)
    ]  # fmt: skip
    if skipped:
        terminalreporter.write_line(f"FAILED: {len(skipped)} PostgreSQL tests were skipped", red=True)
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED  # type: ignore[attr-defined]
