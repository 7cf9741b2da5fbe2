"""A small fixed store and config for the app's Pilot and snapshot tests.

Marta writes by email, then SMS, then Telegram about one problem; an agent's SMS reply failed
and a private note explains it. Five other customers fill the queue; one has a hostile name.
Everything happens at fixed times, and the app runs under a fixed clock (NOW)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.base import InboundMessage, Receipt
from desk import identity, outbox, tickets
from desk.config import Settings, load_config
from desk.ingest import ingest
from desk.store import Store
from desk.timeutil import use_clock

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=8)
HOSTILE = (
    "\x1b[2J\x1b]52;c;ZXZpbA==\x07[bold red]x[/] [link=https://evil]y[/] [@click=app.quit]z[/]"
)
CONFIG = """
[desk]
agent = "alice"
agents = ["bob", "chloe"]

[[connector]]
name = "mail"
type = "email"
imap_host = "imap.example.com"
username = "support@example.com"
password = "env:DESK_TEST_UNUSED"
smtp_host = "smtp.example.com"
from_address = "support@example.com"

[[connector]]
name = "sms"
type = "twilio"
account_sid = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
auth_token = "env:DESK_TEST_UNUSED"
phone_number = "+15555550100"

[[connector]]
name = "chat"
type = "telegram"
token = "env:DESK_TEST_UNUSED"

[[canned]]
name = "thanks"
text = "Hello {customer.name}, thanks for your patience. — {agent.name}"
"""
OTHERS = [
    ("Jonas Becker", "jonas@example.de", "Invoice for order CR-1042"),
    ("Priya Patel", "priya@example.in", "Grinder burrs replacement"),
    ("Léa Moreau", "lea@example.fr", "Colis endommagé"),
    ("田中 美咲", "misaki@example.jp", "Customs hold on my beans"),
    ("Michael Turner", "mike@example.com", "Warranty registration"),
]


def settings(tmp_path: Path, extra: str = "") -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + extra, encoding="utf-8")
    return load_config(path, check_secrets=False)


def mail(n: int, sender: str, name: str, subject: str, text: str, at: datetime,
         **fields: object) -> InboundMessage:
    return InboundMessage(connector="mail", channel="email", provider_id=f"<m{n}@test>",
                          sender=sender, sender_name=name, subject=subject, text=text,
                          sent_at=at, **fields)  # type: ignore[arg-type]


def build(store: Store) -> dict[str, int]:
    """Fill `store`; returns the ids the tests use."""
    moment = [T0]  # desk's clock follows the story, so events sit between the messages

    def at(hours: float) -> None:
        moment[0] = T0 + timedelta(hours=hours)

    with use_clock(lambda: moment[0]):
        for n, (name, address, subject) in enumerate(OTHERS):
            ingest(store, [mail(100 + n, address, name, subject,
                                f"Hello,\n\n{subject}: can you help?\n\nThanks,\n{name}",
                                T0 + timedelta(minutes=10 * n))])
        ingest(store, [mail(200, "evil@example.com", HOSTILE, f"subject {HOSTILE}",
                            f"body {HOSTILE}", T0 + timedelta(hours=1))])
        ingest(store, [mail(
            1, "marta@example.es", "Marta Ruiz", "Grinder makes a loud noise",
            "Hi,\n\nmy Lumen grinder started making a loud noise this morning.\n\n"
            "Marta\n\n-- \nMarta Ruiz\n+34 612 34 56 78",
            T0 + timedelta(hours=2),
        )])
        at(2.1)
        with store.transaction() as session:
            marta = identity.find_customer(session, "email", "marta@example.es")
            assert marta is not None
            identity.link_identity(session, marta, "phone", "+34612345678", actor="alice",
                                   reason="number in her signature")
            identity.link_identity(session, marta, "telegram", "777001", actor="alice",
                                   display="@marta_r", reason="she said so by email")
        ingest(store, [InboundMessage(
            connector="sms", channel="sms", provider_id="SM001", sender="+34612345678",
            text="It is me again, the noise is worse now.", sent_at=T0 + timedelta(hours=3))])
        at(3.2)
        with store.transaction() as session:
            ticket_id = tickets.tickets_of_customer(session, marta)[0].id
            assert ticket_id is not None
            tickets.assign(session, ticket_id, "alice", actor="alice")
            sms = outbox.queue_reply(session, ticket_id, "Could you send us a short video?",
                                     agent="alice", channel="sms")
            outbox.claim_for_sending(session, sms.id)  # type: ignore[arg-type]
            outbox.record_failure(session, sms.id,  # type: ignore[arg-type]
                                  "21610: Attempt to send to unsubscribed recipient",
                                  permanent=True)
            at(3.3)
            outbox.add_note(session, ticket_id, "SMS refused: she unsubscribed. Try Telegram.",
                            agent="alice")
        ingest(store, [InboundMessage(
            connector="chat", channel="telegram", provider_id="tg-1", sender="777001",
            sender_name="Marta", text="Here is the video of the noise.",
            sent_at=T0 + timedelta(hours=4))])
        at(4.5)
        with store.transaction() as session:
            reply = outbox.queue_reply(session, ticket_id,
                                       "Thanks Marta! The burrs need cleaning; steps follow.",
                                       agent="alice", channel="email")
            outbox.claim_for_sending(session, reply.id)  # type: ignore[arg-type]
            outbox.record_sent(session, reply.id,  # type: ignore[arg-type]
                               Receipt(provider_id="<r1@desk>", status="sent",
                                       sent_at=T0 + timedelta(hours=5)))
        at(6)
        ingest(store, [InboundMessage(
            connector="chat", channel="telegram", provider_id="tg-2", sender="777001",
            sender_name="Marta", text="Thank you, I will try tonight.",
            sent_at=T0 + timedelta(hours=6))])
    return {"marta": marta, "ticket": ticket_id, "failed_sms": sms.id}  # type: ignore[dict-item]


async def settle(pilot) -> None:
    """Let the app finish its workers and repaint (a few rounds: handlers start new ones)."""
    import contextlib

    from textual.worker import WorkerCancelled

    for _ in range(4):
        # An exclusive worker replaced meanwhile (a newer load) is cancelled: that is fine.
        # The PostgreSQL listener runs as long as the app does.
        running = [w for w in pilot.app.workers if w.group != "listen"]
        with contextlib.suppress(WorkerCancelled):
            if running:  # (an empty list means every worker to wait_for_complete)
                await pilot.app.workers.wait_for_complete(running)
        await pilot.pause()
