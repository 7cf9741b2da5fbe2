"""Where an inbound message goes: joining, reopening, threading, and what never opens a ticket."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import T0, count
from sqlalchemy import select, update

from connectors.base import FLAG_AUTO_REPLY, FLAG_BOUNCE, FLAG_UNPARSED, Receipt
from desk import identity, outbox, tickets
from desk.ingest import ingest
from desk.models import Customer, Event, Identity, Message, Ticket


def all_tickets(store) -> list[Ticket]:
    with store.session() as session:
        return list(session.execute(select(Ticket).order_by(Ticket.id)).scalars())


def message(store, provider_id: str) -> Message:
    with store.session() as session:
        return session.execute(
            select(Message).where(Message.provider_id == provider_id)
        ).scalar_one()


def resolve_ticket(store, ticket_id: int, at) -> None:
    """Resolve a ticket as an agent would, then pin the resolution time to `at`."""
    with store.transaction() as session:
        tickets.set_status(session, ticket_id, "resolved", actor="alice")
        session.execute(update(Ticket).where(Ticket.id == ticket_id).values(resolved_at=at))


# ---------------------------------------------------------------------------- live tickets


def test_a_second_message_joins_the_live_ticket(store, inbound) -> None:
    ingest(store, [inbound("first")])
    ingest(store, [inbound("second, a day later", at=timedelta(days=1))])
    [ticket] = all_tickets(store)
    assert ticket.status == "open"
    assert ticket.message_count == 2
    assert ticket.subject == "Order not delivered"


@pytest.mark.parametrize("status", ["pending", "snoozed"])
def test_pending_and_snoozed_tickets_reopen_when_the_customer_writes(
    store, inbound, status: str
) -> None:
    ingest(store, [inbound("first")])
    [ticket] = all_tickets(store)
    with store.transaction() as session:
        tickets.set_status(session, ticket.id, status, actor="alice",
                           snooze_until=T0 + timedelta(days=3) if status == "snoozed" else None)
    ingest(store, [inbound("any news?", at=timedelta(hours=2))])
    [ticket] = all_tickets(store)
    assert ticket.status == "open"
    assert ticket.snoozed_until is None
    assert ticket.message_count == 2
    with store.session() as session:
        reopened = [json.loads(e.data) for e in tickets.ticket_events(session, ticket.id)
                    if e.kind == "status" and e.actor == "system"]
    assert reopened == [{"before": status, "after": "open", "reason": "customer wrote again"}]


# ---------------------------------------------------------------------------- resolved tickets


def test_a_ticket_resolved_two_days_before_the_message_is_reopened(store, inbound) -> None:
    ingest(store, [inbound("first")])
    [ticket] = all_tickets(store)
    resolve_ticket(store, ticket.id, T0 + timedelta(hours=1))
    ingest(store, [inbound("it broke again", at=timedelta(days=2, hours=1))])
    [reopened] = all_tickets(store)
    assert reopened.id == ticket.id
    assert reopened.status == "open"
    assert reopened.resolved_at is None
    assert reopened.message_count == 2


def test_a_ticket_resolved_ten_days_before_the_message_stays_closed(store, inbound) -> None:
    ingest(store, [inbound("first")])
    [ticket] = all_tickets(store)
    resolve_ticket(store, ticket.id, T0 + timedelta(hours=1))
    ingest(store, [inbound("new problem", at=timedelta(days=10, hours=1))])
    old, new = all_tickets(store)
    assert old.id == ticket.id
    assert (old.status, old.message_count) == ("resolved", 1)
    assert (new.status, new.message_count, new.customer_id) == ("open", 1, old.customer_id)


def test_the_reopen_window_counts_from_the_message_time_not_the_clock(store, inbound) -> None:
    # Both messages are long in the past (an import): what counts is the time between the
    # resolution and when the customer wrote.
    ingest(store, [inbound("first", sender="a@example.com"),
                   inbound("first", sender="b@example.com")])
    a_ticket, b_ticket = all_tickets(store)
    resolve_ticket(store, a_ticket.id, T0)
    resolve_ticket(store, b_ticket.id, T0)
    ingest(store, [inbound("again", sender="a@example.com", at=timedelta(days=6)),
                   inbound("again", sender="b@example.com", at=timedelta(days=8))])
    result = {t.customer_id: t for t in all_tickets(store) if t.status == "open"}
    assert result[a_ticket.customer_id].id == a_ticket.id  # reopened
    assert result[b_ticket.customer_id].id not in (a_ticket.id, b_ticket.id)  # a new one


# ---------------------------------------------------------------------------- email threading


def _two_live_tickets(store, inbound) -> tuple[int, int]:
    """Jane with an old ticket (its first message is "m1@jane") reopened by an agent, and a
    newer live ticket: both live, the newer one last written to."""
    ingest(store, [inbound("old problem", provider_id="m1@jane", subject="Old problem")])
    [old] = all_tickets(store)
    resolve_ticket(store, old.id, T0 + timedelta(hours=1))
    ingest(store, [inbound("new problem", provider_id="m2@jane", subject="New problem",
                           at=timedelta(days=20))])
    with store.transaction() as session:
        tickets.set_status(session, old.id, "open", actor="alice")
    old_ticket, new_ticket = all_tickets(store)
    assert old_ticket.status == new_ticket.status == "open"
    return old_ticket.id, new_ticket.id


def test_in_reply_to_and_references_thread_into_the_ticket_answered(store, inbound) -> None:
    old, new = _two_live_tickets(store, inbound)
    ingest(store, [
        # Without threading headers mail goes to the live ticket written to last...
        inbound("no threading headers", provider_id="r3", subject="Hello",
                at=timedelta(days=21)),
        # ...but an answer to the old ticket's mail goes to the old ticket.
        inbound("answer via In-Reply-To", provider_id="r1", subject="Re: Old problem",
                in_reply_to="m1@jane", at=timedelta(days=21, hours=1)),
        inbound("answer via References", provider_id="r2", subject="Re: Old problem",
                references=["unknown@elsewhere", "m1@jane"], at=timedelta(days=21, hours=2)),
    ])
    assert message(store, "r1").ticket_id == old
    assert message(store, "r2").ticket_id == old
    assert message(store, "r3").ticket_id == new


def test_a_subject_token_threads_only_into_the_senders_own_ticket(store, inbound) -> None:
    old, new = _two_live_tickets(store, inbound)
    ingest(store, [
        inbound("as you asked", provider_id="t1", subject=f"Re: Old problem [#{old}]",
                at=timedelta(days=21)),
        inbound("I am someone else", provider_id="t2", sender="bob@example.org",
                subject=f"Re: Old problem [#{old}]", at=timedelta(days=21, hours=1)),
    ])
    assert message(store, "t1").ticket_id == old
    bob_ticket = message(store, "t2").ticket_id
    assert bob_ticket not in (old, new)
    with store.session() as session:
        jane_old = session.get(Ticket, old)
        bob = session.get(Ticket, bob_ticket)
        assert jane_old.message_count == 2  # Bob's mail did not land in Jane's ticket
        assert bob.customer_id != jane_old.customer_id
        assert bob.subject == "Old problem"  # the token is not part of the title


def test_an_unknown_address_answering_our_reply_is_linked_to_that_customer(
    store, inbound
) -> None:
    ingest(store, [inbound("my order?", sender="jane@example.com", sender_name="Jane")])
    [ticket] = all_tickets(store)
    with store.transaction() as session:
        reply = outbox.queue_reply(session, ticket.id, "It ships today.", agent="alice")
    with store.transaction() as session:
        outbox.record_sent(session, reply.id, Receipt(provider_id="reply-1@desk.example"))

    ingest(store, [inbound("Thanks! (from my phone)", provider_id="p1",
                           sender="jane.private@gmail.example", sender_name="Jane",
                           subject="Re: Order not delivered", in_reply_to="reply-1@desk.example",
                           at=timedelta(hours=3))])
    assert count(store, Customer) == 1
    assert message(store, "p1").ticket_id == ticket.id
    with store.session() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        assert identity.find_customer(session, "email", "jane.private@gmail.example") == jane
        linked = session.execute(
            select(Identity).where(Identity.value == "jane.private@gmail.example")
        ).scalar_one()
        event = session.execute(select(Event).where(Event.kind == "identity_linked")).scalar_one()
    assert linked.source == "reply"
    assert event.customer_id == jane
    assert json.loads(event.data)["value"] == "jane.private@gmail.example"


def test_an_answer_from_a_new_address_to_an_old_ticket_joins_the_live_one(store, inbound) -> None:
    # Jane's old ticket (resolved long ago) had our reply; she now has a new live ticket.
    # Answering that old reply from another address is Jane writing again: it belongs in her
    # live ticket, not in a second one.
    ingest(store, [inbound("old question", provider_id="m1", sender="jane@example.com")])
    [old] = all_tickets(store)
    with store.transaction() as session:
        reply = outbox.queue_reply(session, old.id, "answer", agent="alice")
    with store.transaction() as session:
        outbox.record_sent(session, reply.id, Receipt(provider_id="r1@desk.example"))
    resolve_ticket(store, old.id, T0 + timedelta(hours=1))
    ingest(store, [inbound("new question", provider_id="m2", sender="jane@example.com",
                           at=timedelta(days=20))])
    live = message(store, "m2").ticket_id
    ingest(store, [inbound("about your old answer", provider_id="p1",
                           sender="jane.private@gmail.example", in_reply_to="r1@desk.example",
                           at=timedelta(days=21))])
    assert message(store, "p1").ticket_id == live
    assert [t.status for t in all_tickets(store)] == ["resolved", "open"]
    assert count(store, Customer) == 1


def test_answering_another_customers_message_is_not_evidence(store, inbound) -> None:
    ingest(store, [inbound("question", provider_id="q1", sender="jane@example.com")])
    ingest(store, [inbound("me too", provider_id="q2", sender="bob@example.org",
                           in_reply_to="q1", at=timedelta(hours=1))])
    assert count(store, Customer) == 2
    with store.session() as session:
        assert session.execute(select(Event).where(Event.kind == "identity_linked")).first() is None


# ---------------------------------------------------------------------------- automatic mail


@pytest.mark.parametrize("flag", [FLAG_AUTO_REPLY, FLAG_BOUNCE])
def test_automatic_mail_never_opens_a_ticket_on_its_own(store, inbound, flag: str) -> None:
    ingest(store, [inbound("I am out of office", provider_id="auto1", flags={flag})])
    assert all_tickets(store) == []
    stored = message(store, "auto1")
    assert stored.ticket_id is None
    assert flag in stored.flags.split(",")


@pytest.mark.parametrize("flag", [FLAG_AUTO_REPLY, FLAG_BOUNCE])
def test_automatic_mail_joins_a_live_ticket(store, inbound, flag: str) -> None:
    ingest(store, [inbound("a question")])
    ingest(store, [inbound("I am out of office", provider_id="auto1", flags={flag},
                           at=timedelta(hours=1))])
    [ticket] = all_tickets(store)
    assert message(store, "auto1").ticket_id == ticket.id
    assert ticket.message_count == 2


def test_automatic_mail_does_not_reopen_a_resolved_ticket(store, inbound) -> None:
    ingest(store, [inbound("a question", provider_id="q1")])
    [ticket] = all_tickets(store)
    resolve_ticket(store, ticket.id, T0 + timedelta(hours=1))
    ingest(store, [inbound("Out of office", provider_id="auto1", flags={FLAG_AUTO_REPLY},
                           in_reply_to="q1", at=timedelta(hours=2))])
    [ticket] = all_tickets(store)
    assert ticket.status == "resolved"
    assert message(store, "auto1").ticket_id is None


def test_unparsed_mail_is_stored_raw_flagged_and_opens_a_ticket(store, inbound) -> None:
    raw = b"\x00\xff garbage that is not RFC 822 \xfe"
    ingest(store, [inbound("", provider_id="sha256:abc", sender="", subject=None, raw=raw,
                           flags={FLAG_UNPARSED})])
    stored = message(store, "sha256:abc")
    assert stored.raw == raw
    assert stored.flags == FLAG_UNPARSED
    [ticket] = all_tickets(store)
    assert stored.ticket_id == ticket.id
    assert ticket.status == "open"


# ---------------------------------------------------------------------------- agent actions


def test_status_changes_are_audited_and_checked(store, inbound) -> None:
    ingest(store, [inbound("question")])
    [ticket] = all_tickets(store)
    with store.transaction() as session:
        tickets.assign(session, ticket.id, "bob", actor="alice")
        tickets.set_priority(session, ticket.id, "urgent", actor="alice")
        tickets.add_tags(session, ticket.id, ["Refund", "vip customer"], actor="alice")
        tickets.set_status(session, ticket.id, "resolved", actor="alice")
    [ticket] = all_tickets(store)
    assert (ticket.assignee, ticket.priority, ticket.status) == ("bob", "urgent", "resolved")
    assert ticket.tags == "refund,vip-customer"
    assert ticket.resolved_at is not None
    with store.session() as session:
        kinds = [e.kind for e in tickets.ticket_events(session, ticket.id)]
        assert kinds == ["assign", "priority", "tags", "status"]
        with pytest.raises(tickets.TicketError, match="unknown status 'closed'"):
            tickets.set_status(session, ticket.id, "closed", actor="alice")
        with pytest.raises(tickets.TicketError, match="needs a time"):
            tickets.set_status(session, ticket.id, "snoozed", actor="alice")
        with pytest.raises(tickets.TicketError, match="no ticket #999"):
            tickets.assign(session, 999, "bob", actor="alice")


def test_snoozed_tickets_wake_up_when_their_time_comes(store, inbound) -> None:
    ingest(store, [inbound("question")])
    [ticket] = all_tickets(store)
    with store.transaction() as session:
        tickets.set_status(session, ticket.id, "snoozed", actor="alice",
                           snooze_until=T0 + timedelta(hours=4))
    with store.transaction() as session:
        assert tickets.wake_snoozed(session, now=T0 + timedelta(hours=3)) == []
    with store.transaction() as session:
        assert tickets.wake_snoozed(session, now=T0 + timedelta(hours=5)) == [ticket.id]
    [ticket] = all_tickets(store)
    assert ticket.status == "open"


def test_subject_helpers() -> None:
    assert tickets.clean_subject("Re: Fwd: AW: Broken grinder [#12]") == "Broken grinder"
    assert tickets.reply_subject("Re: Broken grinder [#12]", 12) == "Re: Broken grinder [#12]"
    assert tickets.reply_subject(None, 7) == "Re: Your request [#7]"
    assert tickets.subject_tokens("about [#12] and [#3]") == [12, 3]
    assert tickets.snooze_delta("2d") == timedelta(days=2)
    with pytest.raises(tickets.TicketError, match="not a duration"):
        tickets.snooze_delta("soon")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("4h", datetime(2026, 3, 4, 14, 0, tzinfo=UTC)),  # T0-like now: Wed 2026-03-04 10:00
        ("14:30", datetime(2026, 3, 4, 14, 30, tzinfo=UTC)),
        ("9:15", datetime(2026, 3, 5, 9, 15, tzinfo=UTC)),  # already past today: tomorrow
        ("2pm", datetime(2026, 3, 4, 14, 0, tzinfo=UTC)),
        ("tomorrow", datetime(2026, 3, 5, 9, 0, tzinfo=UTC)),
        ("tomorrow 7:45", datetime(2026, 3, 5, 7, 45, tzinfo=UTC)),
        ("mon", datetime(2026, 3, 9, 9, 0, tzinfo=UTC)),
        ("Wednesday 8:00", datetime(2026, 3, 11, 8, 0, tzinfo=UTC)),  # today is Wed: next week
        ("2026-04-01 17:00", datetime(2026, 4, 1, 17, 0, tzinfo=UTC)),
    ],
)
def test_snooze_until_reads_what_an_agent_types(spec: str, expected: datetime) -> None:
    now = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    assert tickets.snooze_until(spec, now, tz=UTC) == expected


@pytest.mark.parametrize("spec", ["soon", "", "25:00", "2026-01-01", "next blue moon"])
def test_snooze_until_refuses_what_it_cannot_read_or_the_past(spec: str) -> None:
    with pytest.raises(tickets.TicketError):
        tickets.snooze_until(spec, datetime(2026, 3, 4, 10, 0, tzinfo=UTC), tz=UTC)


def test_snooze_until_a_weekday_later_today_is_today() -> None:
    monday_morning = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert tickets.snooze_until("mon 17:00", monday_morning, tz=UTC) == datetime(
        2026, 3, 9, 17, 0, tzinfo=UTC)
    assert tickets.snooze_until("mon 7:00", monday_morning, tz=UTC) == datetime(
        2026, 3, 16, 7, 0, tzinfo=UTC)


def test_snooze_until_keeps_the_wall_clock_across_a_daylight_saving_change(monkeypatch) -> None:
    import time as time_module

    monkeypatch.setenv("TZ", "Europe/Paris")
    time_module.tzset()
    try:
        friday = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)  # 11:00 in Paris, winter time
        # Clocks go forward on Sunday 29 March: Monday 9:00 in Paris is 07:00 UTC.
        assert tickets.snooze_until("mon 9:00", friday) == datetime(2026, 3, 30, 7, 0,
                                                                    tzinfo=UTC)
        assert tickets.snooze_until("2026-03-30", friday) == datetime(2026, 3, 30, 7, 0,
                                                                      tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time_module.tzset()
