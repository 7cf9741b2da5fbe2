"""Full-text search as agents type it, and `desk export` as other programs read it."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, select

from connectors.base import Attachment, PermanentError, Receipt
from desk import identity, outbox, tickets
from desk.export import export
from desk.ingest import ingest
from desk.models import Message, Ticket
from desk.search import SearchError, search


@pytest.fixture
def mailbox(store, inbound):
    ingest(store, [
        inbound("My grinder makes a loud noise", provider_id="a", sender="ana@example.com",
                sender_name="Ana Martin", subject="Noisy grinder"),
        inbound("I would like a refund for the café crème machine", provider_id="b",
                sender="bruno@example.com", sender_name="Bruno"),
        inbound("The GRINDING wheel is stuck", provider_id="c", sender="chloe@example.com",
                sender_name="Chloé"),
        inbound("Thanks, the parcel arrived", provider_id="d", sender="ana@example.com"),
    ])
    return store


def ids(store, query: str) -> list[str]:
    with store.session() as session:
        hits = search(session, query)
        by_id = dict(session.execute(select(Message.id, Message.provider_id)).all())
    return [by_id[hit.message_id] for hit in hits]


# ---------------------------------------------------------------------------- search


def test_search_finds_a_word_in_text_or_subject(mailbox) -> None:
    assert ids(mailbox, "refund") == ["b"]
    assert ids(mailbox, "noisy") == ["a"]  # only in the subject
    assert ids(mailbox, "grinder loud") == ["a"]  # every word must match
    assert ids(mailbox, "grinder refund") == []


def test_search_by_prefix(mailbox) -> None:
    assert ids(mailbox, "grind*") == ["c", "a"]


def test_search_ignores_case_and_accents(mailbox) -> None:
    assert ids(mailbox, "cafe") == ["b"]
    assert ids(mailbox, "CAFÉ") == ["b"]
    assert ids(mailbox, "grinding") == ["c"]
    assert ids(mailbox, "chloe") == []  # names are not message text


def test_search_puts_the_newest_first_and_pages(mailbox) -> None:
    with mailbox.session() as session:
        hits = search(session, "the")
        assert [h.message_id for h in hits] == sorted((h.message_id for h in hits), reverse=True)
        assert len(hits) == 3
        first_page = search(session, "the", limit=2)
        second_page = search(session, "the", limit=2, before_id=first_page[-1].message_id)
    assert [h.message_id for h in first_page + second_page] == [h.message_id for h in hits]


def test_a_hit_says_who_and_where(mailbox) -> None:
    with mailbox.session() as session:
        [hit] = search(session, "refund")
        ticket = session.get(Ticket, hit.ticket_id)
    assert hit.customer_name == "Bruno"
    assert (hit.channel, hit.direction) == ("email", "in")
    assert ticket.customer_id == hit.customer_id
    assert "refund" in hit.snippet


@pytest.mark.parametrize(
    "query",
    ['AND OR "', "NEAR(", "NEAR(grinder loud, 2)", "-foo", "*", "**", '"', '""', "'",
     "grinder NOT", "NOT grinder", "subject:grinder", "(", ")", "{a b}", "a*b", "^x", "-",
     ":", "\\", '"*"', "-*", "grinder\x00loud", "\x1b[2J", "💥"],
)
def test_fts_operators_in_user_input_never_raise_a_database_error(mailbox, query: str) -> None:
    with mailbox.session() as session:
        try:
            hits = search(session, query)
        except SearchError as exc:
            assert str(exc) == "nothing to search for"
        else:
            assert isinstance(hits, list)


def test_search_words_are_taken_literally(mailbox) -> None:
    # "NOT" and "OR" are words to look for, not operators that would widen the search.
    assert ids(mailbox, "grinder OR refund") == []
    assert ids(mailbox, '"loud noise"') == ["a"]  # a quoted phrase stays a phrase
    assert ids(mailbox, '"noise loud"') == []


def test_the_index_follows_an_edit_and_a_delete(mailbox, inbound) -> None:
    ingest(mailbox, [inbound("The grinder makes a rattling sound", provider_id="a",
                             is_edit=True)])
    assert ids(mailbox, "loud") == []
    assert ids(mailbox, "rattling") == ["a"]
    with mailbox.transaction() as session:
        session.execute(delete(Message).where(Message.provider_id == "c"))
    assert ids(mailbox, "grind*") == ["a"]
    assert ids(mailbox, "stuck") == []


# ---------------------------------------------------------------------------- export

CUSTOMER_FIELDS = {"type", "id", "name", "identities", "merged_into"}
TICKET_FIELDS = {"type", "id", "customer_id", "status", "assignee", "priority", "tags", "subject",
                 "created_at", "updated_at"}
MESSAGE_FIELDS = {"type", "id", "ticket_id", "customer_id", "channel", "direction", "connector",
                  "provider_id", "sender", "subject", "text", "sent_at", "status", "error",
                  "flags", "attachments"}
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")


class _Refusing:
    """Just enough of a mail connector for deliver_due: the provider refuses every reply."""

    name, channel = "mail", "email"

    async def send(self, message) -> Receipt:
        raise PermanentError("mailbox unavailable", code="550")


async def test_export_writes_the_documented_fields(store, inbound) -> None:
    ingest(store, [
        inbound("Invoice attached\x1b[2J", sender="jane@example.com", sender_name="Jane",
                attachments=[Attachment("invoice.pdf", "application/pdf", b"%PDF-1.4 x")]),
        inbound("sms", channel="sms", sender="+14155552671", at=timedelta(hours=1)),
    ])
    with store.transaction() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        sms = identity.find_customer(session, "phone", "+14155552671")
        identity.merge(session, jane, sms, actor="alice")
        ticket_id = session.execute(select(Ticket.id).order_by(Ticket.id)).scalars().first()
        tickets.add_tags(session, ticket_id, ["billing", "vip"], actor="alice")
        tickets.assign(session, ticket_id, "alice", actor="alice")
        outbox.queue_reply(session, ticket_id, "Thanks!", agent="alice", channel="email")
        outbox.add_note(session, ticket_id, "private", agent="alice")
    await outbox.deliver_due(store, {"mail": _Refusing()})

    out = io.StringIO()
    with store.session() as session:
        counts = export(session, out)
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert counts == {"customer": 2, "ticket": 2, "message": 4}
    assert [r["type"] for r in records] == ["customer"] * 2 + ["ticket"] * 2 + ["message"] * 4

    customers = {r["id"]: r for r in records if r["type"] == "customer"}
    for record in customers.values():
        assert set(record) == CUSTOMER_FIELDS
    assert customers[jane]["name"] == "Jane"
    assert customers[jane]["merged_into"] is None
    assert customers[sms]["merged_into"] == jane
    assert {(i["kind"], i["value"]) for i in customers[jane]["identities"]} == {
        ("email", "jane@example.com"), ("phone", "+14155552671")}
    assert all(set(i) == {"kind", "value"} for i in customers[jane]["identities"])

    ticket = next(r for r in records if r["type"] == "ticket" and r["id"] == ticket_id)
    assert set(ticket) == TICKET_FIELDS
    assert (ticket["tags"], ticket["assignee"], ticket["priority"], ticket["status"]) == (
        ["billing", "vip"], "alice", "normal", "open")
    assert ticket["customer_id"] == jane

    messages = [r for r in records if r["type"] == "message"]
    for record in messages:
        assert set(record) == MESSAGE_FIELDS
        assert ISO_WITH_OFFSET.match(record["sent_at"]), record["sent_at"]
    for record in [*customers.values(), ticket]:
        for key in ("created_at", "updated_at"):
            if key in record:
                assert ISO_WITH_OFFSET.match(record[key]), record[key]
                assert datetime.fromisoformat(record[key]).utcoffset() is not None
    first = messages[0]
    assert first["text"] == "Invoice attached\x1b[2J"  # data, exported as the customer wrote it
    assert first["attachments"] == [{
        "filename": "invoice.pdf", "content_type": "application/pdf", "size": 10,
        "sha256": hashlib.sha256(b"%PDF-1.4 x").hexdigest(),
    }]
    assert first["flags"] == []
    reply = next(m for m in messages if m["direction"] == "out")
    assert (reply["status"], reply["error"]) == ("failed", "550: mailbox unavailable")
    note = next(m for m in messages if m["direction"] == "note")
    assert note["text"] == "private"
    # Every line is one JSON object, with no raw control characters that could break a reader.
    assert all("\x1b" not in line for line in lines)


def test_an_empty_store_exports_nothing(store) -> None:
    out = io.StringIO()
    with store.session() as session:
        assert export(session, out) == {"customer": 0, "ticket": 0, "message": 0}
    assert out.getvalue() == ""
