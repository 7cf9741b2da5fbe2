"""The SMS connector: the real `twilio` client against a local Twilio-shaped server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from conftest import count
from fake_twilio import ACCOUNT, NUMBER, TOKEN, State, serve
from peers import free_port
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from connectors.sms import TwilioConnector
from desk import outbox
from desk.config import TwilioConnectorSettings
from desk.ingest import IngestOptions, ingest
from desk.models import Attachment, Identity, Message, Ticket
from desk.store import Store
from desk.sync import fetch_into_store, webhook_handlers

OPTIONS = IngestOptions()
T = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
PUBLIC_URL = "https://desk.example.test/hooks/twilio"


@pytest.fixture
async def twilio_api() -> AsyncIterator[tuple[State, str]]:
    state = State()
    runner, api_base = await serve(state)
    yield state, api_base
    await runner.cleanup()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESK_TEST_TWILIO_TOKEN", TOKEN)


def connector(api_base: str, **changes: object) -> TwilioConnector:
    settings = TwilioConnectorSettings.model_validate({
        "name": "sms", "type": "twilio", "account_sid": ACCOUNT,
        "auth_token": "env:DESK_TEST_TWILIO_TOKEN", "phone_number": NUMBER,
        "api_base": api_base, **changes})
    return TwilioConnector(settings, batch=3, page_size=2)


async def sync(store: Store, sms: TwilioConnector) -> int:
    return (await fetch_into_store(store, sms, OPTIONS)).stored


def bodies(store: Store) -> list[str]:
    with store.session() as session:
        return sorted(session.execute(select(Message.text)).scalars())


async def test_polling_pages_through_and_stores_each_message_once(store, twilio_api) -> None:
    state, api_base = twilio_api
    for n in range(7):  # three of them in the same second
        state.inbound("+33612345678", f"message {n}", T + timedelta(seconds=min(n, 4)))
    state.messages.append({**state.messages[0], "sid": state.sid(), "to": "+15550009999",
                           "body": "to another number"})
    assert await sync(store, connector(api_base)) == 7
    assert bodies(store) == [f"message {n}" for n in range(7)]
    # more arrive, one of them in the very second of the cursor
    state.inbound("+33612345678", "late in the same second", T + timedelta(seconds=4))
    state.inbound("+33612345678", "later", T + timedelta(seconds=9))
    assert await sync(store, connector(api_base)) == 2
    assert await sync(store, connector(api_base)) == 0
    assert count(store, Message) == 9


async def test_a_restart_mid_sync_loses_and_doubles_nothing(store, twilio_api) -> None:
    state, api_base = twilio_api
    for n in range(8):
        state.inbound("+33612345678", f"m{n}", T + timedelta(seconds=n // 3))
    first = connector(api_base)
    async for batch in first.fetch(None):  # one batch of 3 stored, then the daemon dies
        await asyncio.to_thread(ingest, store, batch.messages, connector="sms",
                                cursor=batch.cursor)
        break
    assert count(store, Message) == 3
    assert await sync(store, connector(api_base)) == 5
    assert bodies(store) == [f"m{n}" for n in range(8)]


async def test_numbers_are_e164_and_one_customer_with_other_channels(store, twilio_api) -> None:
    state, api_base = twilio_api
    state.inbound("+33612345678", "hello", T)
    await sync(store, connector(api_base))
    with store.session() as session:
        identity = session.execute(select(Identity)).scalar_one()
    assert (identity.kind, identity.value) == ("phone", "+33612345678")


async def test_an_mms_image_is_stored_as_an_attachment(store, twilio_api) -> None:
    state, api_base = twilio_api
    image = bytes(range(200)) * 50
    state.inbound("+33612345678", "the broken part", T, media=[("image/jpeg", image)])
    await sync(store, connector(api_base))
    with store.session() as session:
        stored = session.execute(select(Attachment)).scalar_one()
    assert stored.size == len(image) and stored.content_type == "image/jpeg"
    assert stored.sha256 == hashlib.sha256(image).hexdigest()


async def queue(store: Store, state: State, api_base: str) -> int:
    state.inbound("+33612345678", "hi", T)
    await sync(store, connector(api_base))
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        return outbox.queue_reply(session, ticket_id, "Hello from desk", agent="alice").id


def reply(store: Store, message_id: int) -> Message:
    with store.session() as session:
        return session.get(Message, message_id)


async def test_a_reply_is_created_and_its_delivery_followed(store, twilio_api) -> None:
    state, api_base = twilio_api
    message_id = await queue(store, state, api_base)
    sms = connector(api_base)
    assert (await outbox.deliver_due(store, {"sms": sms})).sent == 1
    created = state.created[0]
    assert (created["to"], created["from"], created["body"]) == (
        "+33612345678", NUMBER, "Hello from desk")
    assert reply(store, message_id).status == "sent"
    assert reply(store, message_id).provider_id == created["sid"]
    created["status"] = "delivered"
    assert await outbox.follow_deliveries(store, {"sms": sms}) == 1
    assert reply(store, message_id).status == "delivered"


async def test_an_undelivered_message_shows_twilios_code_and_message(store, twilio_api) -> None:
    state, api_base = twilio_api
    message_id = await queue(store, state, api_base)
    sms = connector(api_base)
    await outbox.deliver_due(store, {"sms": sms})
    state.created[0].update(status="undelivered", error_code=30003,
                            error_message="Unreachable destination handset")
    await outbox.follow_deliveries(store, {"sms": sms})
    failed = reply(store, message_id)
    assert failed.status == "failed"
    assert failed.error == "Twilio 30003: Unreachable destination handset"


async def test_an_invalid_number_fails_with_its_message(store, twilio_api) -> None:
    state, api_base = twilio_api
    message_id = await queue(store, state, api_base)
    state.create_errors.append(
        (400, 21211, "The 'To' number +33612345678 is not a valid phone number."))
    await outbox.deliver_due(store, {"sms": connector(api_base)})
    failed = reply(store, message_id)
    assert failed.status == "failed"
    assert failed.error == "21211: The 'To' number +33612345678 is not a valid phone number."


async def test_429_is_retried_then_succeeds(store, twilio_api) -> None:
    state, api_base = twilio_api
    message_id = await queue(store, state, api_base)
    state.create_errors.append((429, 20429, "Too Many Requests"))
    sms = connector(api_base)
    report = await outbox.deliver_due(store, {"sms": sms})
    assert report.retrying == 1 and reply(store, message_id).status == "queued"
    with store.transaction() as session:  # its backoff has passed
        session.get(Message, message_id).next_attempt_at = datetime.now(UTC)
    assert (await outbox.deliver_due(store, {"sms": sms})).sent == 1
    assert reply(store, message_id).status == "sent" and len(state.created) == 1


async def _webhook(store: Store, api_base: str):
    port = free_port()
    sms = connector(api_base, webhook_listen=f"127.0.0.1:{port}", webhook_url=PUBLIC_URL)
    task = asyncio.create_task(sms.serve_webhook(*webhook_handlers(store, "sms", OPTIONS)))
    for _ in range(100):
        if sms.webhook_port:
            break
        await asyncio.sleep(0.02)
    return task, f"http://127.0.0.1:{port}/hooks/twilio"


def form(sid: str, body: str = "by webhook") -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": ACCOUNT, "From": "+33612345678", "To": NUMBER,
            "Body": body, "NumMedia": "0", "SmsStatus": "received", "ApiVersion": "2010-04-01"}


async def test_the_webhook_accepts_only_twilios_signature(store, twilio_api) -> None:
    state, api_base = twilio_api
    task, url = await _webhook(store, api_base)
    signer = RequestValidator(TOKEN)
    try:
        async with aiohttp.ClientSession() as http:
            good = form(state.sid())
            signature = signer.compute_signature(PUBLIC_URL, good)
            async with http.post(url, data=good,
                                 headers={"X-Twilio-Signature": signature}) as answer:
                assert answer.status == 200
            forged = form(state.sid(), "forged")
            async with http.post(url, data=forged,
                                 headers={"X-Twilio-Signature": signature}) as answer:
                assert answer.status == 403
            async with http.post(url, data=form(state.sid(), "unsigned")) as answer:
                assert answer.status == 403
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert bodies(store) == ["by webhook"]


async def test_the_webhook_refuses_a_large_body_and_listens_only_where_told(
    store, twilio_api
) -> None:
    state, api_base = twilio_api
    task, url = await _webhook(store, api_base)
    try:
        # Correctly signed, so only its size is refused.
        big = form(state.sid(), "x" * 70_000)
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL, big)
        async with aiohttp.ClientSession() as http, http.post(
            url, data=big, headers={"X-Twilio-Signature": signature}
        ) as answer:
            assert answer.status == 413
        # Signed, but no MessageSid: not stored under a made-up id.
        nameless = {k: v for k, v in form(state.sid(), "who am I").items() if k != "MessageSid"}
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL, nameless)
        async with aiohttp.ClientSession() as http, http.post(
            url, data=nameless, headers={"X-Twilio-Signature": signature}
        ) as answer:
            assert answer.status == 400
        # 127.0.0.2 is this machine too, but not the address webhook_listen names.
        port = int(url.split(":")[2].split("/")[0])
        with pytest.raises(OSError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.2", port), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert count(store, Message) == 0  # nothing stored for a refused request


async def test_the_same_sid_by_webhook_and_polling_is_stored_once(store, twilio_api) -> None:
    state, api_base = twilio_api
    record = state.inbound("+33612345678", "both ways", T)
    task, url = await _webhook(store, api_base)
    try:
        params = form(record["sid"], "both ways")
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL, params)
        async with aiohttp.ClientSession() as http, http.post(
            url, data=params, headers={"X-Twilio-Signature": signature}
        ) as answer:
            assert answer.status == 200
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await sync(store, connector(api_base)) == 0
    assert count(store, Message) == 1


async def test_a_wrong_token_is_a_clear_error_without_the_token(store, twilio_api,
                                                              monkeypatch) -> None:
    _state, api_base = twilio_api
    monkeypatch.setenv("DESK_TEST_TWILIO_TOKEN", "nope-wrong-token")
    from connectors.base import PermanentError

    with pytest.raises(PermanentError) as refused:
        await sync(store, connector(api_base))
    assert "nope-wrong-token" not in str(refused.value) and refused.value.code == "20003"


async def test_a_signed_delivery_report_updates_the_reply(store, twilio_api) -> None:
    state, api_base = twilio_api
    message_id = await queue(store, state, api_base)
    await outbox.deliver_due(store, {"sms": connector(api_base)})
    sid = reply(store, message_id).provider_id
    task, url = await _webhook(store, api_base)
    report = {"MessageSid": sid, "AccountSid": ACCOUNT, "MessageStatus": "undelivered",
              "ErrorCode": "30005", "ErrorMessage": "Unknown destination handset",
              "To": "+33612345678", "From": NUMBER, "ApiVersion": "2010-04-01"}
    try:
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL, report)
        async with aiohttp.ClientSession() as http, http.post(
            url, data=report, headers={"X-Twilio-Signature": signature}
        ) as answer:
            assert answer.status == 200
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failed = reply(store, message_id)
    assert failed.status == "failed"
    assert failed.error == "Twilio 30005: Unknown destination handset"


async def test_a_reply_left_sending_by_a_crash_is_looked_up_at_twilio(store, twilio_api) -> None:
    state, api_base = twilio_api
    created_before_crash = await queue(store, state, api_base)
    with store.transaction() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        never_created = outbox.queue_reply(session, ticket_id, "second", agent="alice").id
        outbox.claim_for_sending(session, created_before_crash)
        outbox.claim_for_sending(session, never_created)
    # Twilio created the first one; the daemon died before hearing back.
    from fake_twilio import _record

    record = _record(state.sid(), NUMBER, "+33612345678", "Hello from desk", "sent",
                     "outbound-api", datetime.now(UTC))
    state.messages.append(record)
    await outbox.reconcile_sending(store, {"sms": connector(api_base)})
    assert reply(store, created_before_crash).status == "sent"
    assert reply(store, created_before_crash).provider_id == record["sid"]
    assert reply(store, never_created).status == "queued"  # Twilio has no such message
    assert state.created == []
