"""Replies and notes: queued durably, sent through a connector, retried, failed, in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from connectors.base import (
    Batch,
    Connector,
    OutboundMessage,
    PermanentError,
    Receipt,
    TransientError,
)
from desk import identity, outbox
from desk.ingest import IngestOptions, ingest
from desk.models import Event, Message, Ticket
from desk.tickets import TicketError

FR = IngestOptions(region="FR")


class RecordingConnector:
    """A test double of connectors.base.Connector: records what it is asked to send and
    answers each send with the next scripted outcome (an exception to raise, or success)."""

    def __init__(self, name: str, channel: str, outcomes: list[Exception | None] | None = None):
        self.name = name
        self.channel = channel
        self.outcomes = list(outcomes or [])
        self.sent: list[OutboundMessage] = []

    async def fetch(self, cursor: Mapping[str, Any] | None) -> AsyncIterator[Batch]:
        return
        yield  # an async generator with nothing to fetch

    async def send(self, message: OutboundMessage) -> Receipt:
        self.sent.append(message)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return Receipt(provider_id=f"sent-{message.message_id}@desk.example")

    async def aclose(self) -> None:
        pass


def test_the_double_implements_the_connector_protocol() -> None:
    assert isinstance(RecordingConnector("mail", "email"), Connector)


def jane_ticket(store, inbound) -> int:
    """Jane wrote by email, then (her phone linked by hand) by SMS: one ticket."""
    ingest(store, [inbound("Where is my order?", provider_id="m1@jane",
                           sender="jane@example.com", sender_name="Jane",
                           references=["older@jane"])])
    with store.transaction() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        identity.link_identity(session, jane, "phone", "+33612345678", actor="alice")
    ingest(store, [inbound("Texting too", channel="sms", sender="+33612345678",
                           at=timedelta(hours=1))], options=FR)
    with store.session() as session:
        return session.execute(select(Ticket.id)).scalar_one()


def get(store, message_id: int) -> Message:
    with store.session() as session:
        return session.get(Message, message_id)


def queue(store, ticket_id: int, text: str = "We are on it.", **kwargs: Any) -> int:
    with store.transaction() as session:
        return outbox.queue_reply(session, ticket_id, text, agent="alice", **kwargs).id


def make_due(store, message_id: int) -> None:
    with store.transaction() as session:
        session.execute(update(Message).where(Message.id == message_id).values(
            next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))


# ---------------------------------------------------------------------------- queueing


def test_a_reply_goes_by_default_to_the_channel_the_customer_last_used(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply = get(store, queue(store, ticket))
    assert (reply.channel, reply.recipient, reply.connector) == ("sms", "+33612345678", "sms")
    assert (reply.direction, reply.status, reply.author) == ("out", "queued", "alice")
    assert reply.subject is None

    ingest(store, [inbound("Back on email", sender="jane@example.com",
                           at=timedelta(hours=2))])
    again = get(store, queue(store, ticket))
    assert (again.channel, again.recipient, again.connector) == (
        "email", "jane@example.com", "mail")


def test_only_channels_the_customer_can_be_reached_on_are_offered(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    with store.transaction() as session, pytest.raises(outbox.OutboxError) as caught:
        outbox.queue_reply(session, ticket, "hi", agent="alice", channel="telegram")
    message = str(caught.value)
    assert "telegram" in message
    assert "email (jane@example.com)" in message
    assert "sms (+33612345678)" in message
    with store.session() as session:
        assert session.execute(select(Message).where(Message.direction == "out")).first() is None


def test_an_email_reply_carries_the_ticket_token_and_threading_headers(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply = get(store, queue(store, ticket, channel="email"))
    assert reply.subject == f"Re: Order not delivered [#{ticket}]"
    assert reply.in_reply_to == "m1@jane"
    assert reply.references == "older@jane m1@jane"


def test_empty_replies_and_unknown_tickets_are_refused(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    with store.transaction() as session:
        with pytest.raises(outbox.OutboxError, match="empty"):
            outbox.queue_reply(session, ticket, "   ", agent="alice")
        with pytest.raises(TicketError, match="no ticket #404"):
            outbox.queue_reply(session, 404, "hello", agent="alice")


def test_a_note_is_kept_on_the_ticket_and_never_sent(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    with store.transaction() as session:
        note_id = outbox.add_note(session, ticket, "Customer is a VIP", agent="bob").id
    note = get(store, note_id)
    assert (note.direction, note.channel, note.author, note.ticket_id) == (
        "note", "note", "bob", ticket)
    assert note.text == "Customer is a VIP"
    with store.session() as session:
        assert session.get(Ticket, ticket).message_count == 3
        assert outbox.due_messages(session, datetime.now(UTC)) == []


# ---------------------------------------------------------------------------- delivery


async def test_a_delivered_reply_records_the_provider_id(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply_id = queue(store, ticket, "It ships today.", channel="email")
    mail = RecordingConnector("mail", "email")
    report = await outbox.deliver_due(store, {"mail": mail})
    assert (report.sent, report.retrying, report.failed) == (1, 0, 0)
    [sent] = mail.sent
    assert (sent.to, sent.text, sent.in_reply_to, sent.ticket_id) == (
        "jane@example.com", "It ships today.", "m1@jane", ticket)
    assert sent.subject == f"Re: Order not delivered [#{ticket}]"
    reply = get(store, reply_id)
    assert reply.status == "sent"
    assert reply.provider_id == f"sent-{reply_id}@desk.example"
    assert reply.attempts == 1
    # Sent once: another pass sends nothing.
    await outbox.deliver_due(store, {"mail": mail})
    assert len(mail.sent) == 1


async def test_a_transient_error_requeues_the_reply_for_later(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply_id = queue(store, ticket, channel="sms")
    sms = RecordingConnector("sms", "sms", [TransientError("rate limited", code="429")])
    started = datetime.now(UTC)
    report = await outbox.deliver_due(store, {"sms": sms})
    assert report.retrying == 1
    reply = get(store, reply_id)
    assert reply.status == "queued"
    assert reply.attempts == 1
    assert reply.error == "429: rate limited"
    assert reply.next_attempt_at > started + timedelta(seconds=10)

    await outbox.deliver_due(store, {"sms": sms})  # not due yet: not tried again
    assert len(sms.sent) == 1
    make_due(store, reply_id)
    await outbox.deliver_due(store, {"sms": sms})
    reply = get(store, reply_id)
    assert (reply.status, reply.attempts, reply.error) == ("sent", 2, None)


async def test_a_providers_retry_after_is_respected(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply_id = queue(store, ticket, channel="sms")
    sms = RecordingConnector("sms", "sms", [TransientError("slow down", retry_after=7200)])
    await outbox.deliver_due(store, {"sms": sms})
    assert get(store, reply_id).next_attempt_at >= datetime.now(UTC) + timedelta(seconds=7000)


async def test_a_permanent_error_fails_the_reply_with_the_reason(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply_id = queue(store, ticket, channel="sms")
    sms = RecordingConnector("sms", "sms", [PermanentError("not a mobile number",
                                                           code="21614")])
    report = await outbox.deliver_due(store, {"sms": sms})
    assert report.failed == 1
    reply = get(store, reply_id)
    assert reply.status == "failed"
    assert reply.error == "21614: not a mobile number"
    assert reply.next_attempt_at is None
    with store.session() as session:
        event = session.execute(select(Event).where(Event.kind == "delivery_failed")).scalar_one()
    assert event.ticket_id == ticket
    assert json.loads(event.data) == {"message_id": reply_id,
                                      "error": "21614: not a mobile number"}

    # The agent fixes things and retries: the reply goes out.
    with store.transaction() as session:
        outbox.retry(session, reply_id, actor="alice")
    assert get(store, reply_id).status == "queued"
    await outbox.deliver_due(store, {"sms": sms})
    reply = get(store, reply_id)
    assert reply.status == "sent"
    with store.session() as session:
        with pytest.raises(outbox.OutboxError, match="not failed"):
            outbox.retry(session, reply_id, actor="alice")
        assert session.execute(select(Event).where(Event.kind == "retry")).scalar_one()


async def test_a_reply_that_keeps_failing_transiently_fails_in_the_end(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply_id = queue(store, ticket, channel="sms")
    with store.transaction() as session:
        session.execute(update(Message).where(Message.id == reply_id).values(
            attempts=outbox.MAX_ATTEMPTS - 1))
    sms = RecordingConnector("sms", "sms", [TransientError("still down")])
    report = await outbox.deliver_due(store, {"sms": sms})
    assert report.failed == 0 and report.retrying == 1
    reply = get(store, reply_id)
    assert (reply.status, reply.attempts, reply.error) == (
        "failed", outbox.MAX_ATTEMPTS, "still down")
    with store.session() as session:
        assert session.execute(select(Event).where(Event.kind == "delivery_failed")).scalar_one()


async def test_a_connector_bug_does_not_stop_the_outbox(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    ingest(store, [inbound("other customer", sender="bob@example.org")])
    with store.session() as session:
        bob_ticket = session.execute(select(Ticket.id).where(Ticket.id != ticket)).scalar_one()
    broken = queue(store, ticket, "to jane", channel="email")
    fine = queue(store, bob_ticket, "to bob")
    mail = RecordingConnector("mail", "email", [KeyError("oops")])
    report = await outbox.deliver_due(store, {"mail": mail})
    assert (report.sent, report.retrying) == (1, 1)
    assert get(store, broken).status == "queued"
    assert get(store, broken).error == "KeyError: 'oops'"
    assert get(store, fine).status == "sent"


async def test_replies_of_one_ticket_go_out_in_order(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    first = queue(store, ticket, "first", channel="sms")
    second = queue(store, ticket, "second", channel="sms")
    sms = RecordingConnector("sms", "sms", [TransientError("network down")])
    await outbox.deliver_due(store, {"sms": sms})
    assert [m.text for m in sms.sent] == ["first"]
    assert get(store, second).status == "queued"

    await outbox.deliver_due(store, {"sms": sms})  # the first is backing off: both wait
    assert [m.text for m in sms.sent] == ["first"]

    make_due(store, first)
    await outbox.deliver_due(store, {"sms": sms})
    await outbox.deliver_due(store, {"sms": sms})
    assert [m.text for m in sms.sent] == ["first", "first", "second"]
    assert get(store, first).status == get(store, second).status == "sent"


async def test_replies_of_other_tickets_are_not_held_up(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    ingest(store, [inbound("other customer", sender="bob@example.org")])
    with store.session() as session:
        bob_ticket = session.execute(select(Ticket.id).where(Ticket.id != ticket)).scalar_one()
    queue(store, ticket, "to jane", channel="email")
    queue(store, bob_ticket, "to bob")
    mail = RecordingConnector("mail", "email", [TransientError("greylisted")])
    await outbox.deliver_due(store, {"mail": mail})
    assert [m.to for m in mail.sent] == ["jane@example.com", "bob@example.org"]


async def test_a_reply_for_a_connector_not_running_here_is_left_queued(store, inbound) -> None:
    ticket = jane_ticket(store, inbound)
    reply_id = queue(store, ticket, channel="sms")
    report = await outbox.deliver_due(store, {})
    assert (report.sent, report.retrying, report.failed) == (0, 0, 0)
    reply = get(store, reply_id)
    assert (reply.status, reply.attempts) == ("queued", 0)


# ---------------------------------------------------------------------------- SMS length


def _case(text: str, expected: tuple[int, int], label: str) -> object:
    return pytest.param(text, expected, id=label)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        _case("", (0, 0), "empty"),
        _case("a" * 160, (160, 1), "gsm-160"),
        _case("a" * 161, (161, 2), "gsm-161"),
        _case("a" * 306, (306, 2), "gsm-306"),
        _case("a" * 307, (307, 3), "gsm-307"),
        # Not GSM-7: UCS-2, 70 in a single message, 67 per part once split.
        _case("ж" * 70, (70, 1), "ucs2-70"),
        _case("ж" * 71, (71, 2), "ucs2-71"),
        _case("ж" * 134, (134, 2), "ucs2-134"),
        _case("ж" * 135, (135, 3), "ucs2-135"),
        # GSM-7 is not ASCII: French accents fit in it...
        _case("é" * 160, (160, 1), "gsm-accents-160"),
        _case("Votre colis arrivé à 9h, merci" + "." * 130, (160, 1), "gsm-french"),
        # ...the euro sign is an escape pair, two of the 160...
        _case("€" * 80, (80, 1), "gsm-euro-80"),
        _case("€" * 81, (81, 2), "gsm-euro-81"),
        # ...and an emoji takes two UCS-2 units.
        _case("😀" * 35, (35, 1), "emoji-35"),
        _case("😀" * 36, (36, 2), "emoji-36"),
    ],
)
def test_sms_segments(text: str, expected: tuple[int, int]) -> None:
    assert outbox.sms_segments(text) == expected


def test_a_reply_goes_to_the_address_the_customer_last_wrote_from(store, inbound) -> None:
    ingest(store, [inbound("from work", sender="nico@work.example")])
    with store.transaction() as session:
        identity.link_identity(session, 1, "email", "nico@home.example", actor="alice")
    ingest(store, [inbound("from home", sender="nico@home.example", at=timedelta(hours=1))])
    with store.transaction() as session:
        reply = outbox.queue_reply(session, 1, "Hello", agent="alice",
                                   connectors_by_channel={"email": "mail"})
    assert reply.recipient == "nico@home.example"
