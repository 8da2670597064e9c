"""A throwaway PostgreSQL server on loopback, for the tests and the benchmarks: Debian's
package's binaries (`make install` installs them) run from a temporary folder; as root, through
the `postgres` user, since initdb refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


class ServerError(RuntimeError):
    pass


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServerError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make install` (Debian package postgresql)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_server(*, durable: bool = False) -> Iterator[str]:
    """Start a server; yield its URL without a database name (`…/name` to use one); stop it and
    remove its files. `durable=False` turns fsync off (tests are about behaviour, not crashes of
    the machine); the benchmarks keep production's settings."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="backoffice-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:  # synchronous_commit stays on, the server's default the application's settings change
        options += " -c fsync=off -c full_page_writes=off"

    def run(*args: str | Path) -> None:
        done = subprocess.run([*as_user, *map(str, args)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = root / "server.log"
            raise ServerError(f"{args[0]} failed: {done.stderr or done.stdout}{log.read_text() if log.exists() else ''}")

    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _admin(server_url: str) -> str:
    return server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"


def create_database(server_url: str, name: str) -> str:
    """A new, empty database `name` (dropped first if it exists); its URL."""
    with psycopg.connect(_admin(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8')
    return f"{server_url}/{name}"


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(_admin(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
