"""What the app reads, without the app: the timeline, queue figures, blind-reply checks,
notifications, merge candidates, presence and canned replies."""

from __future__ import annotations

from datetime import timedelta

import pytest
import tui_store
from sqlalchemy import select

from connectors.base import InboundMessage
from desk import canned, identity, outbox, presence, views
from desk.ingest import ingest
from desk.models import Event, Identity, Message
from desk.timeutil import use_clock


@pytest.fixture
def ids(store):
    built = tui_store.build(store)
    with use_clock(lambda: tui_store.NOW):
        yield built


def test_the_timeline_spans_every_ticket_of_the_customer_with_events(store) -> None:
    from desk import tickets

    month_ago = tui_store.T0 - timedelta(days=30)
    with use_clock(lambda: month_ago):
        ingest(store, [tui_store.mail(50, "marta@example.es", "Marta Ruiz", "Old order",
                                      "A different topic.", month_ago)])
        with store.transaction() as session:
            tickets.set_status(session, 1, "resolved", actor="alice")
    ids = tui_store.build(store)
    timeline = views.timeline(store, ids["ticket"], agent="alice")
    messages = timeline.messages
    assert [m.channel for m in messages if m.direction == "in"] == [
        "email", "email", "sms", "telegram", "telegram"]
    assert len({m.ticket_id for m in messages}) == 2  # the older ticket is in the timeline
    assert timeline.other_tickets and timeline.other_tickets[0].id != ids["ticket"]
    kinds = [e.kind for e in timeline.entries if isinstance(e, Event)]
    assert kinds.count("identity_linked") == 2 and "assign" in kinds
    assert "delivery_failed" not in kinds  # shown on the failed message itself
    moments = [m.sent_at if isinstance(m, Message) else m.created_at for m in timeline.entries]
    assert moments == sorted(moments)


def test_the_timeline_pages_back_and_counts_what_is_earlier(store, ids) -> None:
    newest = views.timeline(store, ids["ticket"], agent="alice", limit=3)
    assert len(newest.messages) == 3 and newest.earlier == 4
    assert newest.messages[-1].text == "Thank you, I will try tonight."


def test_queue_figures_count_channels_and_tags_of_open_tickets(store, ids) -> None:
    from desk import tickets

    with store.transaction() as session:
        tickets.set_tags(session, ids["ticket"], ["grinder", "vip"], actor="alice")
    figures = views.queue_figures(store, "alice", ["email", "sms", "telegram"])
    assert figures.count("open") == 7 and figures.count("mine") == 1
    assert figures.count("channel:sms") == 1 and figures.count("channel:email") == 7
    assert figures.count("tag:vip") == 1 and figures.count("tag:nope") is None
    total, rows = views.ticket_rows(store, "tag:grinder", "alice", 0, 10)
    assert total == 1 and rows[0].channels == ("email", "sms", "telegram")


def test_changes_since_sees_the_customer_and_other_agents_not_me(store, ids) -> None:
    seen = views.latest_message_id(store, ids["marta"])
    with store.transaction() as session:
        outbox.queue_reply(session, ids["ticket"], "mine", agent="alice", channel="email")
        outbox.add_note(session, ids["ticket"], "a note by bob", agent="bob")
    assert views.changes_since(store, ids["marta"], seen, "alice") == []
    with store.transaction() as session:
        outbox.queue_reply(session, ids["ticket"], "bob's answer", agent="bob", channel="email")
    ingest(store, [InboundMessage(connector="sms", channel="sms", provider_id="SM-n",
                                  sender="+34612345678", text="hello?",
                                  sent_at=tui_store.NOW)])
    changes = views.changes_since(store, ids["marta"], seen, "alice")
    assert [(m.direction, m.text) for m in changes] == [("out", "bob's answer"),
                                                       ("in", "hello?")]


def test_arrivals_are_customers_messages_on_my_tickets_only(store, ids) -> None:
    after = views.newest_message_id(store)
    ingest(store, [
        InboundMessage(connector="chat", channel="telegram", provider_id="tg-9",
                       sender="777001", text="ping", sent_at=tui_store.NOW),
        tui_store.mail(77, "jonas@example.de", "Jonas Becker", "Invoice for order CR-1042",
                       "unassigned ticket", tui_store.NOW),
    ])
    arrivals = views.arrivals_for(store, "alice", after)
    assert [(a.ticket_id, a.customer_name, a.snippet) for a in arrivals] == [
        (ids["ticket"], "Marta Ruiz", "ping")]
    assert views.arrivals_for(store, "bob", after) == []


def test_merge_candidates_by_search_and_by_evidence(store, ids) -> None:
    found = views.merge_candidates(store, ids["marta"], "becker", region="US")
    assert [m.name for m in found] == ["Jonas Becker"] and found[0].evidence == ""
    assert found[0].identities == ["email jonas@example.de"]
    ingest(store, [tui_store.mail(78, "marta.other@example.es", "Marta R.", "hi",
                                  "write me at marta@example.es please", tui_store.NOW)])
    with store.session() as session:
        other = session.execute(select(Identity.customer_id).where(
            Identity.value == "marta.other@example.es")).scalar_one()
    suggested = views.merge_candidates(store, other, "", region="US")
    assert [(m.customer_id, m.evidence) for m in suggested] == [
        (ids["marta"], "email marta@example.es appears in their message")]


def test_merged_into_lists_what_can_be_unmerged(store, ids) -> None:
    with store.session() as session:
        jonas = session.execute(select(Identity.customer_id).where(
            Identity.value == "jonas@example.de")).scalar_one()
    with store.transaction() as session:
        identity.merge(session, ids["marta"], jonas, actor="alice", reason="same person")
    merged = views.merged_into(store, ids["marta"])
    assert [(m.customer_id, m.name, m.reason) for m in merged] == [
        (jonas, "Jonas Becker", "same person")]
    with store.transaction() as session:
        identity.unmerge(session, jonas, actor="alice")
    assert views.merged_into(store, ids["marta"]) == []


def test_events_read_as_sentences() -> None:
    event = Event(created_at=tui_store.NOW, kind="status", actor="bob", ticket_id=3,
                  data='{"before": "open", "after": "snoozed", "until": "2026-03-03T09:00:00"}')
    assert views.describe_event(event) == "bob set #3 open → snoozed until 2026-03-03 09:00"
    unassign = Event(created_at=tui_store.NOW, kind="assign", actor="bob", ticket_id=3,
                     data='{"before": "bob", "after": null}')
    assert views.describe_event(unassign) == "bob unassigned #3"


def test_presence_shows_other_agents_until_it_expires(store, ids) -> None:
    with store.transaction() as session:
        presence.announce(session, "bob", ids["ticket"], "reply")
        presence.announce(session, "alice", ids["ticket"], "note")
    with store.session() as session:
        assert [p.agent for p in presence.others_on(session, ids["ticket"], "alice")] == ["bob"]
    with use_clock(lambda: tui_store.NOW + presence.EXPIRES + timedelta(seconds=1)), \
            store.session() as session:
        assert presence.others_on(session, ids["ticket"], "alice") == []
    with store.transaction() as session:
        presence.withdraw(session, "bob", ids["ticket"])
    with store.session() as session:
        assert presence.others_on(session, ids["ticket"], "alice") == []


def test_canned_replies_fill_known_variables_and_leave_the_rest() -> None:
    values = canned.variables(customer_name="Marta Ruiz", agent_name="alice", ticket_id=7,
                              subject="Grinder")
    text = "Hi {customer.first_name} ({customer.name}), #{ticket.id} {ticket.subject} " \
           "— {agent.name} {customer.phone} {not a variable}"
    assert canned.expand(text, values) == (
        "Hi Marta (Marta Ruiz), #7 Grinder — alice {customer.phone} {not a variable}")
    # a value that looks like a variable is inserted as is, not expanded again
    sneaky = canned.variables(customer_name="{agent.name}", agent_name="alice")
    assert canned.expand("{customer.name}", sneaky) == "{agent.name}"
