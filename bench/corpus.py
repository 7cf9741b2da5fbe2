"""Deterministic synthetic mail for tests and benchmarks: a Maildir or mbox of N messages from
a pool of customers, with threads (In-Reply-To/References), RFC 2047 names, HTML parts and
the odd attachment, like a real support mailbox."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

FIRST = ["Ana", "Bruno", "Chloé", "Dmitri", "Elif", "François", "Grace", "Hiro", "Ines",
         "Jonas", "Kenji", "Léa", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa",
         "Sven", "Tomás", "Uma", "Viktor", "Wen", "Yara", "Zoë"]
LAST = ["Martin", "Müller", "García", "Rossi", "Novak", "Dubois", "Smith", "Tanaka", "Silva",
        "Kowalski", "Nguyen", "Jensen", "Costa", "Leroy", "Fischer", "Moreau"]
TOPICS = ["Order not delivered", "Refund request", "Grinder makes a loud noise",
          "Invoice for my company", "Wrong colour received", "How do I descale?",
          "Warranty question", "Cancel my subscription", "Bulk order for our office",
          "Password reset does not arrive"]
WORDS = ("coffee machine order delivery refund parcel grinder warranty invoice espresso milk "
         "frother tracking number broken replacement thanks please week payment card address "
         "support weekend morning water filter descaling pump pressure steam").split()


def _encoded_name(name: str) -> str:
    if name.isascii():
        return f'"{name}"'
    import base64

    return f"=?utf-8?b?{base64.b64encode(name.encode()).decode()}?="


def generate(
    count: int, customers: int = 300, *, seed: int = 1, start: datetime | None = None
) -> list[bytes]:
    """`count` RFC 822 messages from `customers` senders; each sender's mail forms threads."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    last_id: dict[int, tuple[str, str, list[str]]] = {}
    messages = []
    for n in range(count):
        who = rng.randrange(customers)
        name = f"{FIRST[who % len(FIRST)]} {LAST[(who // len(FIRST)) % len(LAST)]}"
        address = f"customer{who}@example{who % 7}.org"
        when = start + timedelta(seconds=n * 37 + rng.randrange(30))
        message_id = f"<m{n}.{seed}@mail.example{who % 7}.org>"
        headers = [
            f"From: {_encoded_name(name)} <{address}>",
            "To: Support <support@example.com>",
            f"Date: {format_datetime(when)}",
            f"Message-ID: {message_id}",
        ]
        thread = last_id.get(who)
        if thread is not None and rng.random() < 0.6:
            parent, subject, refs = thread
            headers += [f"Subject: Re: {subject}", f"In-Reply-To: {parent}",
                        f"References: {' '.join([*refs, parent][-10:])}"]
            refs = [*refs, parent][-10:]
        else:
            subject, refs = rng.choice(TOPICS), []
            headers.append(f"Subject: {subject}")
        last_id[who] = (message_id, subject, refs)
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(20, 120)))
        paragraphs = f"Hello,\n\n{body}.\n\nBest regards,\n{name}\n"
        if n % 10 == 3:
            headers += ["MIME-Version: 1.0",
                        'Content-Type: multipart/alternative; boundary="b1"']
            payload = (f"--b1\nContent-Type: text/plain; charset=utf-8\n\n{paragraphs}\n"
                       f"--b1\nContent-Type: text/html; charset=utf-8\n\n"
                       f"<html><body><p>{paragraphs}</p></body></html>\n--b1--\n")
        elif n % 50 == 7:
            headers += ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b2"']
            payload = (f"--b2\nContent-Type: text/plain; charset=utf-8\n\n{paragraphs}\n"
                       "--b2\nContent-Type: application/pdf; name=invoice.pdf\n"
                       "Content-Disposition: attachment; filename=invoice.pdf\n"
                       "Content-Transfer-Encoding: base64\n\n"
                       "JVBERi0xLjQKJcOkw7zDtsOfCg==\n--b2--\n")
        else:
            headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: 8bit"]
            payload = paragraphs
        messages.append(("\n".join(headers) + "\n\n" + payload).encode())
    return messages


def write_maildir(path: Path, messages: list[bytes]) -> Path:
    """Write messages as a Maildir (cur/ new/ tmp/); returns the path."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for n, raw in enumerate(messages):
        (path / "cur" / f"{1700000000 + n}.{n}.bench:2,S").write_bytes(raw)
    return path


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    with path.open("wb") as handle:
        for raw in messages:
            escaped = b"\n".join(
                b">" + line if line.startswith(b"From ") else line for line in raw.split(b"\n")
            )
            handle.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n" + escaped + b"\n\n")
    return path

