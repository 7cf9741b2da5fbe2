"""The store: how it is opened, its schema version, and queue queries served from indexes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.exc import IntegrityError

from desk import tickets
from desk.ingest import ingest
from desk.models import Message, Meta, Ticket
from desk.store import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    TicketCursor,
    customer_timeline,
    queue_counts,
    summary,
    ticket_page,
)


@pytest.mark.sqlite_only("PRAGMAs and the FTS5 table; see the PostgreSQL test below")
def test_a_new_store_has_wal_foreign_keys_and_the_search_index(store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        names = set(conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')").scalars())
    assert {"message_fts", "message_fts_ai", "message_fts_ad", "message_fts_au"} <= names
    assert {"customer", "identity", "ticket", "message", "attachment", "event",
            "syncstate", "meta"} <= names


def test_a_new_postgresql_store_has_the_search_column_and_change_triggers(pg_database) -> None:
    store = Store(pg_database())
    with store.engine.connect() as conn:
        column = conn.exec_driver_sql(
            "SELECT data_type, is_generated FROM information_schema.columns"
            " WHERE table_name = 'message' AND column_name = 'search_vector'").one()
        index = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_message_search'").scalar()
        triggers = set(conn.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'desk_notify_%%'").scalars())
        zone = conn.exec_driver_sql("SHOW timezone").scalar()
    store.close()
    assert tuple(column) == ("tsvector", "ALWAYS")
    assert "USING gin (search_vector)" in index
    assert {"desk_notify_message", "desk_notify_ticket", "desk_notify_presence"} <= triggers
    assert zone == "UTC"  # days and casts of timestamps are UTC whatever the server says


def test_foreign_keys_are_enforced(store) -> None:
    with pytest.raises(IntegrityError), store.transaction() as session:
        session.execute(text(
            "INSERT INTO identity (customer_id, kind, value, source, created_at) "
            "VALUES (999, 'email', 'x@example.com', 'message', '2026-01-01 00:00:00')"))


def test_the_schema_version_is_recorded_and_a_reopened_store_keeps_its_data(
    tmp_path: Path, inbound
) -> None:
    url = f"sqlite:///{tmp_path}/sub/dir/desk.db"  # the folder is created too
    first = Store(url)
    with first.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
    ingest(first, [inbound("kept")])
    first.close()
    again = Store(url)
    with again.session() as session:
        assert session.execute(select(Message.text)).scalar_one() == "kept"
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
    again.close()


def test_a_store_from_a_newer_desk_is_refused(store_url: str) -> None:
    url = store_url
    store = Store(url)
    with store.transaction() as session:
        session.execute(update(Meta).where(Meta.key == "schema_version").values(
            value=str(SCHEMA_VERSION + 1)))
    store.close()
    with pytest.raises(StoreError, match=r"newer than this desk.*upgrade desk"):
        Store(url)


# ---------------------------------------------------------------------------- ticket queues


def make_tickets(store, inbound, n: int = 23) -> None:
    """`n` customers with one ticket each; groups of three share a last-message time (ties)."""
    ingest(store, [inbound(f"ticket {i}", sender=f"c{i}@example.com",
                           at=timedelta(hours=i // 3)) for i in range(n)])


def plans(store, run) -> list[str]:
    """EXPLAIN QUERY PLAN of every SELECT on the ticket table that `run(session)` executes."""
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM ticket" in statement:
            statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        with store.session() as session:
            run(session)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    assert statements
    found = []
    raw = store.engine.raw_connection()
    try:
        for statement, parameters in statements:
            if store.engine.dialect.name == "sqlite":
                rows = raw.cursor().execute("EXPLAIN QUERY PLAN " + statement,
                                            parameters).fetchall()
                found.append("\n".join(row[-1] for row in rows))
            else:
                # A few rows make a table scan cheapest: forbid it, and any sort, to see
                # whether an index can serve the query in order.
                cursor = raw.cursor()
                cursor.execute("SET enable_seqscan = off")
                cursor.execute("SET enable_sort = off")
                cursor.execute("EXPLAIN " + statement, parameters)
                found.append("\n".join(row[0] for row in cursor.fetchall()))
                raw.rollback()
    finally:
        raw.close()
    return found


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(lambda s: ticket_page(s, queue="open"), id="open"),
        pytest.param(lambda s: ticket_page(s, queue="pending"), id="pending"),
        pytest.param(lambda s: ticket_page(s, queue="resolved"), id="resolved"),
        pytest.param(lambda s: ticket_page(s, queue="mine", agent="alice"), id="mine"),
        pytest.param(lambda s: ticket_page(s, queue="unassigned"), id="unassigned"),
        pytest.param(lambda s: ticket_page(s, queue="all"), id="all"),
        pytest.param(
            lambda s: ticket_page(s, queue="open", after=TicketCursor(
                ticket_page(s, queue="open", limit=1)[0].last_message_at, 10**9)),
            id="open-next-page",
        ),
    ],
)
def test_queue_pages_are_read_from_an_index(store, inbound, page) -> None:
    make_tickets(store, inbound)
    for plan in plans(store, page):
        if store.engine.dialect.name == "postgresql":
            assert "Index" in plan and "Seq Scan on ticket" not in plan, plan
            assert "Sort" not in plan.replace("Incremental Sort", ""), plan
            continue
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
        assert "SCAN ticket\n" not in plan + "\n", plan
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_keyset_paging_returns_every_ticket_exactly_once(store, inbound) -> None:
    make_tickets(store, inbound)
    with store.transaction() as session:
        closed = session.execute(select(Ticket.id).order_by(Ticket.id).limit(4)).scalars().all()
        for ticket_id in closed:
            tickets.set_status(session, ticket_id, "resolved", actor="alice")
    seen: list[Ticket] = []
    after = None
    with store.session() as session:
        while True:
            page = ticket_page(session, queue="open", after=after, limit=5)
            if not page:
                break
            assert len(page) <= 5
            seen += page
            after = TicketCursor(page[-1].last_message_at, page[-1].id)
        everything = ticket_page(session, queue="all", limit=100)
    ids = [t.id for t in seen]
    assert len(ids) == len(set(ids)) == 23 - len(closed)
    assert set(ids) == {t.id for t in everything} - set(closed)
    keys = [(t.last_message_at, t.id) for t in seen]
    assert keys == sorted(keys, reverse=True)  # newest first, ties broken by id


def test_an_unknown_queue_names_the_valid_ones(store) -> None:
    with store.session() as session, pytest.raises(ValueError, match="mine, unassigned, open"):
        ticket_page(session, queue="closed")


def test_queue_counts_and_summary(store, inbound) -> None:
    make_tickets(store, inbound, n=5)
    with store.transaction() as session:
        ids = session.execute(select(Ticket.id).order_by(Ticket.id)).scalars().all()
        tickets.assign(session, ids[0], "alice", actor="alice")
        tickets.set_status(session, ids[1], "pending", actor="alice")
        tickets.set_status(session, ids[2], "resolved", actor="alice")
    with store.session() as session:
        counts = queue_counts(session, "alice")
        totals = summary(session)
    assert counts == {"open": 3, "pending": 1, "snoozed": 0, "resolved": 1, "mine": 1,
                      "unassigned": 2}
    assert totals == {"customers": 5, "tickets": 5, "open": 3, "messages": 5, "queued": 0,
                      "failed": 0}


def test_a_customer_timeline_spans_channels_oldest_first(store, inbound) -> None:
    from desk import identity

    ingest(store, [inbound("by email", sender="jane@example.com", at=timedelta(hours=2))])
    with store.transaction() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        identity.link_identity(session, jane, "phone", "+14155552671", actor="alice")
    ingest(store, [inbound("by sms, earlier", channel="sms", sender="+14155552671",
                           at=timedelta(hours=1)),
                   inbound("by sms, later", channel="sms", sender="+14155552671",
                           at=timedelta(hours=3))])
    with store.session() as session:
        timeline = customer_timeline(session, jane)
        newest_two = customer_timeline(session, jane, limit=2)
    assert [m.text for m in timeline] == ["by sms, earlier", "by email", "by sms, later"]
    assert [m.text for m in newest_two] == ["by email", "by sms, later"]


def test_another_connections_commit_is_noticed(store_url: str, inbound) -> None:
    app, daemon = Store(store_url), Store(store_url)
    before = app.data_version()
    assert app.data_version() == before
    ingest(daemon, [inbound("new mail")])
    time.sleep(0.1)  # a notification (PostgreSQL) travels through the server
    assert app.data_version() != before
    app.close()
    daemon.close()


def test_postgresql_announces_commits_to_a_waiting_app(pg_database, inbound) -> None:
    url = pg_database()
    app, daemon = Store(url), Store(url)
    app.data_version()  # listening from here on
    assert not app.changes.wait(0.2)  # nothing happened: waits the whole timeout
    heard: list[bool] = []
    waiter = threading.Thread(target=lambda: heard.append(app.changes.wait(10)))
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    ingest(daemon, [inbound("new mail")])
    waiter.join(10)
    assert heard == [True]
    assert time.monotonic() - started < 5  # woken by the commit, not by the timeout
    app.close()
    daemon.close()


@pytest.mark.sqlite_only("stores older than schema 4 were only ever SQLite files")
def test_a_version_1_store_gains_the_presence_table(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path}/old.db"
    Store(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:  # make it look like a store written by desk before presence
        conn.execute(text("DROP TABLE presence"))
        conn.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    reopened = Store(url)
    assert "presence" in inspect(reopened.engine).get_table_names()
    with reopened.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
    reopened.close()
