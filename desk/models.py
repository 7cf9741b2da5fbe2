"""The store's tables (SQLModel).

Every datetime is timezone-aware UTC (SQLModel UTCDateTime): one convention for SQLite and
PostgreSQL keeps comparisons and ordering correct; `desk.timeutil` converts at the edges.
Per-ticket aggregates (last message time, snippet, counts) live on the ticket row and are updated
in the same transaction as the message, so queue lists never aggregate over messages.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

TICKET_STATUSES = ("open", "pending", "snoozed", "resolved")
LIVE_STATUSES = ("open", "pending", "snoozed")
PRIORITIES = ("low", "normal", "high", "urgent")
DIRECTIONS = ("in", "out", "note")
# Delivery states of an outbound message; inbound messages carry "received".
DELIVERY_STATUSES = ("queued", "sending", "sent", "delivered", "failed", "unknown")


class Meta(SQLModel, table=True):
    """Key/value facts about the store itself, such as the schema version."""

    key: str = Field(primary_key=True)
    value: str


class Customer(SQLModel, table=True):
    __table_args__ = (Index("ix_customer_updated", "updated_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    created_at: datetime
    updated_at: datetime
    # A merged customer stays as a tombstone pointing at the survivor, so unmerge can restore it.
    merged_into: int | None = Field(default=None, foreign_key="customer.id", index=True)


class Identity(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_identity_kind_value"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    kind: str  # email | phone | telegram
    value: str  # normalised: lower-case email with IDNA domain, E.164 phone, numeric Telegram id
    display: str | None = None  # a name or @username to show beside the value
    source: str = "message"  # message | evidence | manual | reply
    created_at: datetime
    last_seen_at: datetime | None = None


class Ticket(SQLModel, table=True):
    __table_args__ = (
        Index("ix_ticket_status_last", "status", "last_message_at", "id"),
        Index("ix_ticket_assignee_status_last", "assignee", "status", "last_message_at", "id"),
        Index("ix_ticket_customer_status", "customer_id", "status"),
        Index("ix_ticket_last", "last_message_at", "id"),
        Index("ix_ticket_snoozed_until", "snoozed_until"),
        # `desk stats`: tickets opened, answered, resolved and reopened in a period
        Index("ix_ticket_created", "created_at"),
        Index("ix_ticket_first_response", "first_response_at"),
        Index("ix_ticket_resolved", "resolved_at"),
        Index("ix_ticket_reopened", "reopened_at"),
        # `desk stats`: customers who wrote on several channels, from the index alone
        Index("ix_ticket_customer_channels", "customer_id", "last_inbound_at",
              "first_inbound_at", "customer_channels"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id")
    status: str = "open"
    assignee: str | None = None
    priority: str = "normal"
    # Denormalised copy of TicketTag for display; TicketTag is what queue queries use.
    tags: str = ""
    subject: str | None = None
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime
    last_inbound_at: datetime | None = None
    last_outbound_at: datetime | None = None
    # When the customer started waiting for an answer; None when the last word was ours.
    waiting_since: datetime | None = None
    # Service figures (desk.ticket_figures), kept here so `desk stats` never scans messages.
    first_inbound_at: datetime | None = None
    first_response_at: datetime | None = None  # our first answer after first_inbound_at
    first_response_seconds: int | None = None
    resolved_at: datetime | None = None
    resolution_seconds: int | None = None  # created_at to resolved_at; None while not resolved
    resolved_channel: str | None = None  # the last channel used when it was resolved
    reopen_count: int = 0
    reopened_at: datetime | None = None
    snoozed_until: datetime | None = None
    message_count: int = 0
    unread_count: int = 0
    snippet: str = ""
    channels: str = ""  # comma-separated channels used in this ticket, e.g. "email,sms"
    last_channel: str | None = None
    # Channels in the order the conversation moved, both directions, repeats folded:
    # "telegram,sms,email" (desk.ticket_figures.with_step).
    channel_path: str = ""
    customer_channels: str = ""  # the channels the customer wrote on, in order of first use


class TicketTag(SQLModel, table=True):
    __table_args__ = (Index("ix_tickettag_tag", "tag", "ticket_id"),)

    ticket_id: int = Field(foreign_key="ticket.id", primary_key=True)
    tag: str = Field(primary_key=True)


class Message(SQLModel, table=True):
    __table_args__ = (
        # provider_id leads so threading (In-Reply-To lookups by Message-ID) uses it too.
        UniqueConstraint("provider_id", "connector", name="uq_message_provider"),
        Index("ix_message_ticket_time", "ticket_id", "sent_at", "id"),
        Index("ix_message_customer_time", "customer_id", "sent_at", "id"),
        Index("ix_message_outbox", "status", "next_attempt_at"),
        Index("ix_message_received", "received_at"),  # `desk status`: the last hour
        # `desk stats`: volume per channel and agent in a period, counted from the index alone
        # and in its order (no sort), whatever the period's length
        Index("ix_message_stats", "direction", "channel", "author", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    customer_id: int = Field(foreign_key="customer.id")
    channel: str  # email | sms | telegram | note
    direction: str  # in | out | note
    connector: str | None = None
    provider_id: str | None = None
    sender: str | None = None
    sender_name: str | None = None
    recipient: str | None = None  # for outbound: the identity value it goes to
    recipients: str | None = None  # JSON list of every recipient, as the provider gave them
    subject: str | None = Field(default=None, sa_column=Column(Text))
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    html: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime
    received_at: datetime
    status: str = "received"  # received, or a DELIVERY_STATUSES value for outbound
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    flags: str = ""  # comma-separated connectors.base FLAG_* values
    in_reply_to: str | None = None
    references: str | None = None  # space-separated Message-IDs
    author: str | None = None  # the agent who wrote an outbound message or note
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class Attachment(SQLModel, table=True):
    """A file a message carried. Its content is the `Blob` of the same sha256; a message stored
    truncated (over max_message_bytes) keeps the attachment's name, size and hash without one."""

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    # What the sender called it: data shown as text, never used as a path (desk.attachments).
    filename: str
    content_type: str
    size: int
    sha256: str = Field(index=True)


class Blob(SQLModel, table=True):
    """File contents by SHA-256: stored once however many messages carry them (the same logo
    in every signature, a document forwarded around)."""

    sha256: str = Field(primary_key=True)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SyncState(SQLModel, table=True):
    """A connector's cursor, written in the same transaction as the messages it covers."""

    connector: str = Field(primary_key=True)
    cursor: str = "{}"  # JSON
    updated_at: datetime
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class OAuthToken(SQLModel, table=True):
    """A connector's OAuth 2.0 sign-in (`desk auth login`). The refresh token is a secret: on
    PostgreSQL only the daemon's and the owner's roles may read this table (desk.roles), and
    desk never prints, logs or exports it."""

    connector: str = Field(primary_key=True)
    provider: str
    account: str | None = None  # who signed in, from the ID token: for display
    refresh_token: str | None = Field(default=None, sa_column=Column(Text))
    access_token: str | None = Field(default=None, sa_column=Column(Text))
    access_expires_at: datetime | None = None
    last_refresh_at: datetime | None = None
    state: str = "signed_in"  # signed_in | sign_in_needed
    reason: str | None = None  # why a new sign-in is needed, in the provider's words
    updated_at: datetime


class Event(SQLModel, table=True):
    """Audit trail: status, assignment, tags, merges, identity links."""

    __table_args__ = (
        Index("ix_event_ticket", "ticket_id", "id"),
        Index("ix_event_customer", "customer_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime
    kind: str
    actor: str | None = None  # agent name, or "system"
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    customer_id: int | None = Field(default=None, foreign_key="customer.id")
    data: str = "{}"  # JSON


class Presence(SQLModel, table=True):
    """Who is doing what on a ticket right now (an agent writing a reply), so other app
    instances can say so. Rows are renewed while the activity lasts and expire on their own."""

    agent: str = Field(primary_key=True)
    ticket_id: int = Field(primary_key=True)
    activity: str  # "reply" or "note"
    updated_at: datetime


class Lease(SQLModel, table=True):
    """A role one process holds at a time (the store's `desk sync`), until `expires_at`
    unless renewed, so a holder that died gives it up on its own."""

    name: str = Field(primary_key=True)
    holder: str  # "host:pid"
    acquired_at: datetime
    expires_at: datetime
