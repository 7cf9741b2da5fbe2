"""The conversation pane: one ticket's messages, every channel, oldest first, rendered as
plain `rich.text.Text` so untrusted text is never read as markup."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from desk.folding import fold_regions
from desk.models import Message
from desk.textsafe import printable
from desk.views import Conversation

CHANNEL_LABELS = {"email": "email", "sms": "SMS", "telegram": "Telegram", "note": "note"}
STATUS_STYLES = {"failed": "bold red", "queued": "yellow", "sending": "yellow", "unknown": "red"}


def folded_body(text: str, unfold: bool) -> Text:
    """The body with quoted history and signatures folded into one dim line each."""
    lines = printable(text).split("\n")
    if unfold:
        return Text("\n".join(lines))
    body = Text()
    cursor = 0
    for fold in fold_regions("\n".join(lines)):
        body.append("\n".join(lines[cursor : fold.start_line]))
        if cursor < fold.start_line:
            body.append("\n")
        body.append(f"[… {fold.summary} — press u to unfold]\n", style="dim italic")
        cursor = fold.end_line
    body.append("\n".join(lines[cursor:]))
    body.rstrip()
    return body


def message_block(message: Message, unfold: bool) -> RenderableType:
    who = (
        message.author
        if message.direction != "in"
        else (message.sender_name or message.sender or "")
    )
    header = Text()
    header.append(f"{CHANNEL_LABELS.get(message.channel, message.channel)} ", style="bold")
    arrow = {"in": "←", "out": "→", "note": "✎"}.get(message.direction, "")
    header.append(f"{arrow} {printable(who, single_line=True)}")
    header.append(f"  {message.sent_at:%Y-%m-%d %H:%M}", style="dim")
    if message.direction == "out":
        header.append(f"  [{message.status}]", style=STATUS_STYLES.get(message.status, "green"))
    parts: list[RenderableType] = [header]
    if message.error:
        parts.append(Text(f"  {printable(message.error, single_line=True)}", style="red"))
    if message.subject and message.channel == "email":
        parts.append(Text(printable(message.subject, single_line=True), style="italic"))
    flags = [flag for flag in message.flags.split(",") if flag]
    if flags:
        parts.append(Text(" ".join(f"⚑ {flag}" for flag in flags), style="magenta"))
    parts.append(folded_body(message.text, unfold))
    return Group(*parts)


class ConversationView(VerticalScroll):
    """Shows a `Conversation`; `u` toggles folded quotes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.conversation: Conversation | None = None
        self.unfold = False

    def show(self, conversation: Conversation | None) -> None:
        self.conversation = conversation
        self.remove_children()
        if conversation is None:
            self.mount(Static(Text("No ticket selected", style="dim")))
            return
        ticket, customer = conversation.ticket, conversation.customer
        title = Text()
        title.append(f"#{ticket.id} ", style="bold")
        title.append(printable(ticket.subject or ticket.snippet, single_line=True))
        title.append(f"\n{printable(customer.name, single_line=True)}", style="bold")
        for identity in conversation.identities:
            title.append(f"  {identity.kind}:{printable(identity.value, single_line=True)}",
                         style="dim")
        title.append(f"\n{ticket.status} · {ticket.priority} · {ticket.assignee or 'unassigned'}"
                     f"{' · ' + ticket.tags if ticket.tags else ''}", style="dim")
        blocks: list[Static] = [Static(title, classes="conversation--title")]
        if conversation.earlier:
            blocks.append(Static(Text(f"… {conversation.earlier} earlier messages", style="dim")))
        for message in conversation.messages:
            classes = f"message message--{message.direction}"
            blocks.append(Static(Group(message_block(message, self.unfold), Rule(style="dim")),
                                 classes=classes))
        self.mount_all(blocks)
        self.scroll_end(animate=False)

    def toggle_unfold(self) -> None:
        self.unfold = not self.unfold
        self.show(self.conversation)
