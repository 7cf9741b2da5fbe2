"""The ticket list: a line-API ScrollView that renders only the visible rows and asks the store
for the page they sit on, so a queue of 200,000 tickets paints as fast as one of 20."""

from __future__ import annotations

from collections import OrderedDict

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from desk.keys import LIST
from desk.sla import Overdue, Targets, format_duration, overdue
from desk.textsafe import printable
from desk.timeutil import ago, utcnow
from desk.tui.bindings import bindings
from desk.tui.messages import TicketChosen
from desk.views import RowLoader, TicketRow

PAGE = 100
ROW_HEIGHT = 2  # customer, channels and age; then waiting time and subject
CACHED_PAGES = 20
CHANNEL_MARKS = {"email": "✉", "sms": "☏", "telegram": "✈"}
PRIORITY_MARKS = {"urgent": "‼ ", "high": "! "}

class TicketList(ScrollView, can_focus=True):
    """Rows of the current queue; `j`/`k` move, `enter` opens."""

    BINDINGS = bindings(LIST)
    COMPONENT_CLASSES = {
        "ticket-list--cursor", "ticket-list--unread", "ticket-list--dim", "ticket-list--waiting",
        "ticket-list--overdue",
    }

    cursor = reactive(0)

    class Ready(Message):
        """The first page of a (re)load is in."""

    class PageLoaded(Message):
        def __init__(self, generation: int, page: int, total: int, rows: list[TicketRow]) -> None:
            super().__init__()
            self.generation, self.page, self.total, self.rows = generation, page, total, rows

    def __init__(self, loader: RowLoader, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._loader = loader
        self._pages: OrderedDict[int, list[TicketRow]] = OrderedDict()
        # Rows from before a live reload, painted until their fresh page arrives (no flicker).
        self._stale: dict[int, list[TicketRow]] = {}
        self._requested: set[int] = set()
        self._total = 0
        self._generation = 0  # bumps on reload, so late pages of an old queue are dropped
        self._selected_id: int | None = None  # the ticket the agent is on
        self._quiet = False  # a cursor move made by a reload, not by the agent
        self._announce_pending = False  # the agent moved onto a row not loaded yet
        self._keeping = False  # the current load is a live reload
        self._ready = False

    # ---- data ---------------------------------------------------------------------------------

    def reload(self, loader: RowLoader | None = None, *, keep_cursor: bool = False) -> None:
        """Forget cached rows (a new queue, or the store changed) and fetch what is visible."""
        if loader is not None:
            self._loader = loader
        self._generation += 1
        self._ready = False
        self._keeping = keep_cursor
        self._stale = dict(self._pages) if keep_cursor else {}
        self._pages.clear()
        self._requested.clear()
        if not keep_cursor:
            self._selected_id = None
            self._quiet = True
            self.cursor = 0
            self._quiet = False
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
        self._stale.pop(message.page, None)
        while len(self._pages) > CACHED_PAGES:
            evicted, _rows = self._pages.popitem(last=False)
            self._requested.discard(evicted)
        self._total = message.total
        self.virtual_size = Size(self.scrollable_content_region.width, self._total * ROW_HEIGHT)
        self._quiet = True
        # A live reload keeps the agent on their ticket even when the list re-sorts; one that
        # left the queue leaves the cursor where it was, on the next ticket, without opening it.
        for offset, row in enumerate(message.rows):
            if row.id == self._selected_id:
                self.cursor = message.page * PAGE + offset
                break
        if self._total and self.cursor >= self._total:
            self.cursor = self._total - 1
        self._quiet = False
        self.refresh()
        # A live reload never opens a ticket on its own (the agent may be reading one from
        # search); a new queue opens its first row, and a jump opens the row it landed on.
        if (self._selected_id is None and not self._keeping) or self._announce_pending:
            self._announce()
        if not self._ready:
            self._ready = True
            self.post_message(self.Ready())

    def row(self, index: int) -> TicketRow | None:
        rows = self._pages.get(index // PAGE)
        if rows is None:
            self._request(index // PAGE)
            rows = self._stale.get(index // PAGE)
            if rows is None:
                return None
        offset = index % PAGE
        return rows[offset] if offset < len(rows) else None

    @property
    def total(self) -> int:
        return self._total

    # ---- rendering ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        line = self.scroll_offset.y + y
        index, part = divmod(line, ROW_HEIGHT)
        width = self.scrollable_content_region.width  # the scrollbar is not ours to paint
        if index >= self._total:
            return Strip.blank(width, self.rich_style)
        row = self.row(index)
        if row is None:
            return Strip([Segment(("…" if part == 0 else "").ljust(width), self.rich_style)], width)
        text = self._row_text(row, width) if part == 0 else self._row_detail(row, width)
        if index == self.cursor:
            text.stylize(self.get_component_rich_style("ticket-list--cursor"))
        segments = list(text.render(self.app.console))
        return Strip(segments).adjust_cell_length(width, self.rich_style)

    def _row_text(self, row: TicketRow, width: int) -> Text:
        """Line one: unread mark, customer, channels used, age of the last message."""
        unread = self.get_component_rich_style("ticket-list--unread") if row.unread else Style()
        dim = self.get_component_rich_style("ticket-list--dim")
        marks = "".join(CHANNEL_MARKS.get(c, "?") for c in row.channels)
        age = ago(row.last_message_at, utcnow())
        tail = f" {marks} {age:>4}"
        name_cells = max(4, width - 2 - len(tail) - 2)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append("● " if row.unread else "  ", unread)
        text.append(set_cell_size(printable(row.customer_name, single_line=True), name_cells),
                    unread)
        text.append(PRIORITY_MARKS.get(row.priority, "  "), "bold red")
        text.append(tail, dim)
        text.truncate(width, overflow="ellipsis", pad=True)
        return text

    def _row_detail(self, row: TicketRow, width: int) -> Text:
        """Line two: how long the customer has waited for us, then the subject or snippet."""
        dim = self.get_component_rich_style("ticket-list--dim")
        waiting = ago(row.waiting_since, utcnow())
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append("  ")
        late = self._overdue(row)
        if late is not None:
            what = "reply" if late.target == "first response" else "resolve"
            text.append(f"⚑ {what} {format_duration(late.by_seconds)} late ",
                        self.get_component_rich_style("ticket-list--overdue"))
        if waiting:
            text.append(f"⏳{waiting} ", self.get_component_rich_style("ticket-list--waiting"))
        if row.assignee and row.assignee != self.app.agent:  # type: ignore[attr-defined]
            text.append(f"@{printable(row.assignee, single_line=True)} ", dim)
        text.append(printable(row.title, single_line=True), dim)
        text.truncate(width, overflow="ellipsis", pad=True)
        return text

    def _overdue(self, row: TicketRow) -> Overdue | None:
        targets: Targets = self.app.sla_targets  # type: ignore[attr-defined]
        if not targets or row.created_at is None:
            return None
        return overdue(targets, priority=row.priority, status=row.status,
                       created_at=row.created_at, first_inbound_at=row.first_inbound_at,
                       first_response_at=row.first_response_at, now=utcnow())

    # ---- cursor -------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_cursor()
        self.refresh()
        if not self._quiet:
            self._announce()

    def scroll_to_cursor(self) -> None:
        top = self.scroll_offset.y
        height = max(ROW_HEIGHT, self.scrollable_content_region.height)
        first, last = self.cursor * ROW_HEIGHT, (self.cursor + 1) * ROW_HEIGHT
        if first < top:
            self.scroll_to(y=first, animate=False)
        elif last > top + height:
            self.scroll_to(y=last - height, animate=False)

    def _announce(self) -> None:
        row = self.row(self.cursor) if self._total else None
        self._announce_pending = row is None and self._total > 0
        if row is not None:
            self._selected_id = row.id
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
        self._move(self.rows_per_page)

    def action_page_up(self) -> None:
        self._move(-self.rows_per_page)

    @property
    def rows_per_page(self) -> int:
        return max(1, self.scrollable_content_region.height // ROW_HEIGHT - 1)

    def move_by(self, delta: int) -> None:
        self._move(delta)

    def action_open(self) -> None:
        row = self.row(self.cursor)
        if row is not None:
            self._selected_id = row.id
            self.post_message(TicketChosen(row.id, open_it=True))
