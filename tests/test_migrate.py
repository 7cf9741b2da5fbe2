"""`desk migrate`: a whole store copied from SQLite to PostgreSQL and back, proven identical by
`desk export` and per-table checksums; an interrupted copy finishes when run again."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from peers import DESK
from sqlalchemy import func, select

from desk import tickets
from desk.demo import build_demo
from desk.models import Attachment, Blob, Customer, Event, Message, SyncState, TicketTag
from desk.store import Store
from desk.store_copy import CopyError, copy_store

pytestmark = pytest.mark.postgresql

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated(isolated: Path) -> None:
    """No config of whoever runs the tests is read."""


def desk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DESK, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    store = Store(f"sqlite:///{path}")
    build_demo(store, now=NOW)
    with store.transaction() as session:  # what the demo lacks: raw bytes and cursors
        session.add(SyncState(connector="mail", cursor='{"INBOX": {"uid": 42}}', updated_at=NOW))
        message = session.execute(select(Message).where(Message.direction == "in")
                                  .order_by(Message.id).limit(1)).scalar_one()
        message.raw = b"From: x\r\n\r\n\x00\xff binary"
        session.add(Attachment(message_id=message.id, filename="../../etc/passwd",
                               content_type="application/pdf", size=4, sha256="0" * 64))
        session.add(Blob(sha256="0" * 64, size=4, data=b"%PDF"))
    store.close()
    return path


def test_a_store_goes_to_postgresql_and_back_and_exports_the_same(
    demo_file, pg_database, tmp_path
) -> None:
    source = tmp_path / "source.db"
    source.write_bytes(demo_file.read_bytes())
    postgres, back = pg_database(), tmp_path / "back.db"
    original = Store(f"sqlite:///{source}")
    with original.session() as session:
        merged_there = session.execute(select(func.count()).select_from(Customer).where(
            Customer.merged_into.is_not(None))).scalar_one()
    original.close()

    there = desk("--db", str(source), "migrate", "--to", postgres)
    assert there.returncode == 0, there.stderr
    assert "the copy is identical to the source" in there.stdout
    for table in ("customer", "identity", "ticket", "message", "attachment", "blob", "event",
                  "syncstate", "tickettag"):
        assert f"  {table} " in there.stdout
    assert "DIFFERS" not in there.stdout

    again = desk("--db", str(back), "migrate", "--from", postgres)
    assert again.returncode == 0, again.stderr
    exports = [desk("--db", db, "export").stdout for db in (str(source), postgres, str(back))]
    assert exports[0] and exports[0] == exports[1] == exports[2]
    assert exports[0].count('"type": "message"') > 100

    copy = Store(postgres)
    with copy.session() as session:
        raw = session.execute(select(Message.raw).where(Message.raw.is_not(None))
                              .order_by(Message.id).limit(1)).scalar_one()
        attachment = session.execute(select(Attachment).where(
            Attachment.filename == "../../etc/passwd")).scalar_one()
        content = session.get(Blob, attachment.sha256).data
        cursor = session.get(SyncState, "mail").cursor
        merged = session.execute(select(func.count()).select_from(Customer).where(
            Customer.merged_into.is_not(None))).scalar_one()
    # New rows after the copy get new ids: the sequences follow the copied rows.
    with copy.transaction() as session:
        session.add(Event(created_at=NOW, kind="note", data="{}"))
    with copy.session() as session:
        newest = session.execute(select(func.max(Event.id))).scalar_one()
        events = session.execute(select(func.count()).select_from(Event)).scalar_one()
    copy.close()
    assert raw == b"From: x\r\n\r\n\x00\xff binary"
    assert (attachment.filename, content) == ("../../etc/passwd", b"%PDF")
    assert cursor == '{"INBOX": {"uid": 42}}'
    assert merged == merged_there > 0  # merges survive, tombstones and all
    assert newest == events


def test_an_interrupted_copy_run_again_ends_identical(demo_file, pg_database, tmp_path) -> None:
    source = Store(f"sqlite:///{demo_file}")
    target_url = pg_database()
    target = Store(target_url)

    class Interrupted(Exception):
        pass

    def interrupt(table: str, rows: int) -> None:
        if table == "message" and rows >= 150:
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_store(source, target, progress=interrupt, batch=50)
    with target.session() as session:
        partial = session.execute(select(func.count()).select_from(Message)).scalar_one()
    assert 0 < partial < 158
    source.close()
    target.close()

    # Meanwhile the store moved on: a ticket resolved, a tag taken off.
    work = tmp_path / "moved.db"
    work.write_bytes(demo_file.read_bytes())
    moved = Store(f"sqlite:///{work}")
    with moved.transaction() as session:
        tickets.set_status(session, 1, "resolved", actor="alice")
        tag = session.execute(select(TicketTag).limit(1)).scalar_one()
        session.delete(tag)
    moved.close()
    # ... and the copy holds a row the source never had by then.
    with Store(target_url).transaction() as session:
        session.add(TicketTag(ticket_id=tag.ticket_id, tag="stale"))

    finished = desk("--db", str(work), "migrate", "--to", target_url)
    assert finished.returncode == 0, finished.stderr
    assert "DIFFERS" not in finished.stdout
    assert desk("--db", str(work), "export").stdout == desk("--db", target_url, "export").stdout
    copy = Store(target_url)
    with copy.session() as session:
        assert session.get(TicketTag, (tag.ticket_id, tag.tag)) is None
        assert session.get(TicketTag, (tag.ticket_id, "stale")) is None
    copy.close()


def test_a_database_holding_another_store_is_refused(demo_file, pg_database, inbound) -> None:
    from desk.ingest import ingest

    other = Store(pg_database())
    ingest(other, [inbound("someone else's store")])
    source = Store(f"sqlite:///{demo_file}")
    with pytest.raises(CopyError, match="already holds another store"):
        copy_store(source, other)
    with other.session() as session:
        assert session.execute(select(func.count()).select_from(Message)).scalar_one() == 1
    source.close()
    other.close()
