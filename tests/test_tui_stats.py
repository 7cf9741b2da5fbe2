"""The app's stats screen and the ticket list's SLA marks, on the store of stats_store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import stats_store
import tui_store
from rich.console import Console
from textual.widgets import Label, Sparkline, Static

from desk.store import Store
from desk.timeutil import use_clock
from desk.tui.app import DeskApp
from desk.tui.screens.main import MainScreen
from desk.tui.screens.stats import StatsScreen
from desk.tui.widgets.ticket_list import TicketList


@pytest.fixture
def story(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[stats_store.Story]:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setenv("TZ", "UTC")
    built = stats_store.build(store)
    with use_clock(lambda: stats_store.NOW):
        yield built


def _text(widget: Static) -> list[str]:
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text().splitlines()


def _rows(app: DeskApp) -> dict[str, str]:
    tickets = app.screen.query_one(TicketList)
    return {
        tickets.row(i).customer_name: tickets.render_line(2 * i + 1).text
        for i in range(tickets.total)
    }


async def test_tickets_past_their_sla_target_are_marked(
    store: Store, story: stats_store.Story, tmp_path: Path
) -> None:
    app = DeskApp(store, tui_store.settings(tmp_path, stats_store.SLA_CONFIG))
    async with app.run_test(size=(140, 40)) as pilot:
        await tui_store.settle(pilot)
        rows = _rows(app)
        # Dan (urgent, 1h target) wrote 17 days before NOW and was never answered.
        assert "⚑ reply 16d 23h late" in rows["Dan"]
        # Eve (normal, 2h target) wrote 8 days before NOW.
        assert "⚑ reply 7d 22h late" in rows["Eve"]
        assert set(rows) == {"Dan", "Eve"}  # the Open queue


async def test_without_targets_nothing_is_marked(
    store: Store, story: stats_store.Story, tmp_path: Path
) -> None:
    app = DeskApp(store, tui_store.settings(tmp_path))
    async with app.run_test(size=(140, 40)) as pilot:
        await tui_store.settle(pilot)
        assert not any("⚑" in line for line in _rows(app).values())


async def test_f_opens_the_figures_and_keys_change_the_period(
    store: Store, story: stats_store.Story, tmp_path: Path
) -> None:
    app = DeskApp(store, tui_store.settings(tmp_path, stats_store.SLA_CONFIG))
    async with app.run_test(size=(140, 50)) as pilot:
        await tui_store.settle(pilot)
        await pilot.press("f")
        await tui_store.settle(pilot)
        screen = app.screen
        assert isinstance(screen, StatsScreen)
        title = str(screen.query_one("#stats-title", Label).render())
        assert title.startswith("Service figures, last 30 days: 2026-02-20 09:00 → 2026-03-22")
        # The last 30 days hold the whole story: six tickets opened, Fay's among them.
        overview = _text(screen.query_one("#stats-overview", Static))
        opened = next(line for line in overview if line.startswith("tickets opened"))
        assert opened.split()[2:] == ["6", "3", "2", "1"]  # all, email, sms, telegram
        # One value per day of the period, messages in summed to the 9 the story holds.
        spark = screen.query_one("#spark-in", Sparkline)
        assert len(spark.data) == 31 and sum(spark.data) == 9
        assert "9 · peak 4/day" in str(screen.query_one("#total-in", Label).render())

        await pilot.press("7")  # the last 7 days: only Eve's message (8 days ago) is out too
        await tui_store.settle(pilot)
        spark = screen.query_one("#spark-in", Sparkline)
        assert len(spark.data) == 8 and sum(spark.data) == 0
        title = str(screen.query_one("#stats-title", Label).render())
        assert title.startswith("Service figures, last 7 days")

        await pilot.press("escape")
        await tui_store.settle(pilot)
        assert isinstance(app.screen, MainScreen)
