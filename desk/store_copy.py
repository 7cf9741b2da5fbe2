"""`desk migrate`: copy a whole store to another database (SQLite to PostgreSQL and back).

Every table is copied in primary-key order, a batch per transaction, each row written as an
upsert: a copy that was interrupted (or a source that changed since) is brought level by running
it again, and rows the source no longer has are removed from the copy. Each table is then read
back on both sides into a checksum, so the copy is proven identical, not assumed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, literal, select
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from desk import dialects
from desk.models import Meta
from desk.store import Store

BATCH = 2000
# Facts about one database rather than about the store's contents.
_LOCAL_META = {"schema_version", "search_config"}
# Who is running or typing right now: true of the database in use, not of its copy.
_LIVE_TABLES = {"meta", "lease", "presence"}


class CopyError(Exception):
    """The copy cannot start: the target holds another store."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    rows: int
    source_checksum: str
    target_checksum: str

    @property
    def identical(self) -> bool:
        return self.source_checksum == self.target_checksum


Progress = Callable[[str, int], None]  # table, rows copied so far


def _tables() -> list[Table]:
    return [t for t in SQLModel.metadata.sorted_tables if t.name not in _LIVE_TABLES]


def store_id(store: Store) -> str:
    """The store's identity, which a copy shares; given to a store from before it had one."""
    def ensure(session: Any) -> str:
        found = session.get(Meta, "store_id")
        if found is None:
            found = Meta(key="store_id", value=uuid.uuid4().hex)
            session.add(found)
        return found.value

    return str(store.write(ensure))


def _holds_data(conn: Connection) -> bool:
    return any(conn.execute(select(literal(1)).select_from(t).limit(1)).first() is not None
               for t in _tables())


def copy_store(source: Store, target: Store, *, progress: Progress | None = None,
               batch: int = BATCH) -> list[TableCopy]:
    """Make `target` hold exactly what `source` holds; returns each table's rows and
    checksums."""
    identity = store_id(source)
    with target.engine.connect() as conn:
        target_id = conn.execute(select(Meta.value).where(Meta.key == "store_id")).scalar()
        if target_id != identity and _holds_data(conn):
            raise CopyError("the target already holds another store: give an empty database")
    with target.engine.begin() as conn:
        # Marked as this store's copy first, so that an interrupted copy may be resumed.
        dialects.upsert(conn, Meta.__table__, [{"key": "store_id", "value": identity}])  # type: ignore[attr-defined]
        _copy_meta(source, conn)
    for table in _tables():
        _copy_table(source, target, table, progress, batch)
    with target.engine.begin() as conn:
        dialects.after_bulk_load(conn, _tables())
    return [TableCopy(t.name, *_checksums(source, target, t)) for t in _tables()]


def _copy_meta(source: Store, target: Connection) -> None:
    with source.engine.connect() as conn:
        rows = [{"key": k, "value": v} for k, v in conn.execute(select(Meta.key, Meta.value))
                if k not in _LOCAL_META]
    dialects.upsert(target, Meta.__table__, rows)  # type: ignore[attr-defined]


def _rows(store: Store, table: Table, batch: int) -> Iterator[list[dict[str, Any]]]:
    keys = list(table.primary_key.columns)
    with store.engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(
            select(table).order_by(*keys))
        for part in result.partitions():
            yield [dict(row._mapping) for row in part]


def _copy_table(source: Store, target: Store, table: Table, progress: Progress | None,
                batch: int) -> None:
    # A column pointing into its own table (a merged customer's survivor) may point at a row
    # not copied yet: it is written once every row is there.
    own = [fk.parent.name for fk in table.foreign_keys if fk.column.table is table]
    keys = [c.name for c in table.primary_key.columns]
    copied, links = 0, []
    for rows in _rows(source, table, batch):
        for row in rows:
            if any(row[name] is not None for name in own):
                links.append({**{f"k_{k}": row[k] for k in keys},
                              **{f"v_{n}": row[n] for n in own}})
                row.update(dict.fromkeys(own))
        with target.engine.begin() as conn:
            dialects.upsert(conn, table, rows)
        copied += len(rows)
        if progress is not None:
            progress(table.name, copied)
    with target.engine.begin() as conn:
        if links:
            statement = table.update().where(
                *(table.c[k] == bindparam(f"k_{k}") for k in keys)
            ).values({n: bindparam(f"v_{n}") for n in own})
            conn.execute(statement, links)
        if conn.execute(select(func.count()).select_from(table)).scalar_one() != copied:
            _remove_extra(source, conn, table)


def _remove_extra(source: Store, target: Connection, table: Table) -> None:
    """Delete the copy's rows that the source no longer has."""
    keys = list(table.primary_key.columns)
    with source.engine.connect() as conn:
        wanted = set(conn.execute(select(*keys)).tuples())
    extra = [row for row in target.execute(select(*keys)).tuples() if row not in wanted]
    if extra:
        statement = table.delete().where(
            *(column == bindparam(f"k_{column.name}") for column in keys))
        target.execute(statement, [{f"k_{c.name}": value for c, value in zip(keys, row,
                                                                            strict=True)}
                                   for row in extra])


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def _checksum(store: Store, table: Table) -> tuple[int, str]:
    # Text keys sort by the database's collation, which differs between databases: those
    # (small) tables are hashed in an order of our own.
    numbered = all(c.type.python_type is int for c in table.primary_key.columns)
    digest, count, lines = hashlib.sha256(), 0, []
    for rows in _rows(store, table, BATCH):
        for row in rows:
            line = json.dumps([_canonical(row[c.name]) for c in table.columns],
                              ensure_ascii=False).encode() + b"\n"
            if numbered:
                digest.update(line)
            else:
                lines.append(line)
        count += len(rows)
    for line in sorted(lines):
        digest.update(line)
    return count, digest.hexdigest()


def _checksums(source: Store, target: Store, table: Table) -> tuple[int, str, str]:
    rows, mine = _checksum(source, table)
    _rows_there, theirs = _checksum(target, table)
    return rows, mine, theirs
