"""Telegram: a bot's private chats through the Bot API, on python-telegram-bot.

Inbound is `getUpdates` long polling. The cursor is the next update offset, stored with the
messages of the batch that reached it; the server forgets updates only when a later call
passes that offset, which happens after the batch is stored — so a crash loses and doubles
nothing. `api_base` points the bot at another Bot API server (`base_url`/`base_file_url`).
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import warnings
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from telegram import Bot, Message, ReplyParameters, Update
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from connectors.base import (
    Attachment,
    Batch,
    DeliveryUnknown,
    IdentityEvidence,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    Receipt,
    TransientError,
    aware,
)

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096
BATCH = 100
LONG_POLL_SECONDS = 25
UPDATES = ["message", "edited_message"]
# Telegram's largest download through the Bot API is 20 MB; bigger files stay a note.
MAX_DOWNLOAD = 20 * 1024 * 1024


class TelegramConnector:
    channel = "telegram"

    def __init__(self, settings: Any, *, batch: int = BATCH) -> None:
        self.settings = settings
        self.name: str = settings.name
        self.batch = batch
        base = settings.api_base.rstrip("/")
        self.bot = Bot(
            settings.token.reveal(),
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            # Long polls hold a connection for LONG_POLL_SECONDS: give reads room beyond it.
            get_updates_request=HTTPXRequest(read_timeout=LONG_POLL_SECONDS + 10),
        )
        self._offset: int | None = None  # the cursor's offset, for `wait`
        self._ready = False

    # ---- inbound --------------------------------------------------------------------------

    async def fetch(self, cursor: Mapping[str, Any] | None) -> AsyncIterator[Batch]:
        offset = int((cursor or {}).get("offset", 0)) or None
        while True:
            updates = await self._call(self.bot.get_updates, offset=offset, timeout=0,
                                       limit=self.batch, allowed_updates=UPDATES)
            if not updates:
                self._offset = offset
                return
            messages = [m for u in updates if (m := await self._inbound(u)) is not None]
            offset = updates[-1].update_id + 1
            self._offset = offset
            # The next getUpdates (with this offset) runs only after the caller has stored
            # this batch with its cursor: that call is what makes the server forget them.
            yield Batch(messages, {"offset": offset})

    async def wait(self, timeout: float) -> None:
        """Long-poll until an update is waiting (or the poll times out). It passes the stored
        offset, so it confirms nothing new."""
        seconds = int(timeout) if 0 < timeout < LONG_POLL_SECONDS else LONG_POLL_SECONDS
        await self._call(self.bot.get_updates, offset=self._offset, timeout=seconds, limit=1,
                         allowed_updates=UPDATES)

    async def _inbound(self, update: Update) -> InboundMessage | None:
        message = update.message or update.edited_message
        if message is None or message.from_user is None:
            return None
        if message.chat.type != "private" and not self.settings.allow_groups:
            return None
        user = message.from_user
        edited = update.edited_message is not None
        text = message.text or message.caption or ""
        evidence: list[IdentityEvidence] = []
        contact = message.contact
        if contact is not None:
            shared = contact.phone_number
            shared = shared if shared.startswith("+") else f"+{shared}"
            if contact.user_id == user.id:
                # A contact of themselves: Telegram vouches the number is theirs.
                evidence.append(IdentityEvidence("phone", shared))
            text = (text + "\n" if text else "") + (
                f"[shared a contact: {contact.first_name or ''} {contact.last_name or ''} "
                f"{shared}]".replace("  ", " "))
        attachments, notes = await self._attachments(message)
        if notes:
            text = (text + "\n" if text else "") + "\n".join(notes)
        sent_at = message.edit_date if edited and message.edit_date else message.date
        reply_to = message.reply_to_message
        return InboundMessage(
            connector=self.name,
            channel="telegram",
            provider_id=f"{message.chat.id}:{message.message_id}",
            sender=str(user.id),
            sender_name=user.full_name,
            sender_display=f"@{user.username}" if user.username else None,
            text=text,
            sent_at=aware(sent_at),
            in_reply_to=f"{message.chat.id}:{reply_to.message_id}" if reply_to else None,
            attachments=attachments,
            evidence=evidence,
            extra={"chat_id": message.chat.id, "update_id": update.update_id},
            is_edit=edited,
        )

    async def _attachments(self, message: Message) -> tuple[list[Attachment], list[str]]:
        wanted: list[tuple[str, str, str, int | None]] = []  # file_id, name, type, size
        if message.photo:
            photo = message.photo[-1]  # the largest size
            wanted.append((photo.file_id, f"photo-{photo.file_unique_id}.jpg", "image/jpeg",
                           photo.file_size))
        if message.document:
            doc = message.document
            wanted.append((doc.file_id, doc.file_name or f"file-{doc.file_unique_id}",
                           doc.mime_type or "application/octet-stream", doc.file_size))
        if message.voice:
            voice = message.voice
            wanted.append((voice.file_id, f"voice-{voice.file_unique_id}.ogg",
                           voice.mime_type or "audio/ogg", voice.file_size))
        attachments, notes = [], []
        for file_id, name, content_type, size in wanted:
            if size is not None and size > MAX_DOWNLOAD:
                notes.append(f"[{name}: {size:,} bytes, too big to download through the Bot API]")
                continue
            try:
                telegram_file = await self.bot.get_file(file_id)
                data = bytes(await telegram_file.download_as_bytearray())
            except TelegramError as error:
                notes.append(f"[{name} could not be downloaded: {error.message}]")
                continue
            guessed = mimetypes.guess_type(name)[0]
            attachments.append(Attachment(filename=name, content_type=content_type or guessed
                                          or "application/octet-stream", data=data))
        return attachments, notes

    # ---- outbound -------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        chat_id = int(message.to)
        reply_to = None
        if message.in_reply_to and ":" in message.in_reply_to:
            chat, _, message_id = message.in_reply_to.partition(":")
            if chat == str(chat_id) and message_id.isdigit():
                reply_to = ReplyParameters(message_id=int(message_id),
                                           allow_sending_without_reply=True)
        sent: Message | None = None
        for index, part in enumerate(split_text(message.text)):
            sent = await self._call(
                self.bot.send_message, chat_id=chat_id, text=part,
                reply_parameters=reply_to if index == 0 else None)
        assert sent is not None
        return Receipt(provider_id=f"{chat_id}:{sent.message_id}", status="sent",
                       sent_at=aware(sent.date))

    async def reconcile(self, message: OutboundMessage) -> Receipt | None:
        """The Bot API cannot list what a bot sent: after a crash mid-send, only the chat
        tells."""
        raise DeliveryUnknown("desk stopped while sending this Telegram message and the Bot "
                              "API cannot say whether it went out: check the chat, then retry")

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            if not self._ready:
                await self.bot.initialize()  # getMe: also checks the token
                self._ready = True
            return await method(**kwargs)
        except RetryAfter as error:
            with warnings.catch_warnings():  # int today, timedelta in PTB 23: both handled
                warnings.simplefilter("ignore")
                wait = error.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            raise TransientError(f"Telegram: flood control, retry in {seconds:.0f} s",
                                 code="429", retry_after=seconds) from None
        except Forbidden as error:
            raise PermanentError(f"Telegram: {error.message}", code="403") from None
        except InvalidToken:
            raise PermanentError("Telegram: the bot token was refused", code="401") from None
        except BadRequest as error:
            raise PermanentError(f"Telegram: {error.message}", code="400") from None
        except (TimedOut, NetworkError) as error:
            raise TransientError(f"Telegram: {error.message}") from None

    async def aclose(self) -> None:
        if self._ready:
            with contextlib.suppress(TelegramError):  # already gone
                await self.bot.shutdown()
            self._ready = False


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """`text` in parts of at most `limit` characters, cut at a paragraph, line, sentence or
    word boundary when there is one in the second half of the part."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for boundary in ("\n\n", "\n", ". ", " "):
            at = window.rfind(boundary)
            if at >= limit // 2:
                cut = at + len(boundary)
                break
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts



def from_settings(settings: Any) -> TelegramConnector:
    return TelegramConnector(settings)
