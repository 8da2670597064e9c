"""PostgreSQL, as production runs it (psycopg 3): a throwaway server for the whole session on
loopback, a fresh database per test. The `app` fixture here replaces the SQLite one, so tests
collected under this folder (including ones imported from the SQLite suite) run on PostgreSQL.

The server (tests/postgresql/server.py) runs with fsync off: these tests are about behaviour,
not crashes of the machine."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from backoffice.extensions import db
from tests.conftest import app_for_a_test
from tests.postgresql.server import ServerError, create_database, drop_database, throwaway_server


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """The server's URL, `{database}` where a database's name goes (see server.create_database)."""
    try:
        with throwaway_server() as url:
            yield url
    except ServerError as error:
        pytest.fail(str(error))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests about SQLite itself (marked sqlite_only) are imported here with their module but
    not run on PostgreSQL: deselected, as the SQLite suite runs them."""
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        on_postgresql = here in Path(str(item.path)).parents
        (drop if on_postgresql and item.get_closest_marker("sqlite_only") else keep).append(item)
        if on_postgresql:
            item.add_marker(pytest.mark.postgresql)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_databases = itertools.count(1)


@pytest.fixture
def postgresql_url(postgresql_server: str) -> Iterator[str]:
    """A new, empty database for one test, dropped after it."""
    name = f"backoffice_{os.getpid()}_{next(_databases)}"
    yield create_database(postgresql_server, name)
    drop_database(postgresql_server, name)


@pytest.fixture
def app(tmp_path: Path, signing_files: tuple[Path, Path], postgresql_url: str) -> Iterator[Flask]:
    """As the SQLite suite's `app`, on a PostgreSQL database of its own."""
    for app in app_for_a_test(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url):
        assert db.engine.dialect.name == "postgresql"
        yield app
