"""The daemon end to end: from a message arriving at the provider to its row in the store, and
the daemon's memory as messages pile up.

    python bench/sync.py [--messages 200] [--bulk 20000]

Runs `desk sync` as its own process against a throwaway Dovecot (IMAP IDLE), the tests' local
Bot API server (Telegram long polling) and Twilio-shaped server (polling every 1 s). Messages
are put at the provider one by one (one every 50 ms per channel) and the time until each row
is in the store is measured from this process (watching the store every 5 ms). Then Telegram
delivers `--bulk` updates and the daemon's RSS is read after 1,000 and after all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fake_telegram  # noqa: E402
import fake_twilio  # noqa: E402
from peers import PASSWORD, USER, mail, start_dovecot  # noqa: E402

TWILIO_POLL = 1.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stored(db: Path, provider_ids: set[str]) -> set[str]:
    with sqlite3.connect(db, timeout=5) as conn:
        rows = conn.execute("SELECT provider_id FROM message WHERE direction = 'in'").fetchall()
    return {row[0] for row in rows} & provider_ids


def count(db: Path) -> int:
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM message").fetchone()[0]


async def measure(put, ids_for, n: int, db: Path) -> list[float]:
    """Put `n` messages at the provider (50 ms apart) and time each until it is stored."""
    put_at: dict[str, float] = {}
    found_at: dict[str, float] = {}
    for k in range(n):
        provider_id = await put(k)
        put_at[provider_id] = time.perf_counter()
        next_put = put_at[provider_id] + 0.05
        while time.perf_counter() < next_put:  # watch the store every 5 ms meanwhile
            for done in stored(db, set(put_at) - set(found_at)):
                found_at[done] = time.perf_counter()
            await asyncio.sleep(0.005)
    deadline = time.perf_counter() + 30
    while len(found_at) < n and time.perf_counter() < deadline:
        for done in stored(db, set(put_at) - set(found_at)):
            found_at[done] = time.perf_counter()
        await asyncio.sleep(0.005)
    if len(found_at) < n:
        raise SystemExit(f"only {len(found_at)} of {n} messages arrived")
    del ids_for
    return sorted(found_at[i] - put_at[i] for i in put_at)


def figures(name: str, latencies: list[float]) -> str:
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    return (f"  {name:<28} median {statistics.median(latencies) * 1000:6.0f} ms, "
            f"p95 {p95 * 1000:6.0f} ms  ({len(latencies)} messages)")


async def run(messages: int, bulk: int) -> None:
    dovecot = start_dovecot()
    telegram = fake_telegram.State()
    twilio = fake_twilio.State()
    telegram_runner, telegram_base = await fake_telegram.serve(telegram)
    twilio_runner, twilio_base = await fake_twilio.serve(twilio)
    work = Path(tempfile.mkdtemp(prefix="desk-bench-sync-"))
    db = work / "desk.db"
    config = work / "config.toml"
    config.write_text(
        f"[[connector]]\nname = \"mail\"\ntype = \"email\"\nimap_host = \"127.0.0.1\"\n"
        f"imap_port = {dovecot.imap_port}\nimap_tls = \"none\"\nusername = \"{USER}\"\n"
        f"password = \"env:BENCH_MAIL\"\nsmtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"\n"
        f"from_address = \"{USER}\"\n\n"
        f"[[connector]]\nname = \"chat\"\ntype = \"telegram\"\ntoken = \"env:BENCH_TG\"\n"
        f"api_base = \"{telegram_base}\"\n\n"
        f"[[connector]]\nname = \"sms\"\ntype = \"twilio\"\n"
        f"account_sid = \"{fake_twilio.ACCOUNT}\"\nauth_token = \"env:BENCH_TW\"\n"
        f"phone_number = \"{fake_twilio.NUMBER}\"\napi_base = \"{twilio_base}\"\n"
        f"poll_interval = {TWILIO_POLL}\n")
    env = {**os.environ, "BENCH_MAIL": PASSWORD, "BENCH_TG": fake_telegram.TOKEN,
           "BENCH_TW": fake_twilio.TOKEN}
    daemon = subprocess.Popen(
        [sys.executable, "-c", "import sys; from desk.cli import main; sys.exit(main())",
         "--config", str(config), "--db", str(db), "sync"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    try:
        while not db.exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)  # connected, IDLE and long polls running
        ana = {"id": 777001, "is_bot": False, "first_name": "Ana"}

        async def put_mail(k: int) -> str:
            await asyncio.to_thread(dovecot.append, mail(10_000 + k))
            return f"m{10_000 + k}@example.org"

        async def put_telegram(k: int) -> str:
            message = telegram.message(ana, f"chat {k}")
            await telegram.push(message)
            return f"{ana['id']}:{message['message_id']}"

        async def put_sms(k: int) -> str:
            record = twilio.inbound("+33612345678", f"sms {k}", datetime.now(UTC))
            return record["sid"]

        print(f"desk sync: arrival at the provider → row in the store "
              f"({messages} messages per channel)")
        mail_latency = await measure(put_mail, None, messages, db)
        print(figures("email (IMAP IDLE)", mail_latency))
        telegram_latency = await measure(put_telegram, None, messages, db)
        print(figures("Telegram (long polling)", telegram_latency))
        sms_latency = await measure(put_sms, None, max(20, messages // 4), db)
        print(figures(f"SMS (Twilio, polled every {TWILIO_POLL:.0f} s)", sms_latency))

        async def fill(total: int) -> None:
            while count(db) < total:
                missing = total - count(db)
                for k in range(min(missing, 1000)):
                    await telegram.push(telegram.message(
                        {"id": 900_000 + k % 500, "is_bot": False, "first_name": f"C{k % 500}"},
                        f"bulk {k}"))
                while telegram.updates:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)

        await fill(1_000)
        await asyncio.sleep(1)
        at_1k = rss_mb(daemon.pid)
        await fill(bulk)
        await asyncio.sleep(1)
        at_bulk = rss_mb(daemon.pid)
        print(f"daemon RSS: {at_1k:.1f} MB after {1_000:,} messages, {at_bulk:.1f} MB after "
              f"{count(db):,} ({(at_bulk / at_1k - 1) * 100:+.1f} %)")
    finally:
        daemon.terminate()
        daemon.wait(10)
        await telegram_runner.cleanup()
        await twilio_runner.cleanup()
        dovecot.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--bulk", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.bulk))


if __name__ == "__main__":
    main()
