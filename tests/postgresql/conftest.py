"""PostgreSQL, as production runs it (psycopg 3): a throwaway server for the whole session on
loopback, a fresh database per test. The `app` fixture here replaces the SQLite one, so tests
collected under this folder (including ones imported from the SQLite suite) run on PostgreSQL.

The server is the Debian package's binaries (`make install` installs them) run from a temporary
folder; as root, through the `postgres` user, since initdb refuses to run as root. Durability is
off (fsync, synchronous_commit): these tests are about behaviour, not crashes of the machine."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from flask import Flask

from backoffice import create_app
from backoffice.extensions import db
from tests.conftest import app_config


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make install` (Debian package postgresql)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """The server's URL without a database name (`…/name` to use one)."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="backoffice-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )

    def run(*args: str | Path) -> None:
        done = subprocess.run([*as_user, *map(str, args)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = root / "server.log"
            pytest.fail(f"{args[0]} failed: {done.stderr or done.stdout}{log.read_text() if log.exists() else ''}")

    run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
    run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


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
    admin = postgresql_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8')
    yield f"{postgresql_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def app(tmp_path: Path, signing_files: tuple[Path, Path], postgresql_url: str) -> Iterator[Flask]:
    """As the SQLite suite's `app`, on a PostgreSQL database of its own."""
    instance = tmp_path / "instance"
    instance.mkdir()
    app = create_app(app_config(instance, signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    with app.app_context():
        assert db.engine.dialect.name == "postgresql"
        db.create_all()
        yield app
        from backoffice.services.bookkeeping import check_and_reconcile

        db.session.rollback()
        if (instance / "ledger" / "main.beancount").exists():
            report = check_and_reconcile(db.session, instance / "ledger")
            assert report.ok, f"books not in step after the test: {report}"
        db.session.remove()
        db.engine.dispose()
