"""`f`: the service figures of `desk stats` for a period, with a sparkline per day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, Sparkline, Static

from desk import stats_report
from desk.stats import Period, compute
from desk.timeutil import utcnow

# key, label, days (None: the whole store)
PERIODS = (("7", "7 days", 7), ("3", "30 days", 30), ("9", "90 days", 90), ("a", "all", None))
SERIES = (("in", "messages in"), ("out", "messages out"), ("opened", "tickets opened"),
          ("resolved", "tickets resolved"))


def rich_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> Table:
    """Cells as Text, never markup: agent names and tags are typed by people."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False,
                  header_style="bold", title_style="bold")
    for i, header in enumerate(headers):
        table.add_column(Text(header), justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


class StatsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back", id="stats.close"),
        *(Binding(key, f"period({days})" if days else "period(0)", label, id=f"stats.{label}")
          for key, label, days in PERIODS),
        Binding("r", "refresh_figures", "Refresh", id="stats.refresh"),
    ]

    class Computed(Message):
        def __init__(self, figures: dict[str, Any]) -> None:
            super().__init__()
            self.figures = figures

    def __init__(self, days: int | None = 30) -> None:
        super().__init__()
        self.days = days

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="stats"):
            yield Label("", id="stats-title")
            yield Static("", id="stats-overview")
            for key, label in SERIES:
                with Horizontal(classes="stats-series"):
                    yield Label(label, classes="stats-series--label")
                    yield Sparkline([], id=f"spark-{key}", summary_function=max)
                    yield Label("", id=f"total-{key}", classes="stats-series--total")
            yield Static("", id="stats-facts")
            yield Static("", id="stats-sequences")
            yield Static("", id="stats-agents")
            yield Static("", id="stats-tags")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def action_period(self, days: int) -> None:
        self.days = days or None
        self.load()

    def action_refresh_figures(self) -> None:
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        app: Any = self.app
        now = utcnow()
        since = now - timedelta(days=self.days) if self.days else None
        figures = compute(app.store.engine, Period(since, now), app.settings.sla.targets(),
                          now=now, daily=True)
        self.post_message(self.Computed(figures))

    def on_stats_screen_computed(self, message: Computed) -> None:
        figures = message.figures
        label = next((name for _, name, days in PERIODS if days == self.days), "all")
        title = Text(f"Service figures, {'the whole store' if label == 'all' else 'last ' + label}"
                     f": {stats_report.period_line(figures)}", style="bold")
        self.query_one("#stats-title", Label).update(title)
        self.query_one("#stats-overview", Static).update(
            rich_table(*stats_report.overview(figures)))
        days = figures.get("daily", [])
        for key, _label in SERIES:
            values = [day[key] for day in days]
            self.query_one(f"#spark-{key}", Sparkline).data = values or [0]
            peak = max(values, default=0)
            self.query_one(f"#total-{key}", Label).update(
                f"{sum(values):>8,} · peak {peak:,}/day")
        self.query_one("#stats-facts", Static).update(Text("\n".join(stats_report.facts(figures))))
        self.query_one("#stats-sequences", Static).update(
            rich_table(["channel sequence (tickets opened)", "tickets"],
                       stats_report.sequence_rows(figures))
            if figures["channel_sequences"] else "")
        for key, widget, title, messages in (("by_agent", "#stats-agents", "agent", True),
                                             ("by_tag", "#stats-tags", "tag", False)):
            self.query_one(widget, Static).update(
                rich_table(*stats_report.slice_rows(title, figures[key], messages))
                if figures[key] else "")
