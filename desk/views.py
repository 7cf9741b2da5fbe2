"""What the app shows, read from the store: plain data, no Textual, testable on its own.

Each function opens its own short session, so the app can call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from desk.models import Customer, Event, Identity, Message, Ticket
from desk.store import (
    Store,
    customer_identities,
    customer_names,
    queue_counts,
    queue_size,
    ticket_messages,
    ticket_page,
)
from desk.tickets import ticket_events, tickets_of_customer


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


@dataclass(frozen=True, slots=True)
class Conversation:
    ticket: Ticket
    customer: Customer
    identities: list[Identity]
    messages: list[Message]  # the newest page, oldest first
    earlier: int  # how many older messages are not loaded
    events: list[Event]
    other_tickets: list[Ticket]


RowLoader = Callable[[int, int], tuple[int, list[TicketRow]]]


def queue_figures(store: Store, agent: str) -> dict[str, int]:
    with store.session() as session:
        return queue_counts(session, agent)


def ticket_rows(
    store: Store, queue: str, agent: str, offset: int, limit: int
) -> tuple[int, list[TicketRow]]:
    """The queue's size and `limit` rows from `offset`, newest activity first."""
    with store.session() as session:
        total = queue_size(session, queue=queue, agent=agent)
        tickets = ticket_page(session, queue=queue, agent=agent, offset=offset, limit=limit)
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
        )
        for t in tickets
    ]


def conversation(store: Store, ticket_id: int, limit: int = 50) -> Conversation | None:
    with store.session() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            return None
        customer = session.get(Customer, ticket.customer_id)
        assert customer is not None
        messages = ticket_messages(session, ticket_id, limit=limit)
        return Conversation(
            ticket=ticket,
            customer=customer,
            identities=customer_identities(session, [customer.id])[customer.id],  # type: ignore[index]
            messages=messages,
            earlier=max(0, ticket.message_count - len(messages)),
            events=ticket_events(session, ticket_id, limit=100),
            other_tickets=[
                t for t in tickets_of_customer(session, customer.id, limit=20)  # type: ignore[arg-type]
                if t.id != ticket_id
            ],
        )
