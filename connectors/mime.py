"""RFC 822 bytes -> `InboundMessage`: fast, lenient, and never raising.

Maildir imports must sustain thousands of messages per second, so this module parses with the
`compat32` policy (roughly ten times faster than `policy.default` + `get_content()`) and does the
header decoding (RFC 2047, 8-bit headers, broken charsets) itself. Whatever the input, the caller
gets an `InboundMessage` back: mail that cannot be read is flagged `FLAG_UNPARSED` and keeps its
raw bytes, so nothing a customer sent is ever dropped.
"""

from __future__ import annotations

import codecs
import hashlib
import mimetypes
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from functools import lru_cache

import lxml.html
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

from connectors.base import (
    FLAG_AUTO_REPLY,
    FLAG_BOUNCE,
    FLAG_OWN,
    FLAG_UNPARSED,
    Attachment,
    InboundMessage,
    aware,
)
from connectors.filenames import safe_filename

__all__ = ["html_to_text", "message_id_of", "parse_email", "safe_filename"]

# Enough of an unreadable payload to show the agent what it was, without storing megabytes of
# mojibake in the text column (the raw bytes are kept in full anyway).
UNPARSED_TEXT_LIMIT = 100_000

# Pathological nesting (a known MIME bomb shape) must not exhaust the stack.
_MAX_DEPTH = 64

_PARSER = BytesParser(policy=compat32)

# The "strict" profile does not indent <div>s, which matters for mail: webmail clients wrap every
# line in a <div>. Links are shown because agents need the URL a customer is pointing at.
_HTML_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)

# Headers that make a byte string recognisably a mail message. Without any of them the parser
# merely found something shaped like "word: value", and the result must not be presented as mail.
_MAIL_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "subject", "date", "message-id", "received",
        "mime-version", "content-type", "return-path", "reply-to", "in-reply-to",
        "references", "delivered-to",
    }
)  # fmt: skip

_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_SUPPRESS_TOKENS = frozenset({"all", "oof", "autoreply"})
_BOUNCE_LOCALPARTS = frozenset({"mailer-daemon", "postmaster"})
# Only used together with an empty Return-Path, which auto-replies also carry (RFC 3834).
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliver|undelivered mail|delivery status notification|mail delivery fail"
    r"|returned mail|delivery failure|failure notice|non.?delivery|mail system error)",
    re.IGNORECASE,
)

# C0/C1 controls (ESC and CSI included) have no business in one-line header fields and would
# reach the agent's terminal; tabs become spaces.
_HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_ADDR_SPEC = r"[^\s<>\",;:()\\@\[\]]+@[^\s<>\",;:()\\@\[\]]+"
# `Name <a@b>`, `"Name" <a@b>` or `a@b` with nothing that needs RFC 5322's full grammar.
_SIMPLE_ADDRESS = re.compile(
    r"\s*(?:"
    r"(?:\"(?P<quoted>[^\"\\]*)\"|(?P<name>[^\"<>,;:()\\@\[\]]*?))\s*<(?P<address>"
    + _ADDR_SPEC
    + r")>"
    r"|(?P<bare>" + _ADDR_SPEC + r")"
    r")\s*\Z"
)
_MSGID_TOKEN = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_RAW_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)

# Codecs that interpret backslashes or always fail: no real mail uses them, and some would let a
# sender inject lone surrogates (which SQLite refuses to encode).
_REFUSED_CODECS = frozenset({"unicode-escape", "raw-unicode-escape", "undefined", "punycode"})
# WHATWG: labels for Latin-1 and ASCII mean windows-1252 in practice (smart quotes, euro sign).
_LATIN1_CODECS = frozenset({"iso8859-1", "latin-1", "ascii", "us-ascii"})


# --------------------------------------------------------------------------- public helpers


def message_id_of(raw_header_value: str | None) -> str | None:
    """`"<abc@x>"` -> `"abc@x"`: the first bracketed id, or the bare value, whitespace removed."""
    if not raw_header_value:
        return None
    for token in _MSGID_TOKEN.findall(raw_header_value):
        token = _WHITESPACE.sub("", token)
        if token:
            return _clean_id(token)
    value = raw_header_value.replace("<", "").replace(">", "").strip()
    if "@" not in value and _WHITESPACE.search(value):
        # Prose such as "Your message of Tue, 3 Mar" (old In-Reply-To style) is not an id.
        return None
    return _clean_id(_WHITESPACE.sub("", value)) or None


def html_to_text(html: str) -> str:
    """Readable text for an HTML body (paragraphs, lists, tables, link targets)."""
    html = html.replace("\x00", "")
    try:
        text = get_text(html, _HTML_CONFIG)
    except Exception:
        # inscriptis recurses over the tree; a hostile nesting depth can defeat it, lxml cannot.
        try:
            text = lxml.html.document_fromstring(html).text_content()
        except Exception:
            text = html
    return _normalise_newlines(text).strip("\n")


# --------------------------------------------------------------------------- parse_email


def parse_email(
    raw: bytes,
    *,
    connector: str,
    own_addresses: Collection[str] = (),
    received_at: datetime | None = None,
) -> InboundMessage:
    """Parse one RFC 822 message. Never raises: unreadable input comes back `FLAG_UNPARSED`."""
    if not isinstance(raw, bytes):
        raw = _coerce_bytes(raw)
    try:
        fallback_time = aware(received_at) if received_at is not None else datetime.now(UTC)
    except Exception:
        fallback_time = datetime.now(UTC)
    try:
        return _parse(raw, connector, own_addresses, fallback_time)
    except Exception:
        # e.g. RecursionError from a MIME bomb: the headers alone usually still parse.
        return _salvage(raw, connector, own_addresses, fallback_time)


def _parse(
    raw: bytes, connector: str, own_addresses: Collection[str], fallback_time: datetime
) -> InboundMessage:
    msg = _PARSER.parsebytes(raw)
    headers = _header_map(msg.raw_items())
    if not _MAIL_HEADERS.intersection(headers):
        return _unparsed(raw, connector, fallback_time)

    message = _from_headers(headers, raw, connector, own_addresses, fallback_time)
    body = _Body()
    body.segments = _collect(msg, 0, body)
    message.text, message.html = _render_body(body)
    message.attachments = body.attachments
    if _is_auto_reply(msg, headers):
        message.flags.add(FLAG_AUTO_REPLY)
    if _is_bounce(msg, headers, message.sender, message.subject, body.saw_delivery_status):
        message.flags.add(FLAG_BOUNCE)
    return message


def _from_headers(
    headers: dict[str, list[str]],
    raw: bytes,
    connector: str,
    own_addresses: Collection[str],
    fallback_time: datetime,
) -> InboundMessage:
    """Everything the header block says; the body is filled in by the caller."""
    sender_name, sender = _first_address(headers)
    subject_values = headers.get("subject")
    flags: set[str] = set()
    if sender and sender in _own_set(own_addresses):
        flags.add(FLAG_OWN)
    return InboundMessage(
        connector=connector,
        channel="email",
        provider_id=message_id_of(_first_text(headers, "message-id")) or _hash_id(raw),
        sender=sender,
        sender_name=sender_name,
        recipients=_addresses(headers.get("to", []) + headers.get("cc", [])),
        subject=_one_line(_decode_header(subject_values[0])) if subject_values else None,
        sent_at=_sent_at(_first_text(headers, "date"), fallback_time),
        in_reply_to=message_id_of(_first_text(headers, "in-reply-to")),
        references=_references(_first_text(headers, "references")),
        raw=raw,
        flags=flags,
    )


def _salvage(
    raw: bytes, connector: str, own_addresses: Collection[str], fallback_time: datetime
) -> InboundMessage:
    """The full parse failed: keep who/when/what from the header block, the body as raw text."""
    try:
        msg = _PARSER.parsebytes(raw, headersonly=True)
        headers = _header_map(msg.raw_items())
        if _MAIL_HEADERS.intersection(headers):
            message = _from_headers(headers, raw, connector, own_addresses, fallback_time)
            body = _HEADER_END.split(raw, 1)
            message.text = _raw_text(body[1] if len(body) > 1 else b"")
            message.flags.add(FLAG_UNPARSED)
            return message
    except Exception:
        pass
    return _unparsed(raw, connector, fallback_time)


def _unparsed(raw: bytes, connector: str, fallback_time: datetime) -> InboundMessage:
    """The message as far as it can be read without a parser; must not raise either."""
    provider_id: str | None = None
    try:
        found = _RAW_MESSAGE_ID.search(_HEADER_END.split(raw[:65536], 1)[0])
        if found:
            provider_id = message_id_of(found.group(1).decode("latin-1"))
    except Exception:
        provider_id = None
    return InboundMessage(
        connector=connector,
        channel="email",
        provider_id=provider_id or _hash_id(raw),
        sender="",
        text=_raw_text(raw),
        sent_at=fallback_time,
        raw=raw,
        flags={FLAG_UNPARSED},
    )


def _raw_text(data: bytes) -> str:
    try:
        text = data[:UNPARSED_TEXT_LIMIT].decode("utf-8", "replace")
        return _sanitise(_normalise_newlines(text))
    except Exception:
        return ""


# --------------------------------------------------------------------------- headers


def _header_map(items: Iterable[tuple[str, object]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in items:
        headers.setdefault(name.lower(), []).append(value if isinstance(value, str) else str(value))
    return headers


def _first_text(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return _to_text(values[0]) if values else None


def _to_text(value: str) -> str:
    """Undo the parser's surrogateescape of 8-bit header bytes (SMTPUTF8 or just sloppy mail)."""
    if value.isascii():
        return value
    return _decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


def _one_line(value: str) -> str:
    return _HEADER_CONTROLS.sub("", value.replace("\t", " ")).strip()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode_header(value: str) -> str:
    """RFC 2047 decoding that survives unknown charsets and broken base64."""
    value = _to_text(value)
    if "=?" not in value:
        return _unfold(value)
    try:
        chunks = decode_header(value)
    except Exception:
        return _unfold(value)
    # Spacing between encoded and plain chunks as email.header.Header.__str__ does it.
    out: list[str] = []
    last_charset: str | None = None
    last_space = False
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            piece = _unfold(chunk)
        elif charset:
            piece = _decode_bytes(chunk, charset)
        else:
            try:
                piece = chunk.decode("raw-unicode-escape")
            except UnicodeDecodeError:  # a literal "\u" in the plain text, e.g. "C:\users"
                piece = chunk.decode("latin-1")
            if _SURROGATE.search(piece):  # a literal "\ud800" was text, not an escape
                piece = chunk.decode("latin-1")
        encoded = charset not in (None, "us-ascii")
        if out:
            has_space = bool(piece) and piece[0].isspace()
            if (last_charset is not None and not encoded and not has_space) or (
                last_charset is None and encoded and not last_space
            ):
                out.append(" ")
        last_space = bool(piece) and piece[-1].isspace()
        last_charset = charset if encoded else None
        out.append(piece)
    return "".join(out)


def _split_addresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, address) pairs; the common one-address shapes skip `getaddresses`, which
    is a quarter of the parse time."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        value = _to_text(value)
        simple = _SIMPLE_ADDRESS.match(value)
        if simple is None:
            pairs.extend(getaddresses([value]))
        elif simple["bare"]:
            pairs.append(("", simple["bare"]))
        elif simple["quoted"] is not None:
            pairs.append((simple["quoted"], simple["address"]))
        else:
            pairs.append((_WHITESPACE.sub(" ", simple["name"]).strip(), simple["address"]))
    return pairs


def _first_address(headers: dict[str, list[str]]) -> tuple[str | None, str]:
    for name in ("from", "sender", "return-path"):
        for display, address in _split_addresses(headers.get(name, [])):
            address = _one_line(address).lower()
            if address:
                decoded = _one_line(_decode_header(display)) if display else ""
                return decoded or None, address
    return None, ""


def _addresses(values: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for _display, address in _split_addresses(values):
        address = _one_line(address).lower()
        if address:
            seen.setdefault(address, None)
    return list(seen)


def _references(value: str | None) -> list[str]:
    if not value:
        return []
    tokens = _MSGID_TOKEN.findall(value) or value.split()
    seen: dict[str, None] = {}
    for token in tokens:
        token = _clean_id(_WHITESPACE.sub("", token.strip("<>")))
        if token:
            seen.setdefault(token, None)
    return list(seen)


def _sent_at(value: str | None, fallback: datetime) -> datetime:
    if not value:
        return fallback
    try:
        when = parsedate_to_datetime(_unfold(value).strip())
    except Exception:
        return fallback
    if when is None:  # older Pythons returned None for unparseable dates
        return fallback
    return aware(when)


def _own_set(own_addresses: Collection[str]) -> frozenset[str]:
    if not own_addresses:
        return frozenset()
    return _own_set_cached(tuple(own_addresses))


@lru_cache(maxsize=32)
def _own_set_cached(own_addresses: tuple[str, ...]) -> frozenset[str]:
    own = set()
    for entry in own_addresses:
        # Accept "Support <support@example.com>" as written in config's from_address.
        pairs = getaddresses([entry]) if "<" in entry else []
        address = pairs[0][1] if pairs and pairs[0][1] else entry
        own.add(address.strip().lower())
    return frozenset(own)


# --------------------------------------------------------------------------- flags


def _is_auto_reply(msg: Message, headers: dict[str, list[str]]) -> bool:
    for value in headers.get("auto-submitted", []):
        keyword = value.split(";", 1)[0].strip().lower()
        if keyword and keyword != "no":
            return True
    for value in headers.get("precedence", []):
        if value.strip().lower() in _AUTO_PRECEDENCE:
            return True
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return True
    for value in headers.get("x-auto-response-suppress", []):
        tokens = {t.strip().lower() for t in value.replace(";", ",").split(",")}
        if tokens & _SUPPRESS_TOKENS:
            return True
    # Read receipts (RFC 8098) are machine answers too.
    return msg.get_content_type() == "multipart/report" and _report_type(msg) == (
        "disposition-notification"
    )


def _is_bounce(
    msg: Message,
    headers: dict[str, list[str]],
    sender: str,
    subject: str | None,
    saw_delivery_status: bool,
) -> bool:
    if msg.get_content_type() == "multipart/report" and _report_type(msg) == "delivery-status":
        return True
    if sender.partition("@")[0] in _BOUNCE_LOCALPARTS:
        return True
    null_sender = any(v.strip() == "<>" for v in headers.get("return-path", []))
    return null_sender and (saw_delivery_status or bool(subject and _BOUNCE_SUBJECT.match(subject)))


def _report_type(msg: Message) -> str:
    value = msg.get_param("report-type")
    if not value:
        return ""
    return str(collapse_rfc2231_value(value)).strip().lower()


# --------------------------------------------------------------------------- body


@dataclass(slots=True)
class _Body:
    segments: list[tuple[str, str]] = field(default_factory=list)  # ("plain" | "html", text)
    attachments: list[Attachment] = field(default_factory=list)
    html: str | None = None
    saw_delivery_status: bool = False


def _collect(part: Message, depth: int, body: _Body) -> list[tuple[str, str]]:
    """The displayable text segments of `part`, in reading order; attachments go to `body`."""
    if depth > _MAX_DEPTH:
        return []
    ctype = part.get_content_type()
    maintype = ctype.partition("/")[0]
    if ctype == "message/delivery-status":
        body.saw_delivery_status = True

    if part.is_multipart():
        children = part.get_payload()
        if maintype == "message":
            # A forwarded mail or a DSN block: shown as an attachment, not as the sender's words.
            body.attachments.append(_embedded_attachment(part, ctype, children))
            return []
        if ctype == "multipart/alternative":
            options = [_collect(child, depth + 1, body) for child in children]
            for option in options:
                if any(kind == "plain" and text.strip() for kind, text in option):
                    return option
            # RFC 2046: the last alternative is the richest the sender offered.
            return next((option for option in reversed(options) if option), [])
        segments: list[tuple[str, str]] = []
        for child in children:
            # RFC 2046: parts of a multipart/mixed are shown one after the other (Apple Mail
            # splits the text around an inline image).
            segments.extend(_collect(child, depth + 1, body))
        return segments

    disposition = part.get_content_disposition()
    filename = _filename(part)
    is_body = disposition != "attachment" and not filename
    if is_body and ctype in ("text/plain", "text/html"):
        text = _part_text(part)
        if ctype == "text/html":
            if body.html is None:
                body.html = text
            return [("html", text)]
        return [("plain", text)]
    if is_body and maintype == "multipart":
        # A multipart without a usable boundary: its payload is all we have of the body.
        return [("plain", _part_text(part))]

    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    body.attachments.append(
        Attachment(
            filename=safe_filename(filename, fallback=_default_name(ctype)),
            content_type=ctype,
            data=data,
        )
    )
    return []


def _render_body(body: _Body) -> tuple[str, str | None]:
    pieces: list[str] = []
    for kind, text in body.segments:
        pieces.append(html_to_text(text) if kind == "html" else _normalise_newlines(text))
    if len(pieces) == 1:
        text = pieces[0]
    else:
        text = "\n".join(piece.rstrip("\n") for piece in pieces if piece.strip())
    html = _sanitise(body.html) if body.html is not None else None
    return _sanitise(text), html


def _part_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    return _decode_bytes(data, part.get_content_charset())


def _filename(part: Message) -> str | None:
    name = _params_source(part).get_filename()
    if not name:
        return None
    # Many clients put RFC 2047 words in parameters, which RFC 2231 never allowed.
    return _one_line(_decode_header(str(name))) or None


def _params_source(part: Message) -> Message:
    """`part`, or a stand-in whose parameter headers hold real text when the sender wrote raw
    8-bit bytes (common for file names): compat32 would turn each of those bytes into U+FFFD."""
    decoded: list[tuple[str, str]] = []
    eight_bit = False
    for name, value in part.raw_items():
        if name.lower() in ("content-disposition", "content-type"):
            text = value if isinstance(value, str) else str(value)
            eight_bit = eight_bit or not text.isascii()
            decoded.append((name, text))
    if not eight_bit:
        return part
    stand_in = Message()
    for name, value in decoded:
        stand_in[name] = _to_text(value)
    return stand_in


def _embedded_attachment(part: Message, ctype: str, children: object) -> Attachment:
    data = b""
    name = _filename(part)
    try:
        if ctype == "message/rfc822" and isinstance(children, list) and children:
            inner = children[0]
            data = inner.as_bytes()
            if not name and inner.get("subject"):
                name = _one_line(_decode_header(str(inner["subject"])))[:120] + ".eml"
        elif isinstance(children, list):
            data = b"\n".join(child.as_bytes() for child in children)
    except Exception:
        data = b""
    fallback = "message.eml" if ctype == "message/rfc822" else _default_name(ctype)
    return Attachment(
        filename=safe_filename(name, fallback=fallback), content_type=ctype, data=data
    )


@lru_cache(maxsize=128)
def _default_name(ctype: str) -> str:
    if ctype == "message/delivery-status":
        return "delivery-status.txt"
    if ctype == "text/rfc822-headers":
        return "headers.txt"
    extension = mimetypes.guess_extension(ctype, strict=False) or ".bin"
    return "attachment" + extension


# --------------------------------------------------------------------------- charsets


@lru_cache(maxsize=256)
def _codec_for(charset: str | None) -> str | None:
    """Python's codec name for a MIME charset label, or None when it is unknown or unsafe."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").split("*", 1)[0].lower()
    if not label:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    name = info.name.replace("_", "-")
    if name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return name


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """The declared charset, else utf-8, else windows-1252, else latin-1: always a str."""
    codec = _codec_for(charset)
    if codec is not None and codec not in _LATIN1_CODECS:
        try:
            return _sanitise(data.decode(codec))
        except Exception:
            if codec == "utf-8":
                # The sender said utf-8; a stray bad byte should not turn the rest into mojibake.
                return _sanitise(data.decode("utf-8", "replace"))
    if codec not in ("iso8859-1", "latin-1"):
        # Unknown labels, "us-ascii" on 8-bit text and wrong labels are mostly utf-8 in practice.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1", "replace")


# --------------------------------------------------------------------------- small helpers


def _sanitise(text: str) -> str:
    """Drop NULs (terminals, FTS) and replace lone surrogates (SQLite cannot store them)."""
    if _BAD_TEXT.search(text) is None:
        return text
    return _BAD_TEXT.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def _normalise_newlines(text: str) -> str:
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean_id(value: str) -> str:
    return _HEADER_CONTROLS.sub("", _sanitise(value))


def _hash_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _coerce_bytes(raw: object) -> bytes:
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""



