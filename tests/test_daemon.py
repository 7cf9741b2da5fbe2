"""`desk sync` as operators run it: one per store (a lease in the store), a clean stop on
SIGTERM/SIGINT, and what `desk status` says about it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from peers import DESK, USER, free_port


def write_config(path: Path, *, lease: float, imap_port: int, more: str = "") -> Path:
    """A config with one email connector on loopback (password in $DESK_TEST_PW)."""
    user = USER
    path.write_text(
        f"[store]\nlease_seconds = {lease}\n\n[[connector]]\nname = \"mail\"\ntype = \"email\"\n"
        f"imap_host = \"127.0.0.1\"\nimap_port = {imap_port}\nimap_tls = \"none\"\n"
        f"username = \"{user}\"\npassword = \"env:DESK_TEST_PW\"\n"
        f"smtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"\nfrom_address = \"{user}\"\n{more}")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # An IMAP server that is not there: the daemon keeps retrying it with backoff.
    return write_config(tmp_path / "config.toml", lease=2, imap_port=free_port())


def desk(config: Path, db: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*DESK, "--config", str(config), "--db", str(db), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DESK_TEST_PW": "x"})


def wait_running(config: Path, db: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = desk(config, db, "status", "--json")
        out, _ = status.communicate(timeout=10)
        found = json.loads(out)
        if found["daemon"]:
            return found
        time.sleep(0.1)
    raise AssertionError("desk sync never took the store")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_daemon_cleanly_within_five_seconds(config, store_url, signum) -> None:
    db = store_url
    daemon = desk(config, db, "sync")
    try:
        status = wait_running(config, db)
        assert status["daemon"]["holder"].endswith(f":{daemon.pid}")
        time.sleep(0.5)
        started = time.monotonic()
        daemon.send_signal(signum)
        assert daemon.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        daemon.kill()
        daemon.wait()
    # it let go of the store: a new daemon may start at once, and status says none runs
    status = desk(config, db, "status", "--json")
    assert json.loads(status.communicate(timeout=10)[0])["daemon"] is None


@pytest.mark.sqlite_only("one daemon per SQLite file; PostgreSQL stores share connectors")
def test_a_second_daemon_on_the_same_store_is_refused(config, store_url) -> None:
    db = store_url
    first = desk(config, db, "sync")
    try:
        wait_running(config, db)
        second = desk(config, db, "sync", "--once")
        _out, err = second.communicate(timeout=20)
        assert second.returncode == 1
        assert f"another desk sync ({os.uname().nodename}:{first.pid})" in err
        assert "only one may" in err
        assert first.poll() is None  # the first one is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)


@pytest.mark.sqlite_only("one daemon per SQLite file; PostgreSQL stores share connectors")
def test_a_killed_daemons_lease_runs_out_and_a_new_one_starts(config, store_url) -> None:
    db = store_url
    first = desk(config, db, "sync")
    wait_running(config, db)
    first.kill()  # SIGKILL: no chance to let go
    first.wait()
    refused = desk(config, db, "sync", "--once")
    refused.communicate(timeout=20)
    assert refused.returncode == 1  # its lease (2 s here) still holds
    time.sleep(2.2)
    second = desk(config, db, "sync")
    try:
        status = wait_running(config, db)
        assert status["daemon"]["holder"].endswith(f":{second.pid}")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0


def test_json_log_lines_name_the_failure_and_never_the_secret(config, store_url) -> None:
    db = store_url
    run = subprocess.run(
        [*DESK, "--config", str(config), "--db", db, "sync", "--once", "--log-format",
         "json"],
        capture_output=True, text=True, env={**os.environ, "DESK_TEST_PW": "s3cr3t-Pa55"},
        timeout=60)
    assert run.returncode == 1  # the IMAP server is not there
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["level"] == "warning" and "mail" in line["message"] for line in lines)
    assert "s3cr3t-Pa55" not in run.stderr + run.stdout


def test_killed_five_times_mid_sync_every_message_is_stored_exactly_once(
    mailbox, tmp_path, store_url
) -> None:
    import random
    import shutil

    from peers import PASSWORD, mail
    from sqlalchemy import func, select

    from desk.models import Message
    from desk.store import Store

    inbox = mailbox.root / "mail" / USER / "cur"
    inbox.mkdir(parents=True, exist_ok=True)
    for n in range(2000):  # written behind Dovecot's back, as a mail server delivers
        (inbox / f"{1700000000 + n}.{n}.crash:2,").write_bytes(
            mail(n, sender=f"Customer {n % 50} <c{n % 50}@example.org>"))
    if os.geteuid() == 0:
        for path in [inbox.parent, *inbox.parent.rglob("*")]:
            shutil.chown(path, "nobody", "nogroup")
    config = write_config(tmp_path / "config.toml", lease=1, imap_port=mailbox.imap_port,
                          more="batch_size = 20\n")
    db = store_url
    env = {**os.environ, "DESK_TEST_PW": PASSWORD}
    moments = random.Random(2026)
    seen_after_kill = []
    for _ in range(5):
        daemon = subprocess.Popen([*DESK, "--config", str(config), "--db", db, "sync"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        before = _count(db)
        deadline = time.monotonic() + 30
        while _count(db) <= before and time.monotonic() < deadline:
            time.sleep(0.02)  # until this daemon has stored something
        time.sleep(moments.uniform(0.0, 0.3))  # then anywhere in what follows
        daemon.kill()  # SIGKILL: mid-batch, mid-transaction, wherever it is
        daemon.wait()
        seen_after_kill.append(_count(db))
        time.sleep(1.2)  # its lease runs out
    final = subprocess.run([*DESK, "--config", str(config), "--db", db, "sync",
                            "--once"], capture_output=True, text=True, env=env, timeout=120)
    assert final.returncode == 0, final.stderr
    store = Store(db)
    with store.session() as session:
        stored = session.execute(select(func.count()).select_from(Message)).scalar_one()
        distinct = session.execute(
            select(func.count(func.distinct(Message.provider_id)))).scalar_one()
    store.close()
    assert stored == distinct == 2000
    # the kills did land in the middle of the sync, not before or after it
    assert all(0 < seen < 2000 for seen in seen_after_kill), seen_after_kill
    assert seen_after_kill == sorted(set(seen_after_kill))  # each run got further


_engines: dict[str, Any] = {}


def _count(db: str) -> int:
    """Messages stored so far, read beside the daemon (0 before it made the schema)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    if db not in _engines:
        _engines[db] = create_engine(db)
    try:
        with _engines[db].connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM message").scalar_one()
    except DBAPIError:  # killed before the schema existed
        return 0


def test_four_processes_writing_at_once_never_hit_a_lock_and_lose_nothing(
    tmp_path, store_url
) -> None:
    from sqlalchemy import func, select

    from desk.models import Event, Message
    from desk.store import Store

    db = store_url
    Store(db).close()  # the schema, before the writers race
    worker = Path(__file__).with_name("concurrency_worker.py")
    roles = ["ingest", "reply", "status", "tags"]
    processes = {
        role: subprocess.Popen([sys.executable, str(worker), role, db, "20",
                                str(tmp_path / f"{role}.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for role in roles
    }
    for role, process in processes.items():
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{role}: {err[-2000:]}"
        assert "database is locked" not in err
    done = {role: json.loads((tmp_path / f"{role}.json").read_text()) for role in roles}
    assert all(done[role] for role in roles), {role: len(done[role]) for role in roles}
    store = Store(db)
    with store.session() as session:
        provider_ids = set(session.execute(
            select(Message.provider_id).where(Message.direction == "in")).scalars())
        notes = session.execute(select(func.count()).select_from(Message).where(
            Message.direction == "note")).scalar_one()
        status_events = session.execute(select(func.count()).select_from(Event).where(
            Event.kind == "status", Event.actor == "carol")).scalar_one()
        tag_events = session.execute(select(func.count()).select_from(Event).where(
            Event.kind == "tags", Event.actor == "dan")).scalar_one()
    store.close()
    assert provider_ids == set(done["ingest"])
    assert notes == len(done["reply"])
    assert status_events == len(done["status"])
    assert tag_events == len(done["tags"])


def test_a_daemon_killed_during_a_send_never_sends_it_twice(mailbox, tmp_path, store_url) -> None:
    import threading

    from aiosmtpd.controller import Controller
    from peers import PASSWORD, mail
    from sqlalchemy import select

    from desk import outbox
    from desk.models import Message, Ticket
    from desk.store import Store

    accepted: list[bytes] = []
    in_data = threading.Event()

    class SlowSink:
        async def handle_DATA(self, server, session, envelope) -> str:
            in_data.set()
            import asyncio

            await asyncio.sleep(3)  # the daemon is killed while it waits for this answer
            accepted.append(envelope.content)
            return "250 OK"

    port = free_port()
    controller = Controller(SlowSink(), hostname="127.0.0.1", port=port)
    controller.start()
    mailbox.append(mail(1))
    config = write_config(tmp_path / "config.toml", lease=1, imap_port=mailbox.imap_port,
                          more=f"smtp_port = {port}\n")
    db = store_url
    env = {**os.environ, "DESK_TEST_PW": PASSWORD}
    command = [*DESK, "--config", str(config), "--db", db, "sync"]
    try:
        subprocess.run([*command, "--once"], env=env, timeout=60, capture_output=True)
        store = Store(db)
        with store.transaction() as session:
            ticket_id = session.execute(select(Ticket.id)).scalar_one()
            reply_id = outbox.queue_reply(session, ticket_id, "only once", agent="alice").id
        daemon = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        assert in_data.wait(30), "the daemon never started sending"
        daemon.kill()  # mid-send: the server has the message, the daemon never heard back
        daemon.wait()
        time.sleep(3.5)  # the server finishes with it; the lease runs out
        restarted = subprocess.run([*command, "--once"], env=env, timeout=60,
                                   capture_output=True, text=True)
        with store.session() as session:
            reply = session.get(Message, reply_id)
        store.close()
    finally:
        controller.stop()
    assert len(accepted) <= 1  # never twice
    assert reply.status == "unknown", restarted.stderr
    assert "check, then retry" in reply.error
