"""Secrets never leak: with distinctive passwords and tokens that every peer refuses, nothing
desk prints, logs, records as an error or writes into the store contains them, in any of the
spellings they travel in (as is, URL-encoded, base64)."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fake_telegram
import fake_twilio
import pytest
from peers import DESK, USER, free_port
from sqlalchemy import select

from desk import outbox
from desk.ingest import ingest
from desk.redact import forget_all, redact, remember
from desk.store import Store

SECRETS = {
    "DESK_LEAK_IMAP": "imap-Pw/leak+7741?",
    "DESK_LEAK_SMTP": "smtp-Pw leak&0934",
    "DESK_LEAK_TWILIO": "twilio-tok-leak-5518",
    # The Bot API puts the token in every URL path: the likeliest one to be logged.
    "DESK_LEAK_TELEGRAM": "8811223344:AAleakTokenXyz",
}
INLINE = "inline-pw-leak-2207"


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret),
            base64.b64encode(secret.encode()).decode().rstrip("=")}


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return [form for secret in [*SECRETS.values(), INLINE] for form in spellings(secret)
            if form.encode() in data]


class RefusingAuthenticator:
    """An SMTP server that refuses every login, as one does for a wrong password."""

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=False, handled=False)


def write_config(path: Path, imap_port: int, smtp_port: int, telegram: str, twilio: str) -> None:
    path.write_text(f"""
[[connector]]
name = "mail"
type = "email"
imap_host = "127.0.0.1"
imap_port = {imap_port}
imap_tls = "none"
username = "{USER}"
password = "env:DESK_LEAK_IMAP"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
smtp_password = "env:DESK_LEAK_SMTP"
from_address = "{USER}"
idle = false

[[connector]]
name = "sms"
type = "twilio"
account_sid = "{fake_twilio.ACCOUNT}"
auth_token = "env:DESK_LEAK_TWILIO"
phone_number = "{fake_twilio.NUMBER}"
api_base = "{twilio}"

[[connector]]
name = "chat"
type = "telegram"
token = "env:DESK_LEAK_TELEGRAM"
api_base = "{telegram}"
""")


async def run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *DESK, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode("utf-8", "replace")


def queue_replies(store: Store, inbound: Any) -> None:
    ingest(store, [inbound(channel="email", sender="jane@example.com"),
                   inbound(channel="sms", sender="+14155550100"),
                   inbound(channel="telegram", sender="424242")])
    with store.transaction() as session:
        for ticket_id, channel in ((1, "email"), (2, "sms"), (3, "telegram")):
            outbox.queue_reply(session, ticket_id, f"an answer on {channel}", agent="alice",
                               channel=channel, connectors_by_channel={
                                   "email": "mail", "sms": "sms", "telegram": "chat"})


@pytest.mark.peer
@pytest.mark.sqlite_only("reads the store's own file for the secrets' bytes")
async def test_no_secret_reaches_output_logs_errors_or_the_store(
    tmp_path: Path, mailbox: Any, inbound: Any
) -> None:
    from aiosmtpd.controller import Controller

    telegram_runner, telegram_base = await fake_telegram.serve(fake_telegram.State())
    twilio_runner, twilio_base = await fake_twilio.serve(fake_twilio.State())
    smtp_port = free_port()
    smtp = Controller(object(), hostname="127.0.0.1", port=smtp_port,
                      authenticator=RefusingAuthenticator(), auth_require_tls=False)
    smtp.start()
    db = tmp_path / "desk.db"
    config = tmp_path / "config.toml"
    write_config(config, mailbox.imap_port, smtp_port, telegram_base, twilio_base)
    store = Store(f"sqlite:///{db}")
    queue_replies(store, inbound)
    store.close()
    env = {**os.environ, **SECRETS}
    base = ["--config", str(config), "--db", str(db)]
    outputs: dict[str, str] = {}
    try:
        for name, args in (
            ("check", ["check", str(config)]),
            ("sync text", [*base, "sync", "--once"]),
            ("sync json", [*base, "sync", "--once", "--log-format", "json"]),
            ("status", [*base, "status", "--json"]),
            ("status text", [*base, "status"]),
            ("export", [*base, "export"]),
            ("tickets", [*base, "tickets", "show", "1", "--events"]),
        ):
            code, outputs[name] = await run(*args, env=env)
            if name == "check":
                assert code == 0, outputs[name]
        inline = tmp_path / "inline.toml"
        inline.write_text(config.read_text().replace('"env:DESK_LEAK_IMAP"', f'"{INLINE}"'))
        code, outputs["check inline"] = await run("check", str(inline), env=env)
        assert code == 1
    finally:
        smtp.stop()
        await telegram_runner.cleanup()
        await twilio_runner.cleanup()

    # Each peer did refuse: the errors are there, and say why without the secret.
    assert "not an inline secret" in outputs["check inline"]
    assert "mail" in outputs["sync text"] and "chat" in outputs["sync text"]
    status = outputs["status"]
    assert '"last_error"' in status and "Authenticat" in status
    assert "Telegram" in status and "refused" in status
    for name, output in outputs.items():
        assert not leaks(output), f"{name} printed a secret: {leaks(output)}"
    store = Store(f"sqlite:///{db}")
    with store.session() as session:
        from desk.models import Message

        errors = {m.channel: m.error for m in session.execute(
            select(Message).where(Message.direction == "out")).scalars()}
    store.close()
    # Every send failed, with the provider's reason.
    assert errors["email"] and "535" in errors["email"], errors
    assert errors["sms"] and "20003" in errors["sms"], errors
    assert errors["telegram"] and "refused" in errors["telegram"], errors
    for path in tmp_path.glob("desk.db*"):
        assert not leaks(path.read_bytes()), f"{path.name} holds a secret"


def test_redact_blanks_every_spelling_of_a_revealed_secret() -> None:
    try:
        remember("p@ss word/1")
        text = ("url https://u:p%40ss%20word%2F1@host/ form p%40ss+word%2F1 raw p@ss word/1 "
                f"b64 {base64.b64encode(b'p@ss word/1').decode().rstrip('=')}")
        assert redact(text) == "url https://u:***@host/ form *** raw *** b64 ***"
        remember("abc")  # too short to blank: it would mangle ordinary words
        assert redact("abc") == "abc"
    finally:
        forget_all()
