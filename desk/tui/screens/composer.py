"""The composer: a reply on the channel (and address) the agent picks, or a private note.

It never sends blind: if the customer wrote again or another agent answered since it opened,
the first send stops and shows what changed; sending again confirms."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Select, Static, TextArea

from desk import canned, presence, views
from desk.editor import EditorError, edit
from desk.keys import COMPOSER
from desk.models import Message as StoredMessage
from desk.outbox import (
    TELEGRAM_LIMIT,
    Route,
    add_note,
    is_gsm7,
    queue_reply,
    reply_routes,
    sms_segments,
)
from desk.textsafe import printable
from desk.tickets import reply_subject
from desk.tui.bindings import bindings
from desk.tui.screens.pickers import ChoiceScreen

CHANNEL_NAMES = {"email": "Email", "sms": "SMS", "telegram": "Telegram"}
CONTEXT_LINES = 3
AFTER_SENDING = [("Leave the status", ""), ("Then pending", "pending"),
                 ("Then resolved", "resolved")]


@dataclass(frozen=True, slots=True)
class Draft:
    ticket_id: int
    mode: str  # "reply" or "note"


class ComposerScreen(ModalScreen[bool]):
    """Dismisses with True once the reply is queued (or the note stored)."""

    BINDINGS = bindings(COMPOSER)

    class RoutesLoaded(Message):
        def __init__(self, routes: list[Route], baseline: int) -> None:
            super().__init__()
            self.routes, self.baseline = routes, baseline

    class Changed(Message):
        """What happened since the composer opened (or since the agent last confirmed)."""

        def __init__(self, changes: list[StoredMessage], others: list[str], sending: bool) -> None:
            super().__init__()
            self.changes, self.others, self.sending = changes, others, sending

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
        self.baseline = timeline.latest_message_id  # newest message the agent has seen
        self.unconfirmed: list[StoredMessage] = []
        self.sending = False

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
        self.query_one("#warning", Static).display = False
        body = self.query_one("#body", TextArea)
        body.focus()
        body.move_cursor(body.document.end)
        self.update_counter()
        self.load()
        self.check(sending=False)
        self.set_interval(presence.RENEW.total_seconds(), self.announce)

    def on_unmount(self) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        ticket_id = self.ticket_id
        store.write(lambda s: presence.withdraw(s, agent, ticket_id))

    # ---- workers ------------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        store = self.app.store  # type: ignore[attr-defined]
        self.announce_now()
        if self.mode != "reply":
            return
        with store.session() as session:
            ticket = session.get(type(self.timeline.ticket), self.ticket_id)
            routes = reply_routes(session, ticket, self.app.connectors_by_channel)  # type: ignore[arg-type, attr-defined]
        self.post_message(self.RoutesLoaded(routes, self.baseline))

    def announce(self) -> None:
        self.run_worker(self.announce_now, thread=True, exit_on_error=False, group="presence")

    def announce_now(self) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        ticket_id, mode = self.ticket_id, self.mode
        store.write(lambda s: presence.announce(s, agent, ticket_id, mode))

    def refresh_from_store(self) -> None:
        """The store changed: say early if the customer wrote or another agent answered."""
        self.check(sending=False)

    @work(thread=True, exclusive=True, group="check", exit_on_error=False)
    def check(self, sending: bool) -> None:
        store, agent = self.app.store, self.app.agent  # type: ignore[attr-defined]
        changes = views.changes_since(store, self.timeline.customer.id, self.baseline, agent)  # type: ignore[arg-type]
        with store.session() as session:
            others = [p.agent for p in presence.others_on(session, self.ticket_id, agent)]
        self.post_message(self.Changed(changes, others, sending))

    @work(thread=True, exclusive=True, group="send", exit_on_error=False)
    def deliver(self, text: str, channel: str | None, to: str | None, then: str | None) -> None:
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
                connectors_by_channel=connectors, then_status=then or None))
            self.post_message(self.Done(
                f"Reply queued on {CHANNEL_NAMES.get(message.channel, message.channel)} "
                f"to {message.recipient}"))
        except ValueError as error:  # OutboxError, TicketError: the agent can fix it
            self.post_message(self.Failed(str(error)))

    # ---- handlers -----------------------------------------------------------------------------

    def on_composer_screen_routes_loaded(self, message: RoutesLoaded) -> None:
        self.routes = message.routes
        channel = self.query_one("#channel", Select)
        channels = list(dict.fromkeys(route.channel for route in self.routes))
        channel.set_options([(self._channel_label(c), c) for c in channels])
        if channels:
            channel.value = channels[0]  # the channel the customer last wrote on
        else:
            self.warn(Text("This customer has no address to reply to: link one (L) first.",
                           style="bold red"))
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

    def warn(self, text: Text | None) -> None:
        warning = self.query_one("#warning", Static)
        warning.display = text is not None
        warning.update(text or "")

    def on_composer_screen_changed(self, message: Changed) -> None:
        lines = Text()
        for agent in message.others:
            lines.append(f"⚠ {printable(agent, single_line=True)} is also writing on this "
                         "ticket\n", style="bold yellow")
        if message.changes:
            self.unconfirmed = message.changes
            self.baseline = max(m.id or 0 for m in message.changes)
            lines.append("Since you started writing:\n", style="bold red")
            for change in message.changes[-5:]:
                who = (change.sender_name or change.sender) if change.direction == "in" else (
                    change.author)
                what = "wrote" if change.direction == "in" else "answered"
                lines.append(
                    f"  {printable(who or '', single_line=True)} {what} on {change.channel}: "
                    f"{printable(change.text, single_line=True)[:100]}\n")
            lines.append("Edit your reply, or press send again to send it as it is.",
                         style="bold")
        if message.sending:
            self.sending = False
            if not message.changes:
                self.send_now()
                return
        if lines:
            self.warn(lines)

    def on_composer_screen_done(self, message: Done) -> None:
        self.app.drafts.pop(self.draft_key, None)  # type: ignore[attr-defined]
        self.app.notify(message.summary)
        self.dismiss(True)

    def on_composer_screen_failed(self, message: Failed) -> None:
        self.sending = False
        self.warn(Text(printable(message.reason), style="bold red"))

    # ---- actions ------------------------------------------------------------------------------

    def action_send(self) -> None:
        if self.sending:
            return
        if not self.query_one("#body", TextArea).text.strip():
            self.warn(Text("Nothing to send yet.", style="bold red"))
            return
        self.sending = True
        if self.mode == "note":
            self.send_now()
        elif self.unconfirmed:
            # The agent saw what changed and sends anyway; anything newer still stops it.
            self.unconfirmed = []
            self.check(sending=True)
        else:
            self.check(sending=True)

    def send_now(self) -> None:
        self.sending = True
        text = self.query_one("#body", TextArea).text
        channel = self.chosen_channel()
        to = None
        then = None
        if self.mode == "reply":
            address = self.query_one("#address", Select).value
            to = address if isinstance(address, str) else None
            chosen = self.query_one("#then", Select).value
            then = chosen if isinstance(chosen, str) and chosen else None
        self.deliver(text, channel, to, then)

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
            self.warn(Text(str(error), style="bold red"))
            return
        body.load_text(text.rstrip("\n"))
        body.move_cursor(body.document.end)
        body.focus()
