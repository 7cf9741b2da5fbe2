"""Batches into rows: idempotent, atomic with their cursor, and keeping the ticket figures right."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import T0, count
from sqlalchemy import select, text

from connectors.base import FLAG_EDITED, FLAG_OWN, Attachment, IdentityEvidence
from desk import identity, outbox, tickets
from desk import ingest as ingest_module
from desk.ingest import IngestOptions, ingest
from desk.models import Customer, Event, Message, SyncState, Ticket
from desk.store import get_cursor

FR = IngestOptions(region="FR")


def rows(store) -> dict[str, list[tuple]]:
    """Every row of every table the ingest path writes."""
    with store.engine.connect() as conn:
        return {
            table: [tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
            for table in ("customer", "identity", "ticket", "message", "attachment", "event",
                          "syncstate")
        }


def the_ticket(store) -> Ticket:
    with store.session() as session:
        return session.execute(select(Ticket)).scalar_one()


def a_mixed_batch(inbound) -> list:
    return [
        inbound("Where is my order?", sender="jane@example.com", sender_name="Jane",
                attachments=[Attachment("receipt.pdf", "application/pdf", b"%PDF-1.4")]),
        inbound("Any news?", sender="Jane@Example.com", sender_name="Jane"),
        inbound("Bonjour", channel="sms", sender="06 12 34 56 78"),
        inbound("Hi from Telegram", channel="telegram", sender="424242", sender_name="Paul"),
        inbound("Out of office", sender="bob@example.org", flags={"auto_reply"}),
    ]


# ---------------------------------------------------------------------------- idempotence


def test_ingesting_the_same_batch_twice_changes_nothing(store, inbound) -> None:
    batch = a_mixed_batch(inbound)
    first = ingest(store, batch, options=FR)
    assert first.stored == 5
    before = rows(store)
    second = ingest(store, batch, options=FR)
    assert (second.stored, second.duplicates) == (0, 5)
    assert rows(store) == before


def test_a_message_repeated_inside_one_batch_is_stored_once(store, inbound) -> None:
    message = inbound("only once", provider_id="dup@x")
    result = ingest(store, [message, message])
    assert (result.stored, result.duplicates) == (1, 1)
    assert count(store, Message) == 1
    assert the_ticket(store).message_count == 1


def test_the_same_provider_id_from_two_connectors_is_two_messages(store, inbound) -> None:
    ingest(store, [inbound("a", provider_id="42", connector="mail-a"),
                   inbound("b", provider_id="42", connector="mail-b")])
    assert count(store, Message) == 2


# ---------------------------------------------------------------------------- atomicity


def test_the_cursor_is_saved_with_the_batch(store, inbound) -> None:
    ingest(store, [inbound("one")], connector="mail", cursor={"uidvalidity": 7, "uid": 10})
    with store.session() as session:
        assert get_cursor(session, "mail") == {"uidvalidity": 7, "uid": 10}
    # A batch of messages already stored still moves the cursor on.
    ingest(store, [inbound("one", provider_id="email-1@test")], connector="mail",
           cursor={"uidvalidity": 7, "uid": 11})
    with store.session() as session:
        assert get_cursor(session, "mail") == {"uidvalidity": 7, "uid": 11}
    assert count(store, Message) == 1


def test_a_bad_message_mid_batch_commits_neither_messages_nor_cursor(store, inbound) -> None:
    ingest(store, [inbound("earlier")], connector="mail", cursor={"uid": 1})
    before = rows(store)
    good = [inbound("good one"), inbound("good two")]
    broken = inbound("placeholder")
    broken.text = b"not text"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        ingest(store, [good[0], broken, good[1]], connector="mail", cursor={"uid": 4})
    assert rows(store) == before
    with store.session() as session:
        assert get_cursor(session, "mail") == {"uid": 1}

    broken.text = "fixed"
    result = ingest(store, [good[0], broken, good[1]], connector="mail", cursor={"uid": 4})
    assert result.stored == 3
    assert count(store, Message) == 4
    with store.session() as session:
        assert get_cursor(session, "mail") == {"uid": 4}


def test_a_failure_after_the_inserts_rolls_the_whole_batch_back(
    store, inbound, monkeypatch
) -> None:
    ingest(store, [inbound("earlier")], connector="mail", cursor={"uid": 1})
    before = rows(store)
    real_write = ingest_module._Batch.write

    def write_then_fail(self) -> None:
        real_write(self)
        raise RuntimeError("disk unplugged")

    monkeypatch.setattr(ingest_module._Batch, "write", write_then_fail)
    batch = [inbound("new one", sender="new@example.com"), inbound("another")]
    with pytest.raises(RuntimeError, match="disk unplugged"):
        ingest(store, batch, connector="mail", cursor={"uid": 3})
    assert rows(store) == before

    monkeypatch.undo()
    result = ingest(store, batch, connector="mail", cursor={"uid": 3})
    assert result.stored == 2
    assert count(store, Message) == 3
    assert count(store, Customer) == 2
    assert ingest(store, batch, connector="mail", cursor={"uid": 3}).stored == 0
    with store.session() as session:
        assert get_cursor(session, "mail") == {"uid": 3}
        state = session.get(SyncState, "mail")
    assert state.last_success_at is not None


# ---------------------------------------------------------------------------- identity evidence


def test_a_telegram_contact_joins_the_sms_customer_and_their_ticket(store, inbound) -> None:
    ingest(store, [inbound("my parcel is late", channel="sms", sender="06 12 34 56 78")],
           options=FR)
    ingest(
        store,
        [inbound("here is my number", channel="telegram", sender="424242",
                 sender_name="Jane", at=timedelta(hours=1),
                 evidence=[IdentityEvidence("phone", "+33612345678")])],
        options=FR,
    )
    with store.session() as session:
        live = session.execute(
            select(Customer).where(Customer.merged_into.is_(None))
        ).scalars().all()
        assert len(live) == 1
        customer = live[0].id
        assert identity.find_customer(session, "phone", "+33612345678") == customer
        assert identity.find_customer(session, "telegram", "424242") == customer
        channels = sorted(session.execute(
            select(Message.channel).where(Message.customer_id == customer)).scalars())
        tickets = session.execute(select(Ticket)).scalars().all()
        link = session.execute(
            select(Event).where(Event.kind == "identity_linked")).scalar_one()
    assert channels == ["sms", "telegram"]
    # One conversation: the Telegram message joins the live SMS ticket, no second ticket.
    assert len(tickets) == 1 and tickets[0].channels == "sms,telegram"
    assert link.actor == "system" and "+33612345678" in json.loads(link.data)["reason"]
    # ...and an SMS from that number afterwards lands on the same customer.
    ingest(store, [inbound("still waiting", channel="sms", sender="+33612345678",
                           at=timedelta(hours=2))], options=FR)
    with store.session() as session:
        owners = set(session.execute(select(Message.customer_id)).scalars())
    assert owners == {customer}


def test_telegram_evidence_of_a_new_phone_links_it(store, inbound) -> None:
    ingest(store, [inbound("hi", channel="telegram", sender="424242",
                           evidence=[IdentityEvidence("phone", "+33 6 12 34 56 78")])],
           options=FR)
    ingest(store, [inbound("sms", channel="sms", sender="0612345678", at=timedelta(hours=1))],
           options=FR)
    assert count(store, Customer) == 1
    with store.session() as session:
        event = session.execute(select(Event).where(Event.kind == "identity_linked")).scalar_one()
    assert json.loads(event.data)["value"] == "+33612345678"


# ---------------------------------------------------------------------------- ticket figures


def test_ticket_aggregates_follow_the_conversation(store, inbound) -> None:
    ingest(store, [inbound("Where is my order?", sender="jane@example.com", at=T0)])
    [jane] = _customers(store)
    with store.transaction() as session:
        identity.link_identity(session, jane, "phone", "+33612345678", actor="alice")
    ingest(store, [
        inbound("Texting you as well", channel="sms", sender="+33612345678",
                at=timedelta(hours=1)),
        inbound("Hello?   Anyone\nthere?", sender="jane@example.com", at=timedelta(hours=2)),
    ])
    ticket = the_ticket(store)
    assert ticket.message_count == 3
    assert ticket.unread_count == 3
    assert ticket.channels == "email,sms"
    assert ticket.last_channel == "email"
    assert ticket.snippet == "Hello? Anyone there?"
    assert ticket.waiting_since == T0  # waiting since the first unanswered message
    assert ticket.last_inbound_at == T0 + timedelta(hours=2)
    assert ticket.first_response_at is None

    with store.transaction() as session:
        tickets.mark_read(session, ticket.id)
        outbox.queue_reply(session, ticket.id, "It left our warehouse today.", agent="alice",
                           channel="email")
    ticket = the_ticket(store)
    assert ticket.unread_count == 0
    assert ticket.waiting_since is None
    assert ticket.first_response_at is not None
    first_response = ticket.first_response_at
    assert ticket.message_count == 4
    assert ticket.snippet == "It left our warehouse today."

    later = datetime.now(UTC) + timedelta(minutes=5)
    ingest(store, [inbound("Got it, thanks", channel="sms", sender="+33612345678", at=later)])
    ticket = the_ticket(store)
    assert ticket.waiting_since == later
    assert ticket.unread_count == 1
    assert ticket.first_response_at == first_response  # only the first answer counts


def test_a_copy_of_our_own_mail_answers_the_customer(store, inbound) -> None:
    ingest(store, [inbound("question", sender="jane@example.com", at=T0)])
    ingest(store, [inbound("answer from Thunderbird", sender="support@example.com",
                           recipients=["Jane@Example.com"], flags={FLAG_OWN},
                           at=timedelta(hours=1))])
    ticket = the_ticket(store)
    assert ticket.waiting_since is None
    assert ticket.first_response_at == T0 + timedelta(hours=1)
    assert ticket.unread_count == 1
    with store.session() as session:
        directions = session.execute(select(Message.direction).order_by(Message.id)).all()
    assert [d for (d,) in directions] == ["in", "out"]
    assert count(store, Customer) == 1


def _customers(store) -> list[int]:
    with store.session() as session:
        return list(session.execute(select(Customer.id).order_by(Customer.id)).scalars())


# ---------------------------------------------------------------------------- edits and text


def test_an_edit_updates_the_text_and_is_audited(store, inbound) -> None:
    ingest(store, [inbound("I ordered 2 cups", channel="telegram", provider_id="99:7")])
    result = ingest(store, [inbound("I ordered 3 cups", channel="telegram",
                                    provider_id="99:7", is_edit=True)])
    assert result.edited == 1
    assert count(store, Message) == 1
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
        event = session.execute(select(Event).where(Event.kind == "message_edited")).scalar_one()
    assert stored.text == "I ordered 3 cups"
    assert FLAG_EDITED in stored.flags.split(",")
    assert json.loads(event.data) == {"message_id": stored.id, "before": "I ordered 2 cups"}
    assert event.ticket_id == stored.ticket_id
    # Repeating the same edit is a duplicate, not a second edit.
    again = ingest(store, [inbound("I ordered 3 cups", channel="telegram",
                                   provider_id="99:7", is_edit=True)])
    assert (again.edited, again.duplicates) == (0, 1)


def test_an_edit_in_the_same_batch_as_the_original_keeps_the_last_text(store, inbound) -> None:
    ingest(store, [
        inbound("typo", channel="telegram", provider_id="99:8"),
        inbound("fixed", channel="telegram", provider_id="99:8", is_edit=True),
    ])
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
    assert stored.text == "fixed"
    assert FLAG_EDITED in stored.flags.split(",")


def test_nul_bytes_are_stripped_from_text(store, inbound) -> None:
    ingest(store, [inbound("hel\x00lo", channel="telegram", provider_id="1:1",
                           sender_name="Ja\x00ne")])
    with store.session() as session:
        assert session.execute(select(Message.text)).scalar_one() == "hello"
        assert session.execute(select(Message.sender_name)).scalar_one() == "Jane"
    # An edit is cleaned the same way.
    ingest(store, [inbound("hel\x00lo w\x00orld", channel="telegram", provider_id="1:1",
                           is_edit=True)])
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
    assert stored.text == "hello world"


def test_a_message_without_a_time_is_dated_when_received(store, inbound) -> None:
    before = datetime.now(UTC)
    message = inbound("no date")
    message.sent_at = None
    ingest(store, [message])
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
    assert before <= stored.sent_at <= datetime.now(UTC)


def test_an_sms_short_code_is_stored_under_its_code(store, inbound) -> None:
    ingest(store, [inbound("Your code is 1234", channel="sms", sender="36179")], options=FR)
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
        assert identity.find_customer(session, "phone", "36179") == stored.customer_id


def test_a_contact_shared_later_merges_two_known_customers_oldest_surviving(
    store, inbound
) -> None:
    ingest(store, [inbound("parcel?", channel="sms", sender="+33612345678")], options=FR)
    ingest(store, [inbound("hello", channel="telegram", sender="424242", sender_name="Jane",
                           at=timedelta(hours=1))], options=FR)
    ingest(store, [inbound("my number", channel="telegram", sender="424242",
                           at=timedelta(hours=2),
                           evidence=[IdentityEvidence("phone", "+33612345678")])], options=FR)
    with store.session() as session:
        sms_customer = identity.find_customer(session, "phone", "+33612345678")
        merge = session.execute(select(Event).where(Event.kind == "merge")).scalar_one()
        assert identity.find_customer(session, "telegram", "424242") == sms_customer
    assert json.loads(merge.data)["target"] == sms_customer == 1
    assert merge.actor == "system"



def test_an_out_of_office_answer_leaves_a_pending_ticket_pending(store, inbound) -> None:
    ingest(store, [inbound("help", sender="jane@example.com")])
    with store.transaction() as session:
        tickets.set_status(session, 1, "pending", actor="alice")
        tickets.mark_read(session, 1)
    auto = inbound("I am away", sender="jane@example.com", at=timedelta(hours=1))
    auto.flags.add("auto_reply")
    ingest(store, [auto])
    with store.session() as session:
        ticket = session.get(Ticket, 1)
    assert (ticket.status, ticket.unread_count) == ("pending", 0)


def test_a_customer_first_seen_by_phone_takes_their_real_name(store, inbound) -> None:
    ingest(store, [inbound("hello", channel="sms", sender="+33698214375", sender_name=None)],
           options=FR)
    with store.transaction() as session:
        identity.link_identity(session, 1, "email", "nicolas@example.org", actor="alice")
    ingest(store, [inbound("it's me", sender="nicolas@example.org",
                           sender_name="Nicolas Fournier", at=timedelta(hours=1))], options=FR)
    with store.session() as session:
        assert session.get(Customer, 1).name == "Nicolas Fournier"
