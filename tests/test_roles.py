"""`desk admin grant-agent|grant-daemon|revoke`: PostgreSQL roles holding only what each needs.
An agent works tickets but cannot change the schema, rewrite the audit trail or read the
connectors' cursors and leases; the daemon role runs `desk sync`."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fake_telegram
import pg_cluster
import psycopg
import pytest
from conftest import run
from peers import DESK
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ProgrammingError
from sqlmodel import SQLModel

from desk import lease, outbox, tickets
from desk.ingest import ingest
from desk.models import Message, Meta, SyncState, Ticket
from desk.roles import grant_agent
from desk.search import search
from desk.store import SCHEMA_VERSION, Store, StoreError, ticket_page

postgresql = pytest.mark.postgresql
TABLES = [table.name for table in SQLModel.metadata.sorted_tables]

ROOT = Path(__file__).resolve().parent.parent
# A password that needs quoting as a literal: it must reach the server intact and never be shown.
PASSWORD = "it's 100% s\\ecret"


@dataclass
class Cluster:
    url: str  # the store's database, as its owner: a role with CREATEROLE, not a superuser
    owner: str
    superuser_url: str  # the same database as the superuser
    role: Callable[[str], str]  # role(kind): a new role name, dropped after the test


@pytest.fixture
def roles(pg_server: str, pg_database: Callable[[], str], isolated: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A database owned by a role of its own, as a team sets it up. Roles are cluster-wide,
    so each test's are dropped afterwards, with its database."""
    monkeypatch.setenv("DESK_TEST_ROLE_PW", PASSWORD)
    superuser_url = pg_database()
    made: list[str] = []

    def role(kind: str) -> str:
        made.append(f"desk_test_{kind}_{uuid.uuid4().hex[:10]}")
        return made[-1]

    owner = role("owner")
    with superuser(pg_server) as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{owner}" LOGIN CREATEROLE')
        conn.exec_driver_sql(
            f'ALTER DATABASE "{make_url(superuser_url).database}" OWNER TO "{owner}"')
    try:
        yield Cluster(as_role(superuser_url, owner), owner, superuser_url, role)
    finally:
        pg_cluster.drop_database(pg_server, superuser_url)
        with superuser(pg_server) as conn:
            for name in reversed(made):
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')


@contextmanager
def superuser(url: str) -> Iterator[Connection]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def granted(out: str) -> dict[str, list[str]]:
    """What `desk admin grant-*` printed: {rights: tables}."""
    found = {}
    for line in out.splitlines()[1:]:
        rights, _, names = line.strip().partition("  ")
        if names:
            found[rights] = names.strip().split(", ")
    return found


def as_role(url: str, name: str) -> str:
    return make_url(url).set(username=name).render_as_string(hide_password=False)


def denied(engine: Engine, statement: str) -> None:
    """`statement` fails for lack of rights, whatever it is."""
    with pytest.raises(ProgrammingError) as failure, engine.begin() as conn:
        conn.exec_driver_sql(statement)
    assert isinstance(failure.value.orig, psycopg.errors.InsufficientPrivilege), statement


@postgresql
def test_an_agent_works_tickets_but_cannot_change_the_schema_or_read_cursors(
    roles, inbound, capsys, tmp_path
) -> None:
    url, role = roles.url, roles.role
    owner = Store(url)
    ingest(owner, [inbound("Where is my parcel?", channel="telegram")], connector="chat",
           cursor={"offset": 41})
    owner.write(lambda s: lease.claim(s, lease.connector_role("chat"), "host:1", 30))
    agent_name = role("agent")
    # A daemon role made an agent loses the daemon's rights: granting is exact.
    assert run(capsys, "--db", url, "admin", "grant-daemon", agent_name)[0] == 0
    code, out, err = run(capsys, "--db", url, "admin", "grant-agent", agent_name,
                         "--password", "env:DESK_TEST_ROLE_PW")
    assert (code, err) == (0, "")
    assert f'agent role "{agent_name}" updated, with a password' in out
    shown = granted(out)
    assert shown.pop("select, insert") == ["event"]
    assert shown.pop("select") == ["meta"]
    assert shown.pop("nothing") == ["lease", "oauthtoken", "syncstate"]
    assert shown.pop("select, insert, update, delete") == sorted(
        set(TABLES) - {"event", "meta", "lease", "syncstate", "oauthtoken"})  # every other table
    assert "message_id_seq" in shown.pop("usage (new ids)")
    assert shown == {}
    assert PASSWORD not in out
    with superuser(roles.superuser_url) as conn:
        stored = conn.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :n"),
                              {"n": agent_name}).scalar()
    assert stored.startswith("SCRAM-SHA-256$")

    agent = Store(as_role(url, agent_name), password=PASSWORD)  # opens: no DDL on a current store
    try:
        with agent.session() as session:
            (ticket,) = ticket_page(session)
            assert [hit.ticket_id for hit in search(session, "parcel")] == [ticket.id]
        agent.write(lambda s: tickets.set_status(s, ticket.id, "pending", actor="alice"))
        agent.write(lambda s: tickets.assign(s, ticket.id, "alice", actor="alice"))
        agent.write(lambda s: tickets.set_tags(s, ticket.id, ["late"], actor="alice"))
        agent.write(lambda s: tickets.set_tags(s, ticket.id, ["parcel"], actor="alice"))
        agent.write(lambda s: outbox.add_note(s, ticket.id, "asked the courier", agent="alice"))
        reply = agent.write(lambda s: outbox.queue_reply(
            s, ticket.id, "It left today.", agent="alice",
            connectors_by_channel={"telegram": "chat"}))
        assert reply.status == "queued"
        # An agent may import mail (no cursor): new customers, tickets, the search column.
        ingest(agent, [inbound("Invoice please", sender="bob@example.org")])
        with agent.session() as session:
            assert [hit.ticket_id is not None for hit in search(session, "invoice")] == [True]
            assert session.get(Ticket, ticket.id).tags == "parcel"
        # The app's live updates: LISTEN works for any role.
        agent.data_version()
        ingest(owner, [inbound("Any news?", channel="telegram")])
        assert agent.changes.wait(10)

        for statement in (
            "DROP TABLE ticket",
            "ALTER TABLE ticket ADD COLUMN x int",
            "CREATE TABLE t (x int)",
            "CREATE INDEX ix_x ON ticket (subject)",
            "TRUNCATE message",
            "SELECT * FROM syncstate",
            "SELECT refresh_token FROM oauthtoken",
            "SELECT * FROM lease",
            "INSERT INTO syncstate (connector, cursor, updated_at) VALUES ('x', '{}', now())",
            "UPDATE event SET kind = 'nothing happened'",
            "DELETE FROM event",
            "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
            "DELETE FROM meta",
            "CREATE OR REPLACE FUNCTION desk_fold(value text) RETURNS text LANGUAGE sql"
            " AS $$ SELECT '' $$",
            "DROP TRIGGER desk_notify_message ON message",
        ):
            denied(agent.engine, statement)
        # Whether a sign-in is needed, the app may know; the tokens, never.
        from desk.oauth import sign_in_needed

        assert sign_in_needed(agent, ["m365"]) == {"m365": "not signed in"}
        # `desk status` reads cursors and leases: refused, and said so in plain words.
        config = tmp_path / "agent.toml"
        config.write_text('[store]\npassword = "env:DESK_TEST_ROLE_PW"\n')
        code, _out, err = run(capsys, "--config", config, "--db", as_role(url, agent_name),
                              "status")
        assert code == 1 and "may not read the connectors' cursors and leases" in err
    finally:
        agent.close()
    with owner.session() as session:
        assert session.get(SyncState, "chat").cursor == json.dumps({"offset": 41})
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
    owner.close()


@postgresql
def test_a_revoked_role_can_do_nothing_more(roles, capsys) -> None:
    url, role = roles.url, roles.role
    Store(url).close()
    name = role("agent")
    assert run(capsys, "--db", url, "admin", "grant-agent", name)[0] == 0
    code, out, _ = run(capsys, "--db", url, "admin", "revoke", name)
    assert code == 0 and f'role "{name}" has no rights on' in out
    agent = create_engine(as_role(url, name))
    denied(agent, "SELECT * FROM ticket")
    denied(agent, "SELECT * FROM meta")  # so it cannot even open the store
    agent.dispose()


@postgresql
def test_a_role_opening_a_store_behind_or_indexed_otherwise_changes_nothing(roles) -> None:
    url, role = roles.url, roles.role
    owner = Store(url, search_config="english")
    name = role("agent")
    grant_agent(owner.engine, name)  # (desk admin would re-index with its config's "simple")
    # Only the owner re-indexes: the agent's "simple" leaves the store's "english" as it is.
    Store(as_role(url, name), search_config="simple").close()
    with owner.session() as session:
        assert session.get(Meta, "search_config").value == "english"
    with owner.engine.begin() as conn:
        conn.execute(Meta.__table__.update().where(Meta.key == "schema_version")
                     .values(value=str(SCHEMA_VERSION - 1)))
    owner.close()
    with pytest.raises(StoreError, match=r"needs migrating .* run desk once as the store's owner"):
        Store(as_role(url, name), search_config="english")


@postgresql
def test_admin_refuses_superusers_reserved_names_and_other_owners(roles, capsys) -> None:
    url, role = roles.url, roles.role
    Store(url).close()
    code, _, err = run(capsys, "--db", url, "admin", "grant-agent", "postgres")
    assert code == 1 and "is a superuser" in err
    code, _, err = run(capsys, "--db", url, "admin", "grant-daemon", "pg_monitor")
    assert code == 1 and "reserved by PostgreSQL" in err
    code, _, err = run(capsys, "--db", url, "admin", "grant-agent", roles.owner)
    assert code == 1 and "owns the store" in err
    agent = role("agent")
    assert run(capsys, "--db", url, "admin", "grant-agent", agent)[0] == 0
    # An agent cannot hand out roles: only the store's owner may.
    code, _, err = run(capsys, "--db", as_role(url, agent), "admin", "grant-daemon", role("x"))
    assert code == 1 and "run desk admin as the store's owner" in err


@postgresql
async def test_the_daemon_role_syncs_and_delivers(roles, tmp_path, capsys) -> None:
    url, role = roles.url, roles.role
    owner = Store(url)
    daemon = role("daemon")
    code, out, _ = run(capsys, "--db", url, "admin", "grant-daemon", daemon, "--password",
                       "env:DESK_TEST_ROLE_PW")
    assert code == 0, out
    shown = granted(out)
    assert shown["select, insert, update, delete"] == sorted(set(TABLES) - {"event", "meta"})
    assert (shown["select, insert"], shown["select"]) == (["event"], ["meta"])
    assert "nothing" not in shown
    telegram = fake_telegram.State()
    runner, api_base = await fake_telegram.serve(telegram)
    config = tmp_path / "config.toml"
    config.write_text(f"""
[store]
password = "env:DESK_TEST_ROLE_PW"

[[connector]]
name = "chat"
type = "telegram"
token = "env:DESK_TEST_TELEGRAM"
api_base = "{api_base}"
""")
    env = {**os.environ, "DESK_TEST_TELEGRAM": fake_telegram.TOKEN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    async def sync_once() -> tuple[int | None, str]:
        process = await asyncio.create_subprocess_exec(
            *DESK, "--config", str(config), "--db", as_role(url, daemon), "sync", "--once",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode, output.decode()

    try:
        await telegram.push(telegram.message(
            {"id": 7001, "is_bot": False, "first_name": "Ana"}, "My order is late"))
        code, output = await sync_once()
        assert code == 0, output
        with owner.session() as session:
            (message,) = session.execute(select(Message)).scalars()
            assert message.text == "My order is late"
            cursor = json.loads(session.get(SyncState, "chat").cursor)
        assert cursor  # the update offset, written with the message
        reply = owner.write(lambda s: outbox.queue_reply(
            s, message.ticket_id, "On its way", agent="alice",
            connectors_by_channel={"telegram": "chat"}))
        code, output = await sync_once()
        assert code == 0, output
        assert [sent["text"] for sent in telegram.sent] == ["On its way"]
        with owner.session() as session:
            assert session.get(Message, reply.id).status == "sent"
    finally:
        await runner.cleanup()
    daemon_store = Store(as_role(url, daemon), password=PASSWORD)
    try:
        for statement in ("DROP TABLE lease", "ALTER TABLE syncstate ADD COLUMN x int",
                          "CREATE TABLE t (x int)", "DELETE FROM event",
                          "UPDATE meta SET value = '0'"):
            denied(daemon_store.engine, statement)
    finally:
        daemon_store.close()
        owner.close()


def test_roles_on_a_sqlite_store_are_refused(isolated, capsys) -> None:
    code, out, err = run(capsys, "--db", isolated / "desk.db", "admin", "grant-agent", "alice")
    assert (code, out) == (1, "")
    assert "roles are a PostgreSQL feature; a SQLite store is protected by its file mode" in err
    assert not (isolated / "desk.db").exists()


def test_an_inline_password_is_refused_and_never_shown(isolated, capsys) -> None:
    code, out, err = run(capsys, "--db", "postgresql+psycopg://owner@127.0.0.1:1/desk", "admin",
                         "grant-agent", "alice", "--password", "hunter2")
    assert code == 1
    assert "--password" in err and "not an inline secret" in err
    assert "hunter2" not in out + err


@postgresql
def test_a_schema_anyone_may_create_in_is_closed(roles, capsys) -> None:
    """Before PostgreSQL 15, PUBLIC may create tables in schema public; granting takes that
    away where the owner may (here the schema's owner is the database's)."""
    url, role = roles.url, roles.role
    Store(url).close()
    with superuser(roles.superuser_url) as conn:
        conn.exec_driver_sql("GRANT CREATE ON SCHEMA public TO PUBLIC")
        schema_owner = conn.execute(text(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'")).scalar()
    name = role("agent")
    code, out, _ = run(capsys, "--db", url, "admin", "grant-agent", name)
    assert code == 0
    agent = create_engine(as_role(url, name))
    if schema_owner in ("pg_database_owner", roles.owner):
        assert 'note: revoked CREATE on schema "public" from PUBLIC' in out
        denied(agent, "CREATE TABLE t (x int)")
    else:  # the bootstrap superuser's schema, before PostgreSQL 15
        assert "its owner should run REVOKE CREATE ON SCHEMA" in out
    agent.dispose()
