"""The Telegram connector: the real python-telegram-bot against a local Bot API server."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from conftest import count
from fake_telegram import TOKEN, State, serve
from sqlalchemy import select

from connectors.base import InboundMessage, OutboundMessage, PermanentError, TransientError
from connectors.telegram import TelegramConnector, split_text
from desk import outbox
from desk.config import TelegramConnectorSettings
from desk.ingest import IngestOptions, ingest
from desk.models import Attachment, Customer, Event, Identity, Message, Ticket
from desk.store import Store
from desk.sync import fetch_into_store, watch_connector
from desk.timeutil import utcnow

OPTIONS = IngestOptions()
ANA = {"id": 777001, "is_bot": False, "first_name": "Ana", "last_name": "Lima",
       "username": "ana_l"}


@pytest.fixture
async def bot_api() -> AsyncIterator[tuple[State, str]]:
    state = State()
    runner, api_base = await serve(state)
    yield state, api_base
    await runner.cleanup()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESK_TEST_TELEGRAM_TOKEN", TOKEN)


def connector(api_base: str, **changes: object) -> TelegramConnector:
    settings = TelegramConnectorSettings.model_validate({
        "name": "chat", "type": "telegram", "token": "env:DESK_TEST_TELEGRAM_TOKEN",
        "api_base": api_base, **changes})
    return TelegramConnector(settings, batch=2)


async def sync(store: Store, bot: TelegramConnector) -> int:
    try:
        return (await fetch_into_store(store, bot, OPTIONS)).stored
    finally:
        await bot.aclose()


def texts(store: Store) -> list[str]:
    with store.session() as session:
        return list(session.execute(select(Message.text).order_by(Message.id)).scalars())


async def test_updates_are_stored_once_with_the_user_as_identity(store, bot_api) -> None:
    state, api_base = bot_api
    for text in ("Hi", "my order?", "hello??"):
        await state.push(state.message(ANA, text))
    assert await sync(store, connector(api_base)) == 3
    assert await sync(store, connector(api_base)) == 0
    assert texts(store) == ["Hi", "my order?", "hello??"]
    with store.session() as session:
        identity = session.execute(select(Identity)).scalar_one()
        customer = session.get(Customer, identity.customer_id)
    assert (identity.kind, identity.value) == ("telegram", "777001")
    assert customer.name == "Ana Lima"
    assert state.confirmed_up_to == 1002  # the server was told they are stored


async def test_a_restart_between_batches_loses_and_doubles_nothing(store, bot_api) -> None:
    state, api_base = bot_api
    for n in range(5):
        await state.push(state.message(ANA, f"message {n}"))
    first = connector(api_base)
    async for batch in first.fetch(None):  # one batch of 2 stored, then the daemon dies
        await asyncio.to_thread(ingest, store, batch.messages, connector="chat",
                                cursor=batch.cursor)
        break
    await first.aclose()
    assert count(store, Message) == 2
    assert await sync(store, connector(api_base)) == 3
    assert texts(store) == [f"message {n}" for n in range(5)]


async def test_updates_arrive_within_two_seconds_while_the_daemon_waits(store, bot_api) -> None:
    state, api_base = bot_api
    bot = connector(api_base)
    loop = asyncio.create_task(watch_connector(store, bot, OPTIONS, poll_interval=0))
    try:
        await asyncio.sleep(0.5)  # the daemon is now in a long poll
        started = time.monotonic()
        await state.push(state.message(ANA, "are you there?"))
        while count(store, Message) < 1:
            assert time.monotonic() - started < 2.0, "not stored within 2 s"
            await asyncio.sleep(0.02)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await bot.aclose()


async def test_a_contact_of_themselves_merges_the_sms_customer(store, bot_api) -> None:
    state, api_base = bot_api
    ingest(store, [InboundMessage(connector="sms", channel="sms", provider_id="SM1",
                                  sender="+33612345678", text="Hello by SMS",
                                  sent_at=utcnow() - timedelta(hours=1))])
    contact = {"phone_number": "33612345678", "first_name": "Ana", "user_id": ANA["id"]}
    await state.push(state.message(ANA, None, contact=contact))
    # someone else's contact proves nothing about the sender
    other = {"phone_number": "+33699999999", "first_name": "Bob", "user_id": 4242}
    await state.push(state.message(ANA, None, contact=other))
    await sync(store, connector(api_base))
    with store.session() as session:
        live = session.execute(select(Customer).where(Customer.merged_into.is_(None))).all()
        identities = {(i.kind, i.value) for i in session.execute(select(Identity)).scalars()}
        customers = set(session.execute(select(Message.customer_id)).scalars())
    assert len(live) == 1 and len(customers) == 1  # one customer, one timeline
    assert identities == {("phone", "+33612345678"), ("telegram", "777001")}


async def test_an_edit_updates_the_text_and_leaves_an_event(store, bot_api) -> None:
    state, api_base = bot_api
    original = state.message(ANA, "my ordr is late")
    await state.push(original)
    await sync(store, connector(api_base))
    await state.push({**original, "text": "my order is late", "edit_date": int(time.time())},
                     edited=True)
    await sync(store, connector(api_base))
    assert texts(store) == ["my order is late"]
    with store.session() as session:
        kinds = list(session.execute(select(Event.kind)).scalars())
    assert any("edit" in kind for kind in kinds)


async def test_a_photo_is_stored_as_an_attachment_with_its_size_and_hash(store, bot_api) -> None:
    state, api_base = bot_api
    photo = bytes(range(256)) * 300
    state.files["big-photo"] = photo
    state.files["small-photo"] = b"tiny"
    sizes = [{"file_id": "small-photo", "file_unique_id": "s1", "width": 90, "height": 90,
              "file_size": 4},
             {"file_id": "big-photo", "file_unique_id": "b1", "width": 800, "height": 600,
              "file_size": len(photo)}]
    await state.push(state.message(ANA, None, photo=sizes, caption="the broken part"))
    await sync(store, connector(api_base))
    with store.session() as session:
        stored = session.execute(select(Attachment)).scalar_one()
        message = session.execute(select(Message)).scalar_one()
    assert message.text == "the broken part"
    assert stored.size == len(photo) == 76_800
    assert stored.sha256 == hashlib.sha256(photo).hexdigest()
    assert stored.content_type == "image/jpeg"


async def test_group_chats_are_ignored_unless_allowed(store, bot_api) -> None:
    state, api_base = bot_api
    group = {"id": -100123, "type": "supergroup", "title": "Fans"}
    await state.push(state.message(ANA, "hi all", chat=group))
    assert await sync(store, connector(api_base)) == 0
    await state.push(state.message(ANA, "hi again", chat=group))
    assert await sync(store, connector(api_base, allow_groups=True)) == 1


async def test_a_reply_is_sent_to_the_chat_and_stored_as_sent(store, bot_api) -> None:
    state, api_base = bot_api
    await state.push(state.message(ANA, "where is my parcel?"))
    await sync(store, connector(api_base))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        outbox.queue_reply(session, ticket_id, "It left today.", agent="alice")
    report = await outbox.deliver_due(store, {"chat": connector(api_base)})
    assert report.sent == 1
    assert [(m["chat"]["id"], m["text"]) for m in state.sent] == [(777001, "It left today.")]
    with store.session() as session:
        reply = session.execute(select(Message).where(Message.direction == "out")).scalar_one()
    assert reply.status == "sent"
    assert reply.provider_id == f"777001:{state.sent[0]['message_id']}"


async def test_a_second_answer_quotes_the_customers_message(store, bot_api) -> None:
    state, api_base = bot_api
    question = state.message(ANA, "two questions: price? delivery?")
    await state.push(question)
    await sync(store, connector(api_base))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        outbox.queue_reply(session, ticket_id, "Price: 20 EUR.", agent="alice")
    await outbox.deliver_due(store, {"chat": connector(api_base)})
    with store.transaction() as session:
        outbox.queue_reply(session, ticket_id, "Delivery: 2 days.", agent="alice")
    await outbox.deliver_due(store, {"chat": connector(api_base)})
    first, second = state.sent
    assert "reply_to_message" not in first  # right under her question: no quote needed
    assert second["reply_to_message"]["message_id"] == question["message_id"]


async def test_long_text_is_split_under_the_limit_at_boundaries(bot_api) -> None:
    state, api_base = bot_api
    text = "\n\n".join(f"Paragraph {n}. " + "word " * 300 for n in range(6))
    bot = connector(api_base)
    await bot.send(OutboundMessage(message_id=1, to="777001", text=text))
    await bot.aclose()
    parts = [m["text"] for m in state.sent]
    assert len(parts) > 1 and all(len(part) <= 4096 for part in parts)
    assert all(part.startswith("Paragraph") for part in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    assert split_text("short") == ["short"]


async def test_flood_control_is_retried_after_retry_after(store, bot_api) -> None:
    state, api_base = bot_api
    state.send_errors.append({"error_code": 429, "description": "Too Many Requests: retry "
                              "after 37", "parameters": {"retry_after": 37}})
    bot = connector(api_base)
    with pytest.raises(TransientError) as flood:
        await bot.send(OutboundMessage(message_id=1, to="777001", text="hi"))
    await bot.aclose()
    assert flood.value.retry_after == 37
    # through the outbox: the reply waits at least that long before the next attempt
    await state.push(state.message(ANA, "hello"))
    await sync(store, connector(api_base))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        queued = outbox.queue_reply(session, ticket_id, "Hi Ana", agent="alice")
    state.send_errors.append({"error_code": 429, "description": "Too Many Requests",
                              "parameters": {"retry_after": 37}})
    before = utcnow()
    await outbox.deliver_due(store, {"chat": connector(api_base)})
    with store.session() as session:
        reply = session.get(Message, queued.id)
    assert reply.status == "queued" and reply.attempts == 1
    assert reply.next_attempt_at >= before + timedelta(seconds=37)


async def test_a_blocked_bot_fails_the_reply_with_the_reason(store, bot_api) -> None:
    state, api_base = bot_api
    await state.push(state.message(ANA, "hello"))
    await sync(store, connector(api_base))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        outbox.queue_reply(session, ticket_id, "Hi Ana", agent="alice")
    state.send_errors.append({"error_code": 403,
                              "description": "Forbidden: bot was blocked by the user"})
    await outbox.deliver_due(store, {"chat": connector(api_base)})
    with store.session() as session:
        reply = session.execute(select(Message).where(Message.direction == "out")).scalar_one()
    assert reply.status == "failed"
    assert "Forbidden: bot was blocked by the user" in reply.error


async def test_a_wrong_token_is_a_clear_permanent_error(store, bot_api, monkeypatch) -> None:
    _state, api_base = bot_api
    monkeypatch.setenv("DESK_TEST_TELEGRAM_TOKEN", "999:wrong")
    with pytest.raises(PermanentError, match="token was refused") as refused:
        await sync(store, connector(api_base))
    assert "999:wrong" not in str(refused.value)


async def test_a_reply_left_sending_by_a_crash_becomes_unknown(store, bot_api) -> None:
    state, api_base = bot_api
    await state.push(state.message(ANA, "hello"))
    await sync(store, connector(api_base))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        queued = outbox.queue_reply(session, ticket_id, "Hi", agent="alice")
        outbox.claim_for_sending(session, queued.id)
    await outbox.reconcile_sending(store, {"chat": connector(api_base)})
    with store.session() as session:
        left = session.get(Message, queued.id)
    assert left.status == "unknown" and "check the chat, then retry" in left.error
    assert state.sent == []


async def test_a_connector_failing_every_time_leaves_the_others_working(
    store, bot_api, tmp_path, capsys
) -> None:
    import json

    from peers import free_port

    from desk.cli import main
    from desk.config import load_config
    from desk.sync import run_once

    state, api_base = bot_api
    await state.push(state.message(ANA, "still reachable?"))
    config = tmp_path / "config.toml"
    config.write_text(
        "[[connector]]\nname = \"mail\"\ntype = \"email\"\nimap_host = \"127.0.0.1\"\n"
        f"imap_port = {free_port()}\nimap_tls = \"none\"\nusername = \"s@example.test\"\n"
        "password = \"env:DESK_TEST_TELEGRAM_TOKEN\"\nsmtp_host = \"127.0.0.1\"\n"
        "smtp_tls = \"none\"\nfrom_address = \"s@example.test\"\n\n"
        "[[connector]]\nname = \"chat\"\ntype = \"telegram\"\n"
        f"token = \"env:DESK_TEST_TELEGRAM_TOKEN\"\napi_base = \"{api_base}\"\n")
    settings = load_config(config)
    for _ in range(2):  # twice: it fails every time, the other works every time
        report = await run_once(store, settings)
        assert "mail" in report.errors and "chat" not in report.errors
    assert texts(store) == ["still reachable?"]
    assert await asyncio.to_thread(
        main, ["--config", str(config), "--db", store.url, "status", "--json"]) == 0
    status = {c["name"]: c for c in json.loads(capsys.readouterr().out)["connectors"]}
    assert "IMAP 127.0.0.1" in status["mail"]["last_error"]
    assert status["chat"]["last_error"] is None and status["chat"]["last_success"]
