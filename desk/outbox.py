"""Replies and notes: durable the moment the agent sends them, delivered through connectors.

A reply is a Message row (direction "out", status "queued") committed before any provider is
called. Delivery marks it "sending", calls the connector, then records "sent" with the
provider's id, or retries transient errors with backoff, or records "failed" with the
provider's reason. Replies of one ticket go out in order.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlmodel import Session

from connectors.base import (
    CHANNEL_IDENTITY_KIND,
    Connector,
    DeliveryUnknown,
    OutboundMessage,
    PermanentError,
    Receipt,
    SignInNeeded,
    TransientError,
)
from desk import ticket_figures
from desk.identity import normalize_lenient
from desk.models import DELIVERY_STATUSES, Identity, Message, Ticket
from desk.redact import redact
from desk.store import Store, record_event
from desk.ticket_figures import Fields
from desk.tickets import TicketError, reply_subject, set_status
from desk.timeutil import to_store, utcnow

log = logging.getLogger("desk.outbox")

MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
SMS_SEGMENT_GSM = 160
TELEGRAM_LIMIT = 4096


class OutboxError(ValueError):
    """A reply that cannot be queued as asked (no such channel for this customer, …)."""


class BlindReplyError(OutboxError):
    """The conversation moved on since the agent last looked: the reply was not queued."""

    def __init__(self, changes: list[Message]) -> None:
        super().__init__(f"{len(changes)} new message(s) since the reply was written")
        self.changes = changes


def unseen_changes(
    session: Session, customer_id: int, after_id: int, agent: str, limit: int = 20
) -> list[Message]:
    """What makes a reply written after message `after_id` blind: the customer wrote again
    (any channel, any ticket) or someone else answered them (another agent, or mail sent from
    the support address outside desk, which has no author)."""
    return list(
        session.execute(
            select(Message)
            .where(
                Message.customer_id == customer_id,
                Message.id > after_id,
                or_(
                    Message.direction == "in",
                    (Message.direction == "out")
                    & or_(Message.author.is_(None), Message.author != agent),
                ),
            )
            .order_by(Message.id)
            .limit(limit)
        ).scalars()
    )


@dataclass(frozen=True, slots=True)
class Route:
    """Where a reply on a channel goes: the identity and the connector to use."""

    channel: str
    to: str
    connector: str | None


def reply_routes(
    session: Session, ticket: Ticket, connectors_by_channel: Mapping[str, str] | None = None
) -> list[Route]:
    """Every channel/address a reply to this ticket's customer can go to, the channel they
    last wrote on first."""
    identities = session.execute(
        select(Identity).where(Identity.customer_id == ticket.customer_id).order_by(Identity.id)
    ).scalars().all()
    last_connector: dict[str, str] = {}
    recent_addresses: list[str] = []  # the customer's senders, most recently used first
    for channel, connector, sender in session.execute(
        select(Message.channel, Message.connector, Message.sender)
        .where(Message.customer_id == ticket.customer_id, Message.direction == "in")
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(50)
    ):
        if connector:
            last_connector.setdefault(channel, connector)
        if sender and channel in CHANNEL_IDENTITY_KIND:
            # Provider senders are already E.164 / numeric ids, so the region does not matter.
            address = normalize_lenient(CHANNEL_IDENTITY_KIND[channel], sender)
            if address not in recent_addresses:
                recent_addresses.append(address)
    preferred = list(last_connector)  # channels in order of the customer's latest use
    if ticket.last_channel and ticket.last_channel not in preferred:
        preferred.insert(0, ticket.last_channel)
    fallback = connectors_by_channel or {}
    routes = []
    for channel, kind in CHANNEL_IDENTITY_KIND.items():
        for identity in identities:
            if identity.kind == kind and identity.value:
                connector = last_connector.get(channel) or fallback.get(channel)
                routes.append(Route(channel, identity.value, connector))
    order = {channel: index for index, channel in enumerate(preferred)}
    used = {address: index for index, address in enumerate(recent_addresses)}
    return sorted(
        routes,
        key=lambda r: (order.get(r.channel, len(order)), used.get(r.to, len(used))),
    )


def queue_reply(
    session: Session,
    ticket_id: int,
    text: str,
    *,
    agent: str,
    channel: str | None = None,
    to: str | None = None,
    connectors_by_channel: Mapping[str, str] | None = None,
    then_status: str | None = None,
    seen_up_to: int | None = None,
) -> Message:
    """Queue a reply on `channel` (default: the one the customer last wrote on). With
    `seen_up_to` (the newest message id the agent had seen), a reply that became blind
    meanwhile is refused with BlindReplyError, in the same transaction that would queue it."""
    if not text.strip():
        raise OutboxError("the reply is empty")
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketError(f"no ticket #{ticket_id}")
    if seen_up_to is not None:
        changes = unseen_changes(session, ticket.customer_id, seen_up_to, agent)
        if changes:
            for change in changes:  # readable after the transaction rolls back
                session.expunge(change)
            raise BlindReplyError(changes)
    routes = reply_routes(session, ticket, connectors_by_channel)
    if not routes:
        raise OutboxError(f"customer {ticket.customer_id} has no address to reply to")
    candidates = [r for r in routes if (channel is None or r.channel == channel)
                  and (to is None or r.to == to)]
    if not candidates:
        offered = ", ".join(sorted({f"{r.channel} ({r.to})" for r in routes}))
        raise OutboxError(
            f"ticket #{ticket_id}: the customer has no {channel or ''} address {to or ''}; "
            f"they can be reached by {offered}".replace("  ", " ")
        )
    route = candidates[0]
    if route.connector is None:
        raise OutboxError(f"no {route.channel} connector is configured to send this reply")
    now = utcnow()
    subject = in_reply_to = references = None
    if route.channel == "email":
        subject = reply_subject(ticket.subject, ticket.id)  # type: ignore[arg-type]
        last_email = session.execute(
            select(Message.provider_id, Message.references)
            .where(Message.ticket_id == ticket_id, Message.channel == "email",
                   Message.provider_id.is_not(None))
            .order_by(Message.sent_at.desc(), Message.id.desc())
            .limit(1)
        ).first()
        if last_email is not None:
            in_reply_to = last_email.provider_id
            references = " ".join(filter(None, [last_email.references, in_reply_to]))
    if route.channel == "telegram":
        in_reply_to = _telegram_reply_target(session, ticket_id, route.to)
    message = Message(
        ticket_id=ticket_id,
        customer_id=ticket.customer_id,
        channel=route.channel,
        direction="out",
        connector=route.connector,
        recipient=route.to,
        subject=subject,
        text=text,
        sent_at=now,
        received_at=now,
        status="queued",
        next_attempt_at=now,
        in_reply_to=in_reply_to,
        references=references,
        author=agent,
    )
    session.add(message)
    ticket_figures.account(Fields(ticket), channel=route.channel, direction="out", sent_at=now,
                           text=text)
    ticket.waiting_since = None
    ticket.updated_at = now
    session.flush()
    record_event(session, "reply", actor=agent, ticket_id=ticket_id,
                 customer_id=ticket.customer_id, message_id=message.id,
                 channel=route.channel, to=message.recipient)
    if then_status and then_status != ticket.status:
        set_status(session, ticket_id, then_status, actor=agent)
    session.flush()
    return message


def _telegram_reply_target(session: Session, ticket_id: int, chat: str) -> str | None:
    """The customer's last Telegram message, when a reply would not sit right under it (we
    already answered after it): quoting it then says what this reply is about."""
    rows = session.execute(
        select(Message.direction, Message.provider_id, Message.sender)
        .where(Message.ticket_id == ticket_id, Message.channel == "telegram",
               Message.direction != "note")
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(20)
    ).all()
    answered_since = False
    for direction, provider_id, sender in rows:
        if direction == "out":
            answered_since = True
        elif direction == "in" and sender == chat:
            return provider_id if answered_since else None
    return None


def add_note(session: Session, ticket_id: int, text: str, *, agent: str) -> Message:
    """A private note on the ticket: seen by agents, never sent."""
    if not text.strip():
        raise OutboxError("the note is empty")
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketError(f"no ticket #{ticket_id}")
    now = utcnow()
    note = Message(
        ticket_id=ticket_id,
        customer_id=ticket.customer_id,
        channel="note",
        direction="note",
        text=text,
        sent_at=now,
        received_at=now,
        status="note",
        author=agent,
    )
    session.add(note)
    ticket.message_count += 1
    ticket.updated_at = now
    session.flush()
    record_event(session, "note", actor=agent, ticket_id=ticket_id,
                 customer_id=ticket.customer_id, message_id=note.id)
    session.flush()
    return note


def retry(session: Session, message_id: int, *, actor: str) -> Message:
    """Requeue a failed (or unknown) reply for another delivery attempt."""
    message = session.get(Message, message_id)
    if message is None or message.direction != "out":
        raise OutboxError(f"no outbound message {message_id}")
    if message.status not in ("failed", "unknown"):
        raise OutboxError(f"message {message_id} is {message.status}, not failed: nothing to retry")
    before, error = message.status, message.error
    message.status = "queued"
    message.next_attempt_at = utcnow()
    message.attempts = 0
    record_event(session, "retry", actor=actor, ticket_id=message.ticket_id,
                 customer_id=message.customer_id, message_id=message_id, before=before,
                 error=error)
    _recount_first_response(session, message.ticket_id)
    session.flush()
    return message


def _recount_first_response(session: Session, ticket_id: int | None) -> None:
    """A reply that failed answered no one: the first response is the earliest outbound
    message after the customer's first one that has not failed (none: still unanswered)."""
    ticket = session.get(Ticket, ticket_id) if ticket_id is not None else None
    if ticket is None or ticket.first_inbound_at is None:
        return
    session.flush()
    answer = session.execute(
        select(func.min(Message.sent_at)).where(
            Message.ticket_id == ticket.id, Message.direction == "out",
            Message.status != "failed", Message.sent_at >= ticket.first_inbound_at)
    ).scalar_one()
    ticket.first_response_at = to_store(answer)
    ticket.first_response_seconds = (
        ticket_figures.seconds_between(ticket.first_inbound_at, ticket.first_response_at)
        if ticket.first_response_at is not None else None
    )


# GSM 03.38: the basic alphabet (one septet each) and its extension table (two: escape + char).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def is_gsm7(text: str) -> bool:
    """Whether an SMS of `text` goes out in the GSM-7 alphabet (else UCS-2, 70 per segment)."""
    return all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text)


def sms_segments(text: str) -> tuple[int, int]:
    """(characters, segments) of an SMS: GSM-7 fits 160 (153 when split), UCS-2 70 (67)."""
    if is_gsm7(text):
        units = len(text) + sum(ch in _GSM_EXTENDED for ch in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2  # characters beyond the BMP take two
        single, multi = 70, 67
    length = len(text)
    if units <= single:
        return length, 1 if units else 0
    return length, -(-units // multi)


# --------------------------------------------------------------------------------------------
# Delivery


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """Exponential backoff with jitter, capped; a provider's Retry-After wins when longer."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(attempts - 1, 0)))
    delay = delay * random.uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def due_messages(session: Session, now: datetime, limit: int = 100) -> list[Message]:
    """Queued replies due now, oldest first, skipping any ticket with an earlier reply waiting
    (replies of one ticket go out in order)."""
    waiting = session.execute(
        select(Message)
        .where(Message.status.in_(("queued", "sending")))
        .order_by(Message.id)
        .limit(limit * 4)
    ).scalars().all()
    due, blocked = [], set()
    for message in waiting:
        if message.ticket_id in blocked:
            continue
        ready = message.status == "queued" and (
            message.next_attempt_at is None or to_store(message.next_attempt_at) <= now
        )
        if ready:
            due.append(message)
        blocked.add(message.ticket_id)
        if len(due) >= limit:
            break
    return due


def outbound_of(message: Message) -> OutboundMessage:
    return OutboundMessage(
        message_id=message.id,  # type: ignore[arg-type]
        to=message.recipient or "",
        text=message.text,
        subject=message.subject,
        in_reply_to=message.in_reply_to,
        references=(message.references or "").split(),
        ticket_id=message.ticket_id,
    )


def claim_for_sending(session: Session, message_id: int) -> bool:
    """Mark a queued reply "sending" for this process; False if another daemon has it (its
    row locked right now, or already taken), so no reply is sent twice."""
    message = session.execute(
        select(Message).where(Message.id == message_id, Message.status == "queued")
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if message is None:
        return False
    message.status = "sending"
    message.attempts += 1
    session.flush()
    return True


def record_sent(session: Session, message_id: int, receipt: Receipt) -> None:
    message = session.get(Message, message_id)
    if message is None:
        return
    message.status = receipt.status if receipt.status in ("sent", "delivered") else "sent"
    message.provider_id = receipt.provider_id
    message.error = None
    message.next_attempt_at = None
    if receipt.sent_at is not None:
        message.sent_at = to_store(receipt.sent_at)  # type: ignore[assignment]
    session.flush()


def record_failure(
    session: Session, message_id: int, reason: str, *, permanent: bool,
    retry_after: float | None = None,
) -> None:
    """A failed attempt: retried later when transient and attempts remain, else failed."""
    message = session.get(Message, message_id)
    if message is None:
        return
    reason = redact(reason)
    message.error = reason
    if permanent or message.attempts >= MAX_ATTEMPTS:
        message.status = "failed"
        message.next_attempt_at = None
        record_event(session, "delivery_failed", actor="system", ticket_id=message.ticket_id,
                     customer_id=message.customer_id, message_id=message_id, error=reason)
        _recount_first_response(session, message.ticket_id)
    else:
        message.status = "queued"
        message.next_attempt_at = utcnow() + backoff(message.attempts, retry_after)
    session.flush()


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0  # due, but their connector cannot send yet (a sign-in is needed)


async def deliver_due(store: Store, connectors: Mapping[str, Connector]) -> DeliveryReport:
    """Send every reply that is due through its connector; returns what happened."""
    report = DeliveryReport()
    with store.session() as session:
        due = [(m.id, m.connector, outbound_of(m)) for m in due_messages(session, utcnow())]
    readiness: dict[str, bool] = {}
    for message_id, connector_name, outbound in due:
        connector = connectors.get(connector_name or "")
        if connector is None:
            continue  # not running in this process (disabled, or another daemon's)
        if connector_name not in readiness:
            ready = getattr(connector, "ready", None)
            readiness[connector_name] = ready is None or await asyncio.to_thread(ready)
        if not readiness[connector_name]:
            # e.g. an OAuth mailbox waiting for a new sign-in: the reply stays queued, and
            # no attempt is spent on it.
            report.waiting += 1
            continue
        if not store.write(lambda s, mid=message_id: claim_for_sending(s, mid)):
            continue
        try:
            receipt = await connector.send(outbound)
        except PermanentError as exc:
            store.write(lambda s, mid=message_id, e=exc: record_failure(
                s, mid, _reason(e), permanent=True))
            report.failed += 1
        except TransientError as exc:
            store.write(lambda s, mid=message_id, e=exc: record_failure(
                s, mid, _reason(e), permanent=False, retry_after=e.retry_after))
            report.retrying += 1
        except Exception as exc:  # a connector bug must not stop the outbox
            store.write(lambda s, mid=message_id, e=exc: record_failure(
                s, mid, f"{type(e).__name__}: {e}", permanent=False))
            report.retrying += 1
        else:
            store.write(lambda s, mid=message_id, r=receipt: record_sent(s, mid, r))
            report.sent += 1
    return report


def record_delivery(session: Session, message_id: int, status: str, error: str | None) -> None:
    """What the provider later said about a sent message: delivered, or failed with why."""
    message = session.get(Message, message_id)
    if message is None or message.status == status or status not in DELIVERY_STATUSES:
        return
    message.status = status
    if status == "failed":
        message.error = redact(error or "the provider reports the message undelivered")
        record_event(session, "delivery_failed", actor="system", ticket_id=message.ticket_id,
                     customer_id=message.customer_id, message_id=message_id,
                     error=message.error)
        _recount_first_response(session, message.ticket_id)
    session.flush()


def record_delivery_of(
    session: Session, connector: str, provider_id: str, status: str, error: str | None
) -> None:
    """`record_delivery` for a provider's id (a delivery webhook names the message so)."""
    message_id = session.execute(
        select(Message.id).where(Message.connector == connector,
                                 Message.provider_id == provider_id,
                                 Message.direction == "out")
    ).scalar()
    if message_id is not None:
        record_delivery(session, message_id, status, error)


async def follow_deliveries(
    store: Store,
    connectors: Mapping[str, Connector],
    *,
    within: timedelta = timedelta(days=2),
    limit: int = 100,
) -> int:
    """Ask providers that track delivery (Twilio) about recently sent messages; returns how
    many changed to delivered or failed."""
    with store.session() as session:
        rows = session.execute(
            select(Message.id, Message.connector, Message.provider_id)
            .where(Message.direction == "out", Message.status == "sent",
                   Message.provider_id.is_not(None), Message.sent_at >= utcnow() - within)
            .order_by(Message.id)
            .limit(limit)
        ).all()
    changed = 0
    for message_id, connector_name, provider_id in rows:
        delivery = getattr(connectors.get(connector_name or ""), "delivery", None)
        if delivery is None:
            continue
        try:
            status, error = await delivery(provider_id)
        except (TransientError, PermanentError):
            continue  # asked again next round
        if status != "sent":
            store.write(lambda s, mid=message_id, st=status, e=error: record_delivery(
                s, mid, st, e))
            changed += 1
    return changed


async def reconcile_sending(store: Store, connectors: Mapping[str, Connector]) -> int:
    """Replies left "sending" by a crash between marking them and hearing the provider: each
    connector says whether it went out (stored as sent), surely did not (queued again), or
    cannot tell ("unknown", with why: an agent checks, then retries). Never resends blindly."""
    with store.session() as session:
        stuck = [(m.id, m.connector, outbound_of(m)) for m in session.execute(
            select(Message).where(Message.direction == "out", Message.status == "sending")
            .order_by(Message.id)).scalars()]
    settled = 0
    for message_id, connector_name, outbound in stuck:
        connector = connectors.get(connector_name or "")
        if connector is None:
            continue  # another process's connector
        check = getattr(connector, "reconcile", None)
        try:
            if check is None:
                raise DeliveryUnknown("desk stopped while sending this message: check, then "
                                      "retry")
            receipt = await check(outbound)
        except DeliveryUnknown as unknown:
            store.write(lambda s, mid=message_id, why=unknown.reason: _mark_unknown(s, mid, why))
        except (TransientError, SignInNeeded):
            continue  # ask again next time (after the admin signs in again)
        except Exception as exc:  # a connector that cannot even look must not stop the daemon
            log.warning("%s: cannot settle reply %s: %s", connector_name, message_id, exc)
            continue
        else:
            if receipt is not None:
                store.write(lambda s, mid=message_id, r=receipt: record_sent(s, mid, r))
            else:
                store.write(lambda s, mid=message_id: _requeue(s, mid))
        settled += 1
    return settled


def _mark_unknown(session: Session, message_id: int, why: str) -> None:
    message = session.get(Message, message_id)
    if message is not None and message.status == "sending":
        message.status, message.error, message.next_attempt_at = "unknown", redact(why), None
        session.flush()


def _requeue(session: Session, message_id: int) -> None:
    message = session.get(Message, message_id)
    if message is not None and message.status == "sending":
        message.status, message.next_attempt_at = "queued", utcnow()
        session.flush()


def _reason(error: TransientError | PermanentError) -> str:
    return f"{error.code}: {error.reason}" if error.code else error.reason
