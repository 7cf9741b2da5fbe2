"""A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` in a temporary directory
(see ../shared/PEERS.md), on a free loopback port, gone when the run ends.

The suite uses a server named by `--pg-url` / $DESK_TEST_PG_URL when given, else starts one of
these where PostgreSQL's binaries are installed. Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from peers import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres(command: list[str]) -> list[str]:
    # initdb refuses to run as root; as root, run the server as the `postgres` OS user.
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@dataclass
class Cluster:
    directory: Path
    port: int
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(_as_postgres([self.pg_ctl, "-D", str(self.directory / "data"), "-m",
                                     "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> Cluster | None:
    """A new cluster, or None when PostgreSQL is not installed here."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="desk-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(directory / "data"), "-U", "postgres",
                                 "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                                 "--no-instructions"]), check=True, capture_output=True)
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400")
    subprocess.run(_as_postgres([pg_ctl, "-D", str(directory / "data"), "-l",
                                 str(directory / "server.log"), "-w", "-t", "30", "start",
                                 "-o", options]), check=True, capture_output=True)
    return Cluster(directory, port, pg_ctl)


def create_database(server_url: str) -> str:
    """A new, empty database on the server; returns its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"desk_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()
