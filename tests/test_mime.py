"""connectors.mime: what an agent sees of an email, and that no email can break the import."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.base import (
    FLAG_AUTO_REPLY,
    FLAG_BOUNCE,
    FLAG_OWN,
    FLAG_UNPARSED,
    InboundMessage,
)
from connectors.mime import message_id_of, parse_email, safe_filename

RECEIVED = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def mail(headers: str, body: str | bytes = "Hello\r\n") -> bytes:
    """An RFC 822 message from readable pieces (CRLF line ends, as on the wire)."""
    head = "\r\n".join(line.strip() for line in headers.strip().splitlines()) + "\r\n\r\n"
    return head.encode() + (body.encode() if isinstance(body, str) else body)


def parse(raw: bytes, **kwargs: object) -> InboundMessage:
    kwargs.setdefault("received_at", RECEIVED)
    return parse_email(raw, connector="support-mail", **kwargs)  # type: ignore[arg-type]


BASIC = mail(
    """
    From: Jane Doe <Jane.Doe@Example.COM>
    To: Support <support@example.com>, other@example.org
    Cc: "Boss, The" <boss@example.com>
    Subject: Order 1234 never arrived
    Date: Tue, 3 Mar 2026 10:15:00 +0100
    Message-ID: <abc.123@mail.example.com>
    """,
    "Hi,\r\nmy order never arrived.\r\n",
)


# --------------------------------------------------------------------------- basic fields


def test_basic_fields() -> None:
    msg = parse(BASIC)
    assert msg.channel == "email"
    assert msg.connector == "support-mail"
    assert msg.provider_id == "abc.123@mail.example.com"
    assert msg.sender == "jane.doe@example.com"
    assert msg.sender_name == "Jane Doe"
    assert msg.recipients == ["support@example.com", "other@example.org", "boss@example.com"]
    assert msg.subject == "Order 1234 never arrived"
    assert msg.text == "Hi,\nmy order never arrived.\n"
    assert msg.html is None
    assert msg.sent_at == datetime(2026, 3, 3, 9, 15, tzinfo=UTC)
    assert msg.raw == BASIC
    assert msg.flags == set()


def test_missing_subject_is_none_and_folded_subject_is_unfolded() -> None:
    assert parse(mail("From: a@example.com\nDate: Tue, 3 Mar 2026 10:15:00 +0000")).subject is None
    folded = b"From: a@example.com\r\nSubject: a long subject\r\n  that was folded\r\n\r\nx"
    assert parse(folded).subject == "a long subject  that was folded"


def test_message_id_of() -> None:
    assert message_id_of("<abc@x>") == "abc@x"
    assert message_id_of("  <abc@x>  (comment)") == "abc@x"
    assert message_id_of("abc@x") == "abc@x"
    assert message_id_of("<abc\r\n @x>") == "abc@x"
    assert message_id_of("<a@x> <b@x>") == "a@x"
    assert message_id_of("") is None
    assert message_id_of(None) is None
    assert message_id_of("<>") is None
    assert message_id_of("   ") is None


# --------------------------------------------------------------------------- RFC 2047


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        ("=?UTF-8?B?w4ljaGFuZ2UgZGUgY29tbWFuZGUg4oCUIG7CsDEy?=", "Échange de commande — n°12"),
        ("=?utf-8?q?Caf=C3=A9_cr=C3=A8me?=", "Café crème"),
        ("=?ISO-8859-1?Q?R=E9ponse_=E0_votre_demande?=", "Réponse à votre demande"),
        ("Re: =?utf-8?q?na=C3=AFve?= question", "Re: naïve question"),
        # Adjacent encoded words join without the folding whitespace (RFC 2047 §6.2).
        ("=?utf-8?q?Gr=C3=BC?=\r\n =?utf-8?q?=C3=9Fe?=", "Grüße"),
    ],
)
def test_rfc2047_subjects(encoded: str, expected: str) -> None:
    raw = f"From: a@example.com\r\nSubject: {encoded}\r\n\r\nbody".encode()
    assert parse(raw).subject == expected


def test_rfc2047_display_names() -> None:
    raw = mail(
        """
        From: =?utf-8?b?SsO8cmdlbiBNw7xsbGVy?= <jurgen@example.de>
        To: =?iso-8859-1?q?Andr=E9?= <andre@example.fr>
        """
    )
    msg = parse(raw)
    assert msg.sender_name == "Jürgen Müller"
    assert msg.sender == "jurgen@example.de"
    assert msg.recipients == ["andre@example.fr"]


def test_unknown_charset_in_header_falls_back_to_utf8_then_latin1() -> None:
    utf8 = parse(b"From: a@example.com\r\nSubject: =?x-unknown?q?caf=C3=A9?=\r\n\r\nx")
    assert utf8.subject == "café"
    latin = parse(b"From: a@example.com\r\nSubject: =?bogus-charset?q?caf=E9?=\r\n\r\nx")
    assert latin.subject == "café"


def test_raw_8bit_headers_are_decoded() -> None:
    raw = "From: José Núñez <jose@example.es>\r\nSubject: ¿Dónde está?\r\n\r\nhola".encode()
    msg = parse(raw)
    assert msg.sender_name == "José Núñez"
    assert msg.subject == "¿Dónde está?"


def test_terminal_escapes_do_not_survive_in_one_line_headers() -> None:
    raw = b"From: \x1b[31mEvil\x1b[0m <e@example.com>\r\nSubject: hi\x1b]0;pwned\x07 there\r\n\r\nx"
    msg = parse(raw)
    assert "\x1b" not in (msg.sender_name or "")
    assert msg.subject is not None
    assert "\x1b" not in msg.subject
    assert "\x07" not in msg.subject


# --------------------------------------------------------------------------- bodies


def test_broken_body_charset_falls_back() -> None:
    raw = mail(
        """
        From: a@example.com
        Content-Type: text/plain; charset="no-such-charset"
        Content-Transfer-Encoding: 8bit
        """,
        "Grüße aus Köln".encode(),
    )
    assert parse(raw).text == "Grüße aus Köln"
    latin = mail(
        """
        From: a@example.com
        Content-Type: text/plain; charset="x-mac-nonsense"
        Content-Transfer-Encoding: 8bit
        """,
        "Café à Paris".encode("latin-1"),
    )
    assert parse(latin).text == "Café à Paris"


def test_mislabelled_utf8_body_decodes_with_replacement_not_mojibake() -> None:
    raw = mail(
        """
        From: a@example.com
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: 8bit
        """,
        "Grüße".encode() + b" \xff end",
    )
    assert parse(raw).text == "Grüße \ufffd end"


def test_latin1_label_with_windows_quotes() -> None:
    raw = mail(
        """
        From: a@example.com
        Content-Type: text/plain; charset=iso-8859-1
        Content-Transfer-Encoding: 8bit
        """,
        b"\x93Hello\x94 \x80 5",
    )
    assert parse(raw).text == "“Hello” € 5"


def test_quoted_printable_and_base64_bodies() -> None:
    qp = mail(
        """
        From: a@example.com
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: quoted-printable
        """,
        "Bonjour, voil=C3=A0 un tr=C3=A8s long=\r\n texte\r\n",
    )
    assert parse(qp).text == "Bonjour, voilà un très long texte\n"
    b64 = mail(
        """
        From: a@example.com
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: base64
        """,
        "8J+YgCBoZWxsbw==\r\n",
    )
    assert parse(b64).text == "😀 hello"


HTML_ONLY = mail(
    """
    From: shop@example.com
    Content-Type: text/html; charset=utf-8
    """,
    "<html><head><style>p {color: red}</style></head><body>"
    "<p>Hello&nbsp;Jane,</p><p>Your parcel is <b>late</b>. "
    '<a href="https://track.example.com/42">Track it here</a>.</p>'
    "<div>Thanks,</div><div>The shop</div><script>alert(1)</script></body></html>",
)


def test_html_only_mail_becomes_readable_text() -> None:
    msg = parse(HTML_ONLY)
    assert msg.html is not None
    assert "<p>" in msg.html
    lines = msg.text.splitlines()
    assert lines[0] == "Hello Jane,"
    # Paragraphs stay apart, the link target is visible, markup/CSS/script are gone.
    assert "" in lines
    assert "Your parcel is late. [Track it here](https://track.example.com/42)." in lines
    assert lines[-2:] == ["Thanks,", "The shop"]
    for junk in ("<", "color: red", "alert("):
        assert junk not in msg.text


ALTERNATIVE = mail(
    """
    From: a@example.com
    MIME-Version: 1.0
    Content-Type: multipart/alternative; boundary="ALT"
    """,
    "--ALT\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    "The plain version.\r\n"
    "--ALT\r\n"
    "Content-Type: text/html; charset=utf-8\r\n\r\n"
    "<p>The <b>HTML</b> version.</p>\r\n"
    "--ALT--\r\n",
)


def test_multipart_alternative_prefers_text_plain_and_keeps_html() -> None:
    msg = parse(ALTERNATIVE)
    assert msg.text.strip() == "The plain version."
    assert msg.html is not None
    assert "<b>HTML</b>" in msg.html
    assert msg.attachments == []


def test_alternative_with_empty_plain_part_uses_html() -> None:
    raw = ALTERNATIVE.replace(b"The plain version.\r\n", b"\r\n")
    assert parse(raw).text == "The HTML version."


def test_mixed_body_around_an_inline_image_is_not_cut() -> None:
    # Apple Mail sends text / image / text; the second half is part of what the customer wrote.
    raw = mail(
        """
        From: a@example.com
        Content-Type: multipart/mixed; boundary="M"
        """,
        "--M\r\nContent-Type: text/plain\r\n\r\nLook at this:\r\n"
        "--M\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
        "--M\r\nContent-Type: text/plain\r\n\r\nIt is broken.\r\n"
        "--M--\r\n",
    )
    msg = parse(raw)
    assert msg.text == "Look at this:\nIt is broken."
    assert [(a.filename, a.content_type, a.data) for a in msg.attachments] == [
        ("attachment.png", "image/png", b"\x89PNG\r\n\x1a\n")
    ]


def test_nul_bytes_are_stripped_from_text() -> None:
    raw = mail("From: a@example.com\nSubject: a\x00b", b"he\x00llo\r\n")
    msg = parse(raw)
    assert msg.text == "hello\n"
    assert msg.subject == "ab"


# --------------------------------------------------------------------------- attachments

PDF_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 4


def with_attachment(disposition: str) -> bytes:
    import base64

    encoded = base64.encodebytes(PDF_BYTES).decode().replace("\n", "\r\n")
    return mail(
        """
        From: a@example.com
        Content-Type: multipart/mixed; boundary="B"
        """,
        "--B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        f"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: {disposition}\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
        "--B--\r\n",
    )


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="invoice.pdf"', "invoice.pdf"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="..\\\\..\\\\x.exe"', "x.exe"),
        ('attachment; filename="/etc/shadow"', "shadow"),
        ('attachment; filename=".."', "attachment.pdf"),
        ('attachment; filename="a\x01b\x1b[2Jc.pdf"', "ab[2Jc.pdf"),
        ('attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="', "résumé.pdf"),
        ("attachment; filename*=utf-8''%E2%82%AC%20rate.pdf", "€ rate.pdf"),
        ('attachment; filename="Grüße.pdf"', "Grüße.pdf"),  # raw 8-bit, as Outlook sends it
        ("attachment", "attachment.pdf"),
    ],
)
def test_attachment_names_are_safe_and_bytes_exact(disposition: str, expected: str) -> None:
    msg = parse(with_attachment(disposition))
    assert msg.text.strip() == "See attached."
    [attachment] = msg.attachments
    assert attachment.filename == expected
    assert attachment.content_type == "application/pdf"
    assert attachment.data == PDF_BYTES
    assert attachment.size == len(PDF_BYTES)
    assert attachment.sha256 == hashlib.sha256(PDF_BYTES).hexdigest()


def test_very_long_attachment_name_is_capped_keeping_extension() -> None:
    msg = parse(with_attachment(f'attachment; filename="{"é" * 500}.pdf"'))
    name = msg.attachments[0].filename
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 200
    assert name.startswith("éé")


@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc/passwd",
        "..\\..\\x.exe",
        "/absolute/path",
        "C:\\Windows\\system32\\evil.dll",
        "..",
        ".",
        "...",
        "",
        "   ",
        "\x00\x01\x02",
        "a/b/../../..",
        ".bashrc",
        "CON",
        "nul.txt",
        "x" * 500,
        "y" * 300 + ".tar.gz",
        "evil\u202egpj.exe",
        "line\nbreak.txt",
        "a:b*c?.txt",
        "\ud800broken.txt",
    ],
)
def test_safe_filename_never_escapes_a_directory(hostile: str, tmp_path: Path) -> None:
    name = safe_filename(hostile)
    assert name
    assert name not in (".", "..")
    assert "/" not in name and "\\" not in name
    assert not name.startswith(".")
    assert ".." not in name
    assert len(name.encode("utf-8")) <= 200
    assert all(ch >= " " for ch in name)
    assert "\u202e" not in name
    target = (tmp_path / name).resolve()
    assert target.parent == tmp_path.resolve()
    # The name is usable as a file on this system.
    target.write_bytes(b"x")
    assert target.read_bytes() == b"x"


def test_safe_filename_details() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..\\..\\x.exe") == "x.exe"
    assert safe_filename("CON") == "_CON"
    assert safe_filename("con.txt") == "_con.txt"
    assert safe_filename(".bashrc") == "bashrc"
    assert safe_filename(None) == "attachment"
    assert safe_filename("", fallback="image.png") == "image.png"
    assert safe_filename("..", fallback="../x") == "x"
    assert safe_filename("e\u0301t\u00e9.txt") == "\u00e9t\u00e9.txt"  # NFC
    long = safe_filename("y" * 300 + ".tar.gz")
    assert long.endswith(".gz")
    assert len(long.encode()) == 200


def test_inline_image_and_forwarded_message_are_attachments() -> None:
    raw = mail(
        """
        From: a@example.com
        Content-Type: multipart/mixed; boundary="F"
        """,
        "--F\r\nContent-Type: text/plain\r\n\r\nFYI, see below.\r\n"
        "--F\r\nContent-Type: message/rfc822\r\n\r\n"
        "From: customer@example.net\r\nSubject: The original\r\n\r\nOriginal body\r\n"
        "--F--\r\n",
    )
    msg = parse(raw)
    assert msg.text.strip() == "FYI, see below."
    [forwarded] = msg.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "The original.eml"
    assert b"Original body" in forwarded.data


# --------------------------------------------------------------------------- ids, dates, threading


def test_missing_message_id_uses_stable_hash_of_raw() -> None:
    raw = mail("From: a@example.com\nSubject: no id")
    first = parse(raw)
    second = parse_email(raw, connector="other", received_at=datetime.now(UTC))
    expected = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert first.provider_id == second.provider_id == expected
    assert parse(raw + b"more").provider_id != expected


def test_empty_message_id_uses_hash() -> None:
    raw = mail("From: a@example.com\nMessage-ID: <>")
    assert parse(raw).provider_id.startswith("sha256:")


@pytest.mark.parametrize(
    "date_header",
    [None, "", "not a date", "Tue, 99 Foo 2026 99:99:99 +0000", "Tue, 3 Mar 2026 10:00 +9999"],
)
def test_missing_or_broken_date_uses_received_at(date_header: str | None) -> None:
    headers = "From: a@example.com" + (f"\nDate: {date_header}" if date_header is not None else "")
    msg = parse(mail(headers))
    assert msg.sent_at == RECEIVED


def test_dates_are_always_timezone_aware() -> None:
    minus_zero = parse(mail("From: a@example.com\nDate: Tue, 3 Mar 2026 10:00:00 -0000"))
    assert minus_zero.sent_at == datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    no_zone = parse(mail("From: a@example.com\nDate: Tue, 3 Mar 2026 10:00:00"))
    assert no_zone.sent_at is not None and no_zone.sent_at.tzinfo is not None
    offset = parse(mail("From: a@example.com\nDate: Tue, 3 Mar 2026 10:00:00 +0530"))
    assert offset.sent_at is not None
    assert offset.sent_at.utcoffset() == timedelta(hours=5, minutes=30)
    # No received_at given: "now", still aware.
    now = parse_email(mail("From: a@example.com"), connector="c")
    assert now.sent_at is not None and now.sent_at.tzinfo is not None
    # A naive received_at is taken as UTC rather than rejected.
    naive = parse_email(
        mail("From: a@example.com"), connector="c", received_at=datetime(2026, 1, 1)
    )
    assert naive.sent_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_in_reply_to_and_references() -> None:
    raw = (
        b"From: a@example.com\r\n"
        b"In-Reply-To: <parent@example.com> (Support's message of Tue)\r\n"
        b"References: <root@example.com>\r\n"
        b"  <middle@example.com> <parent@example.com>\r\n"
        b"\r\nbody"
    )
    msg = parse(raw)
    assert msg.in_reply_to == "parent@example.com"
    assert msg.references == ["root@example.com", "middle@example.com", "parent@example.com"]
    plain = parse(mail("From: a@example.com"))
    assert plain.in_reply_to is None
    assert plain.references == []


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated; type=oof",
        "Precedence: bulk",
        "Precedence: auto_reply",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
        "X-Auto-Response-Suppress: All",
        "X-Auto-Response-Suppress: DR, OOF, AutoReply",
    ],
)
def test_auto_replies_are_flagged(header: str) -> None:
    msg = parse(mail(f"From: jane@example.com\nSubject: Out of office\n{header}"))
    assert FLAG_AUTO_REPLY in msg.flags
    assert FLAG_BOUNCE not in msg.flags


@pytest.mark.parametrize("header", ["Auto-Submitted: no", "Precedence: first-class", ""])
def test_human_mail_is_not_flagged_auto(header: str) -> None:
    msg = parse(mail(f"From: jane@example.com\n{header}".strip()))
    assert FLAG_AUTO_REPLY not in msg.flags


DSN = mail(
    """
    Return-Path: <>
    From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
    To: support@example.com
    Subject: Undelivered Mail Returned to Sender
    Auto-Submitted: auto-replied
    Content-Type: multipart/report; report-type=delivery-status; boundary="R"
    """,
    "--R\r\nContent-Type: text/plain\r\n\r\n"
    "I'm sorry to have to inform you that your message could not be delivered.\r\n"
    "--R\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; mx.example.com\r\n\r\n"
    "Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    "--R\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    "From: support@example.com\r\nTo: gone@example.net\r\nSubject: Your ticket\r\n"
    "--R--\r\n",
)


def test_dsn_is_flagged_bounce_and_readable() -> None:
    msg = parse(DSN)
    assert FLAG_BOUNCE in msg.flags
    assert msg.text.startswith("I'm sorry to have to inform you")
    names = {a.filename for a in msg.attachments}
    assert names == {"delivery-status.txt", "headers.txt"}
    status = next(a for a in msg.attachments if a.filename == "delivery-status.txt")
    assert b"Status: 5.1.1" in status.data


def test_bounce_detected_from_sender_or_null_return_path() -> None:
    by_sender = parse(mail("From: postmaster@example.net\nSubject: Delivery failure"))
    assert FLAG_BOUNCE in by_sender.flags
    by_null_path = parse(
        mail(
            "Return-Path: <>\nFrom: mx@example.net\nSubject: Delivery Status Notification (Failure)"
        )
    )
    assert FLAG_BOUNCE in by_null_path.flags
    # An out-of-office also has an empty Return-Path (RFC 3834): that alone is not a bounce.
    oof = parse(mail("Return-Path: <>\nFrom: jane@example.com\nSubject: Away until Monday"))
    assert FLAG_BOUNCE not in oof.flags


def test_own_address_is_flagged_case_insensitively() -> None:
    raw = mail("From: Support Team <Support@Example.com>\nTo: jane@example.org")
    assert FLAG_OWN in parse(raw, own_addresses=["support@example.COM"]).flags
    assert FLAG_OWN in parse(raw, own_addresses=["Support <support@example.com>"]).flags
    assert FLAG_OWN not in parse(raw, own_addresses=["sales@example.com"]).flags
    assert FLAG_OWN not in parse(raw).flags


# --------------------------------------------------------------------------- never raising


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00" * 1000,
        b"\x00" * 4096,
        bytes(range(256)) * 20,
        b"\r\n\r\n\r\n",
    ],
    ids=["empty", "bom-nul-garbage", "nuls", "all-bytes", "blank-lines"],
)
def test_garbage_never_raises_and_is_flagged_unparsed(raw: bytes) -> None:
    msg = parse(raw)
    assert FLAG_UNPARSED in msg.flags
    assert msg.raw == raw
    assert msg.provider_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert "\x00" not in msg.text
    assert len(msg.text) <= 100_000
    assert msg.sent_at == RECEIVED


def test_huge_garbage_text_is_truncated() -> None:
    raw = b"\xfe" * 1_000_000
    msg = parse(raw)
    assert FLAG_UNPARSED in msg.flags
    assert 0 < len(msg.text) <= 100_000
    assert msg.raw == raw


def test_parser_failure_keeps_the_headers_and_shows_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import connectors.mime as mime

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated parser bug")

    monkeypatch.setattr(mime, "_collect", explode)
    msg = parse(BASIC)
    assert FLAG_UNPARSED in msg.flags
    assert msg.provider_id == "abc.123@mail.example.com"
    assert msg.sender == "jane.doe@example.com"
    assert msg.subject == "Order 1234 never arrived"
    assert msg.sent_at == datetime(2026, 3, 3, 9, 15, tzinfo=UTC)
    assert msg.text == "Hi,\nmy order never arrived.\n"
    assert msg.raw == BASIC


def test_total_failure_still_recovers_the_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.mime as mime

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated parser bug")

    monkeypatch.setattr(mime, "_parse", explode)
    monkeypatch.setattr(mime, "_from_headers", explode)
    msg = parse(BASIC)
    assert FLAG_UNPARSED in msg.flags
    assert msg.provider_id == "abc.123@mail.example.com"
    assert "my order never arrived" in msg.text
    assert msg.raw == BASIC


def test_mime_bomb_nesting_does_not_crash() -> None:
    depth = 3000
    body = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    body += b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    body += b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    raw = b"From: a@example.com\r\nSubject: bomb\r\nMessage-ID: <bomb@x>\r\n" + body
    msg = parse(raw)
    assert msg.raw == raw
    assert msg.provider_id == "bomb@x"
    # Even when the structure is too deep to walk, the agent sees who sent it.
    assert msg.sender == "a@example.com"
    assert msg.subject == "bomb"


@pytest.mark.parametrize(
    "raw",
    [
        # Malformed but recognisably mail: parsed, not flagged.
        b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all",
        b"From: a@example.com\r\nContent-Type: text/plain; charset=unicode_escape\r\n\r\n\\udc80",
        b"From: a@example.com\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64***",
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
        b"From: \r\nTo: ,,,\r\nCc: <>\r\nDate: \r\nSubject: =?utf-8?b?!!!?=\r\n\r\n",
    ],
)
def test_malformed_mail_parses_without_raising(raw: bytes) -> None:
    msg = parse(raw)
    assert msg.raw == raw
    assert FLAG_UNPARSED not in msg.flags
    assert msg.sent_at is not None and msg.sent_at.tzinfo is not None
    for value in (msg.text, msg.subject or "", msg.sender, *msg.recipients):
        value.encode("utf-8")  # storable: no lone surrogates


# --------------------------------------------------------------------------- CPython corpus


def _cpython_email_data() -> list[Path]:
    try:
        import test.test_email as test_email
    except ImportError:
        return []
    data = Path(test_email.__file__).parent / "data"
    return sorted(p for p in data.iterdir() if p.is_file()) if data.is_dir() else []


CPYTHON_FILES = _cpython_email_data()


@pytest.mark.parametrize(
    "path",
    CPYTHON_FILES
    or [
        pytest.param(
            None,
            marks=pytest.mark.skip(
                reason="CPython's test.test_email data dir is not installed (python3-test / "
                "libpython3-testsuite package missing)"
            ),
        )
    ],
    ids=lambda p: p.name if isinstance(p, Path) else "missing",
)
def test_every_cpython_email_test_file_parses(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse_email(raw, connector="corpus", received_at=RECEIVED)
    assert isinstance(msg, InboundMessage)
    assert msg.raw == raw
    assert msg.sent_at is not None
    assert msg.sent_at.tzinfo is not None
    assert msg.provider_id
    for value in (msg.text, msg.html or "", msg.subject or "", msg.sender_name or ""):
        assert "\x00" not in value
        value.encode("utf-8")
    for attachment in msg.attachments:
        assert "/" not in attachment.filename and not attachment.filename.startswith(".")


def test_cpython_corpus_reads_as_mail() -> None:
    if not CPYTHON_FILES:
        pytest.skip("CPython's test.test_email data dir is not installed")
    messages = [p for p in CPYTHON_FILES if p.name.startswith("msg_")]
    parsed = {p.name: parse_email(p.read_bytes(), connector="c") for p in messages}
    unparsed = [name for name, msg in parsed.items() if FLAG_UNPARSED in msg.flags]
    # Odd but real messages come out as mail; only header-less fragments (msg_19 is a bare
    # digest body) may not, and even those show their text.
    assert len(unparsed) <= len(messages) // 10
    for name in unparsed:
        assert parsed[name].text.strip()


def test_sent_at_keeps_the_writers_offset() -> None:
    msg = parse(mail("From: a@example.com\nDate: Mon, 2 Mar 2026 23:30:00 -0800"))
    assert msg.sent_at == datetime(2026, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-8)))
