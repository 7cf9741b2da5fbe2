"""How fast the agent app is on a big store.

    python bench/make_store.py --db /tmp/bench-1m.db                      # 1,000,000 messages
    python bench/make_store.py --messages 10000 --customers 1000 --db /tmp/bench-10k.db
    python bench/tui.py /tmp/bench-1m.db /tmp/bench-10k.db

For each store it prints:
- start → first page painted: a fresh `python` process running the app in a real terminal
  (a pty), until the main screen with its first page of tickets has been drawn;
- open a 1,000-message ticket: the ticket chosen → its timeline painted;
- key → next paint: page down and jump to the end, in the ticket list (the All queue) and in
  the long timeline (the median of repeated presses);
- search → results painted;
- peak RSS of the app process doing all of the above.

The store is opened as is (a copy is not made): the app may add its own small tables.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import resource
import select
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


# ---- child: start-up in a real terminal --------------------------------------------------------


def child_start(db: str, fd: int) -> None:
    marks = [("python up", time.perf_counter())]
    from desk.config import load_config
    from desk.store import Store
    from desk.tui.app import DeskApp
    from desk.tui.screens.main import MainScreen
    from desk.tui.widgets.ticket_list import TicketList

    marks.append(("imports", time.perf_counter()))

    class BenchApp(DeskApp):
        def on_mount(self) -> None:
            marks.append(("mounted", time.perf_counter()))
            super().on_mount()
            self.set_interval(0.001, self.check_painted)
            self.reported = False

        def check_painted(self) -> None:
            screen = self.screen
            if self.reported or not isinstance(screen, MainScreen):
                return
            tickets = screen.query_one(TicketList)
            if tickets.total and tickets.row(0) is not None:
                marks.append(("first page", time.perf_counter()))
                self.reported = True
                self.call_after_refresh(self.painted)

        def painted(self) -> None:
            marks.append(("painted", time.perf_counter()))
            if os.environ.get("DESK_BENCH_TRACE"):
                start = marks[0][1]
                print(" ".join(f"{name}={(t - start) * 1000:.0f}" for name, t in marks),
                      file=open("/tmp/desk-bench-trace", "a"))
            os.write(fd, b"painted\n")
            self.exit()

    BenchApp(Store(f"sqlite:///{db}"), load_config(None)).run()


def measure_start(db: str) -> float:
    """Seconds from spawning the process to the first page drawn on a pty."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    read_end, write_end = os.pipe()
    env = {**os.environ, "TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none"}
    env.pop("DESK_CONFIG", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child-start", db, str(write_end)],
        stdin=slave, stdout=slave, stderr=slave, pass_fds=(write_end,), env=env,
        cwd="/tmp",
    )
    os.close(slave)
    os.close(write_end)
    painted = None
    deadline = time.monotonic() + 60
    while painted is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master, read_end], [], [], 1)
        if master in ready:
            try:
                os.read(master, 65536)  # the terminal's output: drained, not kept
            except OSError:  # the child closed the terminal: it is gone
                break
        if read_end in ready:
            if os.read(read_end, 64):
                painted = time.perf_counter() - started
            else:
                break
    while process.poll() is None:  # let it exit; keep draining so it never blocks on output
        if select.select([master], [], [], 0.1)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                break
    process.wait(timeout=10)
    os.close(master)
    os.close(read_end)
    if painted is None:
        raise SystemExit(f"the app did not paint its first page on {db}")
    return painted


# ---- child: everything else, driven by keys --------------------------------------------------


async def drive(db: str) -> dict[str, object]:
    from sqlalchemy import select as sql_select

    from desk.config import load_config
    from desk.models import Ticket
    from desk.store import Store
    from desk.tui.app import DeskApp
    from desk.tui.screens.main import MainScreen
    from desk.tui.screens.search import SearchScreen
    from desk.tui.widgets.ticket_list import TicketList
    from desk.tui.widgets.timeline import TimelineView

    store = Store(f"sqlite:///{db}")
    with store.session() as session:
        long_ticket = session.execute(
            sql_select(Ticket.id, Ticket.message_count).order_by(Ticket.message_count.desc())
            .limit(1)).one()
    app = DeskApp(store, load_config(None))
    figures: dict[str, object] = {"long_ticket_messages": long_ticket.message_count}

    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        tickets = screen.query_one(TicketList)

        async def until(condition, timeout: float = 30.0) -> None:
            deadline = time.perf_counter() + timeout
            while not condition():
                if time.perf_counter() > deadline:
                    raise TimeoutError
                await asyncio.sleep(0.0005)
            await pilot.pause()  # the paint that shows it

        await until(lambda: tickets.total and tickets.row(0) is not None)
        screen.show_queue("all")
        await until(lambda: tickets.row(0) is not None)
        figures["all_queue_tickets"] = tickets.total

        # open the long ticket
        times = []
        for _ in range(5):
            screen.ticket_id = None
            started = time.perf_counter()
            screen.open_ticket(long_ticket.id)
            await until(lambda: screen.timeline is not None
                        and screen.timeline.ticket.id == long_ticket.id)
            times.append(time.perf_counter() - started)
        figures["open_long_ticket_ms"] = statistics.median(times) * 1000

        async def key_to_paint(key: str, loaded) -> tuple[float, float]:
            """(key → next paint, key → the new rows painted) in ms."""
            started = time.perf_counter()
            await pilot.press(key)
            first = time.perf_counter() - started
            await until(loaded)
            return first * 1000, (time.perf_counter() - started) * 1000

        tickets.focus()
        await pilot.pause()
        pages = [await key_to_paint("pagedown", lambda: tickets.row(tickets.cursor) is not None)
                 for _ in range(REPEAT)]
        figures["list_page_down_ms"] = statistics.median(p[0] for p in pages)
        figures["list_page_down_rows_ms"] = statistics.median(p[1] for p in pages)
        ends = []
        for _ in range(5):
            await pilot.press("g")
            await until(lambda: tickets.row(0) is not None)
            tickets.reload(keep_cursor=True)  # a cold cache, as after a live update
            ends.append(await key_to_paint("G", lambda: tickets.row(tickets.cursor) is not None))
        figures["list_jump_end_ms"] = statistics.median(e[0] for e in ends)
        figures["list_jump_end_rows_ms"] = statistics.median(e[1] for e in ends)

        timeline = screen.query_one(TimelineView)
        timeline.focus()
        await pilot.press("g")
        await pilot.pause()
        scrolls = [await key_to_paint("pagedown", lambda: True) for _ in range(REPEAT)]
        figures["timeline_page_down_ms"] = statistics.median(s[0] for s in scrolls)
        jumps = []
        for _ in range(5):
            await pilot.press("g")
            jumps.append(await key_to_paint("G", lambda: True))
        figures["timeline_jump_end_ms"] = statistics.median(j[0] for j in jumps)

        # search
        searches = {}
        for word in ("refund", "quasar"):
            app.push_screen(SearchScreen())
            await pilot.pause()
            search = app.screen
            started = time.perf_counter()
            search.run_search(word)
            await until(lambda s=search, w=word: s.results_for == w)
            searches[word] = (time.perf_counter() - started) * 1000
            figures[f"search_{word}_hits"] = len(search.hits)
            search.dismiss(None)
            await pilot.pause()
        figures["search_common_ms"] = searches["refund"]
        figures["search_rare_ms"] = searches["quasar"]
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def measure_session(db: str) -> dict[str, object]:
    env = {**os.environ, "TEXTUAL_ANIMATIONS": "none"}
    env.pop("DESK_CONFIG", None)
    out = subprocess.run([sys.executable, __file__, "--child-drive", db], env=env, cwd="/tmp",
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-start":
        child_start(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-drive":
        print(json.dumps(asyncio.run(drive(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", help="SQLite store files from make_store.py")
    args = parser.parse_args()
    for db in args.stores:
        with __import__("sqlite3").connect(db) as conn:
            messages = conn.execute("SELECT max(id) FROM message").fetchone()[0]
        starts = sorted(measure_start(db) for _ in range(3))
        figures = measure_session(db)
        print(f"{db} ({messages:,} messages, {figures['all_queue_tickets']:,} tickets)")
        print(f"  start → first page painted     {starts[1] * 1000:7.0f} ms"
              f"  (median of 3; best {starts[0] * 1000:.0f} ms)")
        print(f"  open a {figures['long_ticket_messages']:,}-message ticket"
              f"     {figures['open_long_ticket_ms']:7.1f} ms")
        print(f"  list page down → paint          {figures['list_page_down_ms']:7.1f} ms"
              f"  (rows from the store: {figures['list_page_down_rows_ms']:.1f} ms)")
        print(f"  list jump to end → paint        {figures['list_jump_end_ms']:7.1f} ms"
              f"  (rows from the store: {figures['list_jump_end_rows_ms']:.1f} ms)")
        print(f"  timeline page down → paint      {figures['timeline_page_down_ms']:7.1f} ms")
        print(f"  timeline jump to end → paint    {figures['timeline_jump_end_ms']:7.1f} ms")
        print(f"  search → results painted        {figures['search_common_ms']:7.1f} ms"
              f" (common word), {figures['search_rare_ms']:.1f} ms (rare word)")
        print(f"  peak RSS                        {figures['peak_rss_mb']:7.1f} MB")


if __name__ == "__main__":
    main()
