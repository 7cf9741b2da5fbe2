"""`/`: full-text search over every message; enter opens the result's ticket."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from desk import search as full_text
from desk.textsafe import printable
from desk.timeutil import ago, utcnow

RESULTS = 100
CHANNEL_MARKS = {"email": "✉", "sms": "☏", "telegram": "✈"}


def hit_label(hit: full_text.SearchHit) -> Text:
    now = utcnow()
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{CHANNEL_MARKS.get(hit.channel, '?')} ", style="bold")
    text.append(printable(hit.customer_name, single_line=True)[:24].ljust(24), style="bold")
    text.append(f" {ago(hit.sent_at, now):>4} ", style="dim")
    text.append(f"#{hit.ticket_id} " if hit.ticket_id else "", style="dim")
    if hit.subject:
        text.append(printable(hit.subject, single_line=True)[:40] + " · ", style="italic")
    text.append(printable(hit.snippet, single_line=True))
    return text


class SearchScreen(ModalScreen[int | None]):
    """Dismisses with the chosen result's ticket id."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="search.close"),
        Binding("down", "results", "Results", show=False, id="search.results"),
    ]

    class Results(Message):
        def __init__(self, query: str, hits: list[full_text.SearchHit], error: str | None) -> None:
            super().__init__()
            self.query, self.hits, self.error = query, hits, error

    def __init__(self, query: str = "") -> None:
        super().__init__()
        self.query_text = query
        self.hits: list[full_text.SearchHit] = []
        self.results_for: str | None = None  # the query whose results are shown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog--wide"):
            yield Label(Text("Search every message (words, \"a phrase\", -word)", style="bold"),
                        classes="dialog--title")
            yield Input(self.query_text, placeholder="search…", id="query")
            yield Label("", id="status")
            yield OptionList(id="results")

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()
        if self.query_text:
            self.run_search(self.query_text)

    @on(Input.Submitted, "#query")
    def submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.run_search(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def run_search(self, query: str) -> None:
        store = self.app.store  # type: ignore[attr-defined]
        try:
            with store.session() as session:
                hits = full_text.search(session, query, limit=RESULTS)
            self.post_message(self.Results(query, hits, None))
        except full_text.SearchError as error:
            self.post_message(self.Results(query, [], str(error)))

    def on_search_screen_results(self, message: Results) -> None:
        self.hits = message.hits
        self.results_for = message.query
        results = self.query_one("#results", OptionList)
        results.set_options([
            Option(hit_label(hit), id=str(index)) for index, hit in enumerate(message.hits)
        ])
        status = self.query_one("#status", Label)
        if message.error:
            status.update(Text(printable(message.error), style="red"))
        else:
            count = len(message.hits)
            more = "+" if count == RESULTS else ""
            status.update(Text(f"{count}{more} messages, newest first · enter opens the ticket",
                               style="dim"))
        if message.hits:
            results.highlighted = 0
            results.focus()

    @on(OptionList.OptionSelected, "#results")
    def chosen(self, event: OptionList.OptionSelected) -> None:
        hit = self.hits[int(event.option.id or 0)]
        self.dismiss(hit.ticket_id)

    def action_results(self) -> None:
        self.query_one("#results", OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)
