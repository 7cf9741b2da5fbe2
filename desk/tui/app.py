"""The agent app: `desk` and `desk demo` open it."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from desk.config import Settings
from desk.store import Store
from desk.tui.screens.main import MainScreen

LIVE_POLL_SECONDS = 1.0


class DeskApp(App[None]):
    CSS_PATH = "desk.tcss"
    TITLE = "desk"
    BINDINGS = [Binding("q", "quit", "Quit", id="app.quit")]

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.agent = settings.desk.agent
        self._data_version: int | None = None

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        # PRAGMA data_version changes only when another connection commits: a cheap way to
        # see the daemon's (or another agent's) writes without re-reading anything.
        self.set_interval(LIVE_POLL_SECONDS, self._poll_store)

    def _poll_store(self) -> None:
        version = self.store.data_version()
        if self._data_version is not None and version != self._data_version:
            screen = self.screen
            if isinstance(screen, MainScreen):
                screen.refresh_from_store()
        self._data_version = version


def run_app(url: str, settings: Settings) -> int:
    DeskApp(Store(url), settings).run()
    return 0
