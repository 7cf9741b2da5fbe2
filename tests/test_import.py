"""`desk import` of real-shaped mailboxes, checked through `desk export`."""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from bench.corpus import generate, write_maildir, write_mbox
from desk.cli import main
from desk.models import Message
from desk.store import Store

N = 300


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return generate(N, customers=60, seed=3)


def senders(messages: list[bytes]) -> set[str]:
    found = set()
    for raw in messages:
        match = re.search(rb"^From: .*<([^>]+)>$", raw, re.MULTILINE)
        assert match
        found.add(match.group(1).decode().lower())
    return found


def desk(*args: str) -> int:
    return main([str(a) for a in args])


def export(db: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    capsys.readouterr()
    assert desk("--db", db, "export") == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def by_type(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["type"] == kind]


def test_a_maildir_import_gives_one_customer_and_ticket_per_sender(
    isolated: Path, corpus: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    maildir = write_maildir(isolated / "Maildir", corpus)
    db = isolated / "desk.db"
    assert desk("--db", db, "import", "maildir", maildir, "--quiet") == 0
    assert f"{N} messages stored, 0 already there" in capsys.readouterr().out

    records = export(db, capsys)
    customers, tickets, messages = (by_type(records, k) for k in ("customer", "ticket", "message"))
    expected = senders(corpus)
    assert len(customers) == len(expected)
    assert {i["value"] for c in customers for i in c["identities"]} == expected
    # Each sender's mail threads into one live ticket.
    assert len(tickets) == len(customers)
    assert {t["customer_id"] for t in tickets} == {c["id"] for c in customers}
    assert all(t["status"] == "open" for t in tickets)
    assert len(messages) == N
    assert len({m["provider_id"] for m in messages}) == N
    assert sum(1 for m in messages if m["attachments"]) == len(range(7, N, 50))

    # Importing the same mailbox again stores nothing and changes nothing.
    assert desk("--db", db, "import", "maildir", maildir, "--quiet") == 0
    assert f"0 messages stored, {N} already there" in capsys.readouterr().out
    assert export(db, capsys) == records


def test_an_mbox_import_gives_the_same_store(
    isolated: Path, corpus: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    from_maildir, from_mbox = isolated / "maildir.db", isolated / "mbox.db"
    assert desk("--db", from_maildir, "import", "maildir",
                write_maildir(isolated / "Maildir", corpus), "--quiet") == 0
    assert desk("--db", from_mbox, "import", "mbox",
                write_mbox(isolated / "mail.mbox", corpus), "--quiet") == 0
    assert desk("--db", from_mbox, "import", "mbox", isolated / "mail.mbox", "--quiet") == 0
    assert f"0 messages stored, {N} already there" in capsys.readouterr().out

    def comparable(records: list[dict]) -> list[dict]:
        for record in records:
            record.pop("updated_at", None)  # when the import ran
            if record["type"] == "message":
                # bench.corpus.write_mbox leaves one extra blank line after each message.
                record["text"] = record["text"].rstrip("\n")
        return records

    assert comparable(export(from_mbox, capsys)) == comparable(export(from_maildir, capsys))


def test_the_console_script_imports_a_maildir(isolated: Path, corpus: list[bytes]) -> None:
    executable = shutil.which("desk")
    assert executable, "the `desk` console script is not installed (pip install -e .)"
    maildir = write_maildir(isolated / "Maildir", corpus[:50])
    db = isolated / "desk.db"
    result = subprocess.run(
        [executable, "--db", str(db), "import", "maildir", str(maildir)],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(), cwd=isolated,
    )
    assert result.returncode == 0, result.stderr
    assert "50 messages stored" in result.stdout
    store = Store(f"sqlite:///{db}")
    with store.session() as session:
        assert len(session.execute(select(Message.id)).all()) == 50
    store.close()


def test_a_missing_mailbox_is_a_clear_error(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert desk("--db", isolated / "desk.db", "import", "mbox", isolated / "nope.mbox") == 1
    assert "nope.mbox: not a file, so not an mbox" in capsys.readouterr().err


# ---------------------------------------------------------------------------- hostile mail


def cpython_email_data() -> Path:
    try:
        import test.test_email
    except ImportError:
        pytest.skip("CPython's test.test_email package is not installed with this Python "
                    "(Debian ships it separately as libpython3-testsuite)")
    data = Path(test.test_email.__file__).parent / "data"
    if not data.is_dir():
        pytest.skip(f"CPython's email test data is missing: {data}")
    return data


def storage_key(raw: bytes) -> str:
    """How desk tells messages apart: the Message-ID, or a hash of the bytes without one."""
    value = email.message_from_bytes(raw).get("Message-ID")
    if value:
        match = re.search(r"<([^<>]*)>", str(value))
        return re.sub(r"\s+", "", match.group(1) if match else str(value))
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_every_file_of_cpythons_email_test_data_is_stored(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = cpython_email_data()
    maildir = isolated / "Maildir"
    (maildir / "cur").mkdir(parents=True)
    files = sorted(p for p in data.iterdir() if p.is_file())
    assert len(files) > 20
    first_with_key: dict[str, bytes] = {}
    for n, source in enumerate(files):
        raw = source.read_bytes()
        first_with_key.setdefault(storage_key(raw), raw)
        shutil.copyfile(source, maildir / "cur" / f"{n:04d}.{source.name}:2,S")

    db = isolated / "desk.db"
    assert desk("--db", db, "import", "maildir", maildir, "--quiet") == 0
    out = capsys.readouterr().out
    assert f"{len(first_with_key)} messages stored, {len(files) - len(first_with_key)} already" \
        in out

    store = Store(f"sqlite:///{db}")
    with store.session() as session:
        stored = session.execute(select(Message.provider_id, Message.flags, Message.raw)).all()
    store.close()
    assert len(stored) == len(first_with_key)
    raws = {raw for _pid, _flags, raw in stored}
    assert raws == set(first_with_key.values())  # every distinct message, byte for byte
    # The image and sound files are no mail at all: flagged, and their bytes kept.
    unparsed = [raw for _pid, flags, raw in stored if "unparsed" in flags.split(",")]
    assert unparsed
    assert all(raw for raw in unparsed)
    # And the whole store can still be exported.
    records = export(db, capsys)
    assert len(by_type(records, "message")) == len(first_with_key)
