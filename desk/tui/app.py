"""The agent app: `desk` and `desk demo` open it."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from sqlalchemy.exc import DBAPIError
from textual import work
from textual.app import App, SystemCommand
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import get_current_worker

from desk import views
from desk.config import Settings
from desk.dialects import is_permission_denied
from desk.keys import APP, MAIN
from desk.oauth import oauth_connectors, sign_in_needed
from desk.redact import redact
from desk.store import Store
from desk.textsafe import printable
from desk.tui.bindings import bindings
from desk.tui.screens.main import MainScreen
from desk.tui.widgets.queue_list import CHANNEL_QUEUES, STATUS_QUEUES
from desk.tui.widgets.ticket_list import PAGE

if TYPE_CHECKING:
    from desk.tui.screens.composer import Draft

LIVE_POLL_SECONDS = 1.0
SIGN_IN_CHECK_SECONDS = 10.0
PALETTE_AREAS = {"ticket": "ticket", "customer": "customer", "app": "app"}


class DeskApp(App[None]):
    CSS_PATH = Path(__file__).with_name("desk.tcss")  # absolute: subclasses live elsewhere
    TITLE = "desk"
    BINDINGS = bindings(APP)

    class Arrived(Message):
        def __init__(self, arrivals: list[views.Arrival], newest_id: int) -> None:
            super().__init__()
            self.arrivals, self.newest_id = arrivals, newest_id

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.agent = settings.desk.agent
        self.sla_targets = settings.sla.targets()
        self.connectors_by_channel = {
            c.channel: c.name for c in settings.connectors if c.enabled
        }
        self.drafts: dict[Draft, str] = {}
        # The first page is read while Textual starts up, not after.
        self.first_page: views.Prefetch | None = views.Prefetch(store, "open", self.agent, PAGE)
        self._data_version: int | None = None
        self._seen_message_id: int | None = None
        self._sign_ins_unreadable = False
        self.set_keymap(settings.keymap)

    def _fatal_error(self) -> None:
        # Textual's own crash report prints every frame's local variables, where a connection
        # string or a customer's message may sit. This one has no locals, and goes through
        # desk.redact like every other error desk prints.
        import traceback

        self.bell()
        error = self._exception
        lines = traceback.format_exception(error) if error is not None else [
            "desk: the app stopped on an error\n"]
        self._exit_renderables.append(Text(redact("".join(lines)), style="red"))
        self._close_messages_no_wait()

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        if self.store.changes.pushes:
            # PostgreSQL announces every commit (LISTEN/NOTIFY): wait for them, on any machine.
            self.listen_store()
        else:
            # SQLite's data_version changes only when another connection commits: a cheap way
            # to see the daemon's (or another agent's) writes without re-reading anything.
            self.set_interval(LIVE_POLL_SECONDS, self.poll_store)
        self.poll_store()
        self.set_interval(SIGN_IN_CHECK_SECONDS, self.check_sign_ins)
        self.check_sign_ins()

    @work(thread=True, exclusive=True, group="sign-ins", exit_on_error=False)
    def check_sign_ins(self) -> None:
        if self._sign_ins_unreadable:
            return
        try:
            lapsed = sign_in_needed(self.store, oauth_connectors(self.settings))
        except DBAPIError as error:
            if is_permission_denied(error):
                # An agent's database role may not read sign-ins (PostgreSQL): `desk status`
                # under the daemon's role is where an admin sees them.
                self._sign_ins_unreadable = True
            return
        self.call_from_thread(self._show_sign_ins, lapsed)

    def _show_sign_ins(self, lapsed: dict[str, str]) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                screen.show_sign_ins_needed(lapsed)

    @work(thread=True, exclusive=True, group="listen", exit_on_error=False)
    def listen_store(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            # Short waits, so the worker notices the app closing.
            if self.store.changes.wait(1.0) and not worker.is_cancelled:
                self.call_from_thread(self.poll_store)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll_store(self) -> None:
        version = self.store.data_version()
        if version == self._data_version:
            return
        first = self._data_version is None
        self._data_version = version
        newest = views.newest_message_id(self.store)
        if first or self._seen_message_id is None:
            self._seen_message_id = newest
            return
        arrivals = views.arrivals_for(self.store, self.agent, self._seen_message_id)
        self.post_message(self.Arrived(arrivals, newest))

    def on_desk_app_arrived(self, message: Arrived) -> None:
        self._seen_message_id = max(self._seen_message_id or 0, message.newest_id)
        for screen in self.screen_stack:
            refresh = getattr(screen, "refresh_from_store", None)  # main screen, composer
            if refresh is not None:
                refresh()
        for arrival in message.arrivals:
            self.notify(
                f"#{arrival.ticket_id} ({arrival.channel}): "
                f"{printable(arrival.snippet, single_line=True)[:120]}",
                title=f"{printable(arrival.customer_name, single_line=True)} wrote",
            )
        if message.arrivals and self.settings.desk.bell:
            self.bell()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Notifications carry customers' names and words: never read them as markup (widgets'
        `notify` asks for markup by default; desk never wants it)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def action_help(self) -> None:
        from desk.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, MainScreen):
            for key in MAIN:
                area = key.id.split(".")[0]
                yield SystemCommand(f"{PALETTE_AREAS.get(area, area)}: {key.description}",
                                    f"key {key.keys} · id {key.id}",
                                    partial(screen.run_action, key.action))
            for queue, label in {**STATUS_QUEUES, **CHANNEL_QUEUES}.items():
                yield SystemCommand(f"queue: {label.split(' ')[-1]}", f"show the {queue} queue",
                                    partial(screen.show_queue, queue))


def run_app(store: Store, settings: Settings) -> int:
    try:
        DeskApp(store, settings).run()
    finally:
        store.close()
    return 0
