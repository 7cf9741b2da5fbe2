"""Merging two customers (showing why desk thinks they are one person) and undoing it."""

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

from desk import views
from desk.textsafe import printable


def match_label(match: views.CustomerMatch) -> Text:
    text = Text()
    text.append(printable(match.name, single_line=True) or "(no name)", style="bold")
    text.append(f"  #{match.customer_id}\n", style="dim")
    text.append("  " + printable(", ".join(match.identities) or "no identities",
                                 single_line=True))
    if match.evidence:
        text.append("\n  evidence: ", style="dim")
        text.append(printable(match.evidence, single_line=True), style="yellow")
    return text


class MergeScreen(ModalScreen[int | None]):
    """Find the customer to merge into the open one; dismisses with their id once confirmed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="merge.cancel")]

    class Found(Message):
        def __init__(self, matches: list[views.CustomerMatch], suggested: bool) -> None:
            super().__init__()
            self.matches, self.suggested = matches, suggested

    def __init__(self, customer_id: int, customer_name: str) -> None:
        super().__init__()
        self.customer_id = customer_id
        self.customer_name = customer_name
        self.matches: list[views.CustomerMatch] = []
        self.pending: views.CustomerMatch | None = None

    def compose(self) -> ComposeResult:
        name = printable(self.customer_name, single_line=True)
        with Vertical(classes="dialog dialog--wide"):
            yield Label(Text(f"Merge another customer into {name} (#{self.customer_id})",
                             style="bold"), classes="dialog--title")
            yield Input(placeholder="name, email, phone or Telegram id…", id="find")
            yield Label("", id="status")
            yield OptionList(id="matches")

    def on_mount(self) -> None:
        self.query_one("#find", Input).focus()
        self.find("")

    @on(Input.Submitted, "#find")
    def submitted(self, event: Input.Submitted) -> None:
        self.find(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def find(self, text: str) -> None:
        app = self.app
        matches = views.merge_candidates(
            app.store, self.customer_id, text,  # type: ignore[attr-defined]
            region=app.settings.desk.default_region,  # type: ignore[attr-defined]
        )
        self.post_message(self.Found(matches, not text.strip()))

    def on_merge_screen_found(self, message: Found) -> None:
        self.matches = message.matches
        self.pending = None
        options = self.query_one("#matches", OptionList)
        options.set_options([Option(match_label(m), id=str(i))
                             for i, m in enumerate(message.matches)])
        status = self.query_one("#status", Label)
        if message.suggested:
            status.update(Text(
                f"{len(message.matches)} suggested by desk, with the evidence; type to search"
                if message.matches else "desk has no suggestion; type to search", style="dim"))
        else:
            status.update(Text(f"{len(message.matches)} customers found", style="dim"))
        if message.matches:
            options.highlighted = 0
            if not message.suggested:
                options.focus()

    @on(OptionList.OptionSelected, "#matches")
    def chosen(self, event: OptionList.OptionSelected) -> None:
        match = self.matches[int(event.option.id or 0)]
        if self.pending is match:
            self.dismiss(match.customer_id)
            return
        self.pending = match
        self.query_one("#status", Label).update(Text(
            f"Merge {printable(match.name, single_line=True)} (#{match.customer_id}) into this "
            "customer? Their identities, tickets and messages move here; U undoes it. "
            "Press enter again to merge.", style="bold yellow"))

    def action_cancel(self) -> None:
        self.dismiss(None)
