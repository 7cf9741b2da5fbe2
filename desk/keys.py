"""The app's key bindings as data: one table the app builds its bindings from, the help screen
lists, and `desk check` validates `[keymap]` against (without importing Textual)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Key:
    id: str  # what `[keymap]` names, e.g. "ticket.reply"
    keys: str  # default keys, comma-separated as Textual writes them
    action: str
    description: str
    show: bool = True  # in the footer
    help: str = ""  # the longer description of the help screen, when the footer's is terse

    @property
    def explained(self) -> str:
        return self.help or self.description


MAIN = (
    Key("ticket.reply", "r", "reply", "Reply"),
    Key("ticket.note", "c", "note", "Note"),
    Key("ticket.resolve", "a", "resolve", "Resolve"),
    Key("ticket.assign", "A", "assign", "Assign"),
    Key("ticket.tag", "t", "tag", "Tags"),
    Key("ticket.snooze", "s", "snooze", "Snooze"),
    Key("ticket.priority", "p", "priority", "Priority"),
    Key("ticket.status", "S", "status", "Status", show=False),
    Key("ticket.pending", "w", "pending", "Pending (waiting on customer)", show=False),
    Key("ticket.reopen", "o", "reopen", "Reopen", show=False),
    Key("ticket.editor", "e", "editor", "$EDITOR", help="Reply in $VISUAL/$EDITOR"),
    Key("ticket.retry", "R", "retry", "Retry", help="Retry a failed message"),
    Key("ticket.attachment", "d", "save_attachment", "Save an attachment", show=False,
        help="Save an attachment of the ticket into a folder (default [desk] attachments_dir)"),
    Key("ticket.unfold", "u", "unfold", "Unfold quotes", show=False),
    Key("ticket.earlier", "left_square_bracket", "earlier", "Load earlier messages", show=False),
    Key("ticket.next", "J", "next_ticket", "Next ticket", show=False),
    Key("ticket.previous", "K", "previous_ticket", "Previous ticket", show=False),
    Key("customer.merge", "M", "merge", "Merge customer", show=False),
    Key("customer.unmerge", "U", "unmerge", "Unmerge customer", show=False),
    Key("customer.link", "L", "link", "Link an identity", show=False),
    Key("app.search", "slash", "search", "Search"),
    Key("app.stats", "f", "stats", "Stats", show=False,
        help="Service figures: volume, response times, SLA breaches"),
    Key("app.queues", "Q", "queues", "Show/hide queues", show=False),
    Key("list.back", "escape", "back", "Back", show=False),
)
LIST = (
    Key("list.down", "j,down", "cursor_down", "Down", show=False),
    Key("list.up", "k,up", "cursor_up", "Up", show=False),
    Key("list.top", "g,home", "first", "Top", show=False),
    Key("list.bottom", "G,end", "last", "Bottom", show=False),
    Key("list.page_down", "pagedown", "page_down", "Page down", show=False),
    Key("list.page_up", "pageup", "page_up", "Page up", show=False),
    Key("list.open", "enter", "open", "Open", show=False),
)
TIMELINE = (
    Key("timeline.down", "j,down", "scroll_down", "Scroll down", show=False),
    Key("timeline.up", "k,up", "scroll_up", "Scroll up", show=False),
    Key("timeline.top", "g,home", "scroll_home", "Top", show=False),
    Key("timeline.bottom", "G,end", "scroll_end", "Bottom", show=False),
    Key("timeline.page_down", "pagedown,space", "page_down", "Page down", show=False),
    Key("timeline.page_up", "pageup", "page_up", "Page up", show=False),
)
COMPOSER = (
    Key("composer.send", "ctrl+r", "send", "Send"),
    Key("composer.canned", "ctrl+t", "canned", "Canned reply"),
    Key("composer.editor", "ctrl+g", "editor", "$EDITOR"),
    Key("composer.cancel", "escape", "cancel", "Close (keeps the draft)"),
)
APP = (
    Key("app.help", "question_mark", "help", "Help"),
    Key("app.quit", "q", "quit", "Quit"),
)

GROUPS = {
    "Ticket and customer": MAIN,
    "Ticket list": LIST,
    "Conversation": TIMELINE,
    "Composer": COMPOSER,
    "Everywhere": APP,
}
ALL_IDS = frozenset(key.id for group in GROUPS.values() for key in group)


def effective_keys(key: Key, keymap: dict[str, str]) -> str:
    """The keys bound to `key` once the config's `[keymap]` is applied."""
    return keymap.get(key.id, key.keys)


def shown(keys: str) -> str:
    """Keys as the help screen prints them: `slash` → `/`."""
    names = {"slash": "/", "question_mark": "?", "left_square_bracket": "[", "space": "space"}
    return " ".join(names.get(part, part) for part in keys.split(","))
