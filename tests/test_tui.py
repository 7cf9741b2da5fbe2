"""The agent app driven by its keys (Pilot), on a small store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import T0
from rich.console import Console

from desk.config import load_config
from desk.ingest import ingest
from desk.models import Ticket
from desk.tui.app import DeskApp
from desk.tui.widgets.conversation import ConversationView
from desk.tui.widgets.ticket_list import TicketList

HOSTILE = (
    "\x1b[2J\x1b]52;c;ZXZpbA==\x07[bold red]x[/] [link=https://evil]y[/] [@click=app.quit]z[/]"
)


@pytest.fixture
def app(store, inbound, monkeypatch) -> DeskApp:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    for n in range(30):
        ingest(store, [inbound(f"message number {n}", sender=f"c{n}@example.com",
                               sender_name=f"Customer {n}", at=timedelta(minutes=n))])
    ingest(store, [inbound(f"body {HOSTILE}", sender="evil@example.com", sender_name=HOSTILE,
                           subject=f"subject {HOSTILE}", at=T0 + timedelta(hours=2))])
    return DeskApp(store, load_config(None))


def rendered(widget: ConversationView) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for child in widget.children:
        console.print(child.render())
    return console.export_text()


async def settle(app: DeskApp, pilot) -> None:
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def test_the_queue_pages_and_the_cursor_opens_tickets(app) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        tickets = app.screen.query_one(TicketList)
        assert tickets.total == 31
        # the hostile customer is newest: their row paints literally, with no escape byte
        first_line = tickets.render_line(0).text
        assert "\x1b" not in first_line and "[bold red]x[/]" in first_line
        await pilot.press("j", "j")
        await settle(app, pilot)
        assert tickets.cursor == 2
        chosen = tickets.row(2)
        view = app.screen.query_one(ConversationView)
        assert view.conversation is not None and view.conversation.ticket.id == chosen.id
        await pilot.press("G")
        assert tickets.cursor == 30


async def test_hostile_text_is_shown_literally_and_does_nothing(app) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        view = app.screen.query_one(ConversationView)
        text = rendered(view)
        assert "\x1b" not in text
        assert "[bold red]x[/]" in text
        assert "[link=https://evil]y[/]" in text
        assert "[@click=app.quit]z[/]" in text
        assert app.is_running


async def test_a_resolves_the_ticket_in_the_store(app, store) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        ticket_id = app.screen.query_one(TicketList).row(0).id
        await pilot.press("a")
        await settle(app, pilot)
        with store.session() as session:
            assert session.get(Ticket, ticket_id).status == "resolved"
        assert app.screen.query_one(TicketList).total == 30
