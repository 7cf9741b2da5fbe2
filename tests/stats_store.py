"""A store with known timestamps for the service figures, shared by test_stats and the stats
screen's snapshot. Every figure the tests expect is worked out by hand in test_stats.py from
the story below (times from T; the period under test is [T, T + 10 days)):

- Ann (email, normal, alice): writes at T; alice answers at +1h; resolved at +5h.
- Ben (sms, high, bob, tag billing): writes at +1d; bob answers at +1d 2h; resolved at
  +1d 10h; Ben writes again at +2d (reopened); bob answers at +2d 30m; resolved at +2d 1h.
- Cleo (urgent, alice, tags billing and vip): Telegram at +2d (sharing her phone number), SMS
  at +2d 30m, email at +2d 1h (address linked by hand); alice answers by email at +2d 4h;
  resolved at +3d.
- Dan (email, urgent, nobody): writes at +3d; never answered, still open.
- Fay (email): writes at T - 5d, answered at T - 5d + 30m, resolved at T - 4d: before the period.
- Eve (sms): writes at +12d, after the period; still open.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.base import IdentityEvidence, InboundMessage
from desk import identity, outbox, tickets
from desk.ingest import IngestOptions, ingest
from desk.sla import Targets
from desk.store import Store
from desk.timeutil import use_clock

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T + timedelta(days=20)
UNTIL = T + timedelta(days=10)
TARGETS = Targets(
    first_response={"normal": 2 * 3600, "high": 3600, "urgent": 3600},
    resolution={"normal": 86400, "high": 86400, "urgent": 86400},
)
CONNECTORS = {"email": "mail", "sms": "sms", "telegram": "chat"}
_SENDERS = {"email": "{name}@example.com", "sms": "+3361234{n:04d}", "telegram": "77{n:04d}"}


def _message(name: str, n: int, channel: str, at: timedelta, **fields: object) -> InboundMessage:
    sender = _SENDERS[channel].format(name=name.lower(), n=n)
    return InboundMessage(
        connector=CONNECTORS[channel], channel=channel, provider_id=f"{name}-{at}-{channel}",
        sender=sender, sender_name=name, text=f"Hello from {name}",
        subject="Help" if channel == "email" else None, sent_at=T + at, **fields,  # type: ignore[arg-type]
    )


class Story:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ticket: dict[str, int] = {}
        self.options = IngestOptions(region="FR", reopen_window=timedelta(days=7))

    def writes(self, name: str, n: int, channel: str, at: timedelta, **fields: object) -> None:
        with use_clock(lambda: T + at):
            result = ingest(self.store, [_message(name, n, channel, at, **fields)],
                            options=self.options)
        self.ticket.setdefault(name, min(result.ticket_ids))

    def answers(self, agent: str, name: str, at: timedelta, channel: str | None = None) -> None:
        with use_clock(lambda: T + at), self.store.transaction() as session:
            outbox.queue_reply(session, self.ticket[name], f"Hi {name}", agent=agent,
                               channel=channel, connectors_by_channel=CONNECTORS)

    def status(self, name: str, status: str, at: timedelta, actor: str = "alice") -> None:
        with use_clock(lambda: T + at), self.store.transaction() as session:
            tickets.set_status(session, self.ticket[name], status, actor=actor)

    def setup(self, name: str, *, priority: str, assignee: str | None = None,
              tags: tuple[str, ...] = ()) -> None:
        with use_clock(lambda: NOW), self.store.transaction() as session:
            tickets.set_priority(session, self.ticket[name], priority, actor="alice")
            if assignee:
                tickets.assign(session, self.ticket[name], assignee, actor="alice")
            if tags:
                tickets.set_tags(session, self.ticket[name], tags, actor="alice")


def build(store: Store) -> Story:
    story = Story(store)
    h, d = timedelta(hours=1), timedelta(days=1)
    story.writes("Fay", 6, "email", -5 * d)
    story.answers("bob", "Fay", -5 * d + 30 * timedelta(minutes=1))
    story.status("Fay", "resolved", -4 * d)

    story.writes("Ann", 1, "email", 0 * d)
    story.setup("Ann", priority="normal", assignee="alice")
    story.answers("alice", "Ann", 1 * h)
    story.status("Ann", "resolved", 5 * h)

    story.writes("Ben", 2, "sms", 1 * d)
    story.setup("Ben", priority="high", assignee="bob", tags=("billing",))
    story.answers("bob", "Ben", 1 * d + 2 * h)
    story.status("Ben", "resolved", 1 * d + 10 * h, actor="bob")
    story.writes("Ben", 2, "sms", 2 * d)
    story.answers("bob", "Ben", 2 * d + 30 * timedelta(minutes=1))
    story.status("Ben", "resolved", 2 * d + 1 * h, actor="bob")

    story.writes("Cleo", 3, "telegram", 2 * d,
                 evidence=[IdentityEvidence("phone", _SENDERS["sms"].format(n=3))])
    story.writes("Cleo", 3, "sms", 2 * d + 30 * timedelta(minutes=1))
    with story.store.transaction() as session:
        customer = identity.find_customer(session, "telegram", _SENDERS["telegram"].format(n=3))
        assert customer is not None
        identity.link_identity(session, customer, "email", "cleo@example.com", actor="alice")
    story.writes("Cleo", 3, "email", 2 * d + 1 * h)
    story.setup("Cleo", priority="urgent", assignee="alice", tags=("billing", "vip"))
    story.answers("alice", "Cleo", 2 * d + 4 * h, channel="email")
    story.status("Cleo", "resolved", 3 * d)

    story.writes("Dan", 4, "email", 3 * d)
    story.setup("Dan", priority="urgent")

    story.writes("Eve", 5, "sms", 12 * d)
    return story


SLA_CONFIG = """
[sla]
first_response = { normal = "2h", high = "1h", urgent = "1h" }
resolution = { normal = "1d", high = "1d", urgent = "1d" }
"""
