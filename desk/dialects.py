"""Everything desk does differently on SQLite and on PostgreSQL, in one place.

The rest of desk writes dialect-neutral SQLAlchemy. What cannot be neutral lives here, one
function per difference, each with its SQLite and PostgreSQL halves side by side:

- connection settings (SQLite pragmas and BEGIN IMMEDIATE; PostgreSQL sessions in UTC,
  write transactions at REPEATABLE READ);
- the full-text index (FTS5 table and triggers; a generated `tsvector` column with a GIN index)
  and the search query over it;
- change notification (`PRAGMA data_version`; `LISTEN`/`NOTIFY` fired by statement triggers);
- upserts, sequence positions after explicit ids, and a timestamp's local day.
"""

from __future__ import annotations

import contextlib
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, func, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from desk.private import create_private_file

SEARCH_CONFIG = "simple"
# Only the first characters of a message are indexed on PostgreSQL: a tsvector holds at most
# 1 MB, and a message past that would otherwise fail to store.
SEARCH_PREFIX_CHARS = 100_000
CHANGES_CHANNEL = "desk_changes"
# Tables whose writes the app shows: a statement on any of them notifies listeners.
WATCHED_TABLES = ("message", "ticket", "customer", "identity", "event", "presence", "tickettag")


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def owns_store(conn: Connection) -> bool:
    """Whether this connection may change the store's schema: its user owns the tables (or is
    a member of the owning role, or a superuser). Always true on SQLite."""
    if is_sqlite(conn):
        return True
    owner = conn.execute(text(
        "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c"
        " WHERE c.oid = to_regclass(:table)"), {"table": "meta"}).scalar()
    return owner is None or bool(owner)  # no store yet: whoever creates it owns it


def is_permission_denied(error: DBAPIError) -> bool:
    """PostgreSQL refused a statement for lack of rights (an agent's role reading the daemon's
    tables). SQLite has no rights to lack."""
    return getattr(error.orig, "sqlstate", None) == "42501"  # insufficient_privilege


# ---- connections -----------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the daemon write while app instances read; the busy timeout turns short write
    # contention into waiting instead of "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-32000")
    cursor.close()
    # Take transaction control from the sqlite3 module, so _sqlite_begin decides how to BEGIN.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front: a deferred one that reads first and
    # then writes fails at once with "database is locked" if another writer committed meanwhile,
    # instead of waiting on busy_timeout.
    immediate = conn.get_execution_options().get("desk_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, password: str | None = None) -> Engine:
    """An engine for `url` with desk's connection settings; creates the SQLite file's folder.
    `password` (PostgreSQL) is kept out of the URL, which desk shows."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            # Owner-only from the first byte; SQLite gives its -wal and -shm the same mode.
            create_private_file(Path(path).expanduser())
        # hide_parameters: a failed statement's message would quote its values (message
        # text, tokens), and error messages end up in logs and stored errors.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10},
                               hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    target = make_url(url)
    if password is not None:
        target = target.set(password=password)
    # UTC sessions: date() and casts of timestamptz follow the session's time zone.
    return create_engine(target, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args={"options": "-c timezone=UTC"}, hide_parameters=True)


def write_engine(engine: Engine) -> Engine:
    """The engine for write transactions. On PostgreSQL they run at REPEATABLE READ, so two
    writers updating one row (a ticket's counts) cannot both win: the second gets a
    serialization failure and `Store.write` runs it again on fresh data."""
    if is_sqlite(engine):
        return engine.execution_options(desk_write=True)
    return engine.execution_options(desk_write=True, isolation_level="REPEATABLE READ")


def is_retryable(exc: DBAPIError) -> bool:
    """A write that lost a race and succeeds when run again: SQLite busy, a PostgreSQL
    serialization failure or deadlock, or a duplicate key another writer inserted first (the
    rerun finds that row and skips it)."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in ("40001", "40P01", "23505")
    message = str(exc.orig)
    return "locked" in message or "busy" in message or "UNIQUE constraint failed" in message


# ---- schema: full-text index and change notification -----------------------------------------


def lock_schema(conn: Connection) -> None:
    """Hold the schema against other processes until the transaction ends, so that two daemons
    starting on a new database do not both create it. SQLite's BEGIN IMMEDIATE already does."""
    if not is_sqlite(conn):
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74657323)")  # any fixed number


_SQLITE_FTS = [
    """CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(
        subject, text, content='message', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS message_fts_ai AFTER INSERT ON message BEGIN
        INSERT INTO message_fts(rowid, subject, text) VALUES (new.id, new.subject, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS message_fts_ad AFTER DELETE ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, subject, text)
        VALUES ('delete', old.id, old.subject, old.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS message_fts_au AFTER UPDATE OF subject, text ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, subject, text)
        VALUES ('delete', old.id, old.subject, old.text);
        INSERT INTO message_fts(rowid, subject, text) VALUES (new.id, new.subject, new.text);
    END""",
]


def _pg_fold_function(conn: Connection) -> None:
    """desk_fold(text): what search compares, accents removed where the `unaccent` extension
    can be had (a trusted extension: a database owner may create it), else the text as is.
    The index and the query both call it, so they always agree."""
    folded = "value"
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS unaccent")
        schema = conn.exec_driver_sql(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'unaccent'").scalar()
        folded = f'"{schema}".unaccent(\'"{schema}".unaccent\'::regdictionary, value)'
    except DBAPIError:
        pass
    # IMMUTABLE so a generated column may use it; unaccent's rules do not change under us.
    conn.exec_driver_sql(
        "CREATE OR REPLACE FUNCTION desk_fold(value text) RETURNS text LANGUAGE sql IMMUTABLE"
        f" PARALLEL SAFE AS $$ SELECT {folded} $$")


def _pg_search_column(conn: Connection, config: str) -> None:
    conn.exec_driver_sql(
        "ALTER TABLE message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (to_tsvector("
        f"'{config}'::regconfig, desk_fold(left(coalesce(subject, '') || ' ' || text, "
        f"{SEARCH_PREFIX_CHARS})))) STORED")
    conn.exec_driver_sql(
        "CREATE INDEX ix_message_search ON message USING gin (search_vector)")


def check_search_config(conn: Connection, config: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", config):
        raise ValueError(f"not a text search configuration name: {config!r}")
    if not is_sqlite(conn):
        schema, _, name = config.rpartition(".")
        exists = conn.execute(text(
            "SELECT count(*) FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace"
            " WHERE c.cfgname = :name AND (:schema = '' OR n.nspname = :schema)"),
            {"name": name, "schema": schema})
        if not exists.scalar():
            raise ValueError(f'PostgreSQL has no text search configuration "{config}"')


def create_search_and_notify(conn: Connection, search_config: str) -> None:
    """The full-text index and change notification of a new store."""
    if is_sqlite(conn):
        for statement in _SQLITE_FTS:
            conn.exec_driver_sql(statement)
        return  # PRAGMA data_version needs nothing
    check_search_config(conn, search_config)
    _pg_fold_function(conn)
    _pg_search_column(conn, search_config)
    conn.exec_driver_sql(
        "CREATE OR REPLACE FUNCTION desk_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN PERFORM pg_notify('{CHANGES_CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$")
    for table in WATCHED_TABLES:
        # Per statement, and NOTIFY folds repeats within a transaction: a 5,000-message batch
        # wakes listeners once.
        conn.exec_driver_sql(
            f"CREATE TRIGGER desk_notify_{table} AFTER INSERT OR UPDATE OR DELETE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION desk_notify()")


def change_search_config(conn: Connection, config: str) -> None:
    """Re-index message text with another text search configuration (PostgreSQL)."""
    check_search_config(conn, config)
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_message_search")
    conn.exec_driver_sql("ALTER TABLE message DROP COLUMN IF EXISTS search_vector")
    _pg_search_column(conn, config)


# ---- search ------------------------------------------------------------------------------------


def search_ids(
    session: Session, words: list[tuple[str, bool, bool]], config: str, limit: int,
    before_id: int | None,
) -> list[int]:
    """Ids of messages matching every (word, is_prefix, is_phrase), newest first."""
    before = " AND {id} < :before" if before_id else ""
    if session.get_bind().dialect.name == "sqlite":
        terms = []
        for word, prefix, _phrase in words:
            terms.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
        # Newest first by rowid: ranking is ~3000x slower.
        sql = ("SELECT rowid FROM message_fts WHERE message_fts MATCH :q"
               + before.format(id="rowid") + " ORDER BY rowid DESC LIMIT :limit")
        params: dict[str, Any] = {"q": " ".join(terms)}
    else:
        # websearch_to_tsquery takes each word or phrase quoted, so that `or` and `-` in the
        # input stay words; prefixes go through to_tsquery's `:*`.
        plain = " ".join(f'"{w}"' for w, prefix, _ in words if not prefix)
        prefixes = " & ".join(
            "'" + w.replace("\\", "\\\\").replace("'", "''") + "':*"
            for w, prefix, _ in words if prefix)
        parts = []
        if plain:
            parts.append("websearch_to_tsquery(CAST(:config AS regconfig), desk_fold(:plain))")
        if prefixes:
            parts.append("to_tsquery(CAST(:config AS regconfig), desk_fold(:prefixes))")
        sql = ("SELECT id FROM message WHERE search_vector @@ (" + " && ".join(parts) + ")"
               + before.format(id="id") + " ORDER BY id DESC LIMIT :limit")
        params = {"config": config, "plain": plain, "prefixes": prefixes}
    params.update(before=before_id, limit=limit)
    return list(session.execute(text(sql), params).scalars())


# ---- change notification ---------------------------------------------------------------------


class Changes:
    """A number that moves when another connection commits: `version()` for polling, and on
    PostgreSQL `wait(timeout)`, which blocks until a commit is announced (LISTEN)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pushes = not is_sqlite(engine)
        self._lock = threading.Lock()
        self._count = 0
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            import psycopg

            url = make_url(self.engine.url).set(drivername="postgresql")
            self._conn = psycopg.connect(url.render_as_string(hide_password=False),
                                         autocommit=True)
            self._conn.execute(f"LISTEN {CHANGES_CHANNEL}")
            self._count += 1  # anything may have happened before we listened
        return self._conn

    def _drain(self, timeout: float) -> bool:
        try:
            heard = False
            conn = self._connection()
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                heard = True
            if heard:  # a burst of commits counts once
                for _ in conn.notifies(timeout=0.05):
                    pass
                self._count += 1
            return heard
        except Exception:
            # The connection broke (a restarted server): listen again, and count it as a
            # change, since whatever happened meanwhile went unheard.
            self.close_connection()
            self._count += 1
            return True

    def version(self) -> int:
        if not self.pushes:
            return self._sqlite_version()
        if self._lock.acquire(blocking=False):
            try:
                self._drain(0)
            finally:
                self._lock.release()
        return self._count

    def wait(self, timeout: float) -> bool:
        """Block until another connection commits or `timeout` passes; True if one did."""
        if not self.pushes:
            raise RuntimeError("SQLite cannot announce commits: poll version()")
        with self._lock:
            return self._drain(timeout)

    def _sqlite_version(self) -> int:
        # data_version counts commits by *other* connections, per connection: ask the same
        # one every time or the numbers are not comparable.
        with self._lock:
            if self._conn is None:
                self._conn = self.engine.connect()
            value = self._conn.exec_driver_sql("PRAGMA data_version").scalar()
            self._conn.rollback()
            return int(value or 0)

    def close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


# ---- copying and dates -----------------------------------------------------------------------


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    if is_sqlite(conn):
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    return insert(table)


def upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], *,
           keep_existing: bool = False) -> None:
    """Insert `rows`, replacing any row with the same primary key (or, with `keep_existing`,
    leaving it as it is)."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    statement = _insert(conn, table)
    others = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    statement = (statement.on_conflict_do_update(index_elements=keys, set_=others)
                 if others and not keep_existing
                 else statement.on_conflict_do_nothing(index_elements=keys))
    conn.execute(statement, rows)


def insert_new(conn: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Insert `row` unless its primary key is taken; True if it was inserted."""
    keys = list(table.primary_key.columns)
    inserted = conn.execute(_insert(conn, table).on_conflict_do_nothing(index_elements=keys)
                            .values(row).returning(keys[0]))
    return inserted.first() is not None


def after_bulk_load(conn: Connection, tables: list[Table]) -> None:
    """After rows were inserted with their ids: the next generated id follows the largest, and
    the planner has statistics (without them PostgreSQL opened a long ticket 1.6x slower)."""
    if is_sqlite(conn):
        return  # SQLite's rowids follow max(id) by themselves
    for table in tables:
        conn.exec_driver_sql(f"ANALYZE {table.name}")
        keys = list(table.primary_key.columns)
        if len(keys) == 1 and keys[0].autoincrement is not False and \
                keys[0].type.python_type is int:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{keys[0].name}'), "
                f"coalesce(max({keys[0].name}), 0) + 1, false) FROM {table.name}")


def local_day(column: Any, conn: Connection, offset: timedelta) -> Any:
    """A UTC timestamp's calendar day at a fixed UTC offset."""
    if is_sqlite(conn):
        return func.date(column, f"{int(offset.total_seconds() // 60):+d} minutes")
    return func.date(column + offset)  # the session is in UTC (make_engine)
