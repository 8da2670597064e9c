"""A throwaway PostgreSQL server for the tests and the benchmarks: Debian's package's binaries
(`make install` installs them) run from a temporary folder, reachable only through a Unix socket
in it (no TCP port, so nothing to collide with), as a child that dies with the process that
started it (`setpriv --pdeathsig`, also when that process is killed); as root, as the `postgres`
user, since initdb refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the server's own folder


class ServerError(RuntimeError):
    pass


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServerError(
            "PostgreSQL's server programs (initdb, postgres) are not installed: run `make install` (Debian package postgresql)"
        )
    return Path(initdb).parent


def _as_owner(root: Path) -> list[str]:
    """The command prefix that runs a program dying with this process, as the server's owner."""
    prefix = ["setpriv", "--pdeathsig", "KILL"]
    if os.geteuid() != 0:
        return [*prefix, "--"]
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("running as root needs the postgres user (Debian package postgresql) to own the server") from None
    os.chown(root, owner.pw_uid, owner.pw_gid)
    return [*prefix, "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]


@contextmanager
def throwaway_server(*, durable: bool = False) -> Iterator[str]:
    """Start a server; yield its URL with `{database}` where a database's name goes (see
    `create_database`); stop it and remove its files. `durable=False` turns fsync off (tests are
    about behaviour, not crashes of the machine); the benchmarks keep production's settings."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="backoffice-pg-", dir="/tmp"))  # short: a socket's path has at most 107 bytes
    server: subprocess.Popen[bytes] | None = None
    try:
        prefix = _as_owner(root)
        data, log = root / "data", root / "server.log"
        done = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(f"initdb failed: {done.stderr or done.stdout}")
        settings = ["-c", "listen_addresses=", "-c", "max_connections=200"]
        if not durable:  # synchronous_commit stays on, the server's default the application's settings change
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with open(log, "wb") as output:
            server = subprocess.Popen(
                [*prefix, str(bindir / "postgres"), "-D", str(data), "-k", str(root), "-p", str(PORT), *settings],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        url = f"postgresql+psycopg://postgres@/{{database}}?host={root}&port={PORT}"
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(_admin(url), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ServerError(f"PostgreSQL did not start: {log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # fast shutdown
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _admin(server_url: str) -> str:
    return server_url.format(database="postgres").replace("postgresql+psycopg://", "postgresql://")


def create_database(server_url: str, name: str) -> str:
    """A new, empty database `name` (dropped first if it exists); its URL."""
    with psycopg.connect(_admin(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8')
    return server_url.format(database=name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(_admin(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_script(database_url: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run an SQL script on a database (a URL of `create_database`) as an operator would, with
    psql, stopping at its first error: a script of `flask db upgrade --sql` builds indexes
    CONCURRENTLY, each a statement of its own outside a transaction, as psql sends them."""
    return subprocess.run(
        [str(_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", database_url.replace("postgresql+psycopg://", "postgresql://")],
        input=script,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGCLIENTENCODING": "UTF8"},
    )
