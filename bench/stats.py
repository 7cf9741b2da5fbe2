"""`desk stats` figures on a large store.

    python bench/stats.py [--db bench-1m.db] [--build] [--repeat 5]

On the store of bench/make_store.py (built with --build if missing; 1,000,000 messages), for the
whole period and for the last full month of data, with SLA targets for every priority:
- the figures computed in this process (desk.stats.compute): median ms;
- `desk stats --json` end to end (a subprocess: interpreter start, imports, config, store, the
  figures and the JSON): median ms;
- peak RSS of the command: MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.make_store import build  # noqa: E402
from desk.models import Message  # noqa: E402
from desk.sla import Targets  # noqa: E402
from desk.stats import Period, compute  # noqa: E402
from desk.store import Store  # noqa: E402

SLA = """
[sla]
first_response = { urgent = "30m", high = "2h", normal = "8h", low = "1d" }
resolution = { urgent = "8h", high = "1d", normal = "3d", low = "7d" }
"""
TARGETS = Targets(
    first_response={"urgent": 1800, "high": 7200, "normal": 28800, "low": 86400},
    resolution={"urgent": 28800, "high": 86400, "normal": 259200, "low": 604800},
)


def figure(label: str, value: float, unit: str) -> None:
    print(f"{label:<58} {value:>10,.1f} {unit}")


def last_full_month(store: Store) -> Period:
    with store.session() as session:
        newest = session.execute(select(func.max(Message.sent_at))).scalar_one()
    first = datetime(newest.year, newest.month, 1, tzinfo=UTC)
    previous = datetime(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1,
                        tzinfo=UTC)
    return Period(previous, first)


def in_process_ms(store: Store, period: Period, repeat: int) -> tuple[float, dict]:
    result = compute(store.engine, period, TARGETS)  # warm the page cache once
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = compute(store.engine, period, TARGETS)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def command_ms(db: Path, config: Path, args: list[str], repeat: int) -> float:
    command = [sys.executable, "-m", "desk.cli", "--config", str(config), "--db", str(db),
               "stats", "--json", *args]
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        times.append((time.perf_counter() - began) * 1000)
        json.loads(out)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("bench-1m.db"))
    parser.add_argument("--build", action="store_true", help="build the store if it is missing")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.db.exists():
        if not args.build:
            sys.exit(f"{args.db} does not exist: run bench/make_store.py or pass --build")
        build(args.db, 1_000_000, 100_000)
    store = Store(f"sqlite:///{args.db.resolve()}")
    month = last_full_month(store)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(SLA)
        for label, period, cli in (
            ("whole period", Period(None, datetime.now(UTC)), ["--since", "all"]),
            (f"month {month.since:%Y-%m}", month,  # type: ignore[union-attr]
             ["--since", month.since.isoformat(), "--until", month.until.isoformat()]),  # type: ignore[union-attr]
        ):
            ms, result = in_process_ms(store, period, args.repeat)
            print(f"[{label}] {result['messages']['in']:,} messages in, "
                  f"{result['messages']['out']:,} out, {result['tickets']['opened']:,} tickets "
                  f"opened")
            figure(f"[{label}] figures computed (desk.stats.compute)", ms, "ms")
            figure(f"[{label}] `desk stats --json`, end to end", command_ms(
                args.db, config, cli, args.repeat), "ms")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figure("peak RSS of `desk stats`", peak, "MB")
    store.close()


if __name__ == "__main__":
    main()
