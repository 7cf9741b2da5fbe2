"""Attachments: contents stored once by their hash, names kept as data, saved only inside the
folder an agent chooses, and a message over `max_message_bytes` stored truncated, not lost."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from peers import DESK
from sqlalchemy import create_engine, func, inspect, select, text

from connectors.base import FLAG_TRUNCATED, Attachment
from desk.attachments import AttachmentError, attachments_of, save, ticket_attachments
from desk.ingest import IngestOptions, ingest
from desk.models import Attachment as StoredAttachment
from desk.models import Blob, Message, Meta
from desk.store import SCHEMA_VERSION, Store

HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/shadow",
    "..",
    ".",
    "...",
    "a/../../b.txt",
    "C:\\Windows\\System32\\evil.dll",
    "\\\\server\\share\\x.doc",
    "in\x00voice.pdf",
    "\x1b[31mred\x1b[0m.txt\x07",
    "\u202egpj.exe",  # right-to-left override: shows as "exe.jpg"
    "CON",
    "nul.txt",
    "LPT1.pdf",
    "x" * 1000 + ".pdf",
    "é" * 300,
    "  .hidden  ",
    "",
    "report.pdf\n/tmp/evil",
]


def stored_with(store: Store, inbound, names: list[str],
                data: bytes = b"%PDF-1.4 data") -> list[int]:
    message = inbound(attachments=[Attachment(name, "application/pdf", data) for name in names])
    ingest(store, [message])
    with store.session() as session:
        return list(session.execute(select(StoredAttachment.id).order_by(StoredAttachment.id))
                    .scalars())


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_a_hostile_name_is_saved_inside_the_chosen_folder(store, inbound, tmp_path, name) -> None:
    folder = tmp_path / "saved"
    (attachment_id,) = stored_with(store, inbound, [name])
    with store.session() as session:
        kept = session.get(StoredAttachment, attachment_id).filename
        path = save(session, attachment_id, folder)
    # The name is data: kept as the sender wrote it (less NUL, which no text column takes).
    assert kept == name.replace("\x00", "")
    assert path.parent == folder and list(folder.iterdir()) == [path]
    assert path.read_bytes() == b"%PDF-1.4 data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = path.name
    assert saved not in ("", ".", "..") and not saved.startswith(".")
    assert "/" not in saved and "\\" not in saved and "\x00" not in saved
    assert all(ch.isprintable() for ch in saved) and "\u202e" not in saved
    assert len(saved.encode()) <= 200
    assert saved.split(".")[0].upper() not in ("CON", "NUL", "LPT1")
    assert not (tmp_path / "etc").exists() and not Path("/tmp/evil").exists()


def test_saving_never_replaces_a_file_nor_follows_a_link(store, inbound, tmp_path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (folder / "report.pdf").symlink_to(outside)  # planted where the save would go
    (first, second) = stored_with(store, inbound, ["report.pdf", "report.pdf"])
    with store.session() as session:
        paths = [save(session, first, folder), save(session, second, folder)]
    assert [p.name for p in paths] == ["report (1).pdf", "report (2).pdf"]
    assert outside.read_text() == "untouched"


def test_a_missing_folder_is_created_owner_only(store, inbound, tmp_path) -> None:
    (attachment_id,) = stored_with(store, inbound, ["a.pdf"])
    previous = os.umask(0)
    try:
        with store.session() as session:
            path = save(session, attachment_id, tmp_path / "new" / "folder")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700


def test_the_same_content_is_stored_once(store, inbound) -> None:
    logo = b"\x89PNG\r\n\x1a\n logo"
    ingest(store, [inbound(attachments=[Attachment("logo.png", "image/png", logo)]),
                   inbound(attachments=[Attachment("logo.png", "image/png", logo)])])
    ingest(store, [inbound(attachments=[Attachment("sig.png", "image/png", logo)])])
    with store.session() as session:
        assert session.execute(select(func.count()).select_from(StoredAttachment)).scalar() == 3
        (blob,) = session.execute(select(Blob)).scalars()
    assert blob.sha256 == hashlib.sha256(logo).hexdigest() and blob.data == logo


def test_a_message_over_the_limit_is_stored_truncated_and_flagged(store, inbound,
                                                                  tmp_path) -> None:
    small, big = b"s" * 30_000, b"B" * 200_000
    raw = b"From: x\r\n\r\n" + b"r" * 300_000
    message = inbound("Please see the two files.", provider_id="huge@example.org", raw=raw,
                      attachments=[Attachment("small.pdf", "application/pdf", small),
                                   Attachment("video.mp4", "video/mp4", big)])
    result = ingest(store, [message], options=IngestOptions(max_message_bytes=100_000))
    assert result.stored == 1
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
        infos = attachments_of(session, [stored.id])[stored.id]
        listed = ticket_attachments(session, stored.ticket_id)
        blobs = session.execute(select(func.sum(Blob.size))).scalar()
        with pytest.raises(AttachmentError, match="over max_message_bytes"):
            save(session, infos[1].id, tmp_path)
        assert save(session, infos[0].id, tmp_path).read_bytes() == small
    assert FLAG_TRUNCATED in stored.flags.split(",")
    assert stored.text.startswith("Please see the two files.")
    assert "huge@example.org" in stored.text and "video.mp4" in stored.text  # where it still is
    assert [(i.filename, i.size, i.stored) for i in infos] == [
        ("small.pdf", 30_000, True), ("video.mp4", 200_000, False)]
    assert [i.filename for i in listed] == ["video.mp4", "small.pdf"]  # newest first
    assert blobs == 30_000
    assert stored.raw is not None and raw.startswith(stored.raw)
    assert len(stored.raw) + len(stored.text.encode()) + blobs <= 100_000 + 1000


def test_a_message_within_the_limit_is_untouched(store, inbound) -> None:
    raw = b"From: x\r\n\r\nhello"
    ingest(store, [inbound("hello", raw=raw)], options=IngestOptions(max_message_bytes=65_536))
    with store.session() as session:
        stored = session.execute(select(Message)).scalar_one()
    assert (stored.text, stored.raw, stored.flags) == ("hello", raw, "")


@pytest.mark.sqlite_only("builds a schema-4 store by hand in a SQLite file")
def test_a_schema_4_store_moves_attachment_contents_into_blobs(tmp_path, inbound) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = Store(url)
    stored_with(store, inbound, ["a.pdf", "b.pdf"], data=b"same bytes")
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # as desk 4 wrote it: the content on each attachment row
        conn.execute(text("ALTER TABLE attachment ADD COLUMN data BLOB"))
        conn.execute(text("UPDATE attachment SET data = x'73616d65206279746573'"))
        conn.execute(text("DROP TABLE blob"))
        conn.execute(text("UPDATE meta SET value = '4' WHERE key = 'schema_version'"))
    engine.dispose()
    reopened = Store(url)
    with reopened.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
        (blob,) = session.execute(select(Blob)).scalars()
        ids = session.execute(select(StoredAttachment.id)).scalars().all()
        saved = [save(session, i, tmp_path / "out").read_bytes() for i in ids]
    columns = {c["name"] for c in inspect(reopened.engine).get_columns("attachment")}
    reopened.close()
    assert blob.data == b"same bytes" and saved == [b"same bytes", b"same bytes"]
    assert "data" not in columns


def test_the_cli_lists_and_saves_attachments(tmp_path, inbound) -> None:
    db = tmp_path / "desk.db"
    store = Store(f"sqlite:///{db}")
    (attachment_id,) = stored_with(store, inbound, ["../\x1b[2Jinvoice.pdf"])
    store.close()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    listed = subprocess.run([*DESK, "--db", str(db), "attachments", "list", "1"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"{attachment_id} " in listed.stdout and "invoice.pdf" in listed.stdout
    assert "\x1b" not in listed.stdout  # the name is shown as text, never as a terminal command
    saved = subprocess.run([*DESK, "--db", str(db), "attachments", "save", str(attachment_id),
                            "--to", str(tmp_path / "out")],
                           capture_output=True, text=True, env=env, timeout=60)
    assert saved.returncode == 0, saved.stderr
    (path,) = (tmp_path / "out").iterdir()
    assert path.read_bytes() == b"%PDF-1.4 data" and "\x1b" not in path.name
    missing = subprocess.run([*DESK, "--db", str(db), "attachments", "save", "99"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 1 and "no attachment 99" in missing.stderr
