"""How fast the agent app is on a big store, seen from the terminal.

    python bench/make_store.py --db /tmp/bench-1m.db                      # 1,000,000 messages
    python bench/make_store.py --messages 10000 --customers 1000 --db /tmp/bench-10k.db
    python bench/tui.py /tmp/bench-1m.db /tmp/bench-10k.db

The app runs in a fresh `python` process on a pseudo-terminal (160×50), exactly as an agent
runs it; this script types keys into the terminal and times what the app writes back:
- start → first page painted: spawning the process → the main screen drawn with its first
  page of tickets (the app reports the moment through a pipe, after that frame is written);
- open a 1,000-message ticket: the key → its timeline drawn;
- key → next paint: page down and jump to the end, in the ticket list (the All queue) and in
  the long timeline: the key written → the end of the frame the app writes in answer (the median
  of repeated presses); for the list, also → the frame with the rows from the store;
- search → results drawn, for a common and a rare word;
- peak RSS of the app process (its max resident set over the whole session).

The store is opened as is (not copied): the app may add its own small tables to it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (160, 50)
REPEAT = 15
QUIET = 0.15  # no output for this long: the app has finished answering a key
FRAME_GAP = 0.005  # output this close together is one frame
KEYS = {"pagedown": b"\x1b[6~", "G": b"G", "g": b"g", "open_long": b"\x1b[24~",
        "all_queue": b"\x1b[23~", "search_common": b"\x1b[21~", "search_rare": b"\x1b[20~",
        "quit": b"q", "escape": b"\x1b"}  # F12, F11, F10, F9: bound by the benchmark's app below


# ---- the app, in the child process -------------------------------------------------------------


def child(db: str, fd: int, long_ticket: int) -> None:
    from desk.config import load_config
    from desk.store import Store, url_of
    from desk.tui.app import DeskApp
    from desk.tui.screens.main import MainScreen
    from desk.tui.widgets.ticket_list import TicketList
    from desk.tui.widgets.timeline import TimelineView

    def report(word: str) -> None:
        os.write(fd, word.encode() + b"\n")

    class BenchApp(DeskApp):
        """The app plus a few keys that jump straight to what is measured."""

        BINDINGS = [("f12", "bench_open_long"), ("f11", "bench_all"),
                    ("f10", "bench_search('refund')"), ("f9", "bench_search('quasar')")]

        def on_mount(self) -> None:  # Textual runs DeskApp.on_mount too (it walks the MRO)
            self.waiting_for: tuple[str, object] | None = ("painted", self.first_page_in)
            self.set_interval(0.002, self.check)

        def check(self) -> None:
            if self.waiting_for is not None and self.waiting_for[1]():  # type: ignore[operator]
                word, self.waiting_for = self.waiting_for[0], None
                self.call_after_refresh(report, word)

        def main(self) -> MainScreen:
            return self.screen_stack[1]  # type: ignore[return-value]

        def first_page_in(self) -> bool:
            if not isinstance(self.screen, MainScreen):
                return False
            tickets = self.screen.query_one(TicketList)
            return bool(tickets.total) and tickets.row(0) is not None

        def action_bench_all(self) -> None:
            self.main().show_queue("all")

        def action_bench_open_long(self) -> None:
            screen = self.main()
            ticket_id = long_ticket
            screen.ticket_id = None
            screen.timeline = None
            screen.open_ticket(ticket_id, focus=True)
            self.waiting_for = ("opened", lambda: screen.timeline is not None
                                and screen.timeline.ticket.id == ticket_id
                                and screen.query_one(TimelineView).timeline is screen.timeline)

        def action_bench_search(self, word: str) -> None:
            from desk.tui.screens.search import SearchScreen

            search = SearchScreen(word)
            self.push_screen(search)
            self.waiting_for = ("results", lambda: search.results_for == word)

    BenchApp(Store(url_of(db)), load_config(None)).run()


# ---- the terminal, in this process -------------------------------------------------------------


class Terminal:
    def __init__(self, db: str, long_ticket: int) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        self.reports, write_end = os.pipe()
        env = {**os.environ, "TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none"}
        env.pop("DESK_CONFIG", None)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", db, str(write_end), str(long_ticket)],
            stdin=slave, stdout=slave, stderr=slave, pass_fds=(write_end,), env=env, cwd="/tmp",
        )
        os.close(slave)
        os.close(write_end)

    def _read(self, timeout: float) -> tuple[float | None, str | None]:
        """(time output arrived, a report word) — whichever comes first, or (None, None)."""
        ready, _, _ = select.select([self.master, self.reports], [], [], timeout)
        if self.reports in ready:
            words = os.read(self.reports, 256).decode().split()
            if not words:
                raise SystemExit("the app exited")
            return None, words[0]
        if self.master in ready:
            try:
                os.read(self.master, 1 << 20)
            except OSError:
                raise SystemExit("the app exited") from None
            return time.perf_counter(), None
        return None, None

    def settle(self) -> None:
        while self._read(QUIET) != (None, None):
            pass

    def wait_report(self, word: str, since: float) -> float:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            _, report = self._read(1)
            if report == word:
                return time.perf_counter() - since
        raise SystemExit(f"the app never reported {word!r}")

    def press(self, key: str) -> tuple[float, float]:
        """Type `key`; seconds until the app has written its first frame in answer (output
        then a pause of FRAME_GAP), and until it has written everything (then QUIET)."""
        self.settle()
        sent = time.perf_counter()
        os.write(self.master, KEYS[key])
        first_frame = last = None
        while True:
            arrived, _ = self._read(QUIET)
            if arrived is None:
                break
            if first_frame is None and last is not None and arrived - last > FRAME_GAP:
                first_frame = last
            last = arrived
        if last is None:
            return float("nan"), float("nan")
        return (first_frame or last) - sent, last - sent

    def press_and_wait(self, key: str, word: str) -> float:
        self.settle()
        sent = time.perf_counter()
        os.write(self.master, KEYS[key])
        return self.wait_report(word, sent)

    def quit(self) -> float:
        """Peak RSS of the app in MB."""
        os.write(self.master, KEYS["quit"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self._read(0.1)
            except SystemExit:  # the app closed its end: it is exiting
                break
        # os.wait4, not Popen.wait: the child's resource usage is wanted.
        _pid, _status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = 0
        os.close(self.master)
        os.close(self.reports)
        return usage.ru_maxrss / 1024


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms"


def run(db: str) -> None:
    from sqlalchemy import create_engine

    from desk.store import url_of

    engine = create_engine(url_of(db))
    with engine.connect() as conn:
        messages = conn.exec_driver_sql("SELECT max(id) FROM message").scalar() or 0
        tickets = conn.exec_driver_sql("SELECT count(*) FROM ticket").scalar()
        long_ticket, long_size = conn.exec_driver_sql(
            "SELECT id, message_count FROM ticket ORDER BY message_count DESC LIMIT 1").one()
    engine.dispose()
    starts = []
    for _ in range(3):
        terminal = Terminal(db, long_ticket)
        starts.append(terminal.wait_report("painted", terminal.started))
        terminal.quit()
    terminal = Terminal(db, long_ticket)
    terminal.wait_report("painted", terminal.started)
    terminal.press("all_queue")
    list_pages = [terminal.press("pagedown") for _ in range(REPEAT)]
    list_ends = []
    for _ in range(5):
        terminal.press("g")
        list_ends.append(terminal.press("G"))
    opens = [terminal.press_and_wait("open_long", "opened") for _ in range(5)]
    timeline_pages = []
    for _ in range(REPEAT):
        terminal.press("g")
        timeline_pages.append(terminal.press("pagedown"))
    timeline_ends = []
    for _ in range(5):
        terminal.press("g")
        timeline_ends.append(terminal.press("G"))
    common, rare = [], []
    for _ in range(3):
        common.append(terminal.press_and_wait("search_common", "results"))
        terminal.press("escape")
        rare.append(terminal.press_and_wait("search_rare", "results"))
        terminal.press("escape")
    rss = terminal.quit()
    first = [frame for frame, _all in list_pages]
    print(f"{db}: {messages:,} messages, {tickets:,} tickets")
    print(f"  start → first page painted       {ms(starts)}   (median of 3; best "
          f"{min(starts) * 1000:.0f} ms)")
    print(f"  open a {long_size:,}-message ticket      {ms(opens)}")
    print(f"  list: page down → next paint     {ms(first)}   (then the opened ticket: "
          f"{ms([done for _f, done in list_pages]).strip()})")
    print(f"  list: jump to end → next paint   {ms([f for f, _d in list_ends])}   "
          f"(all settled: {ms([d for _f, d in list_ends]).strip()})")
    print(f"  timeline: page down → paint      {ms([f for f, _d in timeline_pages])}")
    print(f"  timeline: jump to end → paint    {ms([f for f, _d in timeline_ends])}")
    print(f"  search → results painted         {ms(common)}   (common word)")
    print(f"                                   {ms(rare)}   (rare word)")
    print(f"  peak RSS                         {rss:7.1f} MB")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        # Die with the terminal: an app left running would skew every later figure.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", help="stores from make_store.py: SQLite files, or "
                        "database URLs (a PostgreSQL copy made with desk migrate)")
    for db in parser.parse_args().stores:
        run(db)


if __name__ == "__main__":
    main()
