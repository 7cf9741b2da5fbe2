"""The email connector against a real Dovecot (IMAP, IDLE, UIDVALIDITY) and an aiosmtpd sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from conftest import count
from peers import PASSWORD, USER, Dovecot, free_port, mail, start_dovecot
from sqlalchemy import select

from connectors.base import OutboundMessage, PermanentError, TransientError
from connectors.email import EmailConnector
from desk import outbox
from desk.config import EmailConnectorSettings
from desk.ingest import IngestOptions
from desk.models import Message, Ticket
from desk.outbox import deliver_due
from desk.store import Store
from desk.sync import fetch_into_store, watch_connector

OPTIONS = IngestOptions()


@pytest.fixture(scope="session")
def tls_dovecot() -> Iterator[Dovecot]:
    server = start_dovecot(tls=True)
    yield server
    server.stop()


class Sink:
    """An SMTP server that keeps what it is sent, or answers with `reply` instead."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.reply: str | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.reply:
            return self.reply
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def settings(dovecot: Dovecot, smtp_port: int = 9, **changes: object) -> EmailConnectorSettings:
    values: dict[str, object] = {
        "name": "mail", "type": "email", "imap_host": "127.0.0.1",
        "imap_port": dovecot.imap_port, "imap_tls": "none", "username": USER,
        "password": "env:DESK_TEST_MAIL_PASSWORD", "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port, "smtp_tls": "none", "from_address": f"Support <{USER}>",
        "batch_size": 7,
    }
    values.update(changes)
    return EmailConnectorSettings.model_validate(values)


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESK_TEST_MAIL_PASSWORD", PASSWORD)


def sync(store: Store, connector: EmailConnector) -> int:
    return asyncio.run(_sync(store, connector)).stored


async def _sync(store: Store, connector: EmailConnector):
    try:
        return await fetch_into_store(store, connector, OPTIONS)
    finally:
        await connector.aclose()


def provider_ids(store: Store) -> list[str]:
    with store.session() as session:
        return sorted(session.execute(select(Message.provider_id)).scalars())


def test_appended_mail_is_stored_once_and_never_marked_seen(store, mailbox) -> None:
    mailbox.append(*(mail(n) for n in range(20)))
    connector = EmailConnector(settings(mailbox))
    assert sync(store, connector) == 20
    assert sync(store, EmailConnector(settings(mailbox))) == 0
    assert provider_ids(store) == sorted(f"m{n}@example.org" for n in range(20))
    client = mailbox.client()
    client.select_folder("INBOX")
    assert client.search(["SEEN"]) == []  # BODY.PEEK: reading leaves mail unread
    client.logout()


def test_the_cursor_resumes_an_interrupted_first_sync(store, mailbox) -> None:
    mailbox.append(*(mail(n) for n in range(20)))

    async def first_batch_only() -> None:
        connector = EmailConnector(settings(mailbox))
        from desk.ingest import ingest

        async for batch in connector.fetch(None):  # killed after one batch of 7
            await asyncio.to_thread(ingest, store, batch.messages, connector="mail",
                                    cursor=batch.cursor)
            break
        await connector.aclose()

    asyncio.run(first_batch_only())
    assert count(store, Message) == 7
    assert sync(store, EmailConnector(settings(mailbox))) == 13
    assert len(set(provider_ids(store))) == 20


def test_mark_seen_marks_what_was_stored(store, mailbox) -> None:
    mailbox.append(mail(1), mail(2))
    sync(store, EmailConnector(settings(mailbox, mark_seen=True)))
    client = mailbox.client()
    client.select_folder("INBOX")
    assert len(client.search(["SEEN"])) == 2
    client.logout()


def test_several_folders_each_keep_their_cursor(store, mailbox) -> None:
    mailbox.append(mail(1))
    mailbox.append(mail(2), folder="Support")
    connector = EmailConnector(settings(mailbox, folders=["INBOX", "Support"]))
    assert sync(store, connector) == 2
    mailbox.append(mail(3), folder="Support")
    assert sync(store, EmailConnector(settings(mailbox, folders=["INBOX", "Support"]))) == 1


def test_a_message_over_the_limit_is_read_in_part_and_stored_flagged(store, mailbox) -> None:
    from email.message import EmailMessage

    big = EmailMessage()
    big["From"], big["To"], big["Subject"] = "Ana Lima <ana@example.org>", USER, "The video"
    big["Message-ID"] = "<video@example.org>"
    big.set_content("Here is the video of the grinder.\n")
    big.add_attachment(os.urandom(400_000), maintype="video", subtype="mp4",
                       filename="grinder.mp4")
    mailbox.append(big.as_bytes(), mail(2))
    connector = EmailConnector(settings(mailbox))
    connector.max_message_bytes = 100_000  # as desk sets it from [store] max_message_bytes
    assert sync(store, connector) == 2  # the large one too: stored, not skipped
    with store.session() as session:
        video = session.execute(select(Message).where(
            Message.provider_id == "video@example.org")).scalar_one()
        small = session.execute(select(Message).where(
            Message.provider_id == "m2@example.org")).scalar_one()
    assert "truncated" in video.flags.split(",")
    assert video.text.startswith("Here is the video of the grinder.")
    assert "over max_message_bytes" in video.text
    assert re.search(r"The original stays in INBOX \(UID \d+\), Message-ID video@example.org",
                     video.text)
    assert len(video.raw) <= 100_000
    assert small.flags == "" and b"(#2)" in small.raw  # the others are read whole


def test_a_new_uidvalidity_reads_again_and_doubles_nothing(store, mailbox) -> None:
    mailbox.append(*(mail(n) for n in range(5)))
    assert sync(store, EmailConnector(settings(mailbox))) == 5
    mailbox.doveadm("mailbox", "update", "-u", USER, "--uid-validity", "4242", "INBOX")
    mailbox.append(mail(5))
    assert sync(store, EmailConnector(settings(mailbox))) == 1
    assert count(store, Message) == 6
    from desk.store import get_cursor

    with store.session() as session:
        assert get_cursor(session, "mail")["folders"]["INBOX"]["uidvalidity"] == 4242


def test_a_folder_deleted_and_recreated_doubles_nothing(store, mailbox) -> None:
    mailbox.append(*(mail(n) for n in range(4)), folder="Support")
    connector_settings = settings(mailbox, folders=["Support"])
    assert sync(store, EmailConnector(connector_settings)) == 4
    client = mailbox.client()
    client.delete_folder("Support")
    client.logout()
    mailbox.append(*(mail(n) for n in range(6)), folder="Support")  # the old four come back
    assert sync(store, EmailConnector(connector_settings)) == 2
    assert count(store, Message) == 6


def test_mail_without_message_id_is_deduplicated_by_its_bytes(store, mailbox) -> None:
    raw = mail(1).replace(b"Message-ID: <m1@example.org>\n", b"")
    assert b"Message-ID" not in raw
    mailbox.append(raw)
    assert sync(store, EmailConnector(settings(mailbox))) == 1
    mailbox.doveadm("mailbox", "update", "-u", USER, "--uid-validity", "777", "INBOX")
    assert sync(store, EmailConnector(settings(mailbox))) == 0


async def _watch_until(store: Store, connector: EmailConnector, wanted: int,
                       action, timeout: float) -> float:
    """Run the daemon's loop for this connector, do `action`, and time until `wanted`
    messages are stored."""
    task = asyncio.create_task(watch_connector(store, connector, OPTIONS, poll_interval=600))
    try:
        await asyncio.sleep(0.8)  # the first pass is done and IDLE is running
        started = time.monotonic()
        await asyncio.to_thread(action)
        while count(store, Message) < wanted:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{count(store, Message)} messages, wanted {wanted}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connector.aclose()


def test_mail_appended_while_idling_arrives_within_two_seconds(store, mailbox) -> None:
    mailbox.append(mail(1))
    connector = EmailConnector(settings(mailbox))  # poll_interval 600 s: only IDLE can do it
    took = asyncio.run(_watch_until(store, connector, 2, lambda: mailbox.append(mail(2)), 2.0))
    assert took < 2.0


def test_a_dovecot_restart_mid_idle_reconnects_and_misses_nothing(store, mailbox) -> None:
    connector = EmailConnector(settings(mailbox))

    def restart_then_append() -> None:
        mailbox.stop()
        mailbox.start()
        mailbox.append(mail(7))

    asyncio.run(_watch_until(store, connector, 1, restart_then_append, 15.0))
    assert provider_ids(store) == ["m7@example.org"]


def test_replies_go_out_over_smtp_threaded_and_the_answer_joins_the_ticket(
    store, mailbox, smtp
) -> None:
    sink, port = smtp
    mailbox.append(mail(1, subject="Broken grinder"))
    mail_settings = settings(mailbox, smtp_port=port, sent_folder="Sent")
    sync(store, EmailConnector(mail_settings))
    with store.session() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
    from desk.cli import main

    config = Path(store.url.removeprefix("sqlite:///")).with_name("config.toml")
    config.write_text(
        "[desk]\nagent = \"alice\"\n\n[[connector]]\nname = \"mail\"\ntype = \"email\"\n"
        f"imap_host = \"127.0.0.1\"\nimap_port = {mailbox.imap_port}\nimap_tls = \"none\"\n"
        f"username = \"{USER}\"\npassword = \"env:DESK_TEST_MAIL_PASSWORD\"\n"
        f"smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_tls = \"none\"\n"
        f"from_address = \"Support <{USER}>\"\nsent_folder = \"Sent\"\n")
    assert main(["--config", str(config), "--db", store.url, "reply", str(ticket_id),
                 "--text", "It ships tomorrow."]) == 0
    assert main(["--config", str(config), "--db", store.url, "sync", "--once"]) == 0
    assert len(sink.messages) == 1
    sent = sink.messages[0]
    assert sent["From"] == f"Support <{USER}>" and sent["To"] == "ana@example.org"
    assert sent["Subject"] == f"Re: Broken grinder [#{ticket_id}]"
    assert sent["In-Reply-To"] == "<m1@example.org>"
    assert sent["References"] == "<m1@example.org>"
    assert sent.get_content().strip() == "It ships tomorrow."
    with store.session() as session:
        reply = session.execute(select(Message).where(Message.direction == "out")).scalar_one()
    assert reply.status == "sent" and f"<{reply.provider_id}>" == sent["Message-ID"]
    client = mailbox.client()
    client.select_folder("Sent")
    assert len(client.search(["HEADER", "Message-ID", sent["Message-ID"]])) == 1
    client.logout()
    # the customer answers our reply, with another subject: threading keeps the ticket
    mailbox.append(mail(2, subject="thanks!", In_Reply_To=sent["Message-ID"],
                        References=f"<m1@example.org> {sent['Message-ID']}"))
    sync(store, EmailConnector(mail_settings))
    with store.session() as session:
        tickets = session.execute(select(Message.ticket_id).where(
            Message.direction == "in")).scalars().all()
    assert tickets == [ticket_id, ticket_id]


def _outbound(text: str = "Hello") -> OutboundMessage:
    return OutboundMessage(message_id=1, to="ana@example.org", text=text, subject="Re: x")


def test_smtp_4xx_is_retried_and_5xx_fails_with_the_servers_reply(mailbox, smtp) -> None:
    sink, port = smtp
    connector = EmailConnector(settings(mailbox, smtp_port=port))
    sink.reply = "451 4.3.0 Try again later"
    with pytest.raises(TransientError, match=re.escape("451 4.3.0 Try again later")):
        asyncio.run(connector.send(_outbound()))
    sink.reply = "550 5.7.1 Relaying denied"
    with pytest.raises(PermanentError, match=re.escape("550 5.7.1 Relaying denied")):
        asyncio.run(connector.send(_outbound()))


def test_an_unreachable_smtp_server_is_retried(mailbox) -> None:
    connector = EmailConnector(settings(mailbox, smtp_port=free_port()))
    with pytest.raises(TransientError, match=re.escape("SMTP 127.0.0.1")):
        asyncio.run(connector.send(_outbound()))


def test_a_refused_send_is_stored_failed_with_the_reason(store, mailbox, smtp) -> None:
    sink, port = smtp
    mailbox.append(mail(1))
    connector = EmailConnector(settings(mailbox, smtp_port=port))
    sync(store, connector)
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        outbox.queue_reply(session, ticket_id, "Hi", agent="alice", channel="email",
                           connectors_by_channel={"email": "mail"})
    sink.reply = "554 5.7.1 Message rejected as spam"
    asyncio.run(deliver_due(store, {"mail": EmailConnector(settings(mailbox,
                                                                    smtp_port=port))}))
    with store.session() as session:
        reply = session.execute(select(Message).where(Message.direction == "out")).scalar_one()
    assert reply.status == "failed" and "554 5.7.1 Message rejected as spam" in reply.error


def test_a_wrong_password_is_named_without_the_password(store, mailbox, monkeypatch) -> None:
    monkeypatch.setenv("DESK_TEST_MAIL_PASSWORD", "hunter2-wrong")
    with pytest.raises(PermanentError) as refused:
        sync(store, EmailConnector(settings(mailbox)))
    assert USER in str(refused.value) and "hunter2-wrong" not in str(refused.value)


CPYTHON_EMAIL_DATA = Path(email.__file__).parent.parent / "test" / "test_email" / "data"


def test_every_cpython_email_test_message_syncs_without_a_crash(store, mailbox) -> None:
    files = sorted(CPYTHON_EMAIL_DATA.glob("msg_*.txt"))
    if not files:
        from peers import missing_peer

        missing_peer(f"CPython's email test data is not installed ({CPYTHON_EMAIL_DATA})")
    raws = [path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for path in files]
    mailbox.append(*raws)
    stored = sync(store, EmailConnector(settings(mailbox, batch_size=500)))
    # Some files are one message twice (same Message-ID): the store keeps one of each.
    from connectors.mime import parse_email

    distinct = {parse_email(raw, connector="mail").provider_id for raw in raws}
    assert stored == count(store, Message) == len(distinct)


def test_sync_once_reports_progress_off_a_terminal(store, mailbox, caplog, tmp_path) -> None:
    import logging

    from desk.cli import main

    mailbox.append(*(mail(n) for n in range(15)))
    config = tmp_path / "config.toml"
    config.write_text(
        "[[connector]]\nname = \"mail\"\ntype = \"email\"\n"
        f"imap_host = \"127.0.0.1\"\nimap_port = {mailbox.imap_port}\nimap_tls = \"none\"\n"
        f"username = \"{USER}\"\npassword = \"env:DESK_TEST_MAIL_PASSWORD\"\n"
        "smtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"\nbatch_size = 10\n"
        f"from_address = \"{USER}\"\n")
    with caplog.at_level(logging.INFO, logger="desk.sync"):
        assert main(["--config", str(config), "--db", store.url, "sync", "--once"]) == 0
    lines = [r.getMessage() for r in caplog.records if "messages read" in r.getMessage()]
    assert [line.split(" (")[0] for line in lines] == [
        "mail: 10 of 15 messages read", "mail: 15 of 15 messages read"]


@pytest.mark.parametrize("tls", ["ssl", "starttls"])
def test_imap_over_tls_checks_the_certificate(store, tls_dovecot, tls) -> None:
    import ssl

    port = tls_dovecot.imaps_port if tls == "ssl" else tls_dovecot.imap_port
    tls_settings = settings(tls_dovecot, imap_tls=tls, imap_port=port)
    raw = mail(1).replace(b"Message-ID: <m1@example.org>", f"Message-ID: <tls-{tls}@x>".encode())
    client = tls_dovecot.client_tls()
    client.append("INBOX", raw)
    client.logout()
    trusted = ssl.create_default_context(cafile=str(tls_dovecot.ca_file))
    assert sync(store, EmailConnector(tls_settings, ssl_context=trusted)) >= 1
    assert f"tls-{tls}@x" in provider_ids(store)
    # The system's trust store does not know this certificate: refused, and said why.
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        sync(store, EmailConnector(tls_settings))


def test_a_reply_left_sending_by_a_crash_is_settled_never_resent_blindly(
    store, mailbox, smtp
) -> None:
    sink, port = smtp
    mailbox.append(mail(1))
    mail_settings = settings(mailbox, smtp_port=port, sent_folder="Sent")
    sync(store, EmailConnector(mail_settings))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        went = outbox.queue_reply(session, ticket_id, "went out", agent="alice",
                                  connectors_by_channel={"email": "mail"})
        lost = outbox.queue_reply(session, ticket_id, "lost?", agent="alice",
                                  connectors_by_channel={"email": "mail"})
    # The first went out (its copy is in Sent) and the daemon died before recording it; the
    # second died somewhere in between too.
    connector = EmailConnector(mail_settings)
    with store.session() as session:
        first = outbox.outbound_of(session.get(Message, went.id))
    mailbox.append(connector.compose(first).as_bytes(), folder="Sent")
    with store.transaction() as session:
        outbox.claim_for_sending(session, went.id)
        outbox.claim_for_sending(session, lost.id)
    asyncio.run(outbox.reconcile_sending(store, {"mail": connector}))
    with store.session() as session:
        settled = session.get(Message, went.id)
        unknown = session.get(Message, lost.id)
    assert settled.status == "sent"
    assert f"<{settled.provider_id}>" == connector.message_id_for(first)
    assert unknown.status == "unknown" and "check, then retry" in unknown.error
    assert sink.messages == []  # nothing was sent again


def test_a_reply_waits_while_the_smtp_server_is_down_and_goes_once_it_is_back(
    store, mailbox
) -> None:
    port = free_port()
    mailbox.append(mail(1))
    mail_settings = settings(mailbox, smtp_port=port)
    sync(store, EmailConnector(mail_settings))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        queued = outbox.queue_reply(session, ticket_id, "back soon", agent="alice",
                                    connectors_by_channel={"email": "mail"})
    report = asyncio.run(deliver_due(store, {"mail": EmailConnector(mail_settings)}))
    assert report.retrying == 1
    with store.session() as session:
        waiting = session.get(Message, queued.id)
    assert waiting.status == "queued" and "SMTP 127.0.0.1" in waiting.error
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()  # the server is back
    try:
        with store.transaction() as session:  # and the backoff has passed
            session.get(Message, queued.id).next_attempt_at = datetime.now(UTC)
        report = asyncio.run(deliver_due(store, {"mail": EmailConnector(mail_settings)}))
        assert report.sent == 1
        asyncio.run(deliver_due(store, {"mail": EmailConnector(mail_settings)}))
    finally:
        controller.stop()
    assert len(sink.messages) == 1  # delivered once
    with store.session() as session:
        assert session.get(Message, queued.id).status == "sent"
