"""SMS and MMS through Twilio, on the official `twilio` client.

Inbound is read by polling the Messages list (To = our number, DateSent on or after the cursor)
and, optionally, by Twilio's webhook, checked with `X-Twilio-Signature`. Both give the same
message the same provider id (its SID), so together they store each message once.

Twilio's dates have one-second resolution, so the cursor is the last DateSent read plus the
SIDs already read at that second: `{"date_sent": "2026-03-02T09:00:00+00:00", "sids": [...]}`.
`api_base` replaces the client's `base_url` (its own HTTP layer, no patching): the tests point
it at a local Twilio-shaped server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import httpx
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from connectors.base import (
    Attachment,
    Batch,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    Receipt,
    TransientError,
    aware,
)

log = logging.getLogger(__name__)

BATCH = 200
PAGE_SIZE = 100
MAX_WEBHOOK_BODY = 64 * 1024  # a Twilio form post is a few KB
# Twilio's delivery states as desk's: it keeps "sent" until the carrier says more.
DELIVERY = {"queued": "sent", "accepted": "sent", "scheduled": "sent", "sending": "sent",
            "sent": "sent", "delivered": "delivered", "undelivered": "failed",
            "failed": "failed", "canceled": "failed"}

InboundHandler = Callable[[InboundMessage], Awaitable[None]]
StatusHandler = Callable[[str, str, str | None], Awaitable[None]]  # sid, desk status, error


class TwilioConnector:
    channel = "sms"

    def __init__(self, settings: Any, *, batch: int = BATCH, page_size: int = PAGE_SIZE) -> None:
        self.settings = settings
        self.name: str = settings.name
        self.batch = batch
        self.page_size = page_size
        self.number: str = settings.phone_number
        self._token = settings.auth_token.reveal()
        self.client = Client(settings.account_sid, self._token)
        self.client.api.base_url = settings.api_base.rstrip("/")

    # ---- inbound by polling ---------------------------------------------------------------

    async def fetch(self, cursor: Mapping[str, Any] | None) -> AsyncIterator[Batch]:
        since = _parse_time((cursor or {}).get("date_sent"))
        seen = set((cursor or {}).get("sids", []))
        records = await self._rest(self._list_since, since)
        fresh = sorted(
            (r for r in records
             if r.direction == "inbound" and not (_second(r) == since and r.sid in seen)
             and (since is None or _second(r) >= since)),
            key=lambda r: (_second(r), r.sid),
        )
        for start in range(0, len(fresh), self.batch):
            chunk = fresh[start : start + self.batch]
            messages = [await self._inbound(record) for record in chunk]
            last = _second(chunk[-1])
            if last != since:
                since, seen = last, set()
            seen |= {r.sid for r in chunk if _second(r) == last}
            yield Batch(messages, {"date_sent": last.isoformat(), "sids": sorted(seen)})

    def _list_since(self, since: datetime | None) -> list[Any]:
        # The filter is "on or after": the second of the cursor comes again, minus its SIDs.
        return list(self.client.messages.stream(to=self.number, date_sent_after=since,
                                                page_size=self.page_size))

    async def _inbound(self, record: Any) -> InboundMessage:
        attachments: list[Attachment] = []
        notes: list[str] = []
        if int(record.num_media or 0):
            attachments, notes = await self._media(record.sid)
        text = _with_notes(record.body or "", notes)
        return InboundMessage(
            connector=self.name, channel="sms", provider_id=record.sid,
            sender=record.from_, recipients=[record.to], text=text,
            sent_at=aware(record.date_sent or record.date_created),
            attachments=attachments,
        )

    async def _media(self, message_sid: str) -> tuple[list[Attachment], list[str]]:
        items = await self._rest(lambda: list(self.client.messages(message_sid).media.list()))
        attachments, notes = [], []
        async with httpx.AsyncClient(auth=(self.settings.account_sid, self._token),
                                     follow_redirects=True, timeout=60) as http:
            for item in items:
                url = urljoin(self.client.api.base_url + "/", item.uri.removesuffix(".json"))
                try:
                    response = await http.get(url)
                    response.raise_for_status()
                except httpx.HTTPError as error:
                    notes.append(f"[media {item.sid} could not be downloaded: "
                                 f"{type(error).__name__}]")
                    continue
                content_type = item.content_type or response.headers.get(
                    "content-type", "application/octet-stream")
                extension = content_type.partition("/")[2].split(";")[0] or "bin"
                attachments.append(Attachment(filename=f"{item.sid}.{extension}",
                                              content_type=content_type, data=response.content))
        return attachments, notes

    # ---- inbound by webhook ---------------------------------------------------------------

    async def serve_webhook(self, on_message: InboundHandler,
                            on_status: StatusHandler | None = None) -> None:
        """Listen on `webhook_listen` until cancelled. Twilio's form posts are accepted only
        with a valid `X-Twilio-Signature` for `webhook_url`; anything else gets 403."""
        from aiohttp import web

        validator = RequestValidator(self._token)
        public_url = str(self.settings.webhook_url)
        host, _, port = self.settings.webhook_listen.rpartition(":")

        async def hook(request: web.Request) -> web.Response:
            form = await request.post()
            signature = request.headers.get("X-Twilio-Signature", "")
            if not signature or not validator.validate(public_url, form, signature):
                log.warning("%s: webhook request refused: bad or missing signature", self.name)
                return web.Response(status=403, text="invalid signature")
            if form.get("AccountSid") != self.settings.account_sid:
                return web.Response(status=403, text="wrong account")
            status = form.get("MessageStatus") or form.get("SmsStatus")
            if form.get("Body") is None and status and on_status is not None:
                await on_status(str(form.get("MessageSid")), DELIVERY.get(str(status), "sent"),
                                _error_text(form.get("ErrorCode"), form.get("ErrorMessage")))
            elif form.get("Body") is not None:
                if not form.get("MessageSid") or not form.get("From"):
                    # Signed, yet not a message Twilio documents: stored under a made-up id it
                    # would hide the next such post as a duplicate. Polling still reads it.
                    return web.Response(status=400, text="MessageSid and From are required")
                await on_message(await self._from_form(form))
            return web.Response(text="<Response/>", content_type="text/xml")

        app = web.Application(client_max_size=MAX_WEBHOOK_BODY)
        path = httpx.URL(public_url).path or "/"
        app.router.add_post(path, hook)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
        await site.start()
        self.webhook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    webhook_port: int | None = None  # where the webhook listens, once started

    async def _from_form(self, form: Mapping[str, Any]) -> InboundMessage:
        sid = str(form.get("MessageSid"))
        attachments: list[Attachment] = []
        notes: list[str] = []
        if str(form.get("NumMedia") or "0").strip() not in ("", "0"):
            attachments, notes = await self._media(sid)
        text = _with_notes(str(form.get("Body") or ""), notes)
        return InboundMessage(
            connector=self.name, channel="sms", provider_id=sid,
            sender=str(form.get("From")), recipients=[str(form.get("To"))], text=text,
            sent_at=datetime.now(UTC), attachments=attachments,
        )

    # ---- outbound -------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        sent = await self._rest(lambda: self.client.messages.create(
            to=message.to, from_=self.number, body=message.text))
        return Receipt(provider_id=sent.sid, status=DELIVERY.get(sent.status, "sent"),
                       sent_at=aware(sent.date_created) or datetime.now(UTC))

    async def reconcile(self, message: OutboundMessage) -> Receipt | None:
        """After a crash mid-send: did Twilio create this message? Looked up among the messages
        from our number to theirs with the same body; None when Twilio has none (safe to send)."""
        records = await self._rest(lambda: list(self.client.messages.stream(
            to=message.to, from_=self.number, page_size=self.page_size, limit=200)))
        for record in records:
            if record.direction != "inbound" and (record.body or "") == message.text:
                return Receipt(provider_id=record.sid, status=DELIVERY.get(record.status, "sent"),
                               sent_at=aware(record.date_created))
        return None

    async def delivery(self, sid: str) -> tuple[str, str | None]:
        """Where Twilio's delivery of a sent message stands: (desk status, error or None)."""
        record = await self._rest(lambda: self.client.messages(sid).fetch())
        return (DELIVERY.get(record.status, "sent"),
                _error_text(record.error_code, record.error_message))

    async def _rest(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(call, *args)
        except TwilioRestException as error:
            raise _refusal(error.status, error.code, error.msg) from None
        except TwilioException as error:
            # Paging wraps the answer: ("Unable to fetch page", <Response 401 {...}>).
            answer = next((a for a in error.args if hasattr(a, "status_code")), None)
            if answer is not None:
                try:
                    body = json.loads(answer.text)
                except (TypeError, ValueError):
                    body = {}
                raise _refusal(answer.status_code, body.get("code"),
                               body.get("message") or str(error.args[0])) from None
            raise TransientError(f"Twilio: {error}") from None
        except OSError as error:
            raise TransientError(f"Twilio: {type(error).__name__}: {error}") from None
        except Exception as error:  # requests' connection errors and the like
            if type(error).__module__.startswith(("requests", "urllib3")):
                raise TransientError(f"Twilio: {type(error).__name__}") from None
            raise

    async def aclose(self) -> None:
        return None


def _refusal(status: int, code: Any, message: str) -> TransientError | PermanentError:
    """Twilio's answer as desk's error: "code: message" (the client prefixes its own words,
    such as "Unable to create record: ", which say nothing the agent needs)."""
    reason = re.sub(r"^Unable to [^:]+: ", "", (message or "").strip()) or "Twilio refused"
    code_text = str(code or status)
    if status == 429 or status >= 500:
        return TransientError(reason, code=code_text)
    return PermanentError(reason, code=code_text)


def _with_notes(text: str, notes: list[str]) -> str:
    """The message's text, then a line per media that could not be kept."""
    return "\n".join([text, *notes] if text else notes)


def _error_text(code: Any, message: Any) -> str | None:
    if not code and not message:
        return None
    return f"Twilio {code}: {message or ''}".strip()


def _second(record: Any) -> datetime:
    moment = aware(record.date_sent or record.date_created) or datetime.now(UTC)
    return moment.replace(microsecond=0)



def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def from_settings(settings: Any) -> TwilioConnector:
    return TwilioConnector(settings)
