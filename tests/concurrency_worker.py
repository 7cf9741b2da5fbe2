"""One of the processes of the many-writers test: does its kind of write against the store for
a while, through desk's functions, and reports what it wrote as JSON (or its error)."""

from __future__ import annotations

import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from connectors.base import InboundMessage
from desk import outbox, tickets
from desk.ingest import ingest
from desk.models import Ticket
from desk.store import Store, url_of


def main(role: str, db: str, seconds: float, out: str) -> None:
    store = Store(url_of(db))
    rng = random.Random(role)
    done: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if role == "ingest":
            sent = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=n)
            ingest(store, [InboundMessage(
                connector="mail", channel="email", provider_id=f"{role}-{n}@test",
                sender=f"c{n % 40}@example.org", subject=f"question {n}",
                text=f"question {n}", sent_at=sent)])
            done.append(f"{role}-{n}@test")
            continue
        with store.session() as session:
            ids = list(session.execute(select(Ticket.id).limit(200)).scalars())
        if not ids:
            time.sleep(0.01)
            continue
        ticket_id = rng.choice(ids)
        if role == "reply":
            text = f"answer {n}"
            store.write(lambda s, t=ticket_id, x=text: outbox.add_note(s, t, x, agent="bob"))
            done.append(text)
        elif role == "status":
            status = rng.choice(["open", "pending", "resolved"])
            store.write(lambda s, t=ticket_id, st=status: tickets.set_status(
                s, t, st, actor="carol"))
            done.append(f"{ticket_id}:{status}")
        elif role == "tags":
            tag = f"t{n % 7}"
            store.write(lambda s, t=ticket_id, g=tag: tickets.add_tags(s, t, [g], actor="dan"))
            done.append(f"{ticket_id}:{tag}")
    store.close()
    Path(out).write_text(json.dumps(done))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
