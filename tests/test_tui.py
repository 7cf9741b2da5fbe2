"""The agent app driven by its keys (Pilot); each test checks the effect in the store."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import tui_store
from conftest import count
from sqlalchemy import select
from textual.widgets import Select, TextArea

from connectors.base import InboundMessage
from desk import presence
from desk.ingest import ingest
from desk.models import Customer, Identity, Message, Presence, Ticket
from desk.store import Store
from desk.timeutil import use_clock
from desk.tui.app import DeskApp
from desk.tui.screens.composer import ComposerScreen
from desk.tui.screens.help import HelpScreen
from desk.tui.screens.main import MainScreen
from desk.tui.screens.merge import MergeScreen
from desk.tui.screens.search import SearchScreen
from desk.tui.widgets.customer_panel import CustomerPanel, PresenceBar
from desk.tui.widgets.ticket_list import TicketList
from desk.tui.widgets.timeline import TimelineView

HOSTILE = tui_store.HOSTILE


@pytest.fixture
def ids(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setenv("TZ", "UTC")
    built = tui_store.build(store)
    with use_clock(lambda: tui_store.NOW):
        yield built


@pytest.fixture
def app(store: Store, ids: dict[str, int], tmp_path: Path) -> DeskApp:
    return DeskApp(store, tui_store.settings(tmp_path))


async def settle(app: DeskApp, pilot) -> None:
    await tui_store.settle(pilot)


async def until(app: DeskApp, pilot, condition, timeout: float = 5.0) -> None:
    """Let the app run (its 1 s store poll included) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the app never got there")
        await settle(app, pilot)
        await pilot.pause(0.1)


async def open_marta(app: DeskApp, pilot, ids: dict[str, int]) -> MainScreen:
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, MainScreen)
    # Marta wrote last, so her ticket is first in the Open queue; enter opens it.
    assert screen.query_one(TicketList).row(0).id == ids["ticket"]
    await pilot.press("enter")
    await settle(app, pilot)
    assert screen.timeline is not None and screen.timeline.ticket.id == ids["ticket"]
    return screen


def ticket(store: Store, ticket_id: int) -> Ticket:
    with store.session() as session:
        found = session.get(Ticket, ticket_id)
        assert found is not None
        return found


def outbound(store: Store, ticket_id: int) -> list[Message]:
    with store.session() as session:
        return list(session.execute(
            select(Message).where(Message.ticket_id == ticket_id, Message.direction != "in")
            .order_by(Message.id)).scalars())


async def compose(app: DeskApp, pilot, key: str, text: str) -> ComposerScreen:
    await pilot.press(key)
    await settle(app, pilot)
    composer = app.screen
    assert isinstance(composer, ComposerScreen)
    composer.query_one("#body", TextArea).insert(text)
    await settle(app, pilot)
    return composer


# ---- the main screen ----------------------------------------------------------------------------


async def test_the_queue_lists_tickets_and_the_cursor_opens_them(app, ids) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        tickets = app.screen.query_one(TicketList)
        assert tickets.total == 7
        assert "Marta Ruiz" in tickets.render_line(0).text
        await pilot.press("j", "j")
        await settle(app, pilot)
        assert tickets.cursor == 2
        assert app.screen.timeline.ticket.id == tickets.row(2).id
        await pilot.press("G")
        assert tickets.cursor == 6
        await pilot.press("g")
        assert tickets.cursor == 0


async def test_opening_a_ticket_reads_it_passing_over_it_does_not(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        tickets = app.screen.query_one(TicketList)
        await pilot.press("j")  # the cursor passes over ticket two, which shows
        await until(app, pilot, lambda: app.screen.timeline.ticket.id == tickets.row(1).id)
        assert ticket(store, tickets.row(1).id).unread_count == 1
        await pilot.press("enter")
        await settle(app, pilot)
        assert ticket(store, tickets.row(1).id).unread_count == 0
        assert "●" not in tickets.render_line(2).text


async def test_queues_by_status_channel_and_tag_show_their_tickets(app, ids, store) -> None:
    with store.transaction() as session:
        from desk import tickets as actions

        actions.set_tags(session, ids["ticket"], ["grinder"], actor="alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        tickets = screen.query_one(TicketList)
        for queue, expected in (("mine", 1), ("channel:telegram", 1), ("channel:sms", 1),
                                ("channel:email", 7), ("tag:grinder", 1), ("unassigned", 6)):
            screen.show_queue(queue)
            await settle(app, pilot)
            assert tickets.total == expected, queue
        queues = screen.query_one("#queues")
        labels = [str(queues.get_option_at_index(i).prompt) for i in range(queues.option_count)
                  if queues.get_option_at_index(i).id]
        assert "Mine 1" in labels and "Open 7" in labels and "# grinder 1" in labels
        assert "☏ SMS 1" in labels


async def test_the_timeline_mixes_channels_notes_events_and_failures(app, ids) -> None:
    async with app.run_test(size=(140, 50)) as pilot:
        screen = await open_marta(app, pilot, ids)
        text = screen.query_one(TimelineView).text()
        order = [
            "✉ email ← Marta Ruiz <marta@example.es>",
            "alice linked phone +34612345678 (number in her signature)",
            "☏ SMS ← +34612345678",
            "☏ SMS → alice to +34612345678",
            "21610: Attempt to send to unsubscribed recipient",
            "✎ private note alice",
            "✈ Telegram ← Marta <777001>",
            "✉ email → alice to marta@example.es",
            "Thank you, I will try tonight.",
        ]
        positions = [text.index(part) for part in order]
        assert positions == sorted(positions)
        assert "✗ failed" in text and "✓ sent" in text
        # her signature is folded until u
        assert "+34 612 34 56 78" not in text
        await pilot.press("u")
        assert "+34 612 34 56 78" in screen.query_one(TimelineView).text()
        panel = str(screen.query_one(CustomerPanel).render())
        assert "marta@example.es" in panel and "@marta_r (777001)" in panel
        assert "+34 612 34 56 78" in panel


async def test_hostile_text_is_shown_literally_and_does_nothing(app, ids) -> None:
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        tickets = screen.query_one(TicketList)
        row = next(i for i in range(tickets.total) if tickets.row(i).customer_name == HOSTILE)
        line = tickets.render_line(row * 2).text + tickets.render_line(row * 2 + 1).text
        assert "\x1b" not in line and "\x07" not in line and "[bold red]x[/]" in line
        screen.open_ticket(tickets.row(row).id, focus=True)
        await settle(app, pilot)
        text = screen.query_one(TimelineView).text()
        panel = str(screen.query_one(CustomerPanel).render())
        for shown in (text, panel):
            assert "\x1b" not in shown and "\x07" not in shown
            assert "[bold red]x[/]" in shown
            assert "[link=https://evil]y[/]" in shown
            assert "[@click=app.quit]z[/]" in shown
        await pilot.click(TimelineView)
        assert app.is_running


async def test_a_huge_message_opens_without_rendering_all_of_it(app, ids, store) -> None:
    ingest(store, [tui_store.mail(900, "marta@example.es", "Marta Ruiz", "log",
                                  "x" * 3_000_000, tui_store.T0 + timedelta(hours=7))])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_marta(app, pilot, ids)
        text = screen.query_one(TimelineView).text()
        assert "more characters not shown" in text
        assert len(text) < 200_000


# ---- replies and notes ------------------------------------------------------------------------


async def test_r_replies_on_the_channel_the_customer_last_wrote_on(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        composer = await compose(app, pilot, "r", "Did cleaning the burrs help?")
        channel = composer.query_one("#channel", Select)
        assert channel.value == "telegram"  # her last message came by Telegram
        offered = [value for _label, value in channel._options if isinstance(value, str)]
        assert sorted(offered) == ["email", "sms", "telegram"]
        assert "Telegram · 28/4096" in str(composer.query_one("#counter").render())
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        sent = outbound(store, ids["ticket"])[-1]
        assert (sent.channel, sent.recipient, sent.status) == ("telegram", "777001", "queued")
        assert sent.text == "Did cleaning the burrs help?" and sent.author == "alice"


async def test_the_composer_counts_sms_segments_and_sends_on_the_chosen_channel(
    app, ids, store
) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        composer = await compose(app, pilot, "r", "€" * 10 + "x" * 150)
        composer.query_one("#channel", Select).value = "sms"
        await settle(app, pilot)
        assert "SMS · 160 characters · 2 segments" in str(
            composer.query_one("#counter").render())
        composer.query_one("#channel", Select).value = "email"
        composer.query_one("#then", Select).value = "pending"
        await settle(app, pilot)
        assert "Subject: Re: Grinder makes a loud noise [#" in str(
            composer.query_one("#counter").render())
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        sent = outbound(store, ids["ticket"])[-1]
        assert (sent.channel, sent.recipient) == ("email", "marta@example.es")
        assert sent.subject.startswith("Re: Grinder makes a loud noise")
        assert ticket(store, ids["ticket"]).status == "pending"


async def test_no_blind_reply_when_the_customer_wrote_meanwhile(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        composer = await compose(app, pilot, "r", "Any news?")
        before = len(outbound(store, ids["ticket"]))
        # The daemon (another connection) stores a new message from her while alice types.
        other = Store(store.url)
        ingest(other, [InboundMessage(
            connector="sms", channel="sms", provider_id="SM-late", sender="+34612345678",
            text="Never mind, it works now!", sent_at=tui_store.NOW)])
        other.close()
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.screen is composer, "the first send stops and shows what changed"
        warning = str(composer.query_one("#warning").render())
        assert "Since you started writing" in warning and "it works now" in warning
        assert len(outbound(store, ids["ticket"])) == before
        await pilot.press("ctrl+r")  # seen it: send anyway
        await settle(app, pilot)
        assert len(outbound(store, ids["ticket"])) == before + 1


async def test_no_blind_reply_when_another_agent_answered(app, ids, store) -> None:
    from desk import outbox

    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await compose(app, pilot, "r", "Hello!")
        with store.transaction() as session:
            outbox.queue_reply(session, ids["ticket"], "bob here, on it", agent="bob",
                               channel="email")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        warning = str(app.screen.query_one("#warning").render())
        assert "bob answered on email: bob here, on it" in warning
        assert [m.author for m in outbound(store, ids["ticket"])][-1] == "bob"


async def test_no_blind_reply_when_the_support_mailbox_answered_outside_desk(
    app, ids, store
) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await compose(app, pilot, "r", "Hello!")
        before = len(outbound(store, ids["ticket"]))
        # bob answered from his mail client: our own address, no desk author
        ingest(store, [InboundMessage(
            connector="mail", channel="email", provider_id="<bob-direct@test>",
            sender="support@example.com", recipients=["marta@example.es"],
            subject="Re: Grinder", text="Bob here: a replacement is on its way.",
            sent_at=tui_store.NOW, flags={"own"})])
        assert outbound(store, ids["ticket"])[-1].author is None
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        warning = str(app.screen.query_one("#warning").render())
        assert "the support mailbox answered on email" in warning
        assert len(outbound(store, ids["ticket"])) == before + 1  # bob's mail only


async def test_the_warning_keeps_what_changed_when_someone_starts_writing(
    app, ids, store
) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        composer = await compose(app, pilot, "r", "Any news?")
        ingest(store, [InboundMessage(
            connector="sms", channel="sms", provider_id="SM-w", sender="+34612345678",
            text="Found the receipt!", sent_at=tui_store.NOW)])
        composer.refresh_from_store()
        await settle(app, pilot)
        with store.transaction() as session:
            presence.announce(session, "bob", ids["ticket"], "reply")
        composer.refresh_from_store()
        await settle(app, pilot)
        warning = str(composer.query_one("#warning").render())
        assert "bob is also writing" in warning and "Found the receipt!" in warning


async def test_a_send_interrupted_by_a_refresh_can_be_sent_again(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        composer = await compose(app, pilot, "r", "Hello again")
        before = len(outbound(store, ids["ticket"]))
        composer.action_send()
        composer.refresh_from_store()  # a live update lands while the send is in flight
        await settle(app, pilot)
        assert len(outbound(store, ids["ticket"])) == before + 1
        assert isinstance(app.screen, MainScreen)


async def test_keys_right_after_moving_never_act_on_the_ticket_left_behind(
    app, ids, store, monkeypatch
) -> None:
    from desk.tui.screens import main as main_screen

    monkeypatch.setattr(main_screen, "CURSOR_SETTLE_SECONDS", 30)  # it stays "loading"
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("escape")
        await settle(app, pilot)
        tickets = app.screen.query_one(TicketList)
        assert app.focused is tickets
        await pilot.press("j", "a")  # the cursor is on the next ticket, still loading
        await settle(app, pilot)
        assert tickets.cursor == 1
        assert ticket(store, ids["ticket"]).status == "open"
        next_ticket = tickets.row(1).id
        assert ticket(store, next_ticket).status == "open"
        await pilot.press("enter")  # opening it loads it at once
        await settle(app, pilot)
        assert app.screen.timeline.ticket.id == next_ticket
        await pilot.press("a")
        await settle(app, pilot)
        assert ticket(store, next_ticket).status == "resolved"
        assert ticket(store, ids["ticket"]).status == "open"


async def test_a_live_update_does_not_take_the_agent_off_their_ticket(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        screen.show_queue("pending")  # empty
        await settle(app, pilot)
        screen.open_ticket(ids["ticket"], focus=True)  # e.g. from search
        await settle(app, pilot)
        other_id = next(t for t in range(1, 8) if t != ids["ticket"])
        from desk import tickets as actions

        with store.transaction() as session:
            actions.set_status(session, other_id, "pending", actor="bob")
        screen.refresh_from_store()
        await settle(app, pilot)
        assert screen.query_one(TicketList).total == 1
        assert screen.timeline.ticket.id == ids["ticket"]


async def test_c_stores_a_private_note_that_is_never_sent(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await compose(app, pilot, "c", "Customer prefers Telegram.")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        note = outbound(store, ids["ticket"])[-1]
        assert (note.direction, note.status, note.text) == (
            "note", "note", "Customer prefers Telegram.")


async def test_escape_keeps_the_draft_for_next_time(app, ids) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await compose(app, pilot, "r", "half a thought")
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("r")
        await settle(app, pilot)
        assert app.screen.query_one("#body", TextArea).text == "half a thought"


async def test_canned_replies_fill_in_the_customer_and_agent(app, ids) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        composer = await compose(app, pilot, "r", "")
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert composer.query_one("#body", TextArea).text == (
            "Hello Marta Ruiz, thanks for your patience. — alice")


async def test_e_writes_the_reply_in_the_editor(app, ids, store, tmp_path, monkeypatch) -> None:
    editor = tmp_path / "editor.sh"
    seen = tmp_path / "mode"
    editor.write_text(f'#!/bin/sh\nstat -c %a "$1" > {seen}\nprintf "Written in vi." > "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("VISUAL", str(editor))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("e")
        await settle(app, pilot)
        composer = app.screen
        assert isinstance(composer, ComposerScreen)
        assert composer.query_one("#body", TextArea).text == "Written in vi."
        assert seen.read_text().strip() == "600"  # the draft file is private


# ---- ticket actions ---------------------------------------------------------------------------


async def test_status_keys_resolve_reopen_pend_and_snooze(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        for key, status in (("a", "resolved"), ("o", "open"), ("w", "pending")):
            await pilot.press(key)
            await settle(app, pilot)
            assert ticket(store, ids["ticket"]).status == status
        await pilot.press("s")
        await settle(app, pilot)
        await pilot.press("ctrl+u", *"2h", "enter")  # clear the suggested value, type 2h
        await settle(app, pilot)
        snoozed = ticket(store, ids["ticket"])
        assert snoozed.status == "snoozed"
        assert snoozed.snoozed_until == tui_store.NOW + timedelta(hours=2)


async def test_a_snooze_time_that_cannot_be_read_is_explained(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("s", "ctrl+u", *"soon", "enter")
        await settle(app, pilot)
        assert "not a time" in str(app.screen.query_one("#hint").render())
        assert ticket(store, ids["ticket"]).status == "open"


async def test_A_assigns_to_another_agent(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("A")
        await settle(app, pilot)
        await pilot.press("down", "enter")  # from "Me (alice)" to bob
        await settle(app, pilot)
        assert ticket(store, ids["ticket"]).assignee == "bob"


async def test_t_sets_tags_and_p_sets_priority(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("t", *"grinder, VIP", "enter")
        await settle(app, pilot)
        await pilot.press("p", "end", "enter")  # the last priority: urgent
        await settle(app, pilot)
        changed = ticket(store, ids["ticket"])
        assert changed.tags == "grinder,vip" and changed.priority == "urgent"


async def test_R_requeues_the_failed_sms(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("R")
        await settle(app, pilot)
        with store.session() as session:
            assert session.get(Message, ids["failed_sms"]).status == "queued"


async def test_d_saves_an_attachment_under_a_safe_name_in_the_chosen_folder(
    app, ids, store, tmp_path
) -> None:
    from textual.widgets import Input

    from connectors.base import Attachment

    hostile = "../../\x1b[31m[bold]evil[/bold]\x07.png"
    ingest(store, [tui_store.mail(90, "marta@example.es", "Marta Ruiz", "A photo", "See this",
                                  tui_store.NOW - timedelta(minutes=5), attachments=[
                                      Attachment(hostile, "image/png", b"\x89PNG data")])])
    folder = tmp_path / "saved" / "here"
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_marta(app, pilot, ids)
        shown = screen.query_one(TimelineView).text()
        assert "[bold]evil[/bold]" in shown and "\x1b" not in shown  # the name, as text
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press("enter")  # the one attachment
        await settle(app, pilot)
        app.screen.query_one(Input).value = str(folder)
        await pilot.press("enter")
        await until(app, pilot, lambda: folder.exists() and any(folder.iterdir()))
    (saved,) = folder.iterdir()
    assert saved.read_bytes() == b"\x89PNG data"
    assert "/" not in saved.name and "\x1b" not in saved.name and "\x07" not in saved.name
    assert saved.name.endswith(".png") and not saved.name.startswith(".")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


async def test_html_mail_is_shown_as_text_and_nothing_is_fetched(app, ids, store) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from connectors.mime import parse_email

    fetched: list[str] = []

    class Tracker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    html = (f'<html><head><link rel="stylesheet" href="{base}/style.css">'
            f'<style>@import url("{base}/import.css"); body {{background: url({base}/bg.png)}}'
            f'</style></head><body><p>Hi, see <a href="{base}/track?u=1">my order</a>.</p>'
            f'<img src="{base}/pixel.gif" width="1" height="1">'
            f'<iframe src="{base}/frame"></iframe><script src="{base}/x.js"></script>'
            "</body></html>")
    raw = ("From: Marta Ruiz <marta@example.es>\r\nTo: support@example.com\r\n"
           "Subject: html only\r\nMessage-ID: <html-1@example.es>\r\n"
           "Date: Fri, 27 Nov 2026 09:00:00 +0000\r\nContent-Type: text/html; charset=utf-8"
           f"\r\n\r\n{html}\r\n").encode()
    ingest(store, [parse_email(raw, connector="mail")])
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_marta(app, pilot, ids)
            await pilot.press("u")  # unfolded: everything the message has is on screen
            await settle(app, pilot)
            shown = screen.query_one(TimelineView).text()
    finally:
        server.shutdown()
    assert "Hi, see" in shown and f"{base}/track?u=1" in shown  # the link, as text
    assert "<img" not in shown and "<script" not in shown
    assert fetched == []  # no image, stylesheet, frame or script was requested


async def test_a_crash_report_shows_no_local_variables_and_no_secret(
    app, ids, monkeypatch, capfd
) -> None:
    from desk.redact import forget_all, remember

    remember("crash-Secret-9931")  # as Secret.reveal does with the store's password

    def failing(self: MainScreen) -> None:
        conninfo = "host=db.example.com password=crash-Secret-9931"
        raise RuntimeError(f"cannot connect: {conninfo}")

    monkeypatch.setattr(MainScreen, "action_resolve", failing)
    try:
        with pytest.raises(RuntimeError):
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(app, pilot)
                await pilot.press("a")
                await pilot.pause()
    finally:
        forget_all()
    out, err = capfd.readouterr()
    assert "RuntimeError: cannot connect: host=db.example.com password=***" in err
    assert "crash-Secret-9931" not in out + err
    assert "conninfo = " not in err  # Textual's own report lists every frame's locals


async def test_an_oauth_mailbox_without_a_sign_in_shows_in_a_bar_with_the_command(
    ids, store, tmp_path
) -> None:
    from textual.widgets import Static

    from desk.models import OAuthToken

    settings = tui_store.settings(tmp_path, """
[[connector]]
name = "m365"
type = "email"
imap_host = "outlook.office365.com"
username = "support@example.com"
smtp_host = "smtp.office365.com"
from_address = "support@example.com"
auth = "oauth2"
oauth_provider = "microsoft"
oauth_client_id = "11111111-2222-3333-4444-555555555555"
""")
    app = DeskApp(store, settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        alerts = app.screen.query_one("#alerts", Static)
        # Never signed in: nothing arrives through it, which every agent should know. (The
        # check runs in a worker and reports back: wait for it, as for the other changes.)
        await until(app, pilot, lambda: alerts.display)
        assert "⚠ m365: sign-in needed, run desk auth login m365" in str(alerts.render())
        with store.transaction() as session:
            session.add(OAuthToken(connector="m365", provider="microsoft",
                                   updated_at=tui_store.NOW))
        app.check_sign_ins()
        await until(app, pilot, lambda: not alerts.display)
        with store.transaction() as session:
            row = session.get(OAuthToken, "m365")
            row.state, row.reason = "sign_in_needed", "invalid_grant: consent revoked"
        app.check_sign_ins()
        await until(app, pilot, lambda: alerts.display)
        assert "m365: sign-in needed" in str(alerts.render())


# ---- customers --------------------------------------------------------------------------------


async def test_merge_shows_the_customer_and_unmerge_undoes_it(app, ids, store) -> None:
    with store.session() as session:
        jonas = session.execute(select(Identity.customer_id).where(
            Identity.value == "jonas@example.de")).scalar_one()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("M")
        await settle(app, pilot)
        assert isinstance(app.screen, MergeScreen)
        await pilot.press(*"jonas", "enter")
        await settle(app, pilot)
        assert "Jonas Becker" in str(app.screen.query_one("#matches").get_option_at_index(0)
                                     .prompt)
        await pilot.press("enter")  # asks first
        await settle(app, pilot)
        assert "Press enter again to merge" in str(app.screen.query_one("#status").render())
        with store.session() as session:
            assert session.get(Customer, jonas).merged_into is None
        await pilot.press("enter")
        await settle(app, pilot)
        with store.session() as session:
            assert session.get(Customer, jonas).merged_into == ids["marta"]
        await pilot.press("U")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        with store.session() as session:
            assert session.get(Customer, jonas).merged_into is None
            assert count(store, Identity, Identity.customer_id == jonas) == 1


async def test_merge_suggests_customers_with_the_evidence(app, ids, store) -> None:
    ingest(store, [InboundMessage(
        connector="sms", channel="sms", provider_id="SM-x", sender="+491701234567",
        text="Hi, it is Jonas, my email is jonas@example.de", sent_at=tui_store.NOW)])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        with store.session() as session:
            sms_ticket = session.execute(select(Message.ticket_id).where(
                Message.provider_id == "SM-x")).scalar_one()
        screen.open_ticket(sms_ticket)
        await settle(app, pilot)
        await pilot.press("M")
        await settle(app, pilot)
        prompt = str(app.screen.query_one("#matches").get_option_at_index(0).prompt)
        assert "Jonas Becker" in prompt
        assert "evidence: email jonas@example.de appears in their message" in prompt


async def test_L_links_an_identity_by_hand(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("L", *"email:Marta.Work@Example.ES", "enter")
        await settle(app, pilot)
        with store.session() as session:
            linked = session.execute(select(Identity).where(
                Identity.value == "marta.work@example.es")).scalar_one()
        assert linked.customer_id == ids["marta"] and linked.source == "manual"


# ---- search, help, palette, keymap ------------------------------------------------------------


async def test_search_results_open_the_ticket(app, ids) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("G")  # the cursor away from Marta
        await settle(app, pilot)
        await pilot.press("slash")
        await settle(app, pilot)
        assert isinstance(app.screen, SearchScreen)
        await pilot.press(*"video noise", "enter")
        await settle(app, pilot)
        results = app.screen.query_one("#results")
        assert results.option_count == 1
        assert "Here is the video of the noise." in str(results.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert app.screen.timeline.ticket.id == ids["ticket"]


async def test_question_mark_lists_every_key_with_its_id(app, ids) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await settle(app, pilot)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_the_palette_offers_every_ticket_action(app, ids) -> None:
    from desk.keys import MAIN

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for key in MAIN:
            assert any(title.endswith(key.description) for title in titles), key.id
        assert "queue: Unassigned" in titles


async def test_the_keymap_rebinds_actions(store, ids, tmp_path) -> None:
    settings = tui_store.settings(tmp_path, '\n[keymap]\n"ticket.resolve" = "x"\n')
    app = DeskApp(store, settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_marta(app, pilot, ids)
        await pilot.press("a")
        await settle(app, pilot)
        assert ticket(store, ids["ticket"]).status == "open"
        await pilot.press("x")
        await settle(app, pilot)
        assert ticket(store, ids["ticket"]).status == "resolved"


# ---- live -------------------------------------------------------------------------------------


async def test_new_messages_appear_and_my_tickets_notify(app, ids, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_marta(app, pilot, ids)
        other = Store(store.url)
        ingest(other, [InboundMessage(
            connector="chat", channel="telegram", provider_id="tg-live", sender="777001",
            sender_name="Marta", text="Still there?", sent_at=tui_store.NOW)])
        other.close()
        app.poll_store()
        await until(app, pilot, lambda: "Still there?" in screen.query_one(TimelineView).text())
        await until(app, pilot, lambda: any("Still there?" in n.message
                                            for n in app._notifications))


@pytest.mark.postgresql
async def test_on_postgresql_another_machines_write_arrives_without_polling(
    pg_database, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    url = pg_database()
    store = Store(url)
    ids = tui_store.build(store)
    app = DeskApp(store, tui_store.settings(tmp_path))
    polls: list[float] = []
    original = app.poll_store
    monkeypatch.setattr(app, "poll_store", lambda: (polls.append(time.monotonic()),
                                                    original()))
    with use_clock(lambda: tui_store.NOW):
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            screen = await open_marta(app, pilot, ids)
            await pilot.pause(2.5)
            assert len(polls) <= 2  # no timer: the store is read when told, not every second
            daemon = Store(url)  # as a daemon on another machine would
            ingest(daemon, [InboundMessage(
                connector="chat", channel="telegram", provider_id="tg-live", sender="777001",
                sender_name="Marta", text="Anyone on PostgreSQL?", sent_at=tui_store.NOW)])
            daemon.close()
            await until(app, pilot,
                        lambda: "Anyone on PostgreSQL?" in screen.query_one(TimelineView).text())
            assert any("Anyone on PostgreSQL?" in n.message for n in app._notifications)
    store.close()


async def test_a_hostile_customer_in_a_notification_stays_literal(app, ids, store) -> None:
    from textual.widgets._toast import Toast

    with store.transaction() as session:
        from desk import tickets as actions

        hostile_ticket = session.execute(select(Message.ticket_id).where(
            Message.provider_id == "<m200@test>")).scalar_one()
        actions.assign(session, hostile_ticket, "alice", actor="alice")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(app, pilot)
        other = Store(store.url)
        ingest(other, [tui_store.mail(201, "evil@example.com", HOSTILE, f"subject {HOSTILE}",
                                      f"again {HOSTILE}", tui_store.NOW)])
        other.close()
        app.poll_store()
        # a customer wrote on alice's ticket: she is told, in a toast
        await until(app, pilot, lambda: list(app.screen.query(Toast)))
        toasts = list(app.screen.query(Toast))
        shown = " ".join(str(toast.render()) for toast in toasts)
        assert "[@click=app.quit]z[/]" in shown and "\x1b" not in shown
        await pilot.click(Toast)
        assert app.is_running


async def test_another_agent_writing_is_shown_and_mine_is_announced(app, ids, store) -> None:
    with store.transaction() as session:
        presence.announce(session, "bob", ids["ticket"], "reply")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_marta(app, pilot, ids)
        bar = screen.query_one(PresenceBar)
        assert bar.display and "bob is writing a reply" in str(bar.render())
        await pilot.press("r")
        await settle(app, pilot)
        assert count(store, Presence, Presence.agent == "alice") == 1
        assert "bob is also writing" in str(app.screen.query_one("#warning").render())
        await pilot.press("escape")
        await settle(app, pilot)
        assert count(store, Presence, Presence.agent == "alice") == 0


async def test_a_narrow_terminal_shows_one_pane_at_a_time(app, ids) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert screen.query_one("#detail").display is False or not screen.query_one(
            "#detail").region.width
        await pilot.press("enter")
        await settle(app, pilot)
        assert screen.query_one("#detail").region.width == 80
        assert screen.query_one("#tickets").region.width == 0
        await pilot.press("escape")
        await settle(app, pilot)
        assert screen.query_one("#tickets").region.width == 80


def test_the_editor_file_is_removed_and_private(tmp_path, monkeypatch) -> None:
    from desk.editor import edit

    record = tmp_path / "record.json"
    script = tmp_path / "ed.py"
    script.write_text(
        "import json, os, sys\n"
        "p = sys.argv[1]\n"
        f"json.dump({{'mode': oct(os.stat(p).st_mode & 0o777), 'text': open(p).read(),"
        f" 'path': p}}, open({str(record)!r}, 'w'))\n"
        "open(p, 'a').write(' and more')\n"
    )
    monkeypatch.setenv("VISUAL", f"python3 {script}")
    old = os.umask(0)
    try:
        assert edit("draft") == "draft and more"
    finally:
        os.umask(old)
    seen = json.loads(record.read_text())
    assert seen["mode"] == oct(stat.S_IRUSR | stat.S_IWUSR) and seen["text"] == "draft"
    assert not Path(seen["path"]).exists()
