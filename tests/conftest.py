"""Shared fixtures: a fresh store per test and a factory for inbound messages."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.base import InboundMessage
from desk.store import Store

# A fixed moment tests count from, so that routing windows do not depend on the clock.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

_DEFAULT_SENDER = {"email": "jane@example.com", "sms": "+33612345678", "telegram": "424242"}
_DEFAULT_CONNECTOR = {"email": "mail", "sms": "sms", "telegram": "chat"}

InboundFactory = Callable[..., InboundMessage]


BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend", choices=BACKENDS, default=os.environ.get("DESK_TEST_BACKEND", "sqlite"),
        help="the store backend for tests that take `store_url` (env DESK_TEST_BACKEND)")
    parser.addoption(
        "--pg-url", default=os.environ.get("DESK_TEST_PG_URL"),
        help="a PostgreSQL server URL whose user may create databases (env DESK_TEST_PG_URL); "
             "without it, a throwaway cluster is started where PostgreSQL is installed")


def pytest_report_header(config: pytest.Config) -> str:
    return f"desk store backend: {config.getoption('--backend')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--backend") != "postgresql":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> Iterator[str]:
    """A PostgreSQL server URL: --pg-url, or a throwaway cluster for the whole run."""
    given = pytestconfig.getoption("--pg-url")
    if given:
        yield given
        return
    import pg_cluster
    from peers import missing_peer

    cluster = pg_cluster.start()
    if cluster is None:
        missing_peer("PostgreSQL (initdb, pg_ctl) is not installed; apt-get install postgresql")
    assert cluster is not None
    yield cluster.url
    cluster.stop()


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[Callable[[], str]]:
    """`pg_database()`: the URL of a new, empty database, dropped after the test."""
    import pg_cluster

    made: list[str] = []

    def make() -> str:
        made.append(pg_cluster.create_database(pg_server))
        return made[-1]

    yield make
    for url in made:
        pg_cluster.drop_database(pg_server, url)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's store lives: a SQLite file, or with --backend postgresql a new
    database on the test server."""
    if request.config.getoption("--backend") == "postgresql":
        return request.getfixturevalue("pg_database")()
    return f"sqlite:///{tmp_path}/desk.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For CLI tests: the config files and stores of whoever runs the tests are never read or
    written (no $DESK_CONFIG, $DESK_DB, ./config.toml or platform dirs of theirs)."""
    home = tmp_path / "home"
    for name, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                      ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.delenv("DESK_CONFIG", raising=False)
    monkeypatch.delenv("DESK_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def inbound() -> InboundFactory:
    """`inbound(text=..., sender=..., channel=..., at=timedelta|datetime, ...)`: an
    InboundMessage with a unique provider_id and a sent_at counted from T0."""
    counter = itertools.count(1)

    def make(
        text: str = "Hello, my order has not arrived.",
        *,
        channel: str = "email",
        sender: str | None = None,
        at: timedelta | datetime | None = None,
        provider_id: str | None = None,
        connector: str | None = None,
        **fields: Any,
    ) -> InboundMessage:
        n = next(counter)
        if isinstance(at, timedelta):
            sent_at = T0 + at
        elif at is None:
            sent_at = T0 + timedelta(minutes=n)
        else:
            sent_at = at
        if channel == "email":
            fields.setdefault("subject", "Order not delivered")
        return InboundMessage(
            connector=connector or _DEFAULT_CONNECTOR[channel],
            channel=channel,  # type: ignore[arg-type]
            provider_id=provider_id or f"{channel}-{n}@test",
            sender=sender or _DEFAULT_SENDER[channel],
            text=text,
            sent_at=sent_at,
            **fields,
        )

    return make


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """`desk ARGS` in this process: exit code, stdout, stderr."""
    from desk.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def count(store: Store, model: Any, *where: Any) -> int:
    with store.session() as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Any]:
    """One throwaway Dovecot for the test run (see tests/peers.py)."""
    from peers import start_dovecot

    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture
def mailbox(dovecot: Any) -> Any:
    """The Dovecot, its INBOX emptied and other folders removed."""
    dovecot.reset()
    return dovecot
