"""Database roles for a PostgreSQL store: agents and daemons that log in as themselves, each
with only the rights its work needs (`desk admin grant-agent|grant-daemon|revoke`).

Run as the store's owner. The rights are worked out from the models, so a table added later
is covered by granting again:

- both roles: CONNECT on the database, USAGE on the schema, SELECT on `meta`, SELECT and
  INSERT on the audit table `event` (no agent or daemon action rewrites it), EXECUTE on the
  search function `desk_fold`, and USAGE, SELECT on the id sequences of the tables they may
  insert into;
- agents: SELECT, INSERT, UPDATE, DELETE on every other table except the daemon's own
  (`DAEMON_TABLES`: connector cursors and leases), on which they have nothing;
- the daemon: SELECT, INSERT, UPDATE, DELETE on every other table, its own included.

Neither owns anything or holds CREATE, so neither can create, alter or drop a table; opening
an up-to-date store issues no DDL (`desk.store.migrate`). Granting is exact: the role's
previous rights on the store are revoked first, so grant-agent turns a daemon into an agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import desk.models  # noqa: F401  (registers the tables in SQLModel.metadata)
from desk import dialects

Kind = Literal["agent", "daemon"]

# Tables only the daemon touches: connector cursors (and the secrets a connector keeps with
# them) and the leases by which daemons share connectors.
DAEMON_TABLES = frozenset({"syncstate", "lease", "oauthtoken"})
# What an agent may read of daemon tables, column by column: whether a mailbox needs a new
# sign-in (the app says so), never a token.
AGENT_COLUMNS = {"oauthtoken": ("connector", "state", "reason")}
READ_ONLY_TABLES = frozenset({"meta"})  # the schema version, store id, search configuration
APPEND_ONLY_TABLES = frozenset({"event"})  # the audit trail

READ = ("SELECT",)
APPEND = ("SELECT", "INSERT")
WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
FOLD_FUNCTION = "desk_fold(text)"  # called by the search index and query (desk.dialects)
_RESERVED = {"public", "none", "current_role", "current_user", "session_user"}


class RolesError(Exception):
    """A role cannot be granted or revoked; the message says why."""


@dataclass(slots=True)
class Granted:
    """What a role may now do in the store, for the command to show."""

    role: str
    kind: Kind | None  # None: revoked
    created: bool = False
    password_set: bool = False
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)  # tables it may not even read
    sequences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_rights(self) -> dict[tuple[str, ...], list[str]]:
        """Tables grouped by the rights held on them, most rights first."""
        groups: dict[tuple[str, ...], list[str]] = {}
        for table, rights in self.tables.items():
            groups.setdefault(rights, []).append(table)
        return {rights: sorted(tables)
                for rights, tables in sorted(groups.items(), key=lambda item: -len(item[0]))}


def table_rights(kind: Kind) -> dict[str, tuple[str, ...]]:
    """The rights `kind` gets on each of the store's tables (none: absent)."""
    rights: dict[str, tuple[str, ...]] = {}
    for table in SQLModel.metadata.sorted_tables:
        name = table.name
        if name in READ_ONLY_TABLES:
            rights[name] = READ
        elif name in APPEND_ONLY_TABLES:
            rights[name] = APPEND
        elif name in DAEMON_TABLES:
            if kind == "daemon":
                rights[name] = WRITE
        else:
            rights[name] = WRITE
    return rights


def grant_agent(engine: Engine, name: str, password: str | None = None) -> Granted:
    """Create (or update) login role `name` as an agent: tickets, customers and messages, no
    schema changes, no cursors or leases."""
    return _grant(engine, name, "agent", password)


def grant_daemon(engine: Engine, name: str, password: str | None = None) -> Granted:
    """Create (or update) login role `name` as a `desk sync` daemon: what an agent may, and the
    connectors' cursors and the leases besides."""
    return _grant(engine, name, "daemon", password)


def revoke(engine: Engine, name: str) -> Granted:
    """Take every right on the store from role `name`. The role itself stays (it may be used
    elsewhere in the cluster): drop it with DROP ROLE once nothing else needs it."""
    _check_name(name)
    _check_dialect(engine)
    with engine.begin() as conn:
        _check_owner(conn)
        if not _role_exists(conn, name):
            raise RolesError(f'there is no role "{name}"')
        _revoke_all(conn, name)
    return Granted(role=name, kind=None)


# ---- the work ----------------------------------------------------------------------------------


def _grant(engine: Engine, name: str, kind: Kind, password: str | None) -> Granted:
    _check_name(name)
    _check_dialect(engine)
    rights = table_rights(kind)
    with engine.begin() as conn:
        _check_owner(conn)
        missing = [t for t in rights if conn.execute(
            text("SELECT to_regclass(:t)"), {"t": _quote(conn, t)}).scalar() is None]
        if missing:
            raise RolesError(f"the store has no table {', '.join(missing)}: open it with this "
                             "desk first, as its owner")
        granted = Granted(role=name, kind=kind, tables=rights, withheld=sorted(
            t.name for t in SQLModel.metadata.sorted_tables if t.name not in rights))
        if _role_exists(conn, name):
            _check_grantee(conn, name)
            if password is not None:
                _role_statement(conn, "ALTER ROLE {} PASSWORD {}", name, password)
                granted.password_set = True
        else:
            if password is None:
                _role_statement(conn, "CREATE ROLE {} LOGIN", name)
            else:
                _role_statement(conn, "CREATE ROLE {} LOGIN PASSWORD {}", name, password)
            granted.created, granted.password_set = True, password is not None
        _revoke_all(conn, name)
        role, schema = _quote(conn, name), _current_schema(conn)
        database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
        conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        for privileges, tables in granted.by_rights().items():
            names = ", ".join(_quote(conn, t) for t in tables)
            conn.exec_driver_sql(f"GRANT {', '.join(privileges)} ON TABLE {names} TO {role}")
        writable = [t for t, privileges in rights.items() if "INSERT" in privileges]
        granted.sequences = _sequences(conn, writable)
        if granted.sequences:
            conn.exec_driver_sql(f"GRANT USAGE, SELECT ON SEQUENCE "
                                 f"{', '.join(_quote(conn, s) for s in granted.sequences)}"
                                 f" TO {role}")
        if kind == "agent":
            for table, columns in AGENT_COLUMNS.items():
                conn.exec_driver_sql(
                    f"GRANT SELECT ({', '.join(_quote(conn, c) for c in columns)}) ON TABLE "
                    f"{_quote(conn, table)} TO {role}")
                granted.notes.append(f"it may read {table}'s {', '.join(columns)} (never a "
                                     "token), so the app can say when a sign-in is needed")
        if _has_fold_function(conn):
            conn.exec_driver_sql(f"GRANT EXECUTE ON FUNCTION {FOLD_FUNCTION} TO {role}")
        granted.notes.extend(_close_schema(conn, name, schema))
    return granted


def _check_dialect(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        raise RolesError("roles are a PostgreSQL feature; a SQLite store is protected by its "
                         "file mode")


def _check_name(name: str) -> None:
    if not name or "\x00" in name:
        raise RolesError("a role needs a name")
    if len(name.encode()) > 63:
        raise RolesError(f"a role name has at most 63 bytes: {name!r}")
    if name.lower().startswith("pg_") or name.lower() in _RESERVED:
        raise RolesError(f'"{name}" is reserved by PostgreSQL: choose another role name')


def _check_owner(conn: Connection) -> None:
    if not dialects.owns_store(conn):
        user = conn.execute(text("SELECT current_user")).scalar_one()
        owner = conn.execute(text(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass('meta')"
        )).scalar_one()
        raise RolesError(f'run desk admin as the store\'s owner ("{owner}"), not "{user}"')


def _role_exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = :name"),
                             {"name": name}).scalar())


def _check_grantee(conn: Connection, name: str) -> None:
    """An existing role must not already be able to do more than it would be granted."""
    superuser, owner = conn.execute(text(
        "SELECT r.rolsuper, pg_has_role(r.oid, c.relowner, 'USAGE') FROM pg_roles r,"
        " pg_class c WHERE r.rolname = :name AND c.oid = to_regclass('meta')"),
        {"name": name}).one()
    if superuser:
        raise RolesError(f'"{name}" is a superuser, which may do anything whatever it is granted:'
                         " choose another role")
    if owner:
        raise RolesError(f'"{name}" owns the store (or is a member of its owner\'s role): choose'
                         " another role")


def _role_statement(conn: Connection, template: str, name: str, *password: str) -> None:
    """CREATE/ALTER ROLE: the name quoted as an identifier and the password as a literal by
    psycopg, run on the driver's cursor so that SQLAlchemy never logs it, nor an error
    quotes it."""
    import psycopg
    from psycopg import sql

    statement = sql.SQL(template).format(sql.Identifier(name), *map(sql.Literal, password))
    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(statement)
    except psycopg.Error as exc:
        reason = exc.diag.message_primary or type(exc).__name__
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            reason += (f' (the store\'s owner needs CREATEROLE; or have a superuser run CREATE'
                       f' ROLE "{name}" LOGIN, then run this again)')
        raise RolesError(f'cannot {template.split()[0].lower()} role "{name}": {reason}') \
            from None


def _revoke_all(conn: Connection, name: str) -> None:
    """Every right `name` may hold on the store's objects, gone."""
    role, schema = _quote(conn, name), _current_schema(conn)
    tables = [t.name for t in SQLModel.metadata.sorted_tables
              if conn.execute(text("SELECT to_regclass(:t)"), {"t": _quote(conn, t.name)})
              .scalar() is not None]
    if tables:
        conn.exec_driver_sql(
            f"REVOKE ALL ON TABLE {', '.join(_quote(conn, t) for t in tables)} FROM {role}")
    sequences = _sequences(conn, tables)
    if sequences:
        conn.exec_driver_sql(f"REVOKE ALL ON SEQUENCE "
                             f"{', '.join(_quote(conn, s) for s in sequences)} FROM {role}")
    if _has_fold_function(conn):
        conn.exec_driver_sql(f"REVOKE ALL ON FUNCTION {FOLD_FUNCTION} FROM {role}")
    conn.exec_driver_sql(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
    conn.exec_driver_sql(f"REVOKE ALL ON DATABASE {database} FROM {role}")


def _sequences(conn: Connection, tables: Iterable[str]) -> list[str]:
    """The sequences that number the rows of `tables` (serial and identity columns)."""
    wanted = sorted(set(tables))
    if not wanted:
        return []
    rows = conn.execute(text(
        "SELECT DISTINCT s.relname FROM pg_depend d"
        " JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
        " AND d.deptype IN ('a', 'i') AND t.relnamespace = current_schema()::regnamespace"
        " AND t.relname = ANY(:tables) ORDER BY s.relname"), {"tables": wanted})
    return list(rows.scalars())


def _has_fold_function(conn: Connection) -> bool:
    return conn.execute(text("SELECT to_regprocedure(:f)"), {"f": FOLD_FUNCTION}).scalar() \
        is not None


def _close_schema(conn: Connection, name: str, schema: str) -> list[str]:
    """Before PostgreSQL 15 every role may create tables in schema public: revoke that from
    PUBLIC where we may, else say how."""
    if not conn.execute(text("SELECT has_schema_privilege(:role, current_schema(), 'CREATE')"),
                        {"role": name}).scalar():
        return []
    may = conn.execute(text(
        "SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace"
        " WHERE nspname = current_schema()")).scalar()
    if may:
        conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC")
        if not conn.execute(text(
                "SELECT has_schema_privilege(:role, current_schema(), 'CREATE')"),
                {"role": name}).scalar():
            return [f"revoked CREATE on schema {schema} from PUBLIC (the PostgreSQL 15 default)"]
    return [f'"{name}" may still create tables in schema {schema}: its owner should run '
            f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC"]


def _current_schema(conn: Connection) -> str:
    return _quote(conn, conn.execute(text("SELECT current_schema()")).scalar_one())


def _quote(conn: Connection, identifier: str) -> str:
    """An identifier quoted by the dialect, whatever it holds."""
    return conn.dialect.identifier_preparer.quote_identifier(identifier)
