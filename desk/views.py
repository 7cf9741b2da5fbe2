"""What the app shows, read from the store: plain data, no Textual, testable on its own.

Each function opens its own short session, so the app can call it from a worker thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select

from desk.attachments import AttachmentInfo, attachments_of
from desk.identity import suggestions
from desk.models import Customer, Event, Identity, Message, Presence, Ticket
from desk.outbox import unseen_changes
from desk.presence import others_on
from desk.store import (
    Store,
    channel_counts,
    customer_events,
    customer_identities,
    customer_names,
    customer_timeline,
    earlier_count,
    queue_counts,
    queue_size,
    tag_counts,
    ticket_page,
)
from desk.ticket_figures import snippet
from desk.tickets import tickets_of_customer


@dataclass(frozen=True, slots=True)
class TicketRow:
    id: int
    customer_id: int
    customer_name: str
    status: str
    assignee: str | None
    priority: str
    title: str
    snippet: str
    channels: tuple[str, ...]
    last_message_at: datetime
    waiting_since: datetime | None
    unread: int
    tags: tuple[str, ...]
    # For the SLA mark (desk.sla.overdue), worked out when the row is painted.
    created_at: datetime | None = None
    first_inbound_at: datetime | None = None
    first_response_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    """One ticket opened: its customer's messages on every channel and ticket, with events."""

    ticket: Ticket
    customer: Customer
    identities: list[Identity]
    entries: list[Message | Event]  # oldest first: the newest page of messages, with events
    earlier: int  # older messages of the customer not loaded
    tickets: dict[int, Ticket]  # every ticket an entry belongs to, by id
    other_tickets: list[Ticket]  # the customer's other tickets, newest first
    others_active: list[Presence]  # other agents writing on this ticket now
    # The attachments of the loaded messages, by message id (names and sizes, no content).
    attachments: dict[int, list[AttachmentInfo]] = field(default_factory=dict)

    @property
    def messages(self) -> list[Message]:
        return [entry for entry in self.entries if isinstance(entry, Message)]

    @property
    def oldest(self) -> tuple[datetime, int] | None:
        first = next(iter(self.messages), None)
        return (first.sent_at, first.id) if first is not None else None  # type: ignore[return-value]

    @property
    def latest_message_id(self) -> int:
        return max((m.id or 0 for m in self.messages), default=0)


# Events the timeline shows as the message itself (a reply, a note, its delivery status)
# rather than as a line of their own.
SHOWN_ON_MESSAGES = frozenset({"delivery_failed", "reply", "note"})

RowLoader = Callable[[int, int], tuple[int, list[TicketRow]]]


def queue_figures(store: Store, agent: str, channels: Iterable[str]) -> QueueFigures:
    with store.session() as session:
        return QueueFigures(
            statuses=queue_counts(session, agent),
            channels=channel_counts(session, channels),
            tags=tag_counts(session),
        )


@dataclass(frozen=True, slots=True)
class QueueFigures:
    statuses: dict[str, int]  # the QUEUES, with mine and unassigned
    channels: dict[str, int]  # open tickets per channel
    tags: dict[str, int]  # open tickets per tag

    def count(self, queue: str) -> int | None:
        kind, _, name = queue.partition(":")
        if kind == "channel":
            return self.channels.get(name)
        if kind == "tag":
            return self.tags.get(name)
        return self.statuses.get(queue)


def queue_filter(queue: str) -> dict[str, str | None]:
    """A queue name as the app knows it (`open`, `channel:sms`, `tag:billing`) as the keyword
    arguments of `store.ticket_page`: channel and tag queues hold open tickets."""
    kind, _, name = queue.partition(":")
    if kind == "channel":
        return {"queue": "open", "channel": name, "tag": None}
    if kind == "tag":
        return {"queue": "open", "channel": None, "tag": name}
    return {"queue": queue, "channel": None, "tag": None}


class Prefetch:
    """A queue's first page read in a thread while the app starts, handed to the list."""

    def __init__(self, store: Store, queue: str, agent: str, limit: int) -> None:
        self.queue, self.limit = queue, limit
        self._future: Future[tuple[int, list[TicketRow]]] = Future()
        thread = threading.Thread(target=self._run, args=(store, queue, agent, limit),
                                  daemon=True, name="desk-prefetch")
        thread.start()

    def _run(self, store: Store, queue: str, agent: str, limit: int) -> None:
        try:
            self._future.set_result(ticket_rows(store, queue, agent, 0, limit))
        except Exception as error:  # handed to the list's worker, which reports it
            self._future.set_exception(error)

    def loader_with(self, fallback: RowLoader) -> RowLoader:
        """`fallback`, except that the first request for the first page takes the prefetch."""
        used = False

        def load(offset: int, limit: int) -> tuple[int, list[TicketRow]]:
            nonlocal used
            if not used and offset == 0 and limit == self.limit:
                used = True
                return self._future.result()
            return fallback(offset, limit)

        return load


def ticket_rows(
    store: Store, queue: str, agent: str, offset: int, limit: int
) -> tuple[int, list[TicketRow]]:
    """The queue's size and `limit` rows from `offset`, newest activity first."""
    where = queue_filter(queue)
    with store.session() as session:
        total = queue_size(session, agent=agent, **where)  # type: ignore[arg-type]
        tickets = ticket_page(session, agent=agent, offset=offset, limit=limit, **where)  # type: ignore[arg-type]
        names = customer_names(session, (t.customer_id for t in tickets))
    return total, [
        TicketRow(
            id=t.id,  # type: ignore[arg-type]
            customer_id=t.customer_id,
            customer_name=names.get(t.customer_id, ""),
            status=t.status,
            assignee=t.assignee,
            priority=t.priority,
            title=t.subject or t.snippet,
            snippet=t.snippet,
            channels=tuple(c for c in t.channels.split(",") if c),
            last_message_at=t.last_message_at,
            waiting_since=t.waiting_since,
            unread=t.unread_count,
            tags=tuple(tag for tag in t.tags.split(",") if tag),
            created_at=t.created_at,
            first_inbound_at=t.first_inbound_at,
            first_response_at=t.first_response_at,
        )
        for t in tickets
    ]


def timeline(
    store: Store,
    ticket_id: int,
    *,
    agent: str,
    limit: int = 50,
    before: tuple[datetime, int] | None = None,
) -> Timeline | None:
    """The customer's newest `limit` messages across channels and tickets (older than `before`
    when paging back), with the events of the same stretch of time."""
    with store.session() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            return None
        customer = session.get(Customer, ticket.customer_id)
        assert customer is not None
        customer_id: int = customer.id  # type: ignore[assignment]
        messages = customer_timeline(session, customer_id, limit=limit, before=before)
        earlier = 0
        if messages:
            earlier = earlier_count(session, customer_id, (messages[0].sent_at, messages[0].id))  # type: ignore[arg-type]
        events = customer_events(
            session,
            customer_id,
            since=messages[0].sent_at if messages and earlier else None,
            until=before[0] if before else None,
            exclude=SHOWN_ON_MESSAGES,
        )
        entries: list[Message | Event] = sorted(
            [*messages, *events], key=lambda e: (_moment(e), isinstance(e, Event), e.id)
        )
        ticket_ids = {m.ticket_id for m in messages if m.ticket_id is not None} | {ticket_id}
        all_tickets = {t.id: t for t in tickets_of_customer(session, customer_id, limit=50)}
        missing = ticket_ids - set(all_tickets)
        for extra in missing:
            found = session.get(Ticket, extra)
            if found is not None:
                all_tickets[extra] = found
        return Timeline(
            ticket=ticket,
            customer=customer,
            identities=customer_identities(session, [customer_id])[customer_id],
            entries=entries,
            earlier=earlier,
            tickets=all_tickets,  # type: ignore[arg-type]
            other_tickets=[t for t in all_tickets.values() if t.id != ticket_id],
            others_active=others_on(session, ticket_id, agent),
            attachments=attachments_of(session, (m.id for m in messages)),  # type: ignore[misc]
        )


def _moment(entry: Message | Event) -> datetime:
    return entry.sent_at if isinstance(entry, Message) else entry.created_at


def describe_event(event: Event) -> str:
    """An audit event in a few words, for the timeline."""
    data = json.loads(event.data or "{}")
    who = event.actor or "system"
    kind = event.kind
    if kind == "status":
        until = f" until {data['until'][:16].replace('T', ' ')}" if data.get("until") else ""
        return f"{who} set #{event.ticket_id} {data.get('before')} → {data.get('after')}{until}"
    if kind == "assign":
        after = data.get("after")
        return f"{who} assigned #{event.ticket_id} to {after}" if after else (
            f"{who} unassigned #{event.ticket_id}")
    if kind == "priority":
        return f"{who} set #{event.ticket_id} priority {data.get('before')} → {data.get('after')}"
    if kind == "tags":
        tags = ", ".join(data.get("after") or []) or "none"
        return f"{who} tagged #{event.ticket_id}: {tags}"
    if kind == "merge":
        why = f" ({data['reason']})" if data.get("reason") else ""
        return f"{who} merged customer #{data.get('source')} into this one{why}"
    if kind == "unmerge":
        return f"{who} unmerged customer #{data.get('source')}"
    if kind == "identity_linked":
        return f"{who} linked {data.get('kind')} {data.get('value')} ({data.get('reason', '')})"
    if kind == "retry":
        return f"{who} retried message {data.get('message_id')}"
    if kind == "reply":
        return (f"{who} replied on {data.get('channel')} to {data.get('to')}"
                f" (message {data.get('message_id')})")
    if kind == "note":
        return f"{who} added a note (message {data.get('message_id')})"
    if kind == "message_edited":
        return f"the customer edited message {data.get('message_id')}"
    if kind == "delivery_failed":
        return f"message {data.get('message_id')} could not be delivered: {data.get('error')}"
    return f"{who}: {kind}"


def changes_since(store: Store, customer_id: int, after_id: int, agent: str) -> list[Message]:
    """What would make a reply written since message `after_id` blind (see
    `outbox.unseen_changes`)."""
    with store.session() as session:
        return unseen_changes(session, customer_id, after_id, agent)


def latest_message_id(store: Store, customer_id: int) -> int:
    with store.session() as session:
        return int(session.execute(
            select(func.max(Message.id)).where(Message.customer_id == customer_id)
        ).scalar() or 0)


def newest_message_id(store: Store) -> int:
    with store.session() as session:
        return int(session.execute(select(func.max(Message.id))).scalar() or 0)


@dataclass(frozen=True, slots=True)
class Arrival:
    """A customer's message on a ticket assigned to the agent (a notification)."""

    message_id: int
    ticket_id: int
    customer_name: str
    channel: str
    snippet: str


def arrivals_for(store: Store, agent: str, after_id: int, limit: int = 20) -> list[Arrival]:
    """Customers' messages newer than `after_id` on open tickets assigned to `agent`."""
    with store.session() as session:
        rows = session.execute(
            select(Message.id, Message.ticket_id, Customer.name, Message.channel, Message.text)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .join(Customer, Customer.id == Message.customer_id)
            .where(Message.id > after_id, Message.direction == "in",
                   Ticket.assignee == agent)
            .order_by(Message.id)
            .limit(limit)
        ).all()
    return [Arrival(row[0], row[1], row[2], row[3], snippet(row[4])) for row in rows]


def failed_messages(store: Store, ticket_id: int) -> list[Message]:
    with store.session() as session:
        return list(session.execute(
            select(Message)
            .where(Message.ticket_id == ticket_id, Message.direction == "out",
                   Message.status.in_(("failed", "unknown")))
            .order_by(Message.id.desc())
        ).scalars())


@dataclass(frozen=True, slots=True)
class CustomerMatch:
    customer_id: int
    name: str
    identities: list[str]
    evidence: str  # why desk suggests them, or "" for a search result


def merge_candidates(
    store: Store, customer_id: int, text: str, *, region: str, limit: int = 20
) -> list[CustomerMatch]:
    """Customers the agent may merge into this one: desk's suggestions (with their evidence)
    when `text` is empty, else customers whose name or identity contains `text`."""
    with store.session() as session:
        found: dict[int, str] = {}
        if not text.strip():
            for hint in suggestions(session, customer_id, region=region):
                found.setdefault(hint.other_id, hint.evidence)
        else:
            needle = f"%{text.strip().lower()}%"
            by_identity = select(Identity.customer_id).where(Identity.value.like(needle))
            for other in session.execute(
                select(Customer.id)
                .where(
                    or_(func.lower(Customer.name).like(needle), Customer.id.in_(by_identity)),
                    Customer.merged_into.is_(None),
                    Customer.id != customer_id,
                )
                .order_by(Customer.updated_at.desc())
                .limit(limit)
            ).scalars():
                found.setdefault(other, "")
        ids = [other for other in found if other != customer_id][:limit]
        names = customer_names(session, ids)
        identities = customer_identities(session, ids)
        return [
            CustomerMatch(other, names.get(other, ""),
                          [f"{i.kind} {i.value}" for i in identities.get(other, [])],
                          found[other])
            for other in ids
        ]


@dataclass(frozen=True, slots=True)
class MergedCustomer:
    customer_id: int
    name: str
    reason: str
    merged_at: datetime


def merged_into(store: Store, customer_id: int) -> list[MergedCustomer]:
    """Customers merged into this one that can be unmerged, newest merge first."""
    with store.session() as session:
        merges = session.execute(
            select(Event)
            .where(Event.customer_id == customer_id, Event.kind == "merge")
            .order_by(Event.id.desc())
            .limit(50)
        ).scalars().all()
        result = []
        for merge_event in merges:
            data = json.loads(merge_event.data)
            source = session.get(Customer, data.get("source"))
            if source is not None and source.merged_into == customer_id:
                result.append(MergedCustomer(source.id, source.name, data.get("reason", ""),  # type: ignore[arg-type]
                                             merge_event.created_at))
        return result
