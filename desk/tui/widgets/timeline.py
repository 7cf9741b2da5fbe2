"""The conversation pane: a customer's timeline across every channel and ticket, oldest first.

Rendered once to lines (a line-API ScrollView), so scrolling a long conversation is a list
lookup, and built from plain `rich.text.Text`, so untrusted text is never read as markup."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.rule import Rule
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.events import Resize
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from desk.attachments import AttachmentInfo
from desk.folding import fold_regions
from desk.keys import TIMELINE
from desk.models import Event, Message
from desk.textsafe import printable
from desk.tui.bindings import bindings
from desk.views import Timeline, describe_event

CHANNEL_LABELS = {"email": "✉ email", "sms": "☏ SMS", "telegram": "✈ Telegram"}
STATUS_STYLES = {
    "failed": "bold red", "unknown": "bold red", "queued": "yellow", "sending": "yellow",
    "sent": "green", "delivered": "green",
}  # fmt: skip
# A message bigger than this shows its start and says how much is left: Rich would otherwise
# wrap megabytes of text into lines before the first paint.
MAX_BODY_CHARS = 20_000


def local(moment: datetime) -> str:
    return f"{moment.astimezone():%d %b %H:%M}"


def folded_body(text: str, unfold: bool) -> Text:
    """The body with quoted history and signatures folded into one dim line each."""
    clipped = len(text) > MAX_BODY_CHARS
    lines = printable(text[:MAX_BODY_CHARS]).rstrip().split("\n")
    body = Text()
    if unfold:
        body.append("\n".join(lines))
    else:
        cursor = 0
        for fold in fold_regions("\n".join(lines)):
            body.append("\n".join(lines[cursor : fold.start_line]))
            if cursor < fold.start_line:
                body.append("\n")
            body.append(f"[… {fold.summary} — u to unfold]\n", style="dim italic")
            cursor = fold.end_line
        body.append("\n".join(lines[cursor:]))
        body.rstrip()
    if clipped:
        body.append(f"\n[… {len(text) - MAX_BODY_CHARS:,} more characters not shown]",
                    style="dim italic")
    return body


def attachment_lines(attachments: list[AttachmentInfo]) -> list[Text]:
    """One line per attachment: its name as text (never markup), size, and the id `d` saves."""
    lines = []
    for info in attachments:
        line = Text("  📎 ", style="dim")
        line.append(printable(info.filename, single_line=True)[:80], style="bold")
        line.append(f"  {_size(info.size)} · {printable(info.content_type, single_line=True)}"
                    f" · #{info.id}", style="dim")
        if not info.stored:
            line.append("  not stored (over max_message_bytes)", style="yellow")
        lines.append(line)
    return lines


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def message_block(message: Message, unfold: bool,
                  attachments: list[AttachmentInfo] | None = None) -> RenderableType:
    if message.direction == "in":
        who = message.sender_name or message.sender or ""
    else:
        who = message.author or ""
    header = Text()
    if message.direction == "note":
        header.append("✎ private note ", style="bold")
    else:
        header.append(CHANNEL_LABELS.get(message.channel, message.channel) + " ", style="bold")
        header.append("← " if message.direction == "in" else "→ ")
    header.append(printable(who, single_line=True), style="bold")
    if message.direction == "in" and message.sender and message.sender_name:
        header.append(f" <{printable(message.sender, single_line=True)}>", style="dim")
    if message.direction == "out" and message.recipient:
        header.append(f" to {printable(message.recipient, single_line=True)}", style="dim")
    header.append(f"  {local(message.sent_at)}", style="dim")
    if message.direction == "out":
        mark = {"failed": "✗ ", "unknown": "? ", "delivered": "✓✓ ", "sent": "✓ "}
        header.append(f"  {mark.get(message.status, '… ')}{message.status}",
                      style=STATUS_STYLES.get(message.status, ""))
    parts: list[RenderableType] = [header]
    if message.error and message.status in ("failed", "unknown", "queued"):
        reason = printable(message.error, single_line=True)
        retry = "  (R retries)" if message.status in ("failed", "unknown") else ""
        parts.append(Text(f"  {reason}{retry}", style="red"))
    if message.subject and message.channel == "email":
        parts.append(Text(printable(message.subject, single_line=True), style="italic"))
    flags = [flag for flag in message.flags.split(",") if flag]
    if flags:
        parts.append(Text(" ".join(f"⚑ {flag}" for flag in flags), style="magenta"))
    parts.append(folded_body(message.text, unfold))
    parts.extend(attachment_lines(attachments or []))
    if message.direction == "note":
        return Group(*[_noted(part) for part in parts])
    return Group(*parts)


def _noted(part: RenderableType) -> RenderableType:
    if isinstance(part, Text):
        part = part.copy()
        part.stylize("on #3a3000")
        part.pad_left(1)
    return part


def event_line(event: Event) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis", style="dim")
    text.append(f"· {printable(describe_event(event), single_line=True)}")
    text.append(f"  {local(event.created_at)}")
    return text


def ticket_rule(timeline: Timeline, ticket_id: int | None) -> RenderableType:
    ticket = timeline.tickets.get(ticket_id) if ticket_id is not None else None
    if ticket is None:
        return Rule(style="dim")
    title = printable(ticket.subject or ticket.snippet, single_line=True)[:50]
    here = "◆ " if ticket.id == timeline.ticket.id else ""
    return Rule(Text(f"{here}#{ticket.id} {ticket.status} · {title}"), style="dim",
                characters="─")


def timeline_renderables(timeline: Timeline, unfold: bool) -> list[RenderableType]:
    blocks: list[RenderableType] = []
    if timeline.earlier:
        blocks.append(Text(f"… {timeline.earlier} earlier messages ([ loads more)",
                           style="dim italic"))
    current_ticket: int | None = -1
    for entry in timeline.entries:
        if isinstance(entry, Event):
            blocks.append(event_line(entry))
            continue
        if entry.ticket_id != current_ticket:
            current_ticket = entry.ticket_id
            blocks.append(ticket_rule(timeline, current_ticket))
        blocks.append(message_block(entry, unfold, timeline.attachments.get(entry.id or 0)))
        blocks.append(Text(""))
    if not timeline.entries:
        blocks.append(Text("No messages yet", style="dim"))
    return blocks


def render_timeline(
    timeline: Timeline | None, width: int, unfold: bool, style: Style
) -> list[Strip]:
    """The timeline as lines of `width` cells. Pure: a worker thread can call it, so the app
    never renders a long conversation on the thread that reads keys."""
    if timeline is None:
        renderables: list[RenderableType] = [Text("No ticket selected", style="dim")]
    else:
        renderables = timeline_renderables(timeline, unfold)
    console = Console(width=width, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    options = console.options.update_width(width)
    lines = console.render_lines(Group(*renderables), options, style=style, pad=True)
    return [Strip(line, width) for line in lines]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A timeline rendered for a width (and fold state), ready to show."""

    timeline: Timeline | None
    lines: list[Strip]
    width: int
    unfold: bool


class TimelineView(ScrollView, can_focus=True):
    """Shows a `Timeline`; the screen's `u` toggles folded quotes."""

    BINDINGS = bindings(TIMELINE)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.timeline: Timeline | None = None
        self.unfold = False
        self._lines: list[Strip] = []
        self._width = 0
        self._follow = True  # at the newest message: stay there when the pane resizes

    @property
    def render_width(self) -> int:
        return max(10, self.scrollable_content_region.width)

    def show(self, timeline: Timeline | None, *, keep_position: bool = False) -> None:
        """Render here and show (small timelines, tests); workers use `render_timeline`."""
        width = self.render_width
        lines = render_timeline(timeline, width, self.unfold, self.rich_style)
        self.show_rendered(Rendered(timeline, lines, width, self.unfold),
                           keep_position=keep_position)

    def show_rendered(self, rendered: Rendered, *, keep_position: bool = False) -> None:
        if rendered.width != self.render_width or rendered.unfold != self.unfold:
            self.show(rendered.timeline, keep_position=keep_position)  # stale: redo
            return
        at_end = self.scroll_offset.y >= self.max_scroll_y
        from_bottom = self.virtual_size.height - self.scroll_offset.y
        self.timeline = rendered.timeline
        self._lines = rendered.lines
        self._width = rendered.width
        self.virtual_size = Size(rendered.width, len(self._lines))
        if keep_position and not at_end:
            self.scroll_to(y=max(0, len(self._lines) - from_bottom), animate=False,
                           immediate=True)
        else:
            self._follow = True
            self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._follow = new >= self.max_scroll_y

    def toggle_unfold(self) -> None:
        self.unfold = not self.unfold
        self.show(self.timeline, keep_position=True)

    def on_resize(self, event: Resize) -> None:
        follow = self._follow
        if self.render_width != self._width:
            self.show(self.timeline, keep_position=True)
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        if 0 <= index < len(self._lines):
            return self._lines[index]
        return Strip([Segment(" " * self.size.width, self.rich_style)], self.size.width)

    def text(self) -> str:
        """Everything rendered, as plain text (for tests and copying)."""
        return "\n".join(strip.text.rstrip() for strip in self._lines)
