"""The ticket list: a line-API ScrollView that renders only the visible rows and asks the store
for the page they sit on, so a queue of 200,000 tickets paints as fast as one of 20."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from desk.textsafe import printable
from desk.timeutil import ago
from desk.tui.messages import TicketChosen
from desk.views import RowLoader, TicketRow

PAGE = 100
CACHED_PAGES = 20
CHANNEL_MARKS = {"email": "✉", "sms": "☏", "telegram": "✈"}

class TicketList(ScrollView, can_focus=True):
    """Rows of the current queue; `j`/`k` move, `enter` opens."""

    BINDINGS = [
        Binding("j,down", "cursor_down", "Down", show=False, id="list.down"),
        Binding("k,up", "cursor_up", "Up", show=False, id="list.up"),
        Binding("g,home", "first", "Top", show=False, id="list.top"),
        Binding("G,end", "last", "Bottom", show=False, id="list.bottom"),
        Binding("pagedown", "page_down", "Page down", show=False, id="list.page_down"),
        Binding("pageup", "page_up", "Page up", show=False, id="list.page_up"),
        Binding("enter", "open", "Open", id="list.open"),
    ]
    COMPONENT_CLASSES = {"ticket-list--cursor", "ticket-list--unread", "ticket-list--dim"}

    cursor = reactive(0)

    class PageLoaded(Message):
        def __init__(self, generation: int, page: int, total: int, rows: list[TicketRow]) -> None:
            super().__init__()
            self.generation, self.page, self.total, self.rows = generation, page, total, rows

    def __init__(self, loader: RowLoader, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._loader = loader
        self._pages: OrderedDict[int, list[TicketRow]] = OrderedDict()
        self._requested: set[int] = set()
        self._total = 0
        self._generation = 0  # bumps on reload, so late pages of an old queue are dropped

    # ---- data ---------------------------------------------------------------------------------

    def reload(self, loader: RowLoader | None = None, *, keep_cursor: bool = False) -> None:
        """Forget cached rows (a new queue, or the store changed) and fetch what is visible."""
        if loader is not None:
            self._loader = loader
        self._generation += 1
        self._pages.clear()
        self._requested.clear()
        if not keep_cursor:
            self.cursor = 0
            self.scroll_to(y=0, animate=False)
        self._request(self.cursor // PAGE)

    def _request(self, page: int) -> None:
        if page in self._requested or page < 0:
            return
        self._requested.add(page)
        self._fetch(self._generation, page)

    @work(thread=True, exit_on_error=False, group="ticket-pages")
    def _fetch(self, generation: int, page: int) -> None:
        total, rows = self._loader(page * PAGE, PAGE)
        self.post_message(self.PageLoaded(generation, page, total, rows))

    def on_ticket_list_page_loaded(self, message: PageLoaded) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._pages[message.page] = message.rows
        while len(self._pages) > CACHED_PAGES:
            evicted, _rows = self._pages.popitem(last=False)
            self._requested.discard(evicted)
        self._total = message.total
        self.virtual_size = Size(self.size.width, self._total)
        if self._total and self.cursor >= self._total:
            self.cursor = self._total - 1
        self.refresh()
        self._announce()

    def row(self, index: int) -> TicketRow | None:
        rows = self._pages.get(index // PAGE)
        if rows is None:
            self._request(index // PAGE)
            return None
        offset = index % PAGE
        return rows[offset] if offset < len(rows) else None

    @property
    def total(self) -> int:
        return self._total

    # ---- rendering ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.size.width
        if index >= self._total:
            return Strip.blank(width, self.rich_style)
        row = self.row(index)
        if row is None:
            return Strip([Segment("…".ljust(width), self.rich_style)], width)
        text = self._row_text(row, width)
        if index == self.cursor:
            text.stylize(self.get_component_rich_style("ticket-list--cursor"))
        segments = list(text.render(self.app.console))
        return Strip(segments).adjust_cell_length(width, self.rich_style)

    def _row_text(self, row: TicketRow, width: int) -> Text:
        now = datetime.now(UTC)
        unread = self.get_component_rich_style("ticket-list--unread") if row.unread else Style()
        dim = self.get_component_rich_style("ticket-list--dim")
        marks = "".join(CHANNEL_MARKS.get(c, "?") for c in row.channels)
        waiting = ago(row.waiting_since, now)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append("● " if row.unread else "  ", unread)
        text.append(printable(row.customer_name, single_line=True)[:22].ljust(22), unread)
        text.append(f" {marks:<3} ", dim)
        text.append(ago(row.last_message_at, now).rjust(4), dim)
        text.append(f" {('⏳' + waiting) if waiting else '':<6} ", dim)
        text.append(printable(row.title, single_line=True))
        text.truncate(width, overflow="ellipsis", pad=True)
        return text

    # ---- cursor -------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_cursor()
        self.refresh()
        self._announce()

    def scroll_to_cursor(self) -> None:
        top = self.scroll_offset.y
        height = max(1, self.scrollable_content_region.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)

    def _announce(self) -> None:
        row = self.row(self.cursor) if self._total else None
        if row is not None:
            self.post_message(TicketChosen(row.id))

    def _move(self, delta: int) -> None:
        if self._total:
            self.cursor = max(0, min(self._total - 1, self.cursor + delta))

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_first(self) -> None:
        self._move(-self._total)

    def action_last(self) -> None:
        self._move(self._total)

    def action_page_down(self) -> None:
        self._move(max(1, self.scrollable_content_region.height - 1))

    def action_page_up(self) -> None:
        self._move(-max(1, self.scrollable_content_region.height - 1))

    def action_open(self) -> None:
        row = self.row(self.cursor)
        if row is not None:
            self.post_message(TicketChosen(row.id, open_it=True))
