"""The main screen: queues, the queue's tickets, and the open customer's timeline."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text
from sqlmodel import Session
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, OptionList, Static

from desk import attachments, identity, views
from desk import tickets as ticket_actions
from desk.keys import MAIN
from desk.models import PRIORITIES
from desk.outbox import retry
from desk.textsafe import printable
from desk.tui.bindings import bindings
from desk.tui.messages import TicketChosen
from desk.tui.screens.pickers import ChoiceScreen, PromptScreen
from desk.tui.widgets.customer_panel import CustomerPanel, PresenceBar
from desk.tui.widgets.queue_list import CHANNELS, QueueList
from desk.tui.widgets.ticket_list import TicketList
from desk.tui.widgets.timeline import Rendered, TimelineView, render_timeline

# Below NARROW columns one pane shows at a time (the list, or the open ticket); from WIDE up
# the customer panel gets its own column.
NARROW = 100
WIDE = 150
TIMELINE_PAGE = 25  # newest messages shown when a ticket opens; `[` loads more
EARLIER_PAGE = 50
CURSOR_SETTLE_SECONDS = 0.06
IDENTITY_KINDS = {"email": "email", "phone": "phone", "sms": "phone", "telegram": "telegram"}

Write = Callable[[Session], Any]


class MainScreen(Screen[None]):
    BINDINGS = bindings(MAIN)
    AUTO_FOCUS = "#tickets"

    class CountsLoaded(Message):
        def __init__(self, figures: views.QueueFigures) -> None:
            super().__init__()
            self.figures = figures

    class TimelineLoaded(Message):
        def __init__(self, rendered: Rendered, keep_position: bool) -> None:
            super().__init__()
            self.rendered, self.keep_position = rendered, keep_position

    class Written(Message):
        def __init__(self, summary: str | None, error: str | None) -> None:
            super().__init__()
            self.summary, self.error = summary, error

    def __init__(self) -> None:
        super().__init__()
        self.queue = "open"
        self.ticket_id: int | None = None
        self.timeline: views.Timeline | None = None
        self.timeline_limit = TIMELINE_PAGE
        self._open_timer: Timer | None = None
        self._chosen: int | None = None  # the ticket the list cursor went to, until it shows
        self._counted = False

    def compose(self) -> ComposeResult:
        yield Static("", id="alerts")
        with Horizontal(id="panes"):
            yield QueueList(self.queue, id="queues")
            yield TicketList(self._loader(), id="tickets")
            with Vertical(id="detail"):
                yield PresenceBar("", id="presence")
                with Horizontal(id="detail-body"):
                    yield TimelineView(id="timeline")
                    yield CustomerPanel("", id="customer")
        yield Footer(compact=True)

    def _loader(self) -> views.RowLoader:
        loader = partial(views.ticket_rows, self.app.store, self.queue, self.app.agent)  # type: ignore[attr-defined]
        first_page = self.app.first_page  # type: ignore[attr-defined]
        if first_page is None or first_page.queue != self.queue:
            return loader
        self.app.first_page = None  # type: ignore[attr-defined]
        return first_page.loader_with(loader)

    def show_sign_ins_needed(self, lapsed: dict[str, str]) -> None:
        """The connectors whose OAuth sign-in lapsed: nothing arrives through them until an
        admin signs in again, which every agent should know."""
        alerts = self.query_one("#alerts", Static)
        alerts.display = bool(lapsed)
        alerts.update(Text(" · ".join(
            f"⚠ {printable(name, single_line=True)}: sign-in needed, run "
            f"desk auth login {printable(name, single_line=True)}" for name in sorted(lapsed))))

    def on_mount(self) -> None:
        self.query_one("#alerts", Static).display = False
        self.query_one(PresenceBar).display = False
        tickets = self.query_one(TicketList)
        tickets.reload()
        tickets.focus()

    def on_ticket_list_ready(self, message: TicketList.Ready) -> None:
        # Counting every queue waits for the first page, which the agent is waiting for.
        if not self._counted:
            self._counted = True
            self.load_counts()

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width < NARROW, "-narrow")
        self.set_class(event.size.width >= WIDE, "-wide")

    def refresh_from_store(self) -> None:
        """Something changed the store: re-read what is on screen, keeping the agent's place."""
        self.query_one(TicketList).reload(keep_cursor=True)
        self.load_counts()
        if self.ticket_id is not None:
            self.load_timeline(self.ticket_id, keep_position=True)

    # ---- workers: read, then post ------------------------------------------------------------

    @work(thread=True, exclusive=True, group="counts", exit_on_error=False)
    def load_counts(self) -> None:
        figures = views.queue_figures(self.app.store, self.app.agent, CHANNELS)  # type: ignore[attr-defined]
        self.post_message(self.CountsLoaded(figures))

    def load_timeline(self, ticket_id: int, keep_position: bool = False) -> None:
        view = self.query_one(TimelineView)
        self._load_timeline(ticket_id, keep_position, view.render_width, view.unfold,
                            view.rich_style)

    @work(thread=True, exclusive=True, group="timeline", exit_on_error=False)
    def _load_timeline(
        self, ticket_id: int, keep_position: bool, width: int, unfold: bool, style: Style
    ) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        timeline = views.timeline(store, ticket_id, agent=agent, limit=self.timeline_limit)
        lines = render_timeline(timeline, width, unfold, style)
        self.post_message(self.TimelineLoaded(Rendered(timeline, lines, width, unfold),
                                              keep_position))

    @work(thread=True, exit_on_error=False, group="write")
    def write(self, change: Write, summary: str | None = None) -> None:
        """Run one change through `desk` functions in a short write transaction."""
        try:
            result = self.app.store.write(change)  # type: ignore[attr-defined]
        except ValueError as error:  # TicketError, OutboxError, MergeError, IdentityError
            self.post_message(self.Written(None, str(error)))
            return
        if result is not False:  # False: nothing changed, nothing to re-read
            self.post_message(self.Written(summary, None))

    # ---- handlers -----------------------------------------------------------------------------

    def on_main_screen_counts_loaded(self, message: CountsLoaded) -> None:
        self.query_one(QueueList).show_figures(message.figures)

    def on_main_screen_timeline_loaded(self, message: TimelineLoaded) -> None:
        timeline = message.rendered.timeline
        if timeline is not None and timeline.ticket.id != self.ticket_id:
            return  # the agent has moved on
        self.timeline = timeline
        if timeline is not None and timeline.ticket.id == self._chosen:
            self._chosen = None
        self.query_one(CustomerPanel).show(timeline)
        self.query_one(PresenceBar).show(timeline)
        self.query_one(TimelineView).show_rendered(message.rendered,
                                                   keep_position=message.keep_position)

    def on_main_screen_written(self, message: Written) -> None:
        if message.error:
            self.notify(printable(message.error), severity="error", title="Not done")
        elif message.summary:
            self.notify(printable(message.summary))
        self.refresh_from_store()

    def on_ticket_chosen(self, message: TicketChosen) -> None:
        self._chosen = message.ticket_id
        if self._open_timer is not None:
            self._open_timer.stop()
            self._open_timer = None
        if message.open_it:
            self.open_ticket(message.ticket_id, focus=True)
        elif self.timeline is None:
            # The list's first paint goes first; the conversation follows straight after.
            self.call_after_refresh(self.open_ticket, message.ticket_id)
        else:
            # Holding j runs through tickets: load the one the cursor settles on.
            self._open_timer = self.set_timer(
                CURSOR_SETTLE_SECONDS, partial(self.open_ticket, message.ticket_id))

    def open_ticket(self, ticket_id: int, *, focus: bool = False) -> None:
        if self._open_timer is not None:
            self._open_timer.stop()
            self._open_timer = None
        self._chosen = ticket_id
        if ticket_id != self.ticket_id:
            self.ticket_id = ticket_id
            self.timeline_limit = TIMELINE_PAGE
            self.load_timeline(ticket_id)
        if focus:
            # Opening a ticket reads it; passing over it with the cursor does not.
            self.write(lambda s: ticket_actions.mark_read(s, ticket_id))
            if not self.has_class("-reading"):
                self.add_class("-reading")
            view = self.query_one(TimelineView)
            if not view.has_focus:
                view.focus()

    @on(OptionList.OptionSelected, "#queues")
    @on(OptionList.OptionHighlighted, "#queues")
    def choose_queue(self, event: OptionList.OptionHighlighted) -> None:
        if isinstance(event, OptionList.OptionHighlighted) and not event.option_list.has_focus:
            return  # the list moved by itself (mount, new counts), not the agent
        queue = event.option.id or "open"
        if queue != self.queue:
            self.show_queue(queue)
        if isinstance(event, OptionList.OptionSelected):
            self.query_one(TicketList).focus()

    def show_queue(self, queue: str) -> None:
        self.queue = queue
        self.query_one(QueueList).select_queue(queue)
        self.query_one(TicketList).reload(self._loader())

    # ---- actions ------------------------------------------------------------------------------

    def _ticket(self) -> views.Timeline | None:
        """The open ticket, or a word to the agent that there is none."""
        if self.timeline is None or self.ticket_id is None:
            self.notify("Open a ticket first", severity="warning")
            return None
        moved_on = self._chosen is not None and self._chosen != self.timeline.ticket.id
        if moved_on or self.timeline.ticket.id != self.ticket_id or self._open_timer is not None:
            # The cursor is on a ticket still loading: acting now would act on the one shown
            # before, which the agent has left.
            self.notify("The ticket is still loading: try again", severity="warning")
            return None
        return self.timeline

    def action_reply(self, mode: str = "reply", text: str | None = None) -> None:
        # Dialogs are imported when first opened: the first paint does not wait for them.
        from desk.tui.screens.composer import ComposerScreen, Draft

        timeline = self._ticket()
        if timeline is None:
            return
        drafts = self.app.drafts  # type: ignore[attr-defined]
        draft = drafts.get(Draft(timeline.ticket.id, mode), "")  # type: ignore[arg-type]
        composer = ComposerScreen(timeline, mode, text if text is not None else draft)
        self.app.push_screen(composer, lambda _sent: self.refresh_from_store())

    def action_note(self) -> None:
        self.action_reply("note")

    def action_editor(self) -> None:
        from desk.tui.screens.composer import ComposerScreen

        timeline = self._ticket()
        if timeline is None:
            return
        self.action_reply("reply")
        composer = self.app.screen
        if isinstance(composer, ComposerScreen):
            composer.call_after_refresh(composer.action_editor)

    def _set_status(self, status: str, until_spec: str | None = None) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        ticket_id, agent = timeline.ticket.id, self.app.agent  # type: ignore[attr-defined]
        until = ticket_actions.snooze_until(until_spec) if until_spec else None
        self.write(
            lambda s: ticket_actions.set_status(s, ticket_id, status, actor=agent,  # type: ignore[arg-type]
                                                snooze_until=until),
            f"#{ticket_id} {status}" + (f" until {until.astimezone():%a %d %b %H:%M}"
                                        if until else ""),
        )

    def action_resolve(self) -> None:
        self._set_status("resolved")

    def action_reopen(self) -> None:
        self._set_status("open")

    def action_pending(self) -> None:
        self._set_status("pending")

    def action_status(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        choices = [("open", "Open"), ("pending", "Pending (waiting on the customer)"),
                   ("snoozed", "Snooze until…"), ("resolved", "Resolved")]

        def chosen(status: str | None) -> None:
            if status == "snoozed":
                self.action_snooze()
            elif status is not None:
                self._set_status(status)

        self.app.push_screen(ChoiceScreen(f"Status of #{timeline.ticket.id}", choices,
                                          current=timeline.ticket.status), chosen)

    def action_snooze(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return

        def check(spec: str) -> str | None:
            try:
                ticket_actions.snooze_until(spec)
            except ticket_actions.TicketError as error:
                return str(error)
            return None

        def chosen(spec: str | None) -> None:
            if spec:
                self._set_status("snoozed", spec)

        self.app.push_screen(PromptScreen(
            f"Snooze #{timeline.ticket.id} until", value="tomorrow",
            hint="4h · 2d · 14:30 · tomorrow · mon 9:00 · 2026-12-01 — it reopens then",
            check=check), chosen)

    def action_assign(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        me = self.app.agent  # type: ignore[attr-defined]
        others = [a for a in self.app.settings.desk.agents if a != me]  # type: ignore[attr-defined]
        choices = [(f"agent:{me}", f"Me ({me})"), *[(f"agent:{a}", a) for a in others],
                   ("nobody", "Nobody (unassigned)")]
        current = f"agent:{timeline.ticket.assignee}" if timeline.ticket.assignee else "nobody"
        ticket_id = timeline.ticket.id

        def chosen(choice: str | None) -> None:
            if choice is None:
                return
            assignee = choice.removeprefix("agent:") if choice != "nobody" else None
            self.write(lambda s: ticket_actions.assign(s, ticket_id, assignee, actor=me),  # type: ignore[arg-type]
                       f"#{ticket_id} assigned to {assignee}" if assignee
                       else f"#{ticket_id} unassigned")

        self.app.push_screen(ChoiceScreen(f"Assign #{ticket_id} to", choices, current=current),
                             chosen)

    def action_priority(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        ticket_id, agent = timeline.ticket.id, self.app.agent  # type: ignore[attr-defined]

        def chosen(priority: str | None) -> None:
            if priority is not None:
                self.write(lambda s: ticket_actions.set_priority(s, ticket_id, priority,  # type: ignore[arg-type]
                                                                 actor=agent),
                           f"#{ticket_id} priority {priority}")

        self.app.push_screen(ChoiceScreen(
            f"Priority of #{ticket_id}", [(p, p.capitalize()) for p in PRIORITIES],
            current=timeline.ticket.priority), chosen)

    def action_tag(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        ticket_id, agent = timeline.ticket.id, self.app.agent  # type: ignore[attr-defined]
        current = timeline.ticket.tags.replace(",", ", ")

        def chosen(value: str | None) -> None:
            if value is None:
                return
            tags = [tag for tag in value.split(",") if tag.strip()]
            self.write(lambda s: ticket_actions.set_tags(s, ticket_id, tags, actor=agent),  # type: ignore[arg-type]
                       f"#{ticket_id} tags: {', '.join(tags) or 'none'}")

        self.app.push_screen(PromptScreen(
            f"Tags of #{ticket_id}", value=current, placeholder="billing, vip",
            hint="comma-separated; empty removes them all"), chosen)

    def action_retry(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        self.retry_failed(timeline.ticket.id)  # type: ignore[arg-type]

    @work(thread=True, exit_on_error=False, group="write")
    def retry_failed(self, ticket_id: int) -> None:
        failed = views.failed_messages(self.app.store, ticket_id)  # type: ignore[attr-defined]
        self.app.call_from_thread(self._choose_retry, ticket_id, failed)

    def _choose_retry(self, ticket_id: int, failed: list[Any]) -> None:
        agent = self.app.agent  # type: ignore[attr-defined]
        if not failed:
            self.notify(f"#{ticket_id} has no failed message to retry")
            return

        def chosen(message_id: str | None) -> None:
            if message_id is not None:
                self.write(lambda s: retry(s, int(message_id), actor=agent),
                           f"Message {message_id} queued again")

        if len(failed) == 1:
            chosen(str(failed[0].id))
            return
        choices = [(str(m.id), Text(f"{m.channel} to "
                                    f"{printable(m.recipient or '', single_line=True)}: "
                                    f"{printable(m.error or '', single_line=True)[:60]}"))
                   for m in failed]
        self.app.push_screen(ChoiceScreen("Retry which message?", choices), chosen)

    def action_save_attachment(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        self.list_attachments(timeline.ticket.id)  # type: ignore[arg-type]

    @work(thread=True, exit_on_error=False, group="attachments")
    def list_attachments(self, ticket_id: int) -> None:
        with self.app.store.session() as session:  # type: ignore[attr-defined]
            found = attachments.ticket_attachments(session, ticket_id)
        self.app.call_from_thread(self._choose_attachment, ticket_id, found)

    def _choose_attachment(self, ticket_id: int, found: list[attachments.AttachmentInfo]) -> None:
        if not found:
            self.notify(f"#{ticket_id} has no attachment")
            return
        settings = self.app.settings  # type: ignore[attr-defined]
        folder = attachments.default_folder(settings.desk.attachments_dir)

        def where(attachment_id: str | None) -> None:
            if attachment_id is None:
                return

            def save_into(chosen: str | None) -> None:
                if chosen:
                    self.save_attachment(int(attachment_id), chosen)

            self.app.push_screen(
                PromptScreen("Save into which folder?", value=str(folder),
                             hint="Created owner-only if missing; an existing file is kept"),
                save_into)

        choices = [(str(info.id), Text.assemble(
            (printable(info.filename, single_line=True)[:60], "bold"),
            (f"  {info.size:,} B · {printable(info.content_type, single_line=True)}"
             + ("" if info.stored else " · not stored"), "dim"))) for info in found]
        self.app.push_screen(ChoiceScreen("Save which attachment?", choices), where)

    @work(thread=True, exit_on_error=False, group="write")
    def save_attachment(self, attachment_id: int, folder: str) -> None:
        try:
            with self.app.store.session() as session:  # type: ignore[attr-defined]
                path = attachments.save(session, attachment_id, Path(folder))
        except attachments.AttachmentError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error")
            return
        except OSError as error:
            self.app.call_from_thread(self.notify, f"Cannot save into {folder}: "
                                      f"{error.strerror or error}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"Saved {printable(str(path), single_line=True)}")

    def action_merge(self) -> None:
        from desk.tui.screens.merge import MergeScreen

        timeline = self._ticket()
        if timeline is None:
            return
        customer = timeline.customer
        agent = self.app.agent  # type: ignore[attr-defined]

        def chosen(other_id: int | None) -> None:
            if other_id is None:
                return
            self.write(
                lambda s: identity.merge(s, customer.id, other_id, actor=agent,  # type: ignore[arg-type]
                                         reason="merged by hand"),
                f"Customer #{other_id} merged into #{customer.id}",
            )

        self.app.push_screen(MergeScreen(customer.id, customer.name), chosen)  # type: ignore[arg-type]

    def action_unmerge(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        self.find_merged(timeline.customer.id)  # type: ignore[arg-type]

    @work(thread=True, exit_on_error=False, group="write")
    def find_merged(self, customer_id: int) -> None:
        merged = views.merged_into(self.app.store, customer_id)  # type: ignore[attr-defined]
        self.app.call_from_thread(self._choose_unmerge, merged)

    def _choose_unmerge(self, merged: list[views.MergedCustomer]) -> None:
        if not merged:
            self.notify("Nobody was merged into this customer")
            return
        agent = self.app.agent  # type: ignore[attr-defined]
        choices = [
            (str(m.customer_id),
             Text(f"#{m.customer_id} {printable(m.name, single_line=True)} — "
                  f"{printable(m.reason, single_line=True) or 'no reason'} "
                  f"({m.merged_at.astimezone():%d %b %H:%M})"))
            for m in merged
        ]

        def chosen(source: str | None) -> None:
            if source is not None:
                self.write(lambda s: identity.unmerge(s, int(source), actor=agent),
                           f"Customer #{source} unmerged")

        self.app.push_screen(ChoiceScreen("Unmerge which customer?", choices), chosen)

    def action_link(self) -> None:
        timeline = self._ticket()
        if timeline is None:
            return
        customer_id = timeline.customer.id
        agent = self.app.agent  # type: ignore[attr-defined]
        region = self.app.settings.desk.default_region  # type: ignore[attr-defined]

        def parse(value: str) -> tuple[str, str]:
            kind, sep, address = value.partition(":")
            if not sep or kind.strip().lower() not in IDENTITY_KINDS:
                if "@" in value:
                    return "email", value.strip()
                raise identity.IdentityError(
                    "write kind:value, e.g. email:ana@example.com, phone:+33 6 12 34 56 78 "
                    "or telegram:123456789")
            return IDENTITY_KINDS[kind.strip().lower()], address.strip()

        def check(value: str) -> str | None:
            try:
                kind, address = parse(value)
                identity.normalize(kind, address, region)
            except identity.IdentityError as error:
                return str(error)
            return None

        def chosen(value: str | None) -> None:
            if not value:
                return
            kind, address = parse(value)
            self.write(
                lambda s: identity.link_identity(s, customer_id, kind, address, actor=agent,  # type: ignore[arg-type]
                                                 region=region),
                f"Linked {kind} {address} (a customer who already had it is merged; U undoes)",
            )

        self.app.push_screen(PromptScreen(
            f"Link an identity to {printable(timeline.customer.name, single_line=True)}",
            placeholder="email:ana@example.com · phone:+33612345678 · telegram:123456789",
            hint="If another customer has it, the two are merged (U undoes it).",
            check=check), chosen)

    def action_search(self) -> None:
        from desk.tui.screens.search import SearchScreen

        def chosen(ticket_id: int | None) -> None:
            if ticket_id is not None:
                self.open_ticket(ticket_id, focus=True)

        self.app.push_screen(SearchScreen(), chosen)

    def action_stats(self) -> None:
        from desk.tui.screens.stats import StatsScreen

        self.app.push_screen(StatsScreen())

    def action_help(self) -> None:
        self.app.action_help()

    def action_unfold(self) -> None:
        self.query_one(TimelineView).toggle_unfold()

    def action_earlier(self) -> None:
        if self.timeline is not None and self.timeline.earlier and self.ticket_id is not None:
            self.timeline_limit += EARLIER_PAGE
            self.load_timeline(self.ticket_id, keep_position=True)

    def action_next_ticket(self) -> None:
        self._step_ticket(1)

    def action_previous_ticket(self) -> None:
        self._step_ticket(-1)

    def _step_ticket(self, delta: int) -> None:
        tickets = self.query_one(TicketList)
        tickets.move_by(delta)
        row = tickets.row(tickets.cursor)
        if row is not None:
            self.open_ticket(row.id)

    def action_queues(self) -> None:
        self.toggle_class("-hide-queues" if not self.has_class("-narrow") else "-show-queues")

    def action_back(self) -> None:
        self.remove_class("-reading")
        self.query_one(TicketList).focus()
