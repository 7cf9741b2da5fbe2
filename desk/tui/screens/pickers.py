"""Small modal dialogs: pick one of a few choices, or type a value."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from desk.textsafe import printable


class ChoiceScreen(ModalScreen[str | None]):
    """Choose one option (enter) or none (escape); dismisses with the option's id."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(
        self, title: str, choices: Sequence[tuple[str, str | Text]], *, current: str | None = None
    ) -> None:
        super().__init__()
        self.title_text = title
        self.choices = list(choices)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), classes="dialog--title")
            yield OptionList(*[
                Option(label if isinstance(label, Text) else Text(label), id=choice_id)
                for choice_id, label in self.choices
            ])

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        ids = [choice_id for choice_id, _label in self.choices]
        if self.current in ids:
            options.highlighted = ids.index(self.current)
        options.focus()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """Type a value; `check` returns an error to show (and keeps the dialog open) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(
        self,
        title: str,
        *,
        value: str = "",
        placeholder: str = "",
        hint: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.hint = hint
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), classes="dialog--title")
            yield Input(self.value, placeholder=self.placeholder)
            yield Label(Text(self.hint, style="dim"), id="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        problem = self.check(event.value) if self.check is not None else None
        if problem:
            self.query_one("#hint", Label).update(Text(printable(problem), style="red"))
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
