"""Build a realistic benchmark store through the bulk ingest path.

    python bench/make_store.py [--messages 1000000] [--customers 100000] [--db bench-1m.db]

Customers write on email, SMS and Telegram (some on two channels, linked by a Telegram contact
they share), over two years; agents answer most messages on the same channel, from minutes to a
day later; tickets are resolved as time passes so customers who come back later get new tickets,
and a few end pending, snoozed, assigned or prioritised. One customer has a 1,000-message
ticket (the "load a long ticket" benchmark). Prints the time taken and what the store holds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Integer, cast, func, select, update

from connectors.base import FLAG_OWN, IdentityEvidence, InboundMessage
from desk.ingest import IngestOptions, ingest
from desk.models import Ticket
from desk.store import Store, summary

WORDS = ("order delivery refund parcel grinder warranty invoice espresso milk frother tracking "
         "number broken replacement thanks please week payment card address support weekend "
         "morning water filter descaling pump pressure steam machine coffee beans subscription "
         "cancel discount voucher courier damaged missing receipt account password login").split()
RARE = "quasar"  # appears in about one message in 10,000, for the rare-word search
LONG_TICKET_CUSTOMER = 0
BATCH = 5000
AGENTS = ["alice", "bob", "chloe", "dmitri", None]


def _text(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randrange(8, 60))]
    if rng.random() < 0.0001:
        words.insert(rng.randrange(len(words)), RARE)
    return "Hello, " + " ".join(words) + "."


def _reply(n: int, who: int, when: datetime, rng: random.Random) -> InboundMessage:
    """An agent's answer, seen by the connector as sent from our own address or number."""
    channel = ("email", "sms", "telegram")[who % 3]
    to = {"email": f"customer{who}@example{who % 13}.org", "sms": f"+3361{who:07d}",
          "telegram": str(100000 + who)}[channel]
    return InboundMessage(
        connector={"email": "mail", "sms": "sms", "telegram": "chat"}[channel], channel=channel,
        provider_id=f"r{n}@bench.example", sender="support", recipients=[to],
        text="Thanks for writing: " + _text(rng), sent_at=when, flags={FLAG_OWN},
    )


def _message(n: int, who: int, when: datetime, rng: random.Random) -> InboundMessage:
    channel = ("email", "sms", "telegram")[who % 3]
    if channel == "email":
        return InboundMessage(
            connector="mail", channel="email", provider_id=f"m{n}@bench.example",
            sender=f"customer{who}@example{who % 13}.org", sender_name=f"Customer {who}",
            subject=rng.choice(["Order", "Refund", "Invoice", "Grinder", "Delivery"]) + f" {who}",
            text=_text(rng), sent_at=when,
        )
    if channel == "sms":
        return InboundMessage(
            connector="sms", channel="sms", provider_id=f"SM{n:032x}",
            sender=f"+3361{who:07d}", text=_text(rng), sent_at=when,
        )
    message = InboundMessage(
        connector="chat", channel="telegram", provider_id=f"{100000 + who}:{n}",
        sender=str(100000 + who), sender_name=f"Customer {who}", sender_display=f"@cust{who}",
        text=_text(rng), sent_at=when,
    )
    if who % 30 == 2 and rng.random() < 0.05:
        # this Telegram user also texts us from a phone: their shared contact links the two
        message.evidence.append(IdentityEvidence("phone", f"+3361{who + 1:07d}"))
    return message


def build(db: Path, messages: int, customers: int, seed: int = 42) -> float:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = Store(f"sqlite:///{db}")
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    span = timedelta(days=730)
    step = span / messages
    options = IngestOptions(region="FR", reopen_window=timedelta(days=7))
    began = time.perf_counter()
    batch: list[InboundMessage] = []
    n = 0
    long_done = False
    while n < messages:
        # A conversation: a customer writes one to eight messages over a day or two.
        if not long_done and n >= messages // 2:
            who, length, gap = LONG_TICKET_CUSTOMER, min(1000, messages - n), timedelta(minutes=3)
            long_done = True
        else:
            who = 1 + rng.randrange(customers - 1)
            length = min(rng.randint(1, 8), messages - n)
            gap = timedelta(hours=rng.randint(1, 6))
        opened = start + step * n
        for j in range(length):
            batch.append(_message(n, who, opened + gap * j, rng))
            n += 1
            if n < messages and who != LONG_TICKET_CUSTOMER and rng.random() < 0.45:
                delay = timedelta(minutes=rng.choice([5, 20, 45, 90, 180, 600, 1500]))
                batch.append(_reply(n, who, opened + gap * j + delay, rng))
                n += 1
        if len(batch) >= BATCH:
            ingest(store, batch, options=options)
            _resolve_old(store, opened, rng)
            batch = []
            rate = n / (time.perf_counter() - began)
            print(f"\r{n:,} messages, {rate:,.0f} msg/s", end="", file=sys.stderr, flush=True)
    if batch:
        ingest(store, batch, options=options)
    _final_statuses(store, rng)
    print(file=sys.stderr)
    elapsed = time.perf_counter() - began
    with store.session() as session:
        counts = summary(session)
        by_status = dict(
            session.execute(select(Ticket.status, func.count()).group_by(Ticket.status)).all()
        )
    print(f"built {db} in {elapsed:.1f} s ({messages / elapsed:,.0f} msg/s): {counts}; "
          f"tickets by status {by_status}")
    store.close()
    return elapsed


def _resolve_old(store: Store, now: datetime, rng: random.Random) -> None:
    """Agents resolve most conversations that went quiet two days ago."""
    cutoff = now - timedelta(days=2)
    with store.transaction() as session:
        session.execute(
            update(Ticket)
            .where(Ticket.status == "open", Ticket.last_message_at < cutoff,
                   Ticket.id % 10 != rng.randrange(10))
            .values(status="resolved", resolved_at=Ticket.last_message_at, unread_count=0,
                    waiting_since=None, resolved_channel=Ticket.last_channel,
                    resolution_seconds=cast(
                        (func.julianday(Ticket.last_message_at)
                         - func.julianday(Ticket.created_at)) * 86400, Integer)),
            execution_options={"synchronize_session": False},
        )


def _final_statuses(store: Store, rng: random.Random) -> None:
    with store.transaction() as session:
        open_ids = session.execute(select(Ticket.id).where(Ticket.status == "open")).scalars().all()
        for ticket_id in open_ids:
            roll = rng.random()
            values: dict[str, object] = {"assignee": rng.choice(AGENTS)}
            if rng.random() < 0.3:
                values["priority"] = rng.choice(["low", "high", "high", "urgent"])
            if roll < 0.15:
                values["status"] = "pending"
            elif roll < 0.22:
                values["status"] = "snoozed"
                values["snoozed_until"] = datetime(2027, 1, 1, tzinfo=UTC)
            session.execute(update(Ticket).where(Ticket.id == ticket_id).values(**values),
                            execution_options={"synchronize_session": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=Path("bench-1m.db"))
    args = parser.parse_args()
    build(args.db, args.messages, args.customers)


if __name__ == "__main__":
    main()
