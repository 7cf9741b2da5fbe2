"""The composer: a reply on the channel (and address) the agent picks, or a private note.

It never sends blind: if the customer wrote again or another agent answered since it opened,
the first send stops and shows what changed; sending again confirms."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Select, Static, TextArea
from textual.worker import Worker, WorkerState

from desk import canned, presence, views
from desk.editor import EditorError, edit
from desk.keys import COMPOSER
from desk.models import Message as StoredMessage
from desk.outbox import (
    TELEGRAM_LIMIT,
    BlindReplyError,
    Route,
    add_note,
    is_gsm7,
    queue_reply,
    reply_routes,
    sms_segments,
)
from desk.store import Store
from desk.textsafe import printable
from desk.tickets import reply_subject
from desk.tui.bindings import bindings
from desk.tui.screens.pickers import ChoiceScreen

CHANNEL_NAMES = {"email": "Email", "sms": "SMS", "telegram": "Telegram"}
CONTEXT_LINES = 3
AFTER_SENDING = [("Leave the status", ""), ("Then pending", "pending"),
                 ("Then resolved", "resolved")]


class PresenceKeeper:
    """Announces "writing on this ticket" while the composer is open and withdraws it once
    closed. Calls come from worker threads; the lock and the closed flag make sure a late
    announce never lands after the withdraw."""

    def __init__(self, store: Store, agent: str, ticket_id: int, mode: str) -> None:
        self.store, self.agent, self.ticket_id, self.mode = store, agent, ticket_id, mode
        self.lock = threading.Lock()
        self.closed = False

    def announce(self) -> None:
        with self.lock:
            if not self.closed:
                self.store.write(
                    lambda s: presence.announce(s, self.agent, self.ticket_id, self.mode))

    def withdraw(self) -> None:
        with self.lock:
            self.closed = True
            self.store.write(lambda s: presence.withdraw(s, self.agent, self.ticket_id))


@dataclass(frozen=True, slots=True)
class Draft:
    ticket_id: int
    mode: str  # "reply" or "note"


class ComposerScreen(ModalScreen[bool]):
    """Dismisses with True once the reply is queued (or the note stored)."""

    BINDINGS = bindings(COMPOSER)

    class RoutesLoaded(Message):
        def __init__(self, routes: list[Route]) -> None:
            super().__init__()
            self.routes = routes

    class Changed(Message):
        """What the conversation did since the newest message the agent has seen, and who
        else is writing on the ticket."""

        def __init__(self, changes: list[StoredMessage], others: list[str] | None) -> None:
            super().__init__()
            self.changes, self.others = changes, others

    class Done(Message):
        def __init__(self, summary: str) -> None:
            super().__init__()
            self.summary = summary

    class Failed(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    def __init__(self, timeline: views.Timeline, mode: str = "reply", text: str = "") -> None:
        super().__init__()
        self.timeline = timeline
        self.mode = mode
        self.initial_text = text
        self.routes: list[Route] = []
        # The newest message the agent has seen: in the timeline when the composer opened,
        # then each change shown in the warning. A send passes it to `queue_reply`, which
        # refuses the reply if anything newer came in (in the transaction that would queue it).
        self.seen_up_to = timeline.latest_message_id
        self.shown_changes: dict[int, StoredMessage] = {}  # listed in the warning
        self.others: list[str] = []  # other agents writing on the ticket
        self.routes_missing = False
        self.sending = False
        self.presence: PresenceKeeper | None = None

    @property
    def ticket_id(self) -> int:
        return self.timeline.ticket.id  # type: ignore[return-value]

    @property
    def draft_key(self) -> Draft:
        return Draft(self.ticket_id, self.mode)

    # ---- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        customer = printable(self.timeline.customer.name, single_line=True)
        title = (f"Reply to {customer} · #{self.ticket_id}" if self.mode == "reply"
                 else f"Private note on #{self.ticket_id} (never sent to {customer})")
        with Vertical(classes="dialog dialog--composer"):
            yield Label(Text(title, style="bold"), classes="dialog--title")
            if self.mode == "reply":
                with Horizontal(id="route"):
                    yield Select[str]([], prompt="Channel", allow_blank=True, id="channel",
                                      compact=True)
                    yield Select[str]([], prompt="To", allow_blank=True, id="address",
                                      compact=True)
                    yield Select[str](AFTER_SENDING, value="", allow_blank=False, id="then",
                                      compact=True)
            yield Static(self._customer_said(), id="context")
            yield Static("", id="warning")
            yield Static("", id="problem")
            yield TextArea(self.initial_text, id="body", soft_wrap=True, show_line_numbers=False)
            yield Static("", id="counter")
        yield Footer(compact=True)

    def _customer_said(self) -> Text:
        """The customer's last message, so the agent sees what they answer."""
        last = next((m for m in reversed(self.timeline.messages) if m.direction == "in"), None)
        if last is None:
            return Text("")
        who = printable(last.sender_name or last.sender or "", single_line=True)
        text = Text()
        text.append(f"{who} on {CHANNEL_NAMES.get(last.channel, last.channel)}, "
                    f"{last.sent_at.astimezone():%d %b %H:%M}:\n", style="bold")
        lines = [line for line in printable(last.text).split("\n") if line.strip()]
        text.append("\n".join(lines[:CONTEXT_LINES]))
        if len(lines) > CONTEXT_LINES:
            text.append(" …")
        return text

    def on_mount(self) -> None:
        self.presence = PresenceKeeper(self.app.store, self.app.agent,  # type: ignore[attr-defined]
                                       self.ticket_id, self.mode)
        self.query_one("#warning", Static).display = False
        self.query_one("#problem", Static).display = False
        body = self.query_one("#body", TextArea)
        body.focus()
        body.move_cursor(body.document.end)
        self.update_counter()
        self.load()
        self.check(self.seen_up_to)
        self.announce()
        self.set_interval(presence.RENEW.total_seconds(), self.announce)

    def on_unmount(self) -> None:
        # Off the UI thread: a busy store must not freeze the app, and the row expires anyway.
        if self.presence is not None:
            self.app.run_worker(self.presence.withdraw, thread=True, exit_on_error=False,
                                group="presence")

    # ---- workers ------------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        if self.mode != "reply":
            return
        store = self.app.store  # type: ignore[attr-defined]
        with store.session() as session:
            ticket = session.get(type(self.timeline.ticket), self.ticket_id)
            routes = reply_routes(session, ticket, self.app.connectors_by_channel)  # type: ignore[arg-type, attr-defined]
        self.post_message(self.RoutesLoaded(routes))

    def announce(self) -> None:
        if self.presence is not None:
            self.app.run_worker(self.presence.announce, thread=True, exit_on_error=False,
                                group="presence")

    def refresh_from_store(self) -> None:
        """The store changed: say early if the customer wrote or another agent answered."""
        self.check(max(self.seen_up_to, *self.shown_changes, 0))

    @work(thread=True, exclusive=True, group="check", exit_on_error=False)
    def check(self, after_id: int) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        changes = views.changes_since(store, self.timeline.customer.id, after_id, agent)  # type: ignore[arg-type]
        with store.session() as session:
            others = [p.agent for p in presence.others_on(session, self.ticket_id, agent)]
        self.post_message(self.Changed(changes, others))

    @work(thread=True, exclusive=True, group="send", exit_on_error=False)
    def deliver(
        self, text: str, channel: str | None, to: str | None, then: str | None, seen_up_to: int
    ) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        ticket_id = self.ticket_id
        try:
            if self.mode == "note":
                store.write(lambda s: add_note(s, ticket_id, text, agent=agent))
                self.post_message(self.Done(f"Note added to #{ticket_id}"))
                return
            connectors = self.app.connectors_by_channel  # type: ignore[attr-defined]
            message = store.write(lambda s: queue_reply(
                s, ticket_id, text, agent=agent, channel=channel, to=to,
                connectors_by_channel=connectors, then_status=then or None,
                seen_up_to=seen_up_to))
            self.post_message(self.Done(
                f"Reply queued on {CHANNEL_NAMES.get(message.channel, message.channel)} "
                f"to {printable(message.recipient or '', single_line=True)}"))
        except BlindReplyError as blind:
            self.post_message(self.Changed(blind.changes, None))
            self.post_message(self.Failed("Not sent: read what changed, then send again."))
        except ValueError as error:  # OutboxError, TicketError: the agent can fix it
            self.post_message(self.Failed(str(error)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "send" or event.state not in (
            WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED
        ):
            return
        self.sending = False
        if event.state == WorkerState.ERROR:  # the store failed: say so, keep the text
            self.show_problem(f"Not sent: {event.worker.error}")

    # ---- handlers -----------------------------------------------------------------------------

    def on_composer_screen_routes_loaded(self, message: RoutesLoaded) -> None:
        self.routes = message.routes
        channel = self.query_one("#channel", Select)
        channels = list(dict.fromkeys(route.channel for route in self.routes))
        channel.set_options([(self._channel_label(c), c) for c in channels])
        if channels:
            channel.value = channels[0]  # the channel the customer last wrote on
        self.routes_missing = not channels
        self.show_warning()
        self.update_addresses()

    def _channel_label(self, channel: str) -> str:
        name = CHANNEL_NAMES.get(channel, channel)
        if not any(r.connector for r in self.routes if r.channel == channel):
            name += " (no connector)"
        return name

    @on(Select.Changed, "#channel")
    def channel_changed(self) -> None:
        self.update_addresses()
        self.update_counter()

    def update_addresses(self) -> None:
        address = self.query_one("#address", Select)
        channel = self.query_one("#channel", Select).value
        addresses = [r.to for r in self.routes if r.channel == channel]
        address.set_options([(Text(printable(a, single_line=True)), a) for a in addresses])
        if addresses:
            address.value = addresses[0]
        # One address needs no choosing; several (two emails, two numbers) do.
        address.display = len(addresses) > 1

    @on(TextArea.Changed, "#body")
    def update_counter(self) -> None:
        text = self.query_one("#body", TextArea).text
        counter = self.query_one("#counter", Static)
        if self.mode == "note":
            counter.update(Text(f"Private note · {len(text)} characters", style="dim"))
            return
        channel = self.chosen_channel()
        if channel == "sms":
            characters, segments = sms_segments(text)
            style = "yellow" if segments > 1 else "dim"
            counter.update(Text(
                f"SMS · {characters} characters · {segments} segment"
                f"{'s' if segments != 1 else ''}"
                f"{'' if is_gsm7(text) else ' · Unicode (70 per segment)'}", style=style))
        elif channel == "telegram":
            over = len(text) > TELEGRAM_LIMIT
            parts = -(-len(text) // TELEGRAM_LIMIT) if text else 0
            counter.update(Text(
                f"Telegram · {len(text)}/{TELEGRAM_LIMIT}"
                + (f" · sent as {parts} messages" if over else ""),
                style="yellow" if over else "dim"))
        elif channel == "email":
            subject = reply_subject(self.timeline.ticket.subject, self.ticket_id)
            counter.update(Text(f"Email · Subject: {printable(subject, single_line=True)}",
                                style="dim"))
        else:
            counter.update("")

    def chosen_channel(self) -> str | None:
        if self.mode != "reply":
            return None
        value = self.query_one("#channel", Select).value
        return value if isinstance(value, str) else None

    def on_composer_screen_changed(self, message: Changed) -> None:
        for change in message.changes:
            self.shown_changes.setdefault(change.id or 0, change)
        if message.others is not None:
            self.others = message.others
        self.show_warning()

    def show_warning(self) -> None:
        """Everything the agent should know before sending, rebuilt from the state each time
        so no part of it hides another."""
        lines = Text()
        for agent in self.others:
            lines.append(f"⚠ {printable(agent, single_line=True)} is also writing on this "
                         "ticket\n", style="bold yellow")
        if self.routes_missing:
            lines.append("This customer has no address to reply to: link one (L) first.\n",
                         style="bold red")
        if self.shown_changes:
            lines.append("Since you started writing:\n", style="bold red")
            for change in list(self.shown_changes.values())[-5:]:
                if change.direction == "in":
                    who, what = change.sender_name or change.sender or "", "wrote"
                else:
                    who, what = change.author or "the support mailbox", "answered"
                lines.append(
                    f"  {printable(who, single_line=True)} {what} on {change.channel}: "
                    f"{printable(change.text, single_line=True)[:100]}\n")
            lines.append("Edit your reply, or send again to send it as it is.", style="bold")
        lines.rstrip()
        try:
            warning = self.query_one("#warning", Static)
        except NoMatches:  # closed meanwhile
            return
        warning.display = bool(lines.plain)
        warning.update(lines)

    def show_problem(self, reason: str | None) -> None:
        try:
            problem = self.query_one("#problem", Static)
        except NoMatches:  # closed meanwhile
            return
        problem.display = reason is not None
        problem.update(Text(printable(reason or ""), style="bold red"))

    def on_composer_screen_done(self, message: Done) -> None:
        self.app.drafts.pop(self.draft_key, None)  # type: ignore[attr-defined]
        self.app.notify(message.summary)
        self.dismiss(True)

    def on_composer_screen_failed(self, message: Failed) -> None:
        self.show_problem(message.reason)

    # ---- actions ------------------------------------------------------------------------------

    def action_send(self) -> None:
        if self.sending:
            return
        text = self.query_one("#body", TextArea).text
        if not text.strip():
            self.show_problem("Nothing to send yet.")
            return
        self.show_problem(None)
        self.sending = True
        # What the warning shows counts as seen: sending again after reading it goes out,
        # unless something newer arrived (queue_reply checks, atomically).
        self.seen_up_to = max(self.seen_up_to, *self.shown_changes, 0)
        channel = self.chosen_channel()
        to = then = None
        if self.mode == "reply":
            address = self.query_one("#address", Select).value
            to = address if isinstance(address, str) else None
            chosen = self.query_one("#then", Select).value
            then = chosen if isinstance(chosen, str) and chosen else None
        self.deliver(text, channel, to, then, self.seen_up_to)

    def action_cancel(self) -> None:
        text = self.query_one("#body", TextArea).text
        drafts = self.app.drafts  # type: ignore[attr-defined]
        if text.strip():
            drafts[self.draft_key] = text
            self.app.notify("Draft kept: open the composer again to go on")
        else:
            drafts.pop(self.draft_key, None)
        self.dismiss(False)

    def action_canned(self) -> None:
        replies = self.app.settings.canned  # type: ignore[attr-defined]
        if not replies:
            self.app.notify("No canned replies: add [[canned]] tables to the config",
                            severity="warning")
            return
        choices = [(str(i), Text(f"{r.name}: {r.text[:60]}")) for i, r in enumerate(replies)]

        def insert(choice: str | None) -> None:
            if choice is None:
                return
            reply = replies[int(choice)]
            values = canned.variables(
                customer_name=self.timeline.customer.name,
                agent_name=self.app.agent,  # type: ignore[attr-defined]
                ticket_id=self.ticket_id,
                subject=self.timeline.ticket.subject,
            )
            body = self.query_one("#body", TextArea)
            body.insert(canned.expand(reply.text.strip("\n"), values))
            body.focus()

        self.app.push_screen(ChoiceScreen("Insert a canned reply", choices), insert)

    def action_editor(self) -> None:
        body = self.query_one("#body", TextArea)
        try:
            try:
                with self.app.suspend():
                    text = edit(body.text)
            except SuspendNotSupported:
                text = edit(body.text)  # no terminal to hand over (headless)
        except EditorError as error:
            self.show_problem(str(error))
            return
        body.load_text(text.rstrip("\n"))
        body.move_cursor(body.document.end)
        body.focus()
