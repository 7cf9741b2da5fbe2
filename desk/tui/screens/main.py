"""The main screen: queues on the left, the queue's tickets, the open conversation."""

from __future__ import annotations

from functools import partial

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, OptionList
from textual.widgets.option_list import Option

from desk import tickets as ticket_actions
from desk import views
from desk.store import QUEUES
from desk.tui.messages import TicketChosen
from desk.tui.widgets.conversation import ConversationView
from desk.tui.widgets.ticket_list import TicketList

QUEUE_LABELS = {
    "mine": "Mine", "unassigned": "Unassigned", "open": "Open", "pending": "Pending",
    "snoozed": "Snoozed", "resolved": "Resolved", "all": "All",
}  # fmt: skip


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("a", "resolve", "Resolve", id="ticket.resolve"),
        Binding("u", "unfold", "Unfold quotes", id="ticket.unfold"),
        Binding("escape", "focus_list", "Back", show=False, id="list.back"),
    ]

    class CountsLoaded(Message):
        def __init__(self, counts: dict[str, int]) -> None:
            super().__init__()
            self.counts = counts

    class ConversationLoaded(Message):
        def __init__(self, conversation: views.Conversation | None) -> None:
            super().__init__()
            self.conversation = conversation

    def __init__(self) -> None:
        super().__init__()
        self.queue = "open"
        self.ticket_id: int | None = None

    def compose(self) -> ComposeResult:
        yield OptionList(*[Option(QUEUE_LABELS[q], id=q) for q in QUEUES], id="queues")
        yield TicketList(self._loader(), id="tickets")
        yield ConversationView(id="conversation")
        yield Footer()

    def _loader(self) -> views.RowLoader:
        return partial(views.ticket_rows, self.app.store, self.queue, self.app.agent)  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        queues = self.query_one("#queues", OptionList)
        queues.highlighted = QUEUES.index(self.queue)
        self.query_one(TicketList).reload()
        self.query_one(TicketList).focus()
        self.load_counts()

    def refresh_from_store(self) -> None:
        """Something else changed the store: re-read what is on screen."""
        self.query_one(TicketList).reload(keep_cursor=True)
        self.load_counts()
        if self.ticket_id is not None:
            self.load_conversation(self.ticket_id)

    # ---- workers ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="counts", exit_on_error=False)
    def load_counts(self) -> None:
        self.post_message(self.CountsLoaded(views.queue_figures(self.app.store, self.app.agent)))  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="conversation", exit_on_error=False)
    def load_conversation(self, ticket_id: int) -> None:
        self.post_message(self.ConversationLoaded(views.conversation(self.app.store, ticket_id)))  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False)
    def write(self, action: str, ticket_id: int) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        if action == "resolve":
            store.write(lambda s: ticket_actions.set_status(s, ticket_id, "resolved", actor=agent))
        self.app.call_from_thread(self.refresh_from_store)

    # ---- handlers -----------------------------------------------------------------------------

    def on_main_screen_counts_loaded(self, message: CountsLoaded) -> None:
        queues = self.query_one("#queues", OptionList)
        for index, queue in enumerate(QUEUES):
            count = message.counts.get(queue)
            label = QUEUE_LABELS[queue] + (f"  {count}" if count is not None else "")
            queues.replace_option_prompt_at_index(index, label)

    def on_main_screen_conversation_loaded(self, message: ConversationLoaded) -> None:
        self.query_one(ConversationView).show(message.conversation)

    def on_ticket_chosen(self, message: TicketChosen) -> None:
        if message.ticket_id != self.ticket_id:
            self.ticket_id = message.ticket_id
            self.load_conversation(message.ticket_id)
        if message.open_it:
            self.query_one(ConversationView).focus()

    @on(OptionList.OptionSelected, "#queues")
    @on(OptionList.OptionHighlighted, "#queues")
    def choose_queue(self, event: OptionList.OptionHighlighted) -> None:
        queue = event.option.id or "open"
        if queue != self.queue:
            self.queue = queue
            self.query_one(TicketList).reload(self._loader())

    # ---- actions ------------------------------------------------------------------------------

    def action_resolve(self) -> None:
        if self.ticket_id is not None:
            self.write("resolve", self.ticket_id)

    def action_unfold(self) -> None:
        self.query_one(ConversationView).toggle_unfold()

    def action_focus_list(self) -> None:
        self.query_one(TicketList).focus()
