"""InboundMessage batches -> customer, ticket and message rows, idempotently.

A batch is stored in one transaction together with the connector's cursor, so a crash at any
point neither loses nor doubles a message. The batch is resolved and routed in memory first
(a handful of indexed look-ups), then written with bulk inserts and one executemany per table:
per-object ORM work would cost ~12x on this path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlmodel import Session

from connectors.base import (
    CHANNEL_IDENTITY_KIND,
    FLAG_AUTO_REPLY,
    FLAG_BOUNCE,
    FLAG_EDITED,
    FLAG_OWN,
    InboundMessage,
)
from desk import dialects, ticket_figures
from desk import identity as identities
from desk.message_size import DEFAULT_MAX_MESSAGE_BYTES, within_limit
from desk.models import (
    LIVE_STATUSES,
    Attachment,
    Blob,
    Customer,
    Event,
    Identity,
    Message,
    Ticket,
)
from desk.store import Store, record_event, save_cursor
from desk.tickets import Candidate, clean_subject, route, subject_tokens
from desk.timeutil import to_store, utcnow

_CHUNK = 400  # bound IN (...) lists well under every backend's parameter limit
UNKNOWN_SENDER = "(unknown sender)"


@dataclass(slots=True)
class IngestOptions:
    region: str = "US"
    reopen_window: timedelta = timedelta(days=7)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


@dataclass(slots=True)
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    edited: int = 0
    customers_created: int = 0
    tickets_opened: int = 0
    tickets_reopened: int = 0
    message_ids: list[int] = field(default_factory=list)
    ticket_ids: set[int] = field(default_factory=set)

    def add(self, other: IngestResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.edited += other.edited
        self.customers_created += other.customers_created
        self.tickets_opened += other.tickets_opened
        self.tickets_reopened += other.tickets_reopened
        self.message_ids += other.message_ids
        self.ticket_ids |= other.ticket_ids


def ingest(
    store: Store,
    messages: Sequence[InboundMessage],
    *,
    connector: str | None = None,
    cursor: Mapping[str, Any] | None = None,
    options: IngestOptions | None = None,
) -> IngestResult:
    """Store a batch (and `connector`'s cursor after it) in one transaction."""
    return store.write(
        lambda session: ingest_in_session(
            session, messages, connector=connector, cursor=cursor, options=options
        )
    )


# --------------------------------------------------------------------------------------------
# In-memory working state


@dataclass(slots=True, eq=False)
class _Customer:
    id: int | None
    name: str
    new: bool = False
    touched: bool = False
    renamed: bool = False


@dataclass(slots=True, eq=False)
class _Ticket:
    row: dict[str, Any]
    customer: _Customer
    new: bool = False
    changed: bool = False
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def candidate(self) -> Candidate:
        return Candidate(
            key=self,
            customer_key=self.customer,
            status=self.row["status"],
            resolved_at=self.row["resolved_at"],
            last_message_at=self.row["last_message_at"],
        )


@dataclass(slots=True)
class _Thread:
    ticket: _Ticket | None
    customer: _Customer
    direction: str


_MUTABLE_TICKET_FIELDS = [
    "status", "resolved_at", "snoozed_until", "last_message_at", "last_inbound_at",
    "last_outbound_at", "waiting_since", "first_inbound_at", "first_response_at",
    "first_response_seconds", "resolution_seconds", "resolved_channel", "reopen_count",
    "reopened_at", "message_count", "unread_count", "snippet", "channels", "channel_path",
    "customer_channels", "last_channel", "updated_at",
]  # fmt: skip
_TICKET_COLUMNS = [
    Ticket.id, Ticket.customer_id, Ticket.subject, Ticket.created_at,  # type: ignore[list-item]
    *(getattr(Ticket, name) for name in _MUTABLE_TICKET_FIELDS if name != "updated_at"),
]


def _table(model: Any) -> Table:
    return model.__table__


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class _Batch:
    """One batch being resolved, routed and written."""

    def __init__(self, session: Session, options: IngestOptions) -> None:
        self.session = session
        self.options = options
        self.now = utcnow()
        self.result = IngestResult()
        self.customers_by_identity: dict[tuple[str, str], _Customer] = {}
        self.customers_by_id: dict[int, _Customer] = {}
        self.new_identities: list[tuple[_Customer, str, str, str | None, str]] = []
        self.tickets_by_id: dict[int, _Ticket] = {}
        self.tickets_by_customer: dict[_Customer, list[_Ticket]] = {}
        self.threads: dict[str, _Thread] = {}
        self.message_rows: list[
            tuple[dict[str, Any], _Customer, _Ticket | None, InboundMessage]
        ] = []
        self.identity_events: list[tuple[_Customer, dict[str, Any]]] = []

    # ---- look-ups ---------------------------------------------------------------------------

    def load(self, prepared: list[tuple[InboundMessage, str, str, str]]) -> None:
        session = self.session
        wanted: dict[str, set[str]] = {}
        for message, _direction, kind, value in prepared:
            wanted.setdefault(kind, set()).add(value)
            for evidence_kind, evidence_value in self.evidence_of(message):
                wanted.setdefault(evidence_kind, set()).add(evidence_value)
        for kind, values in wanted.items():
            for chunk in _chunks(sorted(values)):
                for value, customer_id, name in session.execute(
                    select(Identity.value, Identity.customer_id, Customer.name)
                    .join(Customer, Customer.id == Identity.customer_id)
                    .where(Identity.kind == kind, Identity.value.in_(chunk))
                ):
                    self.customers_by_identity[(kind, value)] = self._customer(customer_id, name)

        refs: set[str] = set()
        token_ids: set[int] = set()
        for message, _direction, _kind, _value in prepared:
            if message.channel == "email":
                refs.update(filter(None, [message.in_reply_to, *message.references]))
                token_ids.update(subject_tokens(message.subject))
        for chunk in _chunks(sorted(refs)):
            for provider_id, ticket_id, customer_id, direction, name in session.execute(
                select(Message.provider_id, Message.ticket_id, Message.customer_id,
                       Message.direction, Customer.name)
                .join(Customer, Customer.id == Message.customer_id)
                .where(Message.provider_id.in_(chunk))
            ):
                self.threads.setdefault(
                    provider_id, _Thread(ticket_id, self._customer(customer_id, name), direction)
                )  # type: ignore[arg-type]
        thread_ticket_ids = {t.ticket for t in self.threads.values() if t.ticket is not None}
        self._load_tickets(Ticket.id.in_(sorted(thread_ticket_ids | token_ids)))  # type: ignore[arg-type]
        for thread in self.threads.values():
            thread.ticket = self.tickets_by_id.get(thread.ticket) if thread.ticket else None  # type: ignore[arg-type,call-overload]

        # With the customers of threaded messages: an unknown address answering our message
        # becomes that customer, and must join their live ticket like any other mail of theirs.
        customer_ids = sorted({c.id for c in self.customers_by_identity.values() if c.id}
                              | {t.customer.id for t in self.threads.values() if t.customer.id})
        times = [to_store(m.sent_at) or self.now for m, *_ in prepared]
        cutoff = min(times) - self.options.reopen_window
        for chunk in _chunks(customer_ids):
            self._load_tickets(
                Ticket.customer_id.in_(chunk),
                or_(Ticket.status.in_(LIVE_STATUSES), Ticket.resolved_at >= cutoff),
            )

    def _customer(self, customer_id: int, name: str) -> _Customer:
        customer = self.customers_by_id.get(customer_id)
        if customer is None:
            customer = self.customers_by_id[customer_id] = _Customer(customer_id, name)
        return customer

    def _load_tickets(self, *where: Any) -> None:
        # The customer's name comes along, so no customer is looked up one row at a time.
        query = (
            select(*_TICKET_COLUMNS, Customer.name.label("customer_name"))
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(*where)
        )
        for found in self.session.execute(query).mappings():
            if found["id"] in self.tickets_by_id:
                continue
            row = dict(found)
            customer = self._customer(row["customer_id"], row.pop("customer_name"))
            ticket = _Ticket(row, customer)
            self.tickets_by_id[row["id"]] = ticket
            self.tickets_by_customer.setdefault(ticket.customer, []).append(ticket)

    # ---- resolution and routing ---------------------------------------------------------------

    def thread_of(self, message: InboundMessage, customer: _Customer | None) -> _Thread | None:
        if message.channel != "email":
            return None
        for ref in filter(None, [message.in_reply_to, *reversed(message.references)]):
            thread = self.threads.get(ref)
            if thread is not None and thread.ticket is not None:
                return thread
        # A [#id] token is easy to type, so it only threads within the sender's own tickets.
        for ticket_id in subject_tokens(message.subject):
            ticket = self.tickets_by_id.get(ticket_id)
            if ticket is not None and customer is not None and ticket.customer is customer:
                return _Thread(ticket, customer, "in")
        return None

    def customer_for(
        self, message: InboundMessage, direction: str, kind: str, value: str
    ) -> _Customer:
        key = (kind, value)
        customer = self.customers_by_identity.get(key)
        if customer is not None:
            return customer
        display_name = message.sender_name if direction == "in" else None
        thread = self.thread_of(message, None)
        known = [
            (evidence, self.customers_by_identity[evidence])
            for evidence in self.evidence_of(message)
            if evidence in self.customers_by_identity
        ]
        if known and direction == "in":
            # Strong evidence on a first message (a Telegram user sharing their own contact):
            # the new identity joins the customer who owns that phone before routing, so the
            # message lands in that customer's live ticket instead of opening a second one.
            (evidence_kind, evidence_value), customer = known[0]
            source = "evidence"
            self.identity_events.append(
                (customer, {"kind": kind, "value": value,
                            "reason": f"shared {evidence_kind} {evidence_value} as their own"})
            )
        elif thread is not None and thread.direction == "out" and direction == "in":
            # Strong evidence: an unknown address answering a message we sent to a customer.
            customer = thread.customer
            source = "reply"
            self.identity_events.append(
                (customer, {"kind": kind, "value": value,
                            "reason": f"answered our message {message.in_reply_to or ''}".strip()})
            )
        else:
            customer = _Customer(None, display_name or message.sender_display or value
                                 or UNKNOWN_SENDER, new=True)
            self.result.customers_created += 1
            source = "message"
        self.customers_by_identity[key] = customer
        display = message.sender_display or message.sender_name if direction == "in" else None
        self.new_identities.append((customer, kind, value, display, source))
        return customer

    def evidence_of(self, message: InboundMessage) -> list[tuple[str, str]]:
        found = []
        for evidence in message.evidence:
            try:
                found.append(
                    (evidence.kind,
                     identities.normalize(evidence.kind, evidence.value, self.options.region))
                )
            except identities.IdentityError:
                continue
        return found

    def place(self, message: InboundMessage, direction: str, kind: str, value: str) -> None:
        customer = self.customer_for(message, direction, kind, value)
        sent_at = to_store(message.sent_at) or self.now
        thread = self.thread_of(message, customer)
        threaded = thread.ticket.candidate() if thread and thread.ticket else None
        own_tickets = [t.candidate() for t in self.tickets_by_customer.get(customer, [])]
        automatic = bool(message.flags & {FLAG_AUTO_REPLY, FLAG_BOUNCE})
        decision = route(
            sent_at=sent_at,
            threaded=threaded,
            customer_tickets=own_tickets,
            reopen_window=self.options.reopen_window,
            may_open=not automatic,
        )
        ticket: _Ticket | None = decision.ticket.key if decision.ticket else None  # type: ignore[assignment]
        if decision.action == "new":
            ticket = self._new_ticket(customer, message, sent_at)
        elif decision.action == "reopen" and ticket is not None and direction == "in":
            ticket.events.append(("status", {"before": ticket.row["status"], "after": "open",
                                             "reason": "customer wrote again"}))
            ticket_figures.reopen(ticket.row, sent_at)
            ticket.row["snoozed_until"] = None
            self.result.tickets_reopened += 1
        elif (
            ticket is not None
            and direction == "in"
            and not automatic
            and ticket.row["status"] in ("pending", "snoozed")
        ):
            ticket.events.append(("status", {"before": ticket.row["status"], "after": "open",
                                             "reason": "customer wrote again"}))
            ticket.row.update(status="open", snoozed_until=None)
        if ticket is not None:
            self._account(ticket, message, direction, sent_at, automatic=automatic)
        if (
            direction == "in"
            and customer.id is not None
            and message.sender_name
            and _placeholder_name(customer.name)
        ):
            customer.name = message.sender_name
            customer.renamed = True
        customer.touched = True
        row = self._message_row(message, direction, sent_at, value)
        self.message_rows.append((row, customer, ticket, message))
        if message.provider_id:
            self.threads.setdefault(message.provider_id, _Thread(ticket, customer, direction))

    def _new_ticket(self, customer: _Customer, message: InboundMessage, sent_at: Any) -> _Ticket:
        row = {
            "id": None, "customer_id": None, "status": "open",
            "subject": clean_subject(message.subject),
            "resolved_at": None, "snoozed_until": None, "created_at": sent_at,
            **ticket_figures.fresh(sent_at),
        }  # fmt: skip
        ticket = _Ticket(row, customer, new=True)
        self.tickets_by_customer.setdefault(customer, []).append(ticket)
        self.result.tickets_opened += 1
        return ticket

    @staticmethod
    def _account(
        ticket: _Ticket, message: InboundMessage, direction: str, sent_at: Any, *,
        automatic: bool = False,
    ) -> None:
        ticket.changed = True
        ticket_figures.account(ticket.row, channel=message.channel, direction=direction,
                               sent_at=sent_at, text=message.text, automatic=automatic)

    def _message_row(
        self, message: InboundMessage, direction: str, sent_at: Any, value: str
    ) -> dict[str, Any]:
        return {
            "channel": message.channel,
            "direction": direction,
            "connector": message.connector,
            "provider_id": message.provider_id,
            "sender": message.sender,
            "sender_name": message.sender_name,
            "recipient": value if direction == "out" else None,
            "recipients": json.dumps(message.recipients) if message.recipients else None,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "sent_at": sent_at,
            "received_at": self.now,
            "status": "received" if direction == "in" else "sent",
            "error": None,
            "attempts": 0,
            "next_attempt_at": None,
            "flags": ",".join(sorted(message.flags)),
            "in_reply_to": message.in_reply_to,
            "references": " ".join(message.references) or None,
            "author": None,
            "raw": message.raw,
        }

    # ---- writing -----------------------------------------------------------------------------

    def write(self) -> None:
        # Core statements on the session's connection: the ORM bulk path splits rows into
        # groups by which values are None and splices the RETURNING results group by group,
        # which turned quadratic on 5,000-row batches.
        conn = self.session.connection()
        new_customers = [c for c in self.customers_by_identity.values() if c.new and c.id is None]
        new_customers = list(dict.fromkeys(new_customers))
        if new_customers:
            ids = conn.execute(
                insert(_table(Customer)).returning(_table(Customer).c.id,
                                                   sort_by_parameter_order=True),
                [{"name": c.name, "created_at": self.now, "updated_at": self.now,
                  "merged_into": None} for c in new_customers],
            ).scalars().all()
            for customer, customer_id in zip(new_customers, ids, strict=True):
                customer.id = customer_id
        if self.new_identities:
            conn.execute(
                insert(_table(Identity)),
                [{"customer_id": c.id, "kind": kind, "value": value, "display": display,
                  "source": source, "created_at": self.now, "last_seen_at": None}
                 for c, kind, value, display, source in self.new_identities],
            )
        for customer, data in self.identity_events:
            conn.execute(insert(_table(Event)), [{
                "created_at": self.now, "kind": "identity_linked", "actor": "system",
                "ticket_id": None, "customer_id": customer.id, "data": json.dumps(data)}])

        new_tickets = [t for tickets in self.tickets_by_customer.values() for t in tickets if t.new]
        if new_tickets:
            rows = []
            for ticket in new_tickets:
                row = {k: v for k, v in ticket.row.items() if k != "id"}
                row.update(customer_id=ticket.customer.id, assignee=None, priority="normal",
                           tags="", updated_at=self.now)
                rows.append(row)
            ids = conn.execute(
                insert(_table(Ticket)).returning(_table(Ticket).c.id,
                                                 sort_by_parameter_order=True), rows
            ).scalars().all()
            for ticket, ticket_id in zip(new_tickets, ids, strict=True):
                ticket.row["id"] = ticket_id
                self.result.ticket_ids.add(ticket_id)

        if self.message_rows:
            rows = []
            for row, customer, ticket, _message in self.message_rows:
                row["customer_id"] = customer.id
                row["ticket_id"] = ticket.row["id"] if ticket is not None else None
                rows.append(row)
            # Unordered RETURNING keyed on (connector, provider_id) lets SQLAlchemy send one
            # multi-row INSERT; asking for parameter order makes it insert row by row.
            messages = _table(Message)
            returned = conn.execute(
                insert(messages).returning(messages.c.id, messages.c.connector,
                                           messages.c.provider_id),
                rows,
            ).all()
            message_id_by_key = {(c, p): message_id for message_id, c, p in returned}
            message_ids = [message_id_by_key[(row["connector"], row["provider_id"])]
                           for row, *_ in self.message_rows]
            self.result.message_ids.extend(message_ids)
            self.result.stored += len(message_ids)
            attachments = [
                (message_id, a)
                for message_id, (_row, _c, _t, message) in zip(message_ids, self.message_rows,
                                                                strict=True)
                for a in message.attachments
            ]
            if attachments:
                conn.execute(insert(_table(Attachment)), [
                    {"message_id": message_id, "filename": a.filename,
                     "content_type": a.content_type, "size": a.size, "sha256": a.sha256}
                    for message_id, a in attachments])
                blobs = {a.sha256: {"sha256": a.sha256, "size": a.size, "data": a.data}
                         for _id, a in attachments if a.data is not None}
                dialects.upsert(conn, _table(Blob), list(blobs.values()), keep_existing=True)

        changed = [
            t for t in self.tickets_by_id.values() if t.changed and not t.new
        ]
        if changed:
            table = _table(Ticket)
            conn.execute(
                update(table).where(table.c.id == bindparam("b_id")).values(
                    {name: bindparam(f"b_{name}") for name in _MUTABLE_TICKET_FIELDS}
                ),
                [{"b_id": t.row["id"], **{f"b_{name}": t.row.get(name) for name in
                  _MUTABLE_TICKET_FIELDS}, "b_updated_at": self.now} for t in changed],
            )
            self.result.ticket_ids.update(t.row["id"] for t in changed)
        events = [
            {"created_at": self.now, "kind": kind, "actor": "system", "ticket_id": t.row["id"],
             "customer_id": t.customer.id, "data": json.dumps(data)}
            for tickets in self.tickets_by_customer.values()
            for t in tickets
            for kind, data in t.events
        ]
        if events:
            conn.execute(insert(_table(Event)), events)

        touched = [c for c in self.customers_by_id.values() if c.touched]
        if touched:
            table = _table(Customer)
            conn.execute(
                update(table).where(table.c.id == bindparam("b_id")).values(
                    updated_at=bindparam("b_updated_at"), name=bindparam("b_name")),
                [{"b_id": c.id, "b_updated_at": self.now, "b_name": c.name} for c in touched],
            )


def _placeholder_name(name: str) -> bool:
    """A name we made up from an address or number, to be replaced by a real one."""
    stripped = name.strip()
    return (
        not stripped
        or stripped == UNKNOWN_SENDER
        or re.fullmatch(r"[+\d\s().-]+", stripped) is not None
        or ("@" in stripped and " " not in stripped)
    )


def _direction_and_identity(message: InboundMessage, region: str) -> tuple[str, str, str]:
    """Who the message is about: the sender, or for mail from our own address, its recipient."""
    kind = CHANNEL_IDENTITY_KIND[message.channel]
    direction = "in"
    address = message.sender
    if FLAG_OWN in message.flags and message.recipients:
        direction = "out"
        address = message.recipients[0]
    value = identities.normalize_lenient(kind, address, region) if address else ""
    return direction, kind, value


def ingest_in_session(
    session: Session,
    messages: Sequence[InboundMessage],
    *,
    connector: str | None = None,
    cursor: Mapping[str, Any] | None = None,
    options: IngestOptions | None = None,
) -> IngestResult:
    """The body of `ingest`, inside the caller's transaction."""
    options = options or IngestOptions()
    batch = _Batch(session, options)
    messages = [within_limit(_storable(m), options.max_message_bytes) for m in messages]
    fresh, edits = _dedupe(session, messages, batch.result)
    if fresh:
        prepared = [(m, *_direction_and_identity(m, options.region)) for m in fresh]
        batch.load(prepared)
        for message, direction, kind, value in prepared:
            batch.place(message, direction, kind, value)
        batch.write()
    for message in edits:
        _apply_edit(session, message, batch.result)
    for message in fresh:
        _apply_evidence(session, message, options)
    if connector is not None and cursor is not None:
        save_cursor(session, connector, dict(cursor))
    return batch.result


def _dedupe(
    session: Session, messages: Sequence[InboundMessage], result: IngestResult
) -> tuple[list[InboundMessage], list[InboundMessage]]:
    """Split a batch into messages not stored yet and edits of stored ones; count the rest."""
    by_connector: dict[str, set[str]] = {}
    for message in messages:
        by_connector.setdefault(message.connector, set()).add(message.provider_id)
    stored: set[tuple[str, str]] = set()
    for connector_name, provider_ids in by_connector.items():
        for chunk in _chunks(sorted(provider_ids)):
            stored.update(
                (connector_name, pid)
                for pid in session.execute(
                    select(Message.provider_id).where(
                        Message.connector == connector_name, Message.provider_id.in_(chunk)
                    )
                ).scalars()
            )
    fresh: dict[tuple[str, str], InboundMessage] = {}
    edits: list[InboundMessage] = []
    for message in messages:
        key = (message.connector, message.provider_id)
        if key in stored:
            if message.is_edit:
                edits.append(message)
            else:
                result.duplicates += 1
        elif key in fresh:
            if message.is_edit:
                original = fresh[key]
                original.text, original.flags = message.text, original.flags | {FLAG_EDITED}
            else:
                result.duplicates += 1
        else:
            fresh[key] = message
    return list(fresh.values()), edits


_TEXT_FIELDS = ("connector", "provider_id", "sender", "sender_name", "subject", "text", "html",
                "in_reply_to", "sender_display")


# NUL: PostgreSQL cannot store it in a text column, and terminals end strings at it. A lone
# surrogate (a decoder's escape for an undecodable byte) cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean(value: str) -> str:
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", value)


def _storable(message: InboundMessage) -> InboundMessage:
    """`message` as the store can hold it, whatever a provider or parser let through: no NUL,
    no lone surrogate in any text, and a sent time that exists in UTC (a Date of 31 Dec 9999
    -2359 does not: the receiving time stands in for it)."""
    cleaned: dict[str, Any] = {}
    texts = [(name, getattr(message, name)) for name in _TEXT_FIELDS]
    if any(value and _UNSTORABLE.search(value) for _name, value in texts):
        cleaned.update((name, _clean(value)) for name, value in texts if value)
    for name in ("recipients", "references"):
        values = getattr(message, name)
        if any(_UNSTORABLE.search(value) for value in values):
            cleaned[name] = [_clean(value) for value in values]
    if any(_UNSTORABLE.search(a.filename + a.content_type) for a in message.attachments):
        cleaned["attachments"] = [
            replace(a, filename=_clean(a.filename), content_type=_clean(a.content_type))
            for a in message.attachments]
    if any(_UNSTORABLE.search(e.value + (e.display or "")) for e in message.evidence):
        cleaned["evidence"] = [
            replace(e, value=_clean(e.value), display=_clean(e.display) if e.display else None)
            for e in message.evidence]
    if message.sent_at is not None:
        try:
            to_store(message.sent_at)
        except OverflowError:
            cleaned["sent_at"] = None
    return replace(message, **cleaned) if cleaned else message


def _apply_edit(session: Session, message: InboundMessage, result: IngestResult) -> None:
    stored = session.execute(
        select(Message).where(
            Message.connector == message.connector, Message.provider_id == message.provider_id
        )
    ).scalar_one()
    text = message.text
    if stored.text == text:
        result.duplicates += 1
        return
    before = stored.text
    stored.text = text
    stored.flags = ",".join(sorted({*filter(None, stored.flags.split(",")), FLAG_EDITED}))
    record_event(session, "message_edited", actor="system", ticket_id=stored.ticket_id,
                 customer_id=stored.customer_id, message_id=stored.id, before=before)
    if stored.ticket_id is not None:
        ticket = session.get(Ticket, stored.ticket_id)
        if ticket is not None and ticket.last_message_at == stored.sent_at:
            ticket.snippet = ticket_figures.snippet(text)
        result.ticket_ids.add(stored.ticket_id)
    session.flush()
    result.edited += 1


def _apply_evidence(session: Session, message: InboundMessage, options: IngestOptions) -> None:
    if not message.evidence:
        return
    kind = CHANNEL_IDENTITY_KIND[message.channel]
    value = identities.normalize_lenient(kind, message.sender, options.region)
    customer_id = identities.find_customer(session, kind, value)
    if customer_id is None:
        return
    for evidence in message.evidence:
        try:
            identities.link_identity(
                session,
                customer_id,
                evidence.kind,
                evidence.value,
                actor="system",
                region=options.region,
                display=evidence.display,
                reason=f"shared by {message.channel} user {message.sender} as their own",
            )
        except identities.IdentityError:
            continue
