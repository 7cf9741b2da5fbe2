"""One message's share of the store: `max_message_bytes`, and what is kept of a larger one.

A 300 MB mail (a video someone attached) must neither fill the disk nor vanish. Over the limit,
a message is stored truncated and flagged `truncated`: its text first (what the agent reads),
then the attachments that fit whole, in order, then as much of the raw source as is left. An
attachment that does not fit keeps its name, type, size and hash. A note at the end of the text
says what was left out and names the provider's reference, where the original still is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from connectors.base import FLAG_TRUNCATED, InboundMessage

DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class ContentLeftOut:
    """An attachment whose content was not stored: the facts about it, no bytes."""

    filename: str
    content_type: str
    size: int
    sha256: str
    data: None = None


def message_bytes(message: InboundMessage) -> int:
    """What storing `message` as it is would take: text, HTML, raw source and attachments."""
    return (len(message.text.encode("utf-8", "surrogatepass"))
            + len((message.html or "").encode("utf-8", "surrogatepass"))
            + len(message.raw or b"")
            + sum(a.size for a in message.attachments))


def _truncate_text(text: str, limit: int) -> str:
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def _megabytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def within_limit(message: InboundMessage, limit: int) -> InboundMessage:
    """`message` as it may be stored under `limit` bytes: itself when it fits, else truncated
    and flagged (see the module's docstring)."""
    total = message_bytes(message)
    if total <= limit:
        return message
    # The note is written whatever is left; its few hundred bytes go past the limit, knowingly.
    left = limit
    text = _truncate_text(message.text, left)
    left -= len(text.encode("utf-8", "surrogatepass"))
    html = message.html if message.html is not None and len(
        message.html.encode("utf-8", "surrogatepass")) <= left else None
    left -= len((html or "").encode("utf-8", "surrogatepass"))
    attachments: list = []
    dropped: list[str] = []
    for attachment in message.attachments:
        if attachment.size <= left:
            attachments.append(attachment)
            left -= attachment.size
        else:
            attachments.append(ContentLeftOut(attachment.filename, attachment.content_type,
                                              attachment.size, attachment.sha256))
            dropped.append(f"{attachment.filename} ({_megabytes(attachment.size)})")
    raw = message.raw[:max(left, 0)] if message.raw is not None else None
    parts = []
    if len(text) < len(message.text):
        parts.append("the rest of the text")
    if message.html is not None and html is None:
        parts.append("the HTML version")
    if dropped:
        parts.append("the content of " + ", ".join(dropped))
    if message.raw is not None and len(raw or b"") < len(message.raw):
        parts.append(f"the raw source past its first {_megabytes(len(raw or b''))}")
    note = (f"[desk: this message is {_megabytes(total)}, over max_message_bytes "
            f"({_megabytes(limit)}). Not stored: {'; '.join(parts)}. The provider keeps the "
            f"original: {message.channel} {message.provider_id} on {message.connector}.]")
    return dataclasses.replace(
        message, text=f"{text}\n\n{note}" if text else note, html=html, raw=raw,
        attachments=attachments, flags=message.flags | {FLAG_TRUNCATED})
