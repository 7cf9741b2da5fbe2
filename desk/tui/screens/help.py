"""`?`: every key of the app, as the config's `[keymap]` has bound it, with its action id."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from desk.keys import GROUPS, effective_keys, shown


def keys_table(keymap: dict[str, str]) -> Table:
    table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("what")
    table.add_column("id", style="dim", no_wrap=True)
    for group, keys in GROUPS.items():
        table.add_row(Text(group, style="bold underline"), "", "")
        for key in keys:
            table.add_row(Text(shown(effective_keys(key, keymap))), Text(key.explained),
                          Text(key.id))
        table.add_row("", "", "")
    table.add_row(Text("ctrl+p"), Text("Command palette: every action by name"), Text(""))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        keymap = self.app.settings.keymap  # type: ignore[attr-defined]
        with VerticalScroll(classes="dialog dialog--wide"):
            yield Static(Text("Keys — rebind any of them in [keymap] by its id", style="bold"),
                         classes="dialog--title")
            yield Static(keys_table(keymap))

    def action_close(self) -> None:
        self.dismiss(None)
