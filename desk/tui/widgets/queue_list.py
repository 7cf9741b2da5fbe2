"""The queues on the left: statuses, then one per channel and one per tag, with live counts."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from desk.textsafe import printable
from desk.views import QueueFigures

STATUS_QUEUES = {
    "mine": "Mine", "unassigned": "Unassigned", "open": "Open", "pending": "Pending",
    "snoozed": "Snoozed", "resolved": "Resolved", "all": "All",
}  # fmt: skip
CHANNEL_QUEUES = {"channel:email": "✉ Email", "channel:sms": "☏ SMS",
                  "channel:telegram": "✈ Telegram"}
CHANNELS = tuple(queue.partition(":")[2] for queue in CHANNEL_QUEUES)


class QueueList(OptionList):
    """Highlighting a queue shows it (OptionList's own Highlighted/Selected messages)."""

    def __init__(self, initial: str, *, id: str | None = None) -> None:
        super().__init__(*self._queue_options(None), id=id)
        self.initial = initial

    def on_mount(self) -> None:
        self.select_queue(self.initial)

    def _queue_options(self, figures: QueueFigures | None) -> list[Option | None]:
        def label(name: str, queue: str) -> Text:
            count = figures.count(queue) if figures is not None else None
            text = Text(name, no_wrap=True, overflow="ellipsis")
            if count is not None:
                text.append(f" {count}", style="dim")
            return text

        options: list[Option | None] = [Option(label(n, q), id=q) for q, n in STATUS_QUEUES.items()]
        options.append(None)
        options += [Option(label(n, q), id=q) for q, n in CHANNEL_QUEUES.items()]
        tags = tuple(figures.tags) if figures is not None else ()
        if tags:
            options.append(None)
            options += [
                Option(label("# " + printable(tag, single_line=True), f"tag:{tag}"),
                       id=f"tag:{tag}")
                for tag in tags
            ]
        return options

    def show_figures(self, figures: QueueFigures) -> None:
        highlighted = self.highlighted_option.id if self.highlighted_option else None
        with self.prevent(OptionList.OptionHighlighted):
            self.set_options(self._queue_options(figures))
            if highlighted is not None:
                try:
                    self.highlighted = self.get_option_index(highlighted)
                except OptionDoesNotExist:
                    self.highlighted = 0

    def select_queue(self, queue: str) -> None:
        self.highlighted = self.get_option_index(queue)
