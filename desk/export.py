"""`desk export`: the whole store as JSON Lines, a stable interface (documented in README.md).

One object per line with a `type` of customer, ticket or message. Rows are streamed in id
order a page at a time, so exporting a million messages holds one page in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from sqlalchemy import select
from sqlmodel import Session

from desk.models import Attachment, Customer, Event, Identity, Message, Ticket
from desk.timeutil import iso

PAGE = 1000


def _pages(session: Session, model: Any) -> Iterator[list[Any]]:
    last_id = 0
    while True:
        rows = session.execute(
            select(model).where(model.id > last_id).order_by(model.id).limit(PAGE)
        ).scalars().all()
        if not rows:
            return
        yield list(rows)
        last_id = rows[-1].id
        session.expunge_all()


def customer_record(customer: Customer, identities: list[Identity]) -> dict[str, Any]:
    return {
        "type": "customer",
        "id": customer.id,
        "name": customer.name,
        "identities": [{"kind": i.kind, "value": i.value} for i in identities],
        "merged_into": customer.merged_into,
    }


def ticket_record(ticket: Ticket) -> dict[str, Any]:
    return {
        "type": "ticket",
        "id": ticket.id,
        "customer_id": ticket.customer_id,
        "status": ticket.status,
        "assignee": ticket.assignee,
        "priority": ticket.priority,
        "tags": [tag for tag in ticket.tags.split(",") if tag],
        "subject": ticket.subject,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
    }


def event_record(event: Event) -> dict[str, Any]:
    """An audit event, as `desk tickets show --events --json` prints it."""
    return {
        "type": "event",
        "id": event.id,
        "created_at": iso(event.created_at),
        "kind": event.kind,
        "actor": event.actor,
        "ticket_id": event.ticket_id,
        "customer_id": event.customer_id,
        "data": json.loads(event.data or "{}"),
    }


def message_record(message: Message, attachments: list[Attachment]) -> dict[str, Any]:
    return {
        "type": "message",
        "id": message.id,
        "ticket_id": message.ticket_id,
        "customer_id": message.customer_id,
        "channel": message.channel,
        "direction": message.direction,
        "connector": message.connector,
        "provider_id": message.provider_id,
        "sender": message.sender,
        "subject": message.subject,
        "text": message.text,
        "sent_at": iso(message.sent_at),
        "status": message.status,
        "error": message.error,
        "flags": [flag for flag in message.flags.split(",") if flag],
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size,
             "sha256": a.sha256}
            for a in attachments
        ],
    }


def export(session: Session, out: TextIO) -> dict[str, int]:
    """Write every customer, then every ticket, then every message; returns the counts."""
    counts = {"customer": 0, "ticket": 0, "message": 0}

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts[record["type"]] += 1

    for customers in _pages(session, Customer):
        identities: dict[int, list[Identity]] = {c.id: [] for c in customers}
        for identity in session.execute(
            select(Identity).where(Identity.customer_id.in_(list(identities)))
            .order_by(Identity.id)
        ).scalars():
            identities[identity.customer_id].append(identity)
        for customer in customers:
            emit(customer_record(customer, identities[customer.id]))
    for tickets in _pages(session, Ticket):
        for ticket in tickets:
            emit(ticket_record(ticket))
    message_columns = [c for c in Message.__table__.columns if c.name not in ("raw", "html")]
    last_id = 0
    while True:
        rows = session.execute(
            select(*message_columns).where(Message.id > last_id).order_by(Message.id).limit(PAGE)
        ).all()
        if not rows:
            break
        ids = [row.id for row in rows]
        attachments: dict[int, list[Attachment]] = {}
        for attachment in session.execute(
            select(Attachment.message_id, Attachment.filename, Attachment.content_type,
                   Attachment.size, Attachment.sha256).where(Attachment.message_id.in_(ids))
            .order_by(Attachment.id)
        ):
            attachments.setdefault(attachment.message_id, []).append(attachment)
        for row in rows:
            emit(message_record(row, attachments.get(row.id, [])))  # type: ignore[arg-type]
        last_id = ids[-1]
    return counts
