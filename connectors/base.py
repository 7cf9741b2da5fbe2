"""The contract between desk and the outside world.

A connector speaks one provider's protocol and turns what it reads into `InboundMessage`s and
what desk asks it to send (`OutboundMessage`) into a `Receipt`. It knows nothing about
customers or tickets; `desk` never imports a provider library directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

Channel = Literal["email", "sms", "telegram"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "telegram")

# Identity kinds, matching desk's Identity.kind column.
IdentityKind = Literal["email", "phone", "telegram"]

# The identity kind a channel's sender address is expressed in.
CHANNEL_IDENTITY_KIND: dict[str, IdentityKind] = {
    "email": "email",
    "sms": "phone",
    "telegram": "telegram",
}

# Flags a connector may set on an inbound message.
FLAG_UNPARSED = "unparsed"  # the payload could not be parsed; raw is kept, text may be empty
FLAG_AUTO_REPLY = "auto_reply"  # out-of-office and similar machine answers
FLAG_BOUNCE = "bounce"  # delivery status notifications, mailer-daemon
FLAG_EDITED = "edited"  # a chat message the sender edited after sending
FLAG_OWN = "own"  # sent from our own address (e.g. a copy in a shared mailbox)
FLAG_TRUNCATED = "truncated"  # over max_message_bytes: stored in part (desk.message_size)


@dataclass(slots=True)
class Attachment:
    """A file carried by a message. `filename` is whatever the sender wrote: never a path."""

    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(slots=True)
class IdentityEvidence:
    """Another identity the sender proved is theirs (e.g. a phone in a Telegram contact they shared
    of themselves). Strong evidence: desk links it to the sender's customer automatically."""

    kind: IdentityKind
    value: str
    display: str | None = None


@dataclass(slots=True)
class InboundMessage:
    """One message as read from a provider, before desk decides who and which ticket it is."""

    connector: str
    channel: Channel
    provider_id: str
    sender: str  # email address, phone number or Telegram user id, as the provider gave it
    sender_name: str | None = None
    recipients: list[str] = field(default_factory=list)
    subject: str | None = None
    text: str = ""
    html: str | None = None
    sent_at: datetime | None = None  # tz-aware; None means "when we received it"
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    raw: bytes | None = None
    evidence: list[IdentityEvidence] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    sender_display: str | None = None  # e.g. a Telegram @username, shown beside the id
    # Provider-specific facts desk may use but need not understand (e.g. Telegram chat id).
    extra: dict[str, Any] = field(default_factory=dict)
    # Set when the message replaces an earlier one with the same provider_id (an edit).
    is_edit: bool = False

    def __post_init__(self) -> None:
        if self.sent_at is not None and self.sent_at.tzinfo is None:
            raise ValueError(f"sent_at must be timezone-aware, got {self.sent_at!r}")


@dataclass(slots=True)
class OutboundMessage:
    """A reply desk asks a connector to deliver."""

    message_id: int  # desk's Message.id, for logs and idempotency keys
    to: str  # normalised identity value: email address, E.164 phone, Telegram chat id
    text: str
    subject: str | None = None
    to_name: str | None = None
    in_reply_to: str | None = None  # provider id of the message this answers
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    ticket_id: int | None = None


@dataclass(slots=True)
class Receipt:
    """What the provider said when it accepted a message."""

    provider_id: str
    status: str = "sent"  # sent | delivered | queued (the provider queued it)
    sent_at: datetime | None = None
    raw: bytes | None = None


@dataclass(slots=True)
class Batch:
    """Messages read together and the cursor that is true once they are all stored."""

    messages: list[InboundMessage]
    cursor: Mapping[str, Any]


def aware(moment: datetime | None) -> datetime | None:
    """A provider's time as tz-aware; naive values are taken to be UTC (every API here sends
    UTC). None stays None."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ConnectorError(Exception):
    """Base of the errors a connector raises."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class TransientError(ConnectorError):
    """Try again later: network down, 429, 5xx, 4xx SMTP replies."""

    def __init__(
        self, reason: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, code=code)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying will not help: the provider refused (invalid number, bot blocked, 5xx SMTP)."""


class SignInNeeded(PermanentError):
    """The mailbox's OAuth sign-in has lapsed (its refresh token was revoked or expired): an
    admin signs in again with `desk auth login NAME`; retrying cannot help until then."""


# An OAuth 2.0 access token and when it expires (seconds since the epoch). A connector that
# signs in with OAuth asks for one each time it connects, with `fresh=True` after the provider
# refused the one it had. Raises SignInNeeded.
TokenProvider = Callable[[bool], tuple[str, float]]


class DeliveryUnknown(ConnectorError):
    """After a crash mid-send, the provider cannot say whether the message went out: an agent
    must check before sending it again."""


@runtime_checkable
class Connector(Protocol):
    """What desk needs from a channel adapter."""

    name: str
    channel: Channel

    def fetch(self, cursor: Mapping[str, Any] | None) -> AsyncIterator[Batch]:
        """Yield batches of new messages after `cursor`, each with the cursor that follows it.
        Ends when the provider has nothing more right now."""
        ...

    async def send(self, message: OutboundMessage) -> Receipt:
        """Deliver one message; raise TransientError or PermanentError on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
