"""Ingest and query figures.

    python bench/ingest.py [--messages 100000] [--big bench-1m.db] [--build-big]

Prints, each with its unit:
- `desk import maildir` end to end (a subprocess, wall clock) on a generated Maildir: msg/s;
- ingest of already-parsed InboundMessages into a fresh store: msg/s;
- on the imported store and on the 1,000,000-message store (bench/make_store.py): newest 50 open
  tickets, the newest page and all of a 1,000-message ticket, full-text search (newest 50) for a
  common and a rare word: median ms;
- peak RSS of the import and of this process: MB.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench.corpus import generate, write_maildir  # noqa: E402
from bench.make_store import _message, build  # noqa: E402
from desk.ingest import IngestOptions, ingest  # noqa: E402
from desk.models import Ticket  # noqa: E402
from desk.search import search  # noqa: E402
from desk.store import Store, ticket_messages, ticket_page, url_of  # noqa: E402


def figure(label: str, value: float, unit: str) -> None:
    print(f"{label:<58} {value:>12,.2f} {unit}")


def median_ms(work: Callable[[], object], repeat: int = 30) -> float:
    work()  # warm the page cache and the statement cache once
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def fresh_database(server: str | None, workdir: Path, name: str) -> str:
    """A new, empty store URL: a SQLite file in `workdir`, or a database `name` (dropped first
    if it exists) on the PostgreSQL server `server`."""
    if server is None:
        return f"sqlite:///{workdir / name}.db"
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "desk_bench_{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "desk_bench_{name}"')
    admin.dispose()
    return make_url(server).set(database=f"desk_bench_{name}").render_as_string(
        hide_password=False)


def bench_import(messages: int, workdir: Path, server: str | None) -> str:
    corpus = generate(messages, customers=max(100, messages // 10))
    maildir = write_maildir(workdir / "Maildir", corpus)
    db = fresh_database(server, workdir, "import")
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "desk.cli", "--db", str(db), "import", "maildir", str(maildir),
         "--quiet"],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - began
    figure(f"desk import maildir, {messages:,} messages, end to end", messages / elapsed, "msg/s")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figure("  peak RSS of the import (largest process)", peak, "MB")
    return db


def bench_parsed(messages: int, workdir: Path, server: str | None) -> None:
    rng = random.Random(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    parsed = [
        _message(n, 1 + rng.randrange(max(100, messages // 10)), start + timedelta(seconds=n), rng)
        for n in range(messages)
    ]
    store = Store(fresh_database(server, workdir, "parsed"))
    options = IngestOptions(region="FR")
    began = time.perf_counter()
    for offset in range(0, messages, 1000):
        ingest(store, parsed[offset : offset + 1000], options=options)
    elapsed = time.perf_counter() - began
    figure(f"ingest of {messages:,} parsed InboundMessages", messages / elapsed, "msg/s")
    store.close()


def bench_queries(db: str, label: str, rare: str) -> None:
    store = Store(url_of(db))
    with store.session() as session:
        figure(f"[{label}] newest 50 open tickets", median_ms(
            lambda: ticket_page(session, queue="open", limit=50)), "ms")
        longest = session.execute(
            select(Ticket.id, Ticket.message_count).order_by(Ticket.message_count.desc()).limit(1)
        ).first()
        if longest is not None:
            ticket_id, count = longest
            figure(f"[{label}] open a {count:,}-message ticket (newest 50)", median_ms(
                lambda: ticket_messages(session, ticket_id, limit=50)), "ms")
            figure(f"[{label}] load all {count:,} messages of that ticket", median_ms(
                lambda: ticket_messages(session, ticket_id, limit=count), repeat=10), "ms")
        for word in ("order", rare):
            hits = len(search(session, word))
            figure(f"[{label}] search {word!r}, newest 50 ({hits} shown)", median_ms(
                lambda w=word: search(session, w)), "ms")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--big", type=Path, default=ROOT / "bench-1m.db",
                        help="the 1,000,000-message store from bench/make_store.py")
    parser.add_argument("--build-big", action="store_true", help="build --big first if missing")
    parser.add_argument("--store-url", metavar="URL",
                        help="a PostgreSQL server (postgresql+psycopg://user@host/postgres) "
                             "on which to create the stores measured, instead of SQLite files")
    parser.add_argument("--big-url", metavar="URL",
                        help="the 1M store as a database URL (e.g. copied by desk migrate)")
    args = parser.parse_args()
    print(f"backend: {'PostgreSQL' if args.store_url else 'SQLite'}")
    with tempfile.TemporaryDirectory(prefix="desk-bench-") as tmp:
        workdir = Path(tmp)
        db = bench_import(args.messages, workdir, args.store_url)
        bench_parsed(args.messages, workdir, args.store_url)
        bench_queries(db, f"{args.messages // 1000}k import", "quasar")
    if args.big_url:
        bench_queries(args.big_url, "1M store", "quasar")
        return
    if not args.big.exists() and args.build_big:
        build(args.big, 1_000_000, 100_000)
    if args.big.exists():
        bench_queries(str(args.big), "1M store", "quasar")
    else:
        print(f"(no {args.big}: run bench/make_store.py or pass --build-big for the 1M figures)")
    figure("peak RSS of this process", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "MB")


if __name__ == "__main__":
    main()
