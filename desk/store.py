"""The store: schema and migrations, sessions, and the queries app and daemon share.

Everything here is dialect-neutral SQLAlchemy; what differs between SQLite and PostgreSQL lives
in `desk.dialects`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    case,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel

from connectors.base import FLAG_AUTO_REPLY, FLAG_BOUNCE
from desk import dialects, models, ticket_figures
from desk.models import Customer, Event, Identity, Message, Meta, SyncState, Ticket, TicketTag
from desk.timeutil import utcnow

SCHEMA_VERSION = 6


class StoreError(Exception):
    """The store cannot be opened or is from a newer desk."""


# --------------------------------------------------------------------------------------------
# Engine

make_engine = dialects.make_engine
is_sqlite = dialects.is_sqlite


def url_of(db: str) -> str:
    """A store given as a database URL or a file path, as a URL (a path is a SQLite file)."""
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


# --------------------------------------------------------------------------------------------
# Schema and migrations
#
# A store records its schema version in the `meta` table. A new store is created at
# SCHEMA_VERSION in one go; an older one runs MIGRATIONS[v] for each v from its version up to
# SCHEMA_VERSION - 1, each in its own transaction. To change the schema: bump SCHEMA_VERSION,
# change the models, and add MIGRATIONS[old_version] doing the same change on an existing store.

def _add_presence(conn: Connection) -> None:
    models.Presence.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


def _create_indexes(conn: Connection, *names: str) -> None:
    """Create the models' indexes called `names` that the store lacks."""
    for table in SQLModel.metadata.tables.values():
        for index in table.indexes:
            if index.name in names:
                index.create(conn, checkfirst=True)


def _add_lease(conn: Connection) -> None:
    models.Lease.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    _create_indexes(conn, "ix_message_received")


_FIGURE_COLUMNS = (
    "first_inbound_at", "first_response_seconds", "resolution_seconds", "resolved_channel",
    "reopen_count", "reopened_at", "channel_path", "customer_channels",
)  # fmt: skip
_AUTOMATIC = {FLAG_AUTO_REPLY, FLAG_BOUNCE}


def _add_ticket_figures(conn: Connection) -> None:
    """Schema 4: the service figures on the ticket row, worked out from the messages and
    events already stored by replaying them the way they are counted when written."""
    table = models.Ticket.__table__  # type: ignore[attr-defined]
    present = {column["name"] for column in inspect(conn).get_columns("ticket")}
    for name in (n for n in _FIGURE_COLUMNS if n not in present):
        column = table.c[name]
        ddl = f"ALTER TABLE ticket ADD COLUMN {name} {column.type.compile(dialect=conn.dialect)}"
        if not column.nullable:
            ddl += f" NOT NULL DEFAULT {column.default.arg!r}"  # 0 or ''
        conn.exec_driver_sql(ddl)
    _create_indexes(conn, "ix_ticket_created", "ix_ticket_first_response", "ix_ticket_resolved",
                    "ix_ticket_reopened", "ix_ticket_customer_channels", "ix_message_stats")

    updates: list[dict[str, Any]] = []
    row: dict[str, Any] | None = None
    replay = conn.execute(
        select(Message.ticket_id, Message.channel, Message.direction, Message.sent_at,
               Message.flags)
        .where(Message.ticket_id.is_not(None), Message.direction != "note")
        .order_by(Message.ticket_id, Message.sent_at, Message.id)
    )
    for ticket_id, channel, direction, sent_at, flags in replay:
        if row is None or row["b_id"] != ticket_id:
            row = {"b_id": ticket_id, **ticket_figures.fresh(sent_at)}
            updates.append(row)
        automatic = bool(set(flags.split(",")) & _AUTOMATIC)
        ticket_figures.account(row, channel=channel, direction=direction, sent_at=sent_at,
                               text="", automatic=automatic)
    _update_tickets(conn, updates, ("first_inbound_at", "first_response_at",
                                    "first_response_seconds", "channel_path",
                                    "customer_channels"))

    resolved = [
        {"b_id": ticket_id,
         "resolution_seconds": ticket_figures.seconds_between(created, resolved_at),
         "resolved_channel": last_channel}
        for ticket_id, created, resolved_at, last_channel in conn.execute(
            select(Ticket.id, Ticket.created_at, Ticket.resolved_at, Ticket.last_channel)
            .where(Ticket.resolved_at.is_not(None)))
    ]
    _update_tickets(conn, resolved, ("resolution_seconds", "resolved_channel"))

    reopens: dict[int, dict[str, Any]] = {}
    for ticket_id, created, data in conn.execute(
        select(Event.ticket_id, Event.created_at, Event.data)
        .where(Event.kind == "status", Event.ticket_id.is_not(None)).order_by(Event.id)
    ):
        change = json.loads(data)
        if change.get("before") == "resolved" and change.get("after") != "resolved":
            found = reopens.setdefault(ticket_id, {"b_id": ticket_id, "reopen_count": 0})
            found["reopen_count"] += 1
            found["reopened_at"] = created
    _update_tickets(conn, list(reopens.values()), ("reopen_count", "reopened_at"))


def _update_tickets(conn: Connection, rows: list[dict[str, Any]], names: Sequence[str]) -> None:
    """Write `names` of each row (keyed by "b_id") back to its ticket, 5,000 rows a statement."""
    table = models.Ticket.__table__  # type: ignore[attr-defined]
    statement = table.update().where(table.c.id == bindparam("b_id")).values(
        {name: bindparam(f"b_{name}") for name in names})
    for start in range(0, len(rows), 5000):
        conn.execute(statement, [{"b_id": row["b_id"], **{f"b_{n}": row[n] for n in names}}
                                 for row in rows[start:start + 5000]])


def _attachments_by_hash(conn: Connection) -> None:
    """Schema 5: attachment contents move to `blob`, one row per SHA-256."""
    models.Blob.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    _create_indexes(conn, "ix_attachment_sha256")
    if "data" not in {column["name"] for column in inspect(conn).get_columns("attachment")}:
        return
    # The first stored copy of each content; the others are the same bytes by their hash.
    conn.exec_driver_sql(
        "INSERT INTO blob (sha256, size, data) SELECT a.sha256, a.size, a.data FROM attachment a"
        " WHERE a.data IS NOT NULL AND a.id = (SELECT min(b.id) FROM attachment b"
        " WHERE b.sha256 = a.sha256 AND b.data IS NOT NULL)")
    conn.exec_driver_sql("ALTER TABLE attachment DROP COLUMN data")


def _add_oauth_tokens(conn: Connection) -> None:
    models.OAuthToken.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _add_presence, 2: _add_lease, 3: _add_ticket_figures, 4: _attachments_by_hash,
    5: _add_oauth_tokens,
}


def _schema_version(conn: Connection) -> int | None:
    if not conn.dialect.has_table(conn, "meta"):
        return None
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    return int(value) if value is not None else None


def migrate(engine: Engine, search_config: str | None = None) -> int:
    """Bring the store's schema to SCHEMA_VERSION; returns the version it found (0 if new).
    `search_config` is PostgreSQL's text search configuration; a store indexed with another
    one is re-indexed."""
    with engine.begin() as conn:
        dialects.lock_schema(conn)
        found = _schema_version(conn)
        if found is None:
            SQLModel.metadata.create_all(conn)
            config = search_config or dialects.SEARCH_CONFIG
            dialects.create_search_and_notify(conn, config)
            conn.execute(models.Meta.__table__.insert(), [
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "store_id", "value": uuid.uuid4().hex},
                *([] if is_sqlite(conn) else [{"key": "search_config", "value": config}]),
            ])
            return 0
        if search_config and not is_sqlite(conn):
            indexed = conn.execute(
                select(Meta.value).where(Meta.key == "search_config")).scalar()
            # Only the owner re-indexes: another role keeps the store's configuration, which
            # is the one search uses.
            if indexed != search_config and dialects.owns_store(conn):
                dialects.change_search_config(conn, search_config)
                dialects.upsert(conn, models.Meta.__table__,  # type: ignore[attr-defined]
                                [{"key": "search_config", "value": search_config}])
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the store has schema version {found}, newer than this desk ({SCHEMA_VERSION}):"
            " upgrade desk"
        )
    for version in range(found, SCHEMA_VERSION):
        with engine.begin() as conn:
            dialects.lock_schema(conn)
            if _schema_version(conn) != version:
                continue  # another process migrated it meanwhile
            if not dialects.owns_store(conn):
                raise StoreError(
                    f"the store needs migrating from schema version {version} to"
                    f" {SCHEMA_VERSION}: run desk once as the store's owner"
                )
            MIGRATIONS[version](conn)
            conn.execute(
                models.Meta.__table__.update()
                .where(models.Meta.key == "schema_version")
                .values(value=str(version + 1))
            )
    return found


class Store:
    """An open store: the engine plus sessions that retry when another writer holds the lock."""

    def __init__(
        self, url: str, *, password: str | None = None, search_config: str | None = None
    ) -> None:
        self.url = url  # as configured: never holds the password, so it may be shown
        self.engine = make_engine(url, password)
        self._write_engine = dialects.write_engine(self.engine)
        self.changes = dialects.Changes(self.engine)
        # Not at REPEATABLE READ: a migration that waited on another process's schema lock
        # must then see the schema that process committed.
        migrate(self.engine.execution_options(desk_write=True), search_config)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading (and ORM writes committed by the caller)."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction, committed on success and rolled back on any error. On
        PostgreSQL a write that races another on the same row raises; `write` runs it again."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def write(self, work: Callable[[Session], Any], *, attempts: int = 5) -> Any:
        """Run `work` in one transaction, again (on fresh data) when it lost a race with another
        writer: SQLite busy, a PostgreSQL serialization failure, a key inserted meanwhile."""
        for attempt in range(attempts):
            try:
                with self.transaction() as session:
                    return work(session)
            except DBAPIError as exc:
                if not dialects.is_retryable(exc):
                    raise
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        return None

    def data_version(self) -> int:
        """A number that changes when another connection commits (cheap change polling)."""
        return self.changes.version()

    def close(self) -> None:
        self.changes.close_connection()
        self.engine.dispose()


def open_store(url: str) -> Store:
    return Store(url)


# --------------------------------------------------------------------------------------------
# Shared queries


QUEUES = ("mine", "unassigned", "open", "pending", "snoozed", "resolved", "all")


@dataclass(frozen=True, slots=True)
class TicketCursor:
    """Keyset position in a ticket list: the last row shown."""

    last_message_at: datetime
    id: int


def _queue_filter(
    query: Any, queue: str, agent: str | None, channel: str | None, tag: str | None
) -> Any:
    if queue == "mine":
        query = query.where(Ticket.assignee == agent, Ticket.status == "open")
    elif queue == "unassigned":
        query = query.where(Ticket.assignee.is_(None), Ticket.status == "open")
    elif queue in models.TICKET_STATUSES:
        query = query.where(Ticket.status == queue)
    elif queue != "all":
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    if channel:
        query = query.where(Ticket.channels.contains(channel))
    if tag:
        query = query.where(
            Ticket.id.in_(select(TicketTag.ticket_id).where(TicketTag.tag == tag))
        )
    return query


def ticket_page(
    session: Session,
    *,
    queue: str = "open",
    agent: str | None = None,
    channel: str | None = None,
    tag: str | None = None,
    after: TicketCursor | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[Ticket]:
    """The newest tickets of a queue, a page at a time, from an index (never a table scan).
    Page with `after` (keyset) when reading on; `offset` serves jumps into the list."""
    query = _queue_filter(select(Ticket), queue, agent, channel, tag)
    if after is not None:
        query = query.where(
            or_(
                Ticket.last_message_at < after.last_message_at,
                (Ticket.last_message_at == after.last_message_at) & (Ticket.id < after.id),
            )
        )
    query = query.order_by(Ticket.last_message_at.desc(), Ticket.id.desc())
    return list(session.execute(query.offset(offset).limit(limit)).scalars().all())


def queue_size(
    session: Session,
    *,
    queue: str = "open",
    agent: str | None = None,
    channel: str | None = None,
    tag: str | None = None,
) -> int:
    query = _queue_filter(select(func.count()).select_from(Ticket), queue, agent, channel, tag)
    return int(session.execute(query).scalar_one())


def customer_names(session: Session, customer_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids)))
    return dict(rows.all())


def queue_counts(session: Session, agent: str | None) -> dict[str, int]:
    """How many tickets each status queue holds, plus mine and unassigned (open only)."""
    counts = {status: 0 for status in models.TICKET_STATUSES}
    for status, count in session.execute(
        select(Ticket.status, func.count()).group_by(Ticket.status)
    ):
        counts[status] = count
    counts["mine"] = session.execute(
        select(func.count()).where(Ticket.assignee == agent, Ticket.status == "open")
    ).scalar_one()
    counts["unassigned"] = session.execute(
        select(func.count()).where(Ticket.assignee.is_(None), Ticket.status == "open")
    ).scalar_one()
    return counts


def channel_counts(session: Session, channels: Iterable[str]) -> dict[str, int]:
    """Open tickets that used each channel."""
    return {
        channel: int(session.execute(
            _queue_filter(select(func.count()).select_from(Ticket), "open", None, channel, None)
        ).scalar_one())
        for channel in channels
    }


def tag_counts(session: Session, limit: int = 50) -> dict[str, int]:
    """Open tickets per tag, for every tag in use (the first `limit`, by name)."""
    open_ticket = case((Ticket.status == "open", 1), else_=0)
    rows = session.execute(
        select(TicketTag.tag, func.sum(open_ticket))
        .join(Ticket, Ticket.id == TicketTag.ticket_id)
        .group_by(TicketTag.tag)
        .order_by(TicketTag.tag)
        .limit(limit)
    )
    return {tag: int(count or 0) for tag, count in rows}


def _message_window(
    session: Session, where: Any, limit: int, before: tuple[datetime, int] | None
) -> list[Message]:
    query = select(Message).where(where)
    if before is not None:
        moment, message_id = before
        query = query.where(
            or_(Message.sent_at < moment, (Message.sent_at == moment) & (Message.id < message_id))
        )
    query = query.order_by(Message.sent_at.desc(), Message.id.desc()).limit(limit)
    return list(reversed(session.execute(query).scalars().all()))


def ticket_messages(
    session: Session,
    ticket_id: int,
    *,
    limit: int = 50,
    before: tuple[datetime, int] | None = None,
) -> list[Message]:
    """The newest `limit` messages of a ticket (oldest first), optionally before a position."""
    return _message_window(session, Message.ticket_id == ticket_id, limit, before)


def customer_timeline(
    session: Session,
    customer_id: int,
    *,
    limit: int = 50,
    before: tuple[datetime, int] | None = None,
) -> list[Message]:
    """The newest messages of a customer across every channel and ticket (oldest first)."""
    return _message_window(session, Message.customer_id == customer_id, limit, before)


def earlier_count(session: Session, customer_id: int, before: tuple[datetime, int]) -> int:
    """How many of the customer's messages come before a timeline position."""
    moment, message_id = before
    return int(session.execute(
        select(func.count()).select_from(Message).where(
            Message.customer_id == customer_id,
            or_(Message.sent_at < moment, (Message.sent_at == moment) & (Message.id < message_id)),
        )
    ).scalar_one())


def customer_events(
    session: Session,
    customer_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
    exclude: Iterable[str] = (),
) -> list[Event]:
    """The customer's audit events (their tickets' too) but the `exclude` kinds, newest
    `limit` in the period, oldest first."""
    query = select(Event).where(Event.customer_id == customer_id)
    if exclude:
        # In the query, so that the limit counts only the events wanted.
        query = query.where(Event.kind.not_in(list(exclude)))  # type: ignore[attr-defined]
    if since is not None:
        query = query.where(Event.created_at >= since)
    if until is not None:
        query = query.where(Event.created_at < until)
    return list(session.execute(query.order_by(Event.id.desc()).limit(limit)).scalars())[::-1]


def ticket_events(session: Session, ticket: models.Ticket, *, limit: int = 1000) -> list[Event]:
    """The ticket's audit trail, oldest first: what was done on it, and the customer-wide
    actions (merges, identity links) that are on no ticket; the newest `limit` of them."""
    query = select(Event).where(or_(
        Event.ticket_id == ticket.id,
        and_(Event.customer_id == ticket.customer_id, Event.ticket_id.is_(None))))  # type: ignore[union-attr]
    return list(session.execute(query.order_by(Event.id.desc()).limit(limit)).scalars())[::-1]


def recent_inbound(session: Session, period: timedelta) -> dict[str, int]:
    """Messages received per connector in the last `period` (by the time they were stored)."""
    rows = session.execute(
        select(Message.connector, func.count())
        .where(Message.direction == "in", Message.received_at >= utcnow() - period)
        .group_by(Message.connector)
    )
    return {connector or "": int(n) for connector, n in rows}


def outbox_backlog(session: Session) -> dict[str, int]:
    """Replies waiting, being sent, failed and unknown (to check by hand)."""
    counts = dict.fromkeys(("queued", "sending", "failed", "unknown"), 0)
    for status, n in session.execute(
        select(Message.status, func.count())
        .where(Message.direction == "out", Message.status.in_(tuple(counts)))
        .group_by(Message.status)
    ):
        counts[status] = int(n)
    return counts


def recent_customers(session: Session, *, limit: int = 50) -> list[Customer]:
    """Customers (not merged away) by latest activity, from the updated_at index."""
    return list(
        session.execute(
            select(Customer)
            .where(Customer.merged_into.is_(None))
            .order_by(Customer.updated_at.desc(), Customer.id.desc())
            .limit(limit)
        ).scalars()
    )


def customer_identities(session: Session, customer_ids: Sequence[int]) -> dict[int, list[Identity]]:
    result: dict[int, list[Identity]] = {cid: [] for cid in customer_ids}
    if not customer_ids:
        return result
    for identity in session.execute(
        select(Identity).where(Identity.customer_id.in_(list(customer_ids))).order_by(Identity.id)
    ).scalars():
        result[identity.customer_id].append(identity)
    return result


def record_event(
    session: Session,
    kind: str,
    /,
    *,
    actor: str,
    ticket_id: int | None = None,
    customer_id: int | None = None,
    **data: Any,
) -> Event:
    """Add an audit Event (status, assignment, tags, delivery, edits …) to the session."""
    audit = Event(
        created_at=utcnow(), kind=kind, actor=actor, ticket_id=ticket_id,
        customer_id=customer_id, data=json.dumps(data, default=str),
    )
    session.add(audit)
    return audit


def get_cursor(session: Session, connector: str) -> dict[str, Any] | None:
    state = session.get(SyncState, connector)
    return json.loads(state.cursor) if state is not None else None


def save_cursor(session: Session, connector: str, cursor: dict[str, Any] | None) -> None:
    """Record a connector's cursor (inside the caller's transaction)."""
    now = utcnow()
    encoded = json.dumps(cursor or {}, sort_keys=True, default=str)
    state = session.get(SyncState, connector)
    if state is None:
        session.add(
            SyncState(connector=connector, cursor=encoded, updated_at=now, last_success_at=now)
        )
    else:
        state.cursor = encoded
        state.updated_at = now
        state.last_success_at = now
        state.last_error = None
    session.flush()


def summary(session: Session) -> dict[str, int]:
    """Counts of what the store holds, for `desk status` and `desk demo --no-tui`."""
    def count(model: type[SQLModel], *where: Any) -> int:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    return {
        "customers": count(Customer, Customer.merged_into.is_(None)),
        "tickets": count(Ticket),
        "open": count(Ticket, Ticket.status == "open"),
        "messages": count(Message),
        "queued": count(Message, Message.status.in_(("queued", "sending"))),
        "failed": count(Message, Message.status == "failed"),
    }
