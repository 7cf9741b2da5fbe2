"""Hostile input through the parsers and ingest (issue 11): nothing crashes, nothing is lost.

Three properties are fuzzed with hypothesis, each into one real store:

- **MIME**: any byte string given to `connectors.mime.parse_email` (structured mail with broken
  RFC 2047 words, bogus charsets and transfer encodings, bad or missing boundaries, deep nesting,
  NULs, 8-bit and surrogate-making bytes, huge lines, odd dates and Message-IDs; mutations of seed
  messages and of CPython's email test corpus when it is installed; plain random bytes) comes
  back as a message, and ingest stores it with its raw bytes unchanged; what could not be
  parsed is stored flagged `unparsed`.
- **Telegram**: Bot API Update dicts, decoded by python-telegram-bot as `getUpdates` does and
  given to `TelegramConnector._inbound`, are either ignored (None, by the documented rule) or
  stored. Files are served by the local fake Bot API (tests/fake_telegram.py).
- **Twilio**: message resources (as the `twilio` client builds them from the REST list) and
  webhook form posts, given to `TwilioConnector._inbound` / `_from_form`, are stored. MMS media
  come from the local fake Twilio (tests/fake_twilio.py); nothing leaves the machine.

Telegram and Twilio inputs come in two tiers. *Contract* inputs have the types and required
fields the provider's API guarantees, with hostile content: they must never fail. *Off-contract*
inputs break the provider's own schema (wrong types, missing required fields), which a real
provider does not send: a failure there is tolerated, but must store nothing (the batch and its
cursor roll back together), and is tallied in the line each test prints.

Each test prints `fuzz: seed=<n> examples=<count> (DESK_FUZZ_SEED=<n> to replay)` and what came
of its inputs, pass or fail (no `-s` needed). The seed is random per run unless `DESK_FUZZ_SEED`
is set; `DESK_FUZZ_EXAMPLES` sets the examples per test (default 300, what CI runs, about 20 s
for the three). Locally, for a longer hunt:

    DESK_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py -p no:cacheprovider

Examples are counted as run, replays while shrinking a failure included. With
`--backend postgresql` the stores are PostgreSQL databases, which refuse NUL in text columns.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import os
import random
import re
import string
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fake_telegram import TOKEN as TELEGRAM_TOKEN
from fake_telegram import State as TelegramState
from fake_telegram import serve as serve_telegram
from fake_twilio import ACCOUNT, NUMBER
from fake_twilio import TOKEN as TWILIO_TOKEN
from fake_twilio import State as TwilioState
from fake_twilio import serve as serve_twilio
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import func, select
from telegram import Update
from twilio.rest.api.v2010.account.message import MessageInstance

from connectors.base import FLAG_UNPARSED, InboundMessage
from connectors.mime import parse_email
from connectors.sms import TwilioConnector
from connectors.telegram import MAX_DOWNLOAD, TelegramConnector
from desk.config import TelegramConnectorSettings, TwilioConnectorSettings
from desk.ingest import IngestOptions, ingest
from desk.models import Attachment, Message
from desk.store import Store, get_cursor

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    # Even without an example database, hypothesis caches Unicode tables and constants in
    # ./.hypothesis: keep them out of the repository.
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "desk-fuzz-hypothesis")

EXAMPLES = int(os.environ.get("DESK_FUZZ_EXAMPLES") or 300)
SEED = int(os.environ.get("DESK_FUZZ_SEED") or random.SystemRandom().randrange(2**32))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # ingest timings vary with the store's size and the machine
    database=None,  # no .hypothesis directory in the repository
    derandomize=False,
    # Mail strategies are large by design; generation speed is not what is under test.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
OPTIONS = IngestOptions(region="FR")


# =============================================================================== shared helpers


@dataclass
class Tally:
    """What a run fed and what came of it, for the line each test prints."""

    examples: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


def report(capsys: pytest.CaptureFixture[str], name: str, tally: Tally) -> None:
    details = ", ".join(f"{key} {n}" for key, n in sorted(tally.outcomes.items()))
    with capsys.disabled():
        print(f"\nfuzz: seed={SEED} examples={tally.examples} (DESK_FUZZ_SEED={SEED} to replay)"
              f" {name}: {details}", file=sys.stderr)


@contextmanager
def reported(capsys: pytest.CaptureFixture[str], name: str, tally: Tally) -> Iterator[None]:
    # The seed matters most when the run fails, so it is printed either way.
    try:
        yield
    finally:
        report(capsys, name, tally)


def message_count(store: Store) -> int:
    with store.session() as session:
        return session.execute(select(func.count()).select_from(Message)).scalar_one()


def stored_rows(store: Store, connector: str, provider_ids: Sequence[str]) -> dict[str, Any]:
    with store.session() as session:
        return {
            row.provider_id: row
            for row in session.execute(
                select(Message.provider_id, Message.text, Message.flags, Message.raw, Message.id,
                       Message.channel)
                .where(Message.connector == connector, Message.provider_id.in_(provider_ids))
            )
        }


def stored_attachments(store: Store, message_id: int) -> list[tuple[str, str]]:
    with store.session() as session:
        return [tuple(row) for row in session.execute(
            select(Attachment.filename, Attachment.content_type)
            .where(Attachment.message_id == message_id))]


def cursor_of(store: Store, connector: str) -> Any:
    with store.session() as session:
        return get_cursor(session, connector)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def as_stored(value: str) -> str:
    """`value` as ingest stores it: without NUL, lone surrogates replaced (README, The store)."""
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", value)


def key_of(message: InboundMessage) -> str:
    return as_stored(message.provider_id)


def assert_text_fields(message: InboundMessage, *, encodable: bool = False) -> None:
    """Text where the contract says text; with `encodable`, text that UTF-8 can encode, which
    the MIME parser promises (a provider's JSON may carry a lone surrogate; ingest copes)."""
    for name in ("connector", "provider_id", "sender", "text", "sender_name", "subject", "html",
                 "in_reply_to", "sender_display"):
        value = getattr(message, name)
        if value is None and name not in ("connector", "provider_id", "sender", "text"):
            continue
        assert isinstance(value, str), f"{name} is {type(value).__name__}: {value!r}"
        assert not encodable or _UNSTORABLE.search(value.replace("\x00", "")) is None, (
            f"{name} holds a lone surrogate: {value!r}")
    for value in (*message.recipients, *message.references):
        assert isinstance(value, str), f"bad address or id: {value!r}"
        assert not encodable or _UNSTORABLE.search(value.replace("\x00", "")) is None, value
    assert message.sent_at is None or message.sent_at.tzinfo is not None
    for attachment in message.attachments:
        assert isinstance(attachment.data, bytes)


def ingest_and_check(
    store: Store,
    connector: str,
    messages: list[InboundMessage],
    cursor: dict[str, Any],
) -> None:
    """Ingest one batch with its cursor and check every message is in the store afterwards:
    new ones as given (text after edits, raw bytes, attachments), known ones still there."""
    keys = [key_of(m) for m in messages]
    before = stored_rows(store, connector, keys)
    expected_text: dict[str, str] = {k: row.text for k, row in before.items()}
    first: dict[str, InboundMessage] = {}
    for key, message in zip(keys, messages, strict=True):
        # Ingest's rule: the first copy of an id is stored, later ones count only as edits.
        if key not in expected_text or message.is_edit:
            expected_text[key] = as_stored(message.text)
        first.setdefault(key, message)

    result = ingest(store, messages, connector=connector, cursor=cursor, options=OPTIONS)

    after = stored_rows(store, connector, keys)
    assert set(after) == set(keys), f"not stored: {set(keys) - set(after)}"
    assert result.stored == len(set(keys) - set(before))
    for key in keys:
        row = after[key]
        assert row.text == expected_text[key]
        if key in before:
            continue
        message = first[key]
        assert row.raw == message.raw, "raw payload not stored byte for byte"
        assert set(filter(None, row.flags.split(","))) >= message.flags
        attachments = stored_attachments(store, row.id)
        assert len(attachments) == len(message.attachments)
        for name, content_type in attachments:
            # PostgreSQL refuses NUL in text columns: what SQLite takes must not carry one either.
            assert "\x00" not in name + content_type, f"NUL stored: {name!r} {content_type!r}"
    assert cursor_of(store, connector) == cursor


def ingest_or_roll_back(
    store: Store, connector: str, messages: list[InboundMessage], cursor: dict[str, Any],
    tally: Tally,
) -> None:
    """Off-contract input: ingest may refuse it, but then the whole batch and its cursor must
    be left out of the store."""
    count, saved = message_count(store), cursor_of(store, connector)
    try:
        ingest(store, messages, connector=connector, cursor=cursor, options=OPTIONS)
    except Exception as error:
        tally.outcomes[f"off-contract refused by ingest ({type(error).__name__})"] += 1
        assert message_count(store) == count
        assert cursor_of(store, connector) == saved
        return
    tally.outcomes["off-contract stored"] += 1
    assert cursor_of(store, connector) == cursor
    keys = [key_of(m) for m in messages if isinstance(m.provider_id, str)]
    assert set(stored_rows(store, connector, keys)) == set(keys)


def store_all(store: Store, connector: str, messages: list[InboundMessage], *, contract: bool,
              tally: Tally) -> None:
    """Ingest `messages` as two batches, so that the second meets the first one's rows as
    stored messages (duplicates, edits), not only as copies within one batch.

    Each example stores under a connector name of its own: customers and tickets still build
    up across examples (routing meets a busy store), but whether a message is new depends on
    its example alone, which hypothesis must be able to replay and shrink."""
    cut = len(messages) // 2
    for number, part in enumerate((messages[:cut], messages[cut:])):
        if not part:
            continue
        cursor = {"batch": number, "example": tally.examples}
        if contract:
            ingest_and_check(store, connector, part, cursor)
        else:
            ingest_or_roll_back(store, connector, part, cursor, tally)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of `choices`, each picked in proportion to its weight: left to `st.one_of`, the
    costly or rarely interesting branches would get as many examples as the others."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(pool.__getitem__)


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    # The fake provider servers live on this loop too and answer while it runs the parser.
    return loop.run_until_complete(asyncio.wait_for(coro, 30))


# Strings a customer controls: markup, escapes, direction overrides, NULs, very long ones.
_NASTY = [
    "\x00", "\x1b[31m", "\x1b]0;pwned\x07", "\x9b2J", "\u202e", "\u200b", "\ufeff", "\u2028",
    "[bold]x[/]", "[/]", "[link=file:///etc/passwd]x[/link]", "\r\n", "\r", "\n\n", "\t", "💥",
    "é", "𝕏", "\x7f", "%s%n", "{0}", "<script>alert(1)</script>", "' OR 1=1 --", "\\", "..",
    "../../etc/passwd", " ", "", "\ud800", "\udfff",  # lone surrogates: valid JSON escapes
]  # fmt: skip
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(_NASTY), st.text(max_size=8)), max_size=8).map("".join),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(100, 2500)),
)


# ======================================================================================= MIME

_CHARSETS = [
    b"utf-8", b"UTF-8", b"iso-8859-1", b"us-ascii", b"x-unknown", b"unicode-escape",
    b"raw-unicode-escape", b"punycode", b"undefined", b"utf-7", b"utf-16", b"utf-32-be", b"hex",
    b"rot13", b"zlib", b"idna", b"", b'"utf-8"', b"utf-8*en", b"koi8-r", b"gb2312", b"shift_jis",
    b"windows-1252", b"x-mac-roman", b"latin-1'fr'", b"\xff",
]  # fmt: skip
_ODD_BYTES = [
    b"\x00", b"\r", b"\n", b"\r\n\t", b"\n ", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xff\xfe",
    b"\x80", b"\xc3", b"\x1b[31m", b"\xe2\x80\xae", b"=?", b"?=", b"<", b">", b'"', b"\\", b";",
    b":", b",", b"@", b"(", b")", b"=?utf-8?q?", b"\t", b"\x85",
]  # fmt: skip
_FILENAMES = [
    b"../../etc/passwd", b"C:\\Windows\\system32\\cmd.exe", b"CON", b"nul.txt",
    b"\xe2\x80\xaegpj.exe", b"..", b".", b"", b"a" * 300 + b".pdf", b"=?utf-8?q?=2E=2E=2Fx?=",
    b"utf-8''%2e%2e%2fetc", b"\x00name", b"name\r\n", b"\xff\xfe.txt", b"report.pdf",
]  # fmt: skip

_base64_of = st.binary(max_size=60).map(base64.b64encode)
_encoded_word = st.builds(
    lambda charset, enc, payload: b"=?" + charset + b"?" + enc + b"?" + payload + b"?=",
    st.sampled_from(_CHARSETS),
    st.sampled_from([b"B", b"Q", b"b", b"q", b"X", b""]),
    st.one_of(_base64_of, st.sampled_from([b"abc", b"QQ=", b"=ZZ", b"====", b"_=C3", b"\\ud800"]),
              st.binary(max_size=12)),
)
_chunk = st.one_of(
    st.text(max_size=24).map(lambda s: s.encode("utf-8")),
    st.sampled_from(_ODD_BYTES),
    _encoded_word,
    st.binary(max_size=16),
)
header_value = st.lists(_chunk, max_size=6).map(b" ".join)

_address = st.one_of(
    st.sampled_from([
        b"jane@example.com", b"Jane Doe <jane@example.com>", b'"Doe, Jane" <JANE@Example.COM>',
        b"support@example.com", b"Support <support@example.com>", b"<>",
        b"undisclosed-recipients:;", b"=?utf-8?b?SmFuZQ==?= <jane@b\xc3\xbccher.example>",
        b'"unterminated <a@b>', b"a@b@c", b"@", b"<@>", b"jane@[127.0.0.1]",
        b"MAILER-DAEMON@mx.example.com", b"postmaster", b"user@xn--bcher-kva.example",
        b"(comment) a@b (more)", b"group: a@b, c@d;", b"j\xc3\xa4ne@b\xc3\xbccher.example",
        b"=?x-unknown?q?=FF?= <x@y>", b"a@" + b"x" * 300,
    ]),
    header_value,
)
_addresses = st.lists(_address, max_size=4).map(b", ".join)
_dates = st.one_of(
    st.builds(
        lambda moment, minutes: email.utils.format_datetime(
            moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))).encode(),
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 31)),
        st.integers(-1439, 1439),
    ),
    st.sampled_from([
        b"", b"Mon, 31 Feb 2026 25:61:61 +9999", b"Tue, 1 Jan 99999 00:00:00 +0000", b"0",
        b"yesterday", b"Thu, 01 Jan 1970 00:00:00 -0000", b"2026-03-02T09:00:00Z",
        b"Mon, 2 Mar 2026 09:00:00 GMT+2", b"Sun, 06 Nov 1994 08:49:37 EST (comment)",
        b"31 Dec 9999 23:59:59 -2359", b"1 Jan 100 00:00:00 +2359", b"\xff\xfe",
        b"Fri, 31 Dec 9999 23:59:59 +0000", b"3 Jan 100 00:00:00 +0000",
    ]),
    header_value,
)
_message_ids = st.one_of(
    st.sampled_from([b"<a@x>", b"<b@x>", b"", b"<>", b"< >", b"<\x00@x>", b"a@x",
                     b"<a@x> <b@y>", b"<\xff@x>", b"<a b@x>", b"<<a@x>>", b"\x1b[2J"]),
    st.binary(max_size=8).map(lambda b: b"<" + b + b"@fuzz>"),
    header_value,
)

_param_value = st.one_of(
    header_value.map(lambda v: b'"' + v + b'"'),
    st.sampled_from(_CHARSETS),
    st.sampled_from(_FILENAMES),
    st.sampled_from([b"delivery-status", b"disposition-notification", b"b1", b""]),
)
_params = st.lists(
    st.tuples(st.sampled_from([b"charset", b"name", b"boundary", b"report-type", b"filename",
                               b"filename*", b"name*0", b"name*1*", b"format", b"delsp", b""]),
              _param_value),
    max_size=3,
).map(lambda pairs: b"".join(b"; " + k + b"=" + v for k, v in pairs))
_leaf_types = st.sampled_from([
    b"text/plain", b"text/html", b"application/octet-stream", b"image/png", b"message/rfc822",
    b"message/delivery-status", b"text/rfc822-headers", b"message/disposition-notification",
    b"multipart/mixed", b"multipart/alternative", b"multipart/report", b"text", b"", b"/",
    b"text/plain/extra", b"\xff/\xfe", b"application/x-\x00",
])
_encodings = st.sampled_from([
    b"base64", b"BASE64", b"quoted-printable", b"7bit", b"8bit", b"binary", b"x-uuencode",
    b"uuencode", b"x-uue", b"bogus", b"", b"base64; junk", b"\xff",
])
_dispositions = st.one_of(
    st.sampled_from([b"inline", b"attachment", b"form-data", b"", b"\x00"]),
    st.builds(lambda kind, name: kind + b"; filename=" + name,
              st.sampled_from([b"attachment", b"inline"]), st.sampled_from(_FILENAMES)),
)
_payloads = st.one_of(
    st.binary(max_size=300),
    st.lists(_base64_of, max_size=4).map(b"\n".join),
    st.text(alphabet="ABCDEFabcdef0123456789+/=!*-_ \n", max_size=120).map(str.encode),
    st.lists(st.one_of(st.sampled_from([b"=XX", b"=\n", b"=C3=A9", b"=ZZ", b"=", b"=0"]),
                       st.binary(max_size=10)), max_size=10).map(b"".join),
    st.integers(1, 3000).map(lambda n: b"<div>" * n + b"deep"),  # defeats inscriptis' recursion
    st.sampled_from([b"begin 644 x\nM86)C\n`\nend\n", b"<html><body><p>Hi</p></body></html>",
                     b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b\nAction: failed\n"]),
    st.text(max_size=80).map(lambda s: s.encode("utf-8")),
)

Part = tuple[list[bytes], bytes]  # header lines, body


def _leaf(ctype: bytes, params: bytes, cte: bytes | None, disposition: bytes | None,
          payload: bytes) -> Part:
    headers = [b"Content-Type: " + ctype + params]
    if cte is not None:
        headers.append(b"Content-Transfer-Encoding: " + cte)
    if disposition is not None:
        headers.append(b"Content-Disposition: " + disposition)
    return headers, payload


def _serialize(part: Part) -> bytes:
    headers, body = part
    return b"\n".join(headers) + b"\n\n" + body


def _multipart(subtype: bytes, children: list[Part], boundary: bytes, mode: str) -> Part:
    declared = {"wrong_boundary": boundary + b"x", "no_boundary_param": None}.get(mode, boundary)
    ctype = b"Content-Type: multipart/" + subtype
    if declared is not None:
        ctype += b'; boundary="' + declared + b'"'
    body = b"preamble\n" + b"".join(b"\n--" + boundary + b"\n" + _serialize(c) for c in children)
    if mode != "no_terminator":
        body += b"\n--" + boundary + b"--\nepilogue"
    return [ctype], body


def _rfc822(inner: Part) -> Part:
    return [b"Content-Type: message/rfc822"], b"Subject: inner\nFrom: a@b\n" + _serialize(inner)


def _deep(depth: int, ctype: bytes, payload: bytes) -> Part:
    # A MIME bomb's shape: nesting far past any limit, built without recursion.
    part: Part = ([b"Content-Type: text/plain"], payload)
    for level in range(depth):
        if ctype == b"message/rfc822":
            part = _rfc822(part)
        else:
            boundary = b"d%d" % level
            part = ([b"Content-Type: " + ctype + b"; boundary=" + boundary],
                    b"--" + boundary + b"\n" + _serialize(part) + b"\n--" + boundary + b"--")
    return part


_leaves = st.builds(_leaf, _leaf_types, _params, st.none() | _encodings, st.none() | _dispositions,
                    _payloads)
_boundaries = st.one_of(
    st.sampled_from([b"b1", b"==b", b"", b" ", b"x" * 80, b'a"b', b"--", b"\xff", b"b1\x00"]),
    st.text(alphabet="abc-=_'()+,./:?", min_size=1, max_size=10).map(str.encode),
)
_parts = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.builds(_multipart, st.sampled_from([b"mixed", b"alternative", b"related", b"report",
                                               b"digest", b"signed", b"x-bogus"]),
                  st.lists(children, max_size=4), _boundaries,
                  st.sampled_from(["ok", "no_terminator", "no_boundary_param", "wrong_boundary"])),
        children.map(_rfc822),
    ),
    max_leaves=10,
)
_parts = weighted((4, _parts), (1, st.builds(
    _deep,
    # 1,000 levels overflow the stdlib parser's recursion: the salvage path must keep the mail.
    weighted((9, st.integers(1, 300)), (1, st.just(1000))),
    st.sampled_from([b"multipart/mixed", b"multipart/alternative", b"message/rfc822"]),
    _payloads,
)))

_named_headers = st.fixed_dictionaries({}, optional={
    b"From": _addresses, b"To": _addresses, b"Cc": _addresses, b"Subject": header_value,
    b"Date": _dates, b"Message-ID": _message_ids, b"In-Reply-To": _message_ids,
    b"References": st.lists(_message_ids, max_size=4).map(b" ".join),
    b"MIME-Version": st.sampled_from([b"1.0", b"2.0", b""]),
    b"Return-Path": st.sampled_from([b"<>", b"<bounce@x>", b""]),
    b"Auto-Submitted": st.sampled_from([b"auto-replied", b"no", b"", b"auto-generated; x"]),
    b"Precedence": st.sampled_from([b"bulk", b"junk", b"list", b"first-class"]),
    b"X-Auto-Response-Suppress": st.sampled_from([b"All", b"OOF, DR", b""]),
    b"Sender": _addresses,
})  # fmt: skip
_other_headers = st.lists(
    st.tuples(st.one_of(st.sampled_from([b"X-\xff", b"", b" From", b"From:", b"Received",
                                         b"Content-Type", b"Message-ID", b"Date"]),
                        st.text(alphabet="abcXYZ-", min_size=1, max_size=8).map(str.encode)),
              header_value),
    max_size=4,
)
_huge_header = st.builds(
    lambda name, unit, n: [(name, unit * n)],
    st.sampled_from([b"Subject", b"To", b"References", b"X-Long"]),
    st.sampled_from([b"x", b"=?utf-8?b?QQ==?= ", b"a@b, ", b"<id@x> ", b"\xff"]),
    st.integers(1000, 30000),
)


def _message(named: dict[bytes, bytes], others: list[tuple[bytes, bytes]],
             huge: list[tuple[bytes, bytes]], part: Part, newline: bytes) -> bytes:
    lines = [name + b": " + value for name, value in [*named.items(), *others, *huge]]
    headers, body = part
    raw = b"\n".join([*lines, *headers]) + b"\n\n" + body
    return raw.replace(b"\n", newline) if newline != b"\n" else raw


_structured = st.builds(_message, _named_headers, _other_headers, st.just([]) | _huge_header,
                        _parts, st.sampled_from([b"\n", b"\r\n", b"\r"]))

_SEEDS = [
    b"From: Jane <jane@example.com>\r\nTo: support@example.com\r\nSubject: =?utf-8?q?Caf=C3=A9?="
    b"\r\nDate: Mon, 2 Mar 2026 09:00:00 +0100\r\nMessage-ID: <seed1@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nMy order has not arrived.\r\n--b1\r\n"
    b"Content-Type: application/pdf; name=receipt.pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=receipt.pdf\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n",
    b"From: MAILER-DAEMON@mx.example.com\nTo: support@example.com\nReturn-Path: <>\n"
    b"Subject: Undelivered Mail Returned to Sender\nMessage-ID: <seed2@mx>\nContent-Type: "
    b"multipart/report; report-type=delivery-status; boundary=r\n\n--r\nContent-Type: "
    b"text/plain\n\nDelivery failed.\n--r\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b\nAction: failed\n--r\n"
    b"Content-Type: message/rfc822\n\nFrom: support@example.com\nSubject: Re: x\n\nhi\n--r--\n",
    b"From: =?iso-8859-1?q?Ren=E9?= <rene@example.fr>\nSubject: Re: [#12] Facture\n"
    b"In-Reply-To: <seed1@example.com>\nReferences: <seed1@example.com>\nContent-Type: "
    b"multipart/alternative; boundary=a\n\n--a\nContent-Type: text/html; charset=windows-1252"
    b"\nContent-Transfer-Encoding: quoted-printable\n\n<p>Merci =E0 vous</p>\n--a--\n",
]


def _corpus() -> list[bytes]:
    """CPython's email test messages, where the test package is installed."""
    try:
        import test.test_email as cpython_email_tests
    except ImportError:
        return []
    data = Path(cpython_email_tests.__file__).parent / "data"
    return [p.read_bytes() for p in sorted(data.glob("msg_*.txt"))]


SEED_MESSAGES = _SEEDS + _corpus()


def _mutate(original: bytes, operations: list[tuple[str, float, bytes]]) -> bytes:
    data = bytearray(original)
    for kind, where, blob in operations:
        at = int(where * len(data))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= blob[0] if blob else 0xFF
        elif kind == "insert":
            data[at:at] = blob
        elif kind == "delete":
            del data[at : at + len(blob) * 8 + 1]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at : at + 64] * (len(blob) + 1)
    return bytes(data)


_mutated = st.builds(
    _mutate,
    st.sampled_from(SEED_MESSAGES),
    st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]),
                       st.floats(0, 1), st.one_of(st.binary(max_size=12),
                                                  st.sampled_from(_ODD_BYTES))),
             min_size=1, max_size=6),
)
_header_shaped = st.builds(
    lambda pairs, body: b"\n".join(k + b": " + v for k, v in pairs) + b"\n\n" + body,
    st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=40)), max_size=8),
    st.binary(max_size=200),
)
mime_inputs = st.one_of(_structured, _mutated, st.binary(max_size=1000), _header_shaped)


def test_mime_messages_are_stored_or_flagged(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()

    @seed(SEED)
    @FUZZ
    @given(batch=st.lists(mime_inputs, min_size=1, max_size=3))
    # Inputs this test found crashing ingest (fixed in 4618894), tried on every run.
    # A Date whose UTC time is past year 9999: OverflowError, the batch (and every later sync
    # of that mailbox) failed.
    @example(batch=[b"From: a@b\nDate: 31 Dec 9999 23:59:59 -2359\n\nhi"])
    # A literal "\ud800" beside an encoded word came out of the subject as a lone surrogate,
    # which SQLite refuses (UnicodeEncodeError).
    @example(batch=[b"From: a@b\nSubject: =?utf-8?q?x?= \\ud800\n\nhi"])
    # A NUL in a part's Content-Type reached the attachment row, which PostgreSQL refuses.
    @example(batch=[b"From: a@b\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
                    b"Content-Type: application/x-\x00zip\n\nxx\n--b--\n"])
    def check(batch: list[bytes]) -> None:
        tally.examples += 1
        connector = f"mail-{tally.examples}"  # see store_all
        messages = []
        for raw in batch:
            message = parse_email(raw, connector=connector, own_addresses=["support@example.com"])
            assert message.raw == raw and message.channel == "email"
            assert message.provider_id
            assert message.sent_at is not None
            assert_text_fields(message, encodable=True)
            for attachment in message.attachments:
                # "Attachments get safe names": never a path, never empty.
                assert attachment.filename not in ("", ".", "..")
                assert not set("/\\\x00") & set(attachment.filename)
            tally.outcomes["unparsed" if FLAG_UNPARSED in message.flags else "parsed"] += 1
            messages.append(message)
        store_all(store, connector, messages, contract=True, tally=tally)

    with reported(capsys, "mime", tally):
        check()


# ==================================================================================== Telegram

_int64 = st.integers(-(2**63), 2**63 - 1)
_ids = st.one_of(st.integers(1, 2**52), st.sampled_from([1, 424242, 2**31 - 1, 2**53, 2**63 - 1]))
_unix = st.integers(0, 4_102_444_800)  # up to 2100: what Telegram dates can be
_FILE_IDS = ["f0", "f1", "f2", "f3"]
# Over MAX_DOWNLOAD the connector must note the file instead of fetching it.
_file_sizes = st.none() | st.integers(0, 10_000) | st.integers(MAX_DOWNLOAD - 1, 2**40)


def _with(required: dict[str, st.SearchStrategy[Any]],
          optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


_user = _with({"id": _ids, "is_bot": st.booleans(), "first_name": hostile_text},
              {"last_name": hostile_text, "username": hostile_text,
               "language_code": st.sampled_from(["en", "fr", "", "xx-YY"])})


_private_chat = _with({"id": _ids, "type": st.just("private")},
                      {"first_name": hostile_text, "username": hostile_text})
_other_chat = _with({"id": st.integers(-(2**52), -1),
                     "type": st.sampled_from(["group", "supergroup", "channel", "x-new"])},
                    {"title": hostile_text})
_chat = weighted((3, _private_chat), (1, _other_chat))
_entities = st.lists(_with({"type": st.sampled_from(["bold", "url", "text_link", "mention",
                                                     "custom_emoji", "x-new"]),
                            "offset": _int64, "length": _int64},
                           {"url": hostile_text}), max_size=3)
# Telegram makes file ids itself (base64url); the file's name and type come from the sender.
_file = {"file_id": st.sampled_from(_FILE_IDS),
         "file_unique_id": st.text(alphabet=string.ascii_letters + string.digits + "-_",
                                   min_size=1, max_size=16)}
_message_fields: dict[str, st.SearchStrategy[Any]] = {
    "from": _user,
    "text": hostile_text, "caption": hostile_text,
    "entities": _entities, "caption_entities": _entities,
    "contact": _with({"phone_number": st.one_of(hostile_text, st.sampled_from(
                         ["33612345678", "+33612345678", "", "+", "0033 6 12 34 56 78"])),
                      "first_name": hostile_text},
                     {"last_name": hostile_text, "user_id": _ids, "vcard": hostile_text}),
    "photo": st.lists(_with({**_file, "width": st.integers(0, 10_000),
                             "height": st.integers(0, 10_000)}, {"file_size": _file_sizes}),
                      max_size=3),
    "document": _with(_file, {"file_name": hostile_text, "mime_type": hostile_text,
                              "file_size": _file_sizes}),
    "voice": _with({**_file, "duration": st.integers(0, 2**31 - 1)},
                   {"mime_type": hostile_text, "file_size": _file_sizes}),
    "edit_date": _unix,
    "x_future_field": st.dictionaries(st.text(max_size=5), hostile_text, max_size=2),
}  # fmt: skip
_message_base = {"message_id": st.integers(1, 2**31 - 1) | st.sampled_from([1, 2]),
                 "date": _unix, "chat": _chat}
_reply = _with(_message_base, {"from": _user, "text": hostile_text})
_all_fields = {**_message_fields, "reply_to_message": _reply}
telegram_messages = weighted(
    (3, _with({**_message_base, "from": _user},
              {k: v for k, v in _all_fields.items() if k != "from"})),
    (1, _with(_message_base, _all_fields)),
)
contract_updates = st.builds(
    lambda kind, message, update_id: {"update_id": update_id, kind: message},
    st.sampled_from(["message"] * 4 + ["edited_message"] * 2 + [
        "channel_post", "edited_channel_post", "business_message", "x_future_update"]),
    telegram_messages,
    st.integers(0, 2**31 - 1),
)

# Any JSON value, to put where the schema wants another type.
_json_junk = st.recursive(
    st.none() | st.booleans() | _int64 | st.integers() | st.floats(allow_nan=False)
    | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=5,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _corrupt(data: dict[str, Any], path: tuple[Any, ...], junk: Any, delete: bool) -> dict:
    data = json.loads(json.dumps(data))
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    return data


def off_contract(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict]:
    """`strategy`'s values with one field (at any depth) deleted or of the wrong type."""
    return strategy.flatmap(lambda data: st.builds(
        _corrupt, st.just(data), st.sampled_from(_paths(data)), _json_junk, st.booleans()))


@dataclass
class TelegramInput:
    update: dict[str, Any]
    contract: bool


telegram_inputs = st.one_of(
    contract_updates.map(lambda u: TelegramInput(u, True)),
    off_contract(contract_updates).map(lambda u: TelegramInput(u, False)),
)


def _wanted_downloads(message: Any, files: dict[str, bytes]) -> int:
    """How many of the message's files the connector can fetch from the fake Bot API."""
    wanted = [message.photo[-1] if message.photo else None, message.document, message.voice]
    return sum(1 for f in wanted if f is not None and f.file_id in files
               and (f.file_size is None or f.file_size <= MAX_DOWNLOAD))


def test_telegram_updates_are_stored_or_ignored(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESK_TEST_TELEGRAM_TOKEN", TELEGRAM_TOKEN)
    loop = asyncio.new_event_loop()
    state = TelegramState()
    runner, api_base = run(loop, serve_telegram(state))
    bot = TelegramConnector(TelegramConnectorSettings.model_validate({
        "name": "chat", "type": "telegram", "token": "env:DESK_TEST_TELEGRAM_TOKEN",
        "api_base": api_base}))
    run(loop, bot.bot.initialize())
    tally = Tally()

    @seed(SEED)
    @FUZZ
    @given(batch=st.lists(telegram_inputs, min_size=1, max_size=4),
           files=st.dictionaries(st.sampled_from(_FILE_IDS), st.binary(max_size=64)))
    # Found by this test (fixed in 4618894): a NUL in a document's name reached the
    # attachment row, which PostgreSQL refuses.
    @example(batch=[TelegramInput({"update_id": 1, "message": {
        "message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"},
        "from": {"id": 1, "is_bot": False, "first_name": "Ana"},
        "document": {"file_id": "f0", "file_unique_id": "u0", "file_name": "a\x00b.pdf"}}},
        contract=True)], files={"f0": b"%PDF-1.4"})
    def check(batch: list[TelegramInput], files: dict[str, bytes]) -> None:
        tally.examples += 1
        bot.name = f"chat-{tally.examples}"  # see store_all
        state.files = files
        contract = all(item.contract for item in batch)
        messages = []
        for item in batch:
            # What getUpdates hands the connector: JSON text decoded by python-telegram-bot.
            data = json.loads(json.dumps(item.update))
            try:
                update = Update.de_json(data, bot.bot)
                parsed = run(loop, bot._inbound(update))
            except Exception as error:
                if item.contract:
                    raise
                # getUpdates raises the same way: the batch is never handed to ingest.
                tally.outcomes[f"off-contract refused by the parser ({type(error).__name__})"] += 1
                return
            if not item.contract:
                if parsed is not None:
                    messages.append(parsed)
                continue
            message = update.message or update.edited_message
            ignored = (message is None or message.from_user is None
                       or message.chat.type != "private")
            assert (parsed is None) == ignored, "the documented ignore rule"
            if parsed is None:
                tally.outcomes["ignored"] += 1
                continue
            assert_text_fields(parsed)
            assert parsed.provider_id == f"{message.chat.id}:{message.message_id}"
            assert parsed.sender == str(message.from_user.id)
            assert parsed.text.startswith(message.text or message.caption or "")
            assert len(parsed.attachments) == _wanted_downloads(message, files)
            tally.outcomes["edit" if parsed.is_edit else "message"] += 1
            messages.append(parsed)
        store_all(store, bot.name, messages, contract=contract, tally=tally)

    try:
        with reported(capsys, "telegram", tally):
            check()
    finally:
        run(loop, bot.aclose())
        run(loop, runner.cleanup())
        loop.close()


# ====================================================================================== Twilio

_sids = st.builds(lambda prefix, n: f"{prefix}{n:032x}", st.sampled_from(["SM", "MM"]),
                  st.integers(0, 2**128 - 1) | st.integers(0, 5))
_phones = st.one_of(
    st.sampled_from(["+33612345678", "+15555550100", "0612345678", "12345", "ACME",
                     "whatsapp:+33612345678", "+999999999999999999", "+", "", "tel:+1"]),
    hostile_text,
)
_rest_dates = st.one_of(
    st.none(),
    st.builds(lambda moment, minutes, weekday: (
        email.utils.format_datetime(moment.replace(tzinfo=timezone(timedelta(minutes=minutes))))
        [0 if weekday else 5:]),
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30)),
        st.integers(-1439, 1439), st.booleans()),
    st.sampled_from(["", "2026-03-02T09:00:00Z", "Mon, 02 Mar 2026 09:00:00 GMT", "1709370000",
                     "02 Mar 2026 09:00:00 -0000", "Mon, 02 Mar 26 09:00:00 +0000", "now"]),
)
_num_media = st.integers(0, 3).map(str)
twilio_records = _with(
    {"sid": _sids, "from": _phones, "to": _phones, "body": hostile_text,
     "num_media": _num_media, "date_sent": _rest_dates, "date_created": _rest_dates},
    {"account_sid": st.just(ACCOUNT),
     "direction": st.sampled_from(["inbound", "outbound-api", "outbound-reply"]),
     "status": st.sampled_from(["received", "receiving", "delivered", "x-new"]),
     "num_segments": st.integers(0, 10).map(str), "error_code": st.none() | _int64,
     "error_message": st.none() | hostile_text, "price": st.none() | hostile_text,
     "date_updated": _rest_dates, "api_version": st.just("2010-04-01")},
)
_media_fields = st.lists(st.tuples(hostile_text, st.sampled_from(["image/jpeg", "", "x/y"])),
                         max_size=3).map(lambda items: {
    key: value for n, (url, kind) in enumerate(items)
    for key, value in ((f"MediaUrl{n}", url), (f"MediaContentType{n}", kind))})
twilio_forms = st.builds(
    lambda sid, fields, media: {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
                                **fields, **media},
    _sids,
    _with({"From": _phones, "To": _phones, "Body": hostile_text, "NumMedia": _num_media},
          {"AccountSid": st.just(ACCOUNT), "SmsStatus": st.sampled_from(["received", "x"]),
           "NumSegments": st.integers(0, 10).map(str), "FromCity": hostile_text,
           "ToCountry": hostile_text, "ApiVersion": st.just("2010-04-01")}),
    _media_fields,
)
_media_sets = st.lists(st.tuples(st.sampled_from(["image/jpeg", "image/png", "video/mp4",
                                                  "text/vcard", "application/x-bogus"]),
                                 st.binary(max_size=64)), max_size=3)


@dataclass
class TwilioInput:
    payload: dict[str, Any]
    webhook: bool
    contract: bool
    media: list[tuple[str, bytes]]


twilio_inputs = st.one_of(
    st.builds(TwilioInput, twilio_records, st.just(False), st.just(True), _media_sets),
    st.builds(TwilioInput, twilio_forms, st.just(True), st.just(True), _media_sets),
    st.builds(TwilioInput, off_contract(twilio_records), st.just(False), st.just(False),
              _media_sets),
    st.builds(TwilioInput, off_contract(twilio_forms), st.just(True), st.just(False),
              _media_sets),
)


def _sid_of(item: TwilioInput) -> Any:
    return item.payload.get("MessageSid" if item.webhook else "sid")


def _form_values(payload: dict[str, Any]) -> dict[str, Any]:
    # A form post carries text only: whatever the off-contract tier put there arrives as text.
    return {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in payload.items()}


def test_twilio_messages_are_stored(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESK_TEST_TWILIO_TOKEN", TWILIO_TOKEN)
    loop = asyncio.new_event_loop()
    state = TwilioState()
    runner, api_base = run(loop, serve_twilio(state))
    sms = TwilioConnector(TwilioConnectorSettings.model_validate({
        "name": "sms", "type": "twilio", "account_sid": ACCOUNT,
        "auth_token": "env:DESK_TEST_TWILIO_TOKEN", "phone_number": NUMBER,
        "api_base": api_base}))
    tally = Tally()

    def parse(item: TwilioInput) -> InboundMessage | None:
        if item.webhook:
            form = _form_values(item.payload)
            if form.get("Body") is None:
                return None  # the webhook routes a post without Body to delivery reports
            return run(loop, sms._from_form(form))
        record = MessageInstance(sms.client.api.v2010, item.payload, ACCOUNT)
        return run(loop, sms._inbound(record))

    @seed(SEED)
    @FUZZ
    @given(batch=st.lists(twilio_inputs, min_size=1, max_size=3))
    def check(batch: list[TwilioInput]) -> None:
        tally.examples += 1
        sms.name = f"sms-{tally.examples}"  # see store_all
        contract = all(item.contract for item in batch)
        state.media = {}
        for item in batch:
            if isinstance(_sid_of(item), str):
                # A SID repeated in the batch (webhook and polling both saw it) has one media set.
                state.media.setdefault(_sid_of(item), [(state.sid("ME"), kind, data)
                                                       for kind, data in item.media])
        messages = []
        for item in batch:
            try:
                parsed = parse(item)
            except Exception as error:
                if item.contract:
                    raise
                tally.outcomes[f"off-contract refused by the parser ({type(error).__name__})"] += 1
                return
            if parsed is None:
                tally.outcomes["status callback"] += 1
                continue
            messages.append(parsed)
            if not item.contract:
                continue
            assert_text_fields(parsed)
            body = item.payload["Body" if item.webhook else "body"]
            assert parsed.provider_id == _sid_of(item)
            assert parsed.text.startswith(body)
            media = state.media[_sid_of(item)]
            downloads = len(media) if int(item.payload.get(
                "NumMedia" if item.webhook else "num_media") or 0) else 0
            assert len(parsed.attachments) == downloads
            tally.outcomes["webhook" if item.webhook else "polled"] += 1
        store_all(store, sms.name, messages, contract=contract, tally=tally)

    try:
        with reported(capsys, "twilio", tally):
            check()
    finally:
        run(loop, runner.cleanup())
        loop.close()

