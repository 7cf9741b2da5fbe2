"""Several `desk sync` daemons on one PostgreSQL store, as a team runs them for resilience: each
connector runs in one daemon at a time, a killed daemon's connectors are taken over from their
stored cursors, and nothing is lost, doubled or sent twice. Real peers throughout: Dovecot, the
local Bot API and Twilio servers, an aiosmtpd sink."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fake_telegram
import fake_twilio
import pytest
from peers import DESK, PASSWORD, USER, free_port, mail
from sqlalchemy import func, select

from desk import lease, outbox
from desk.models import Message, Ticket
from desk.store import Store

pytestmark = pytest.mark.postgresql

# The figure is a minute of traffic; DESK_SOAK_SECONDS shortens it while developing.
SOAK_SECONDS = float(os.environ.get("DESK_SOAK_SECONDS", "60"))
LEASE_SECONDS = 3.0
POLL_SECONDS = 1.0
CONNECTORS = ("mail", "sms", "chat")


class Sink:
    """An SMTP server that keeps what it is given."""

    def __init__(self) -> None:
        self.accepted: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.append(envelope.content)
        return "250 OK"


def write_config(path: Path, imap_port: int, smtp_port: int, telegram: str, twilio: str) -> None:
    path.write_text(f"""
[store]
lease_seconds = {LEASE_SECONDS}

[[connector]]
name = "mail"
type = "email"
imap_host = "127.0.0.1"
imap_port = {imap_port}
imap_tls = "none"
username = "{USER}"
password = "env:DESK_TEST_PW"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
from_address = "{USER}"
poll_interval = {POLL_SECONDS}
idle = false

[[connector]]
name = "sms"
type = "twilio"
account_sid = "{fake_twilio.ACCOUNT}"
auth_token = "env:DESK_TEST_TWILIO"
phone_number = "{fake_twilio.NUMBER}"
api_base = "{twilio}"
poll_interval = {POLL_SECONDS}

[[connector]]
name = "chat"
type = "telegram"
token = "env:DESK_TEST_TELEGRAM"
api_base = "{telegram}"
""")


def runners(store: Store) -> dict[str, str]:
    """Which daemon runs each connector now."""
    with store.session() as session:
        return {name: held.holder
                for name, held in lease.live(session, lease.connector_role("")).items()}


async def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_daemons_share_a_store_and_one_takes_over_from_the_other(
    mailbox, pg_database, tmp_path
) -> None:
    from aiosmtpd.controller import Controller

    url = pg_database()
    store = Store(url)
    telegram = fake_telegram.State()
    telegram_runner, telegram_base = await fake_telegram.serve(telegram)
    twilio = fake_twilio.State()
    twilio_runner, twilio_base = await fake_twilio.serve(twilio)
    sink = Sink()
    smtp_port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    config = tmp_path / "config.toml"
    write_config(config, mailbox.imap_port, smtp_port, telegram_base, twilio_base)
    env = {**os.environ, "DESK_TEST_PW": PASSWORD, "DESK_TEST_TWILIO": fake_twilio.TOKEN,
           "DESK_TEST_TELEGRAM": fake_telegram.TOKEN}

    async def start_daemon(name: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *DESK, "--config", str(config), "--db", url, "sync",
            stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "wb"),
            env=env)

    sent = Counter[str]()  # what arrived, by channel
    replies: list[tuple[int, str]] = []
    first = await start_daemon("first")
    second: asyncio.subprocess.Process | None = None
    try:
        holders = await wait_for(lambda: len(runners(store)) == 3 and runners(store), 30,
                                 "the first daemon to run the three connectors")
        assert set(holders.values()) == {f"{os.uname().nodename}:{first.pid}"}
        second = await start_daemon("second")
        await asyncio.sleep(LEASE_SECONDS)
        # The second one stands by: each connector still runs in exactly one daemon.
        assert runners(store) == holders

        killed_at: float | None = None
        taken_over_in: float | None = None
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < SOAK_SECONDS:
            n += 1
            await asyncio.to_thread(mailbox.append, mail(
                n, sender=f"Customer {n % 7} <c{n % 7}@example.org>", text=f"mail {n}"))
            await telegram.push(telegram.message(
                {"id": 7000 + n % 5, "is_bot": False, "first_name": f"Tg{n % 5}"},
                f"telegram {n}"))
            twilio.inbound(f"+1415555{n % 6:04d}", f"sms {n}", _now())
            sent.update(["email", "telegram", "sms"])
            if n % 8 == 0:  # an agent answers someone on each channel now and then
                replies.extend(await asyncio.to_thread(_reply_to_each_channel, store, n))
            if killed_at is None and time.monotonic() - started > SOAK_SECONDS / 2:
                first.send_signal(signal.SIGKILL)  # no chance to let go of anything
                await first.wait()
                killed_at = time.monotonic()
            if killed_at is not None and taken_over_in is None:
                now_running = runners(store)
                if len(now_running) == 3 and set(now_running.values()) == {
                        f"{os.uname().nodename}:{second.pid}"}:
                    taken_over_in = time.monotonic() - killed_at
            await asyncio.sleep(0.25)
        assert killed_at is not None
        if taken_over_in is None:
            await wait_for(lambda: set(runners(store).values()) == {
                f"{os.uname().nodename}:{second.pid}"}, 30, "the takeover")
            taken_over_in = time.monotonic() - killed_at

        def all_stored() -> bool:
            with store.session() as session:
                return session.execute(select(func.count()).select_from(Message).where(
                    Message.direction == "in")).scalar_one() >= sum(sent.values())

        def all_sent() -> bool:
            with store.session() as session:
                return not session.execute(select(func.count()).select_from(Message).where(
                    Message.direction == "out",
                    Message.status.in_(("queued", "sending")))).scalar_one()

        await wait_for(all_stored, 60, "every message to be stored")
        await wait_for(all_sent, 60, "every reply to go out")
        await asyncio.sleep(2 * POLL_SECONDS)  # a late double would show up by now
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                await asyncio.wait_for(daemon.wait(), 15)
        smtp.stop()
        await telegram_runner.cleanup()
        await twilio_runner.cleanup()

    print(f"takeover after SIGKILL: {taken_over_in:.1f} s (lease {LEASE_SECONDS} s, poll "
          f"{POLL_SECONDS} s); {sum(sent.values())} messages, {len(replies)} replies")
    # Taken over within the lease, one renewal round (lease / 3) and a poll.
    assert taken_over_in <= LEASE_SECONDS + LEASE_SECONDS / 3 + POLL_SECONDS + 1.0
    with store.session() as session:
        inbound = session.execute(
            select(Message.channel, Message.text).where(Message.direction == "in")).all()
        statuses = Counter(session.execute(
            select(Message.status).where(Message.direction == "out")).scalars())
    store.close()
    texts = Counter(text for _channel, text in inbound)
    assert Counter(channel for channel, _ in inbound) == sent  # every message, once
    assert all(count == 1 for count in texts.values()), texts.most_common(3)
    assert set(statuses) <= {"sent", "delivered"}, statuses
    # Each reply went out exactly once, through its own provider.
    out = Counter()
    out.update(m["text"] for m in telegram.sent)
    out.update(m["body"] for m in twilio.created)
    for _id, text in replies:
        out[text] += sum(text.encode() in m for m in sink.accepted)
    assert {text: out[text] for _id, text in replies} == {text: 1 for _id, text in replies}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _reply_to_each_channel(store: Store, n: int) -> list[tuple[int, str]]:
    """Queue a reply on the newest ticket of each channel; returns (id, text) of each."""
    return store.write(lambda session: _queue_replies(session, n))  # again if it lost a race


def _queue_replies(session: Any, n: int) -> list[tuple[int, str]]:
    queued = []
    for channel in ("email", "sms", "telegram"):
        ticket_id = session.execute(
            select(Ticket.id).where(Ticket.last_channel == channel)
            .order_by(Ticket.id.desc()).limit(1)).scalar()
        if ticket_id is None:
            continue
        text = f"reply {n} on {channel}"
        message = outbox.queue_reply(
            session, ticket_id, text, agent="alice", channel=channel,
            connectors_by_channel={"email": "mail", "sms": "sms", "telegram": "chat"})
        queued.append((message.id, text))
    return queued
