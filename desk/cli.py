"""The `desk` command. One entry point; every subcommand calls the same `desk` functions the
app and the daemon use. Heavy modules are imported inside the command that needs them so that
`desk --help` and `desk check` start fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from desk.redact import redact
from desk.textsafe import printable

if TYPE_CHECKING:
    from desk.config import Settings
    from desk.store import Store


class CommandError(Exception):
    """A user-facing failure: printed as `desk: <message>`, exit status 1."""


# --------------------------------------------------------------------------------------------
# Settings and store


def _settings(args: argparse.Namespace, *, check_secrets: bool = False) -> Settings:
    from desk.config import find_config_path, load_config

    path = find_config_path(args.config)
    return load_config(path, check_secrets=check_secrets)


def _store_url(db: str) -> str:
    """A --db value as a URL: a database URL as given, a file path as SQLite."""
    from desk.store import url_of

    return url_of(db)


def _db_url(args: argparse.Namespace, settings: Settings) -> str:
    db = args.db or os.environ.get("DESK_DB")
    if db:
        return _store_url(db)
    return settings.store.db_url


def open_store(url: str, settings: Settings) -> Store:
    """The store at `url`, with the [store] password and search configuration."""
    from desk.store import Store

    password = settings.store.password
    return Store(url, password=password.reveal() if password else None,
                 search_config=settings.store.search_config)


def _open(args: argparse.Namespace) -> tuple[Settings, Store]:
    settings = _settings(args)
    return settings, open_store(_db_url(args, settings), settings)


def _connectors_by_channel(settings: Settings) -> dict[str, str]:
    by_channel: dict[str, str] = {}
    for connector in settings.connectors:
        if connector.enabled:
            by_channel.setdefault(connector.channel, connector.name)
    return by_channel


def _out(line: str = "", file: TextIO | None = None) -> None:
    print(line, file=file or sys.stdout)


def _json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, default=str, indent=None))


def _ago(moment: Any) -> str:
    from desk.timeutil import ago

    return ago(moment) or "-"


# --------------------------------------------------------------------------------------------
# Commands


def cmd_check(args: argparse.Namespace) -> int:
    from desk.config import ConfigError, exposure_warnings, find_config_path, load_config

    try:
        path = find_config_path(args.file or args.config)
        if path is None:
            raise CommandError("no config file found (looked at --config, $DESK_CONFIG, "
                               "./config.toml and the platform config dir)")
        settings = load_config(path, check_secrets=True)
    except ConfigError as exc:
        for error in exc.errors:
            _out(error, sys.stderr)
        _out(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}", sys.stderr)
        return 1
    _out(f"{path}: ok")
    for warning in exposure_warnings(path, settings):
        _out(f"warning: {warning}", sys.stderr)
    for connector in settings.connectors:
        state = "enabled" if connector.enabled else "disabled"
        _out(f"  connector {connector.name}: {connector.type} ({state})")
    _out(f"  store: {_db_url(args, settings)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from platformdirs import user_data_dir

    from desk.config import SlaSettings
    from desk.demo import DEMO_SLA, TEAM, build_demo
    from desk.store import Store

    if args.db:
        if "://" in args.db and not args.db.startswith("sqlite"):
            raise CommandError("desk demo builds a SQLite store: give --db a file path")
        url = _store_url(args.db)
    else:
        path = Path(user_data_dir("desk")) / "demo.db"
        # The default demo store is ours alone, so it is rebuilt fresh every time.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    store = Store(url)
    try:
        counts = build_demo(store, agent=args.agent or "alice")
    except ValueError as exc:
        raise CommandError(f"{exc} (give --db a new file)") from exc
    _out(f"demo store: {url.removeprefix('sqlite:///')}")
    _out(", ".join(f"{count} {name}" for name, count in counts.items()))
    if args.no_tui:
        return 0
    settings = _settings(args)
    # The app opens as the demo's agent, so "Mine" holds the tickets the story gave them.
    demo_agent = args.agent or "alice"
    team = sorted({*settings.desk.agents, *TEAM} - {demo_agent})
    desk = settings.desk.model_copy(update={"agent": demo_agent, "agents": team})
    sla = settings.sla if settings.sla.targets() else SlaSettings.model_validate(DEMO_SLA)
    return _open_app(url, settings.model_copy(update={"desk": desk, "sla": sla}))


def _open_app(url: str, settings: Settings) -> int:
    from desk.tui.app import run_app

    return run_app(open_store(url, settings), settings)


def cmd_app(args: argparse.Namespace) -> int:
    settings = _settings(args)
    return _open_app(_db_url(args, settings), settings)


def cmd_sync(args: argparse.Namespace) -> int:
    import asyncio

    from desk import lease, logs
    from desk.store import is_sqlite
    from desk.sync import LeaseLost, run_daemon, run_once
    from desk.timeutil import iso

    settings, store = _open(args)
    logs.configure(args.log_format)
    holder, seconds = lease.me(), settings.store.lease_seconds
    # A SQLite store has one daemon; on PostgreSQL several share the connectors by lease.
    exclusive = is_sqlite(store.engine)
    held = store.write(lambda s: lease.claim(s, lease.DAEMON, holder, seconds)) \
        if exclusive else None
    if held is not None:
        raise CommandError(
            f"another desk sync ({held.holder}) has been running on this store since "
            f"{iso(held.acquired_at)}; only one may. If that process is gone, its lease runs "
            f"out at {iso(held.expires_at)} and desk sync can start again."
        )
    try:
        if not args.once:
            try:
                asyncio.run(run_daemon(store, settings, only=args.connector, holder=holder,
                                       lease_seconds=seconds))
            except LeaseLost as exc:
                raise CommandError(str(exc)) from None
            return 0
        report = asyncio.run(run_once(store, settings, only=args.connector, holder=holder,
                                      progress=_sync_progress(sys.stderr.isatty())))
    finally:
        if exclusive:
            store.write(lambda s: lease.release(s, lease.DAEMON, holder))
    for name, result in report.fetched.items():
        _out(f"{name}: {result.stored} new, {result.duplicates} already stored")
    for name, other in report.busy.items():
        _out(f"{name}: skipped, desk sync {other} runs it")
    for name, error in report.errors.items():
        _out(f"{name}: FAILED: {printable(error, single_line=True)}", sys.stderr)
    delivery = report.delivery
    _out(f"outbox: {delivery.sent} sent, {delivery.retrying} to retry, {delivery.failed} failed")
    return 0 if report.ok else 1


def _sync_progress(on_terminal: bool) -> Callable[[str, int, int | None], None]:
    """A progress bar on a terminal; otherwise a log line per batch."""
    import logging
    import time

    started: dict[str, float] = {}
    log = logging.getLogger("desk.sync")

    def show(name: str, done: int, total: int | None) -> None:
        began = started.setdefault(name, time.monotonic())
        rate = done / max(time.monotonic() - began, 1e-6)
        if not on_terminal:
            log.info("%s: %d%s messages read (%.0f/s)", name, done,
                     f" of {total}" if total else "", rate)
            return
        if total:
            filled = min(30, 30 * done // max(total, 1))
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        else:
            bar = f"{done}"
        end = "\n" if total and done >= total else ""
        print(f"\r{name}: {bar} {rate:,.0f} msg/s", end=end, file=sys.stderr, flush=True)

    return show


def cmd_import(args: argparse.Namespace) -> int:
    from desk.importer import ImportError_, import_mailbox
    from desk.sync import ingest_options

    settings, store = _open(args)
    own = [parseaddr(c.from_address)[1] for c in settings.connectors if c.type == "email"]
    show = sys.stderr.isatty() and not args.quiet

    def progress(done: int, total: int | None) -> None:
        if show:
            of = f"/{total}" if total else ""
            print(f"\rimported {done}{of}", end="", file=sys.stderr, flush=True)

    try:
        result = import_mailbox(
            store, args.kind, Path(args.path), connector=args.connector,
            own_addresses=own, options=ingest_options(settings), progress=progress,
        )
    except ImportError_ as exc:
        raise CommandError(str(exc)) from exc
    if show:
        print(file=sys.stderr)
    _out(f"{result.stored} messages stored, {result.duplicates} already there; "
         f"{result.customers_created} new customers, {result.tickets_opened} new tickets")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from desk.export import export
    from desk.private import open_private

    _, store = _open(args)
    with store.session() as session:
        if args.output and args.output != "-":
            with open_private(Path(args.output)) as handle:
                counts = export(session, handle)
            _out(", ".join(f"{n} {kind}s" for kind, n in counts.items()), sys.stderr)
        else:
            export(session, sys.stdout)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from desk.search import SearchError, search
    from desk.timeutil import iso

    _, store = _open(args)
    with store.session() as session:
        try:
            hits = search(session, " ".join(args.query), limit=args.limit)
        except SearchError as exc:
            raise CommandError(str(exc)) from exc
    if args.json:
        for hit in hits:
            _json({"message_id": hit.message_id, "ticket_id": hit.ticket_id,
                   "customer_id": hit.customer_id, "customer": hit.customer_name,
                   "channel": hit.channel, "direction": hit.direction, "subject": hit.subject,
                   "sent_at": iso(hit.sent_at), "snippet": hit.snippet})
        return 0
    for hit in hits:
        _out(f"#{hit.ticket_id or '-':<7} {hit.channel:<8} "
             f"{printable(hit.customer_name, single_line=True)[:24]:<24} "
             f"{printable(hit.snippet, single_line=True)[:90]}")
    if not hits:
        _out("no matches", sys.stderr)
    return 0


def cmd_customers(args: argparse.Namespace) -> int:
    from desk import identity
    from desk.export import customer_record
    from desk.models import Customer
    from desk.store import customer_identities, recent_customers
    from desk.tickets import tickets_of_customer

    settings, store = _open(args)
    agent = settings.desk.agent
    if args.action == "list":
        with store.session() as session:
            customers = recent_customers(session, limit=args.limit)
            ids = customer_identities(session, [c.id for c in customers])
        for customer in customers:
            if args.json:
                _json(customer_record(customer, ids[customer.id]))
                continue
            where = ", ".join(f"{i.kind}:{i.value}" for i in ids[customer.id])
            _out(f"{customer.id:>7}  {printable(customer.name, single_line=True)[:30]:<30}  "
                 f"{printable(where, single_line=True)}")
        return 0
    if args.action == "show":
        with store.session() as session:
            customer = session.get(Customer, args.id)
            if customer is None:
                raise CommandError(f"no customer {args.id}")
            ids = customer_identities(session, [args.id])[args.id]
            tickets = tickets_of_customer(session, args.id)
            hints = identity.suggestions(session, args.id, region=settings.desk.default_region)
        if args.json:
            _json(customer_record(customer, ids))
            return 0
        _out(f"customer {customer.id}: {printable(customer.name, single_line=True)}")
        if customer.merged_into:
            _out(f"  merged into customer {customer.merged_into}")
        for ident in ids:
            extra = f" ({printable(ident.display, single_line=True)})" if ident.display else ""
            _out(f"  {ident.kind:<9} {printable(ident.value, single_line=True)}{extra}")
        for ticket in tickets:
            _out(f"  ticket #{ticket.id} {ticket.status:<9} "
                 f"{printable(ticket.subject or ticket.snippet, single_line=True)[:70]}")
        for hint in hints:
            _out(f"  maybe the same as customer {hint.other_id}: "
                 f"{printable(hint.evidence, single_line=True)}")
        return 0
    try:
        if args.action == "merge":
            event = store.write(lambda s: identity.merge(s, args.target, args.source, actor=agent,
                                                          reason="merged by hand"))
            _out(f"customer {args.source} merged into {args.target} (event {event.id}); "
                 f"undo with: desk customers unmerge {args.source}")
        elif args.action == "unmerge":
            store.write(lambda s: identity.unmerge(s, args.id, actor=agent))
            _out(f"customer {args.id} restored")
        elif args.action == "link":
            store.write(lambda s: identity.link_identity(
                s, args.id, args.kind, args.value, actor=agent,
                region=settings.desk.default_region))
            _out(f"{args.kind} {args.value} linked to customer {args.id}")
    except (identity.MergeError, identity.IdentityError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def cmd_tickets(args: argparse.Namespace) -> int:
    from desk import tickets as ticket_actions
    from desk.export import event_record, message_record, ticket_record
    from desk.models import Customer, Ticket
    from desk.store import customer_names, ticket_events, ticket_messages, ticket_page
    from desk.views import describe_event

    settings, store = _open(args)
    agent = settings.desk.agent
    if args.action == "list":
        with store.session() as session:
            try:
                page = ticket_page(session, queue=args.queue, agent=agent, channel=args.channel,
                                   tag=args.tag, limit=args.limit)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            names = customer_names(session, (t.customer_id for t in page))
        for ticket in page:
            if args.json:
                _json(ticket_record(ticket))
                continue
            unread = "*" if ticket.unread_count else " "
            title = printable(ticket.subject or ticket.snippet, single_line=True)
            name = printable(names.get(ticket.customer_id), single_line=True)[:22]
            _out(f"{unread}#{ticket.id:<7} {ticket.status:<9} {_ago(ticket.last_message_at):>4} "
                 f"{ticket.channels:<20} {name:<22} {title[:60]}")
        return 0
    if args.action == "show":
        with store.session() as session:
            ticket = session.get(Ticket, args.id)
            if ticket is None:
                raise CommandError(f"no ticket #{args.id}")
            messages = ticket_messages(session, args.id, limit=args.limit)
            customer = session.get(Customer, ticket.customer_id)
            events = ticket_events(session, ticket) if args.events else []
        if args.json:
            _json(ticket_record(ticket))
            for message in messages:
                _json(message_record(message, []))
            for event in events:
                _json(event_record(event))
            return 0
        _out(f"ticket #{ticket.id} [{ticket.status}] {printable(ticket.subject, single_line=True)}")
        _out(f"customer {ticket.customer_id}: "
             f"{printable(customer.name if customer else '', single_line=True)}  "
             f"assignee: {ticket.assignee or '-'}  priority: {ticket.priority}  "
             f"tags: {ticket.tags or '-'}")
        for message in messages:
            who = message.author if message.direction != "in" else (
                message.sender_name or message.sender)
            state = "" if message.direction == "in" else f" [{message.status}]"
            _out()
            _out(f"--- {message.sent_at:%Y-%m-%d %H:%M} {message.channel} {message.direction} "
                 f"{printable(who, single_line=True)}{state}")
            if message.error:
                _out(f"    error: {printable(message.error, single_line=True)}")
            _out(printable(message.text))
        if events:
            _out()
            _out("--- audit trail")
        for event in events:
            _out(f"{event.created_at:%Y-%m-%d %H:%M:%S} {event.actor or 'system':<12} "
                 f"{event.kind:<16} {printable(describe_event(event), single_line=True)}")
        return 0
    try:
        def act(session: Any) -> Any:
            if args.action == "status":
                until = ticket_actions.snooze_until(args.until) if args.until else None
                return ticket_actions.set_status(session, args.id, args.status, actor=agent,
                                                 snooze_until=until)
            if args.action == "assign":
                target = None if args.agent in ("-", "none") else args.agent
                return ticket_actions.assign(session, args.id, target, actor=agent)
            if args.action == "tag":
                return ticket_actions.add_tags(session, args.id, args.tags, actor=agent)
            return ticket_actions.set_priority(session, args.id, args.priority, actor=agent)

        ticket = store.write(act)
    except ticket_actions.TicketError as exc:
        raise CommandError(str(exc)) from exc
    _out(f"ticket #{ticket.id}: {ticket.status}, assignee {ticket.assignee or '-'}, "
         f"priority {ticket.priority}, tags {ticket.tags or '-'}")
    return 0


def cmd_reply(args: argparse.Namespace) -> int:
    from desk import outbox
    from desk.tickets import TicketError

    settings, store = _open(args)
    agent = settings.desk.agent
    try:
        if args.retry is not None:
            message = store.write(lambda s: outbox.retry(s, args.retry, actor=agent))
            _out(f"message {message.id} queued again")
            return 0
        if args.ticket is None:
            raise CommandError("give a TICKET id (or --retry MESSAGE)")
        if args.note is not None:
            note = store.write(lambda s: outbox.add_note(s, args.ticket, args.note, agent=agent))
            _out(f"note {note.id} added to ticket #{args.ticket}")
            return 0
        if args.text is None:
            raise CommandError("give the reply with --text (or a private note with --note)")
        message = store.write(lambda s: outbox.queue_reply(
            s, args.ticket, args.text, agent=agent, channel=args.channel, to=args.to,
            connectors_by_channel=_connectors_by_channel(settings)))
    except (outbox.OutboxError, TicketError) as exc:
        raise CommandError(str(exc)) from exc
    _out(f"reply {message.id} queued on {message.channel} to {message.recipient} "
         f"via {message.connector}; `desk sync` delivers it")
    return 0


def cmd_attachments(args: argparse.Namespace) -> int:
    from desk import attachments

    settings, store = _open(args)
    with store.session() as session:
        if args.action == "list":
            for info in attachments.ticket_attachments(session, args.ticket):
                kept = "" if info.stored else "  (content not stored: message over the limit)"
                _out(f"{info.id:<8} message {info.message_id:<8} {info.size:>10,} B  "
                     f"{printable(info.content_type, single_line=True):<24} "
                     f"{printable(info.filename, single_line=True)}{kept}")
            return 0
        folder = Path(args.to) if args.to else attachments.default_folder(
            settings.desk.attachments_dir)
        try:
            path = attachments.save(session, args.id, folder)
        except attachments.AttachmentError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"cannot save into {folder}: {exc.strerror or exc}") from None
    _out(f"saved {printable(str(path), single_line=True)}")
    return 0


def cmd_auth(args: argparse.Namespace) -> int:
    from desk import oauth

    settings, store = _open(args)
    mailboxes = oauth.oauth_mailboxes(settings)
    if args.action == "status":
        found = oauth.status(store, mailboxes)
        if args.json:
            _json({"connectors": found})
            return 0
        if not found:
            _out('no connector signs in with OAuth (auth = "oauth2")')
        for entry in found:
            who = printable(entry["signed_in_as"] or "", single_line=True)
            line = f"{entry['connector']}: {entry['state']}"
            if entry["state"] == "signed in":
                line += (f" as {who}; access token until {entry['access_expires_at']}, "
                         f"last refresh {entry['last_refresh_at']}")
            elif entry["state"] == "sign-in needed":
                line += (f" ({printable(entry['reason'] or '', single_line=True)});"
                         f" was signed in as {who}")
            if entry["command"]:
                line += f"; run {entry['command']}"
            _out(line)
        return 0
    config = next((c for c in mailboxes if c.name == args.connector), None)
    if config is None:
        named = next((c for c in settings.connectors if c.name == args.connector), None)
        raise CommandError(f'no connector named "{args.connector}"' if named is None else
                           f'connector "{args.connector}" does not sign in with OAuth '
                           '(set auth = "oauth2")')
    if args.action == "logout":
        gone = oauth.sign_out(store, config.name)
        _out(f"{config.name}: signed out" if gone else f"{config.name}: was not signed in")
        return 0
    try:
        use_device = oauth.endpoints(config).device is not None and not args.browser
        if use_device:
            tokens = oauth.device_login(config)
        else:
            tokens = oauth.code_login(config, open_browser=not args.no_browser)
        oauth.save_sign_in(store, config, tokens)
    except oauth.OAuthError as exc:
        raise CommandError(f"{config.name}: {exc}") from None
    except KeyboardInterrupt:
        _out(f"{config.name}: sign-in cancelled", sys.stderr)
        return 130
    _out(f"{config.name}: signed in as {printable(tokens.account or config.username)}; "
         f"access token until {tokens.expires_at:%Y-%m-%d %H:%M} UTC. desk sync keeps it fresh.")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from desk.store_copy import CopyError, copy_store

    if not args.source and not args.to:
        raise CommandError("say where to copy the store: --to URL (or --from URL)")
    settings = _settings(args)
    source_url = _store_url(args.source) if args.source else _db_url(args, settings)
    target_url = _store_url(args.to) if args.to else _db_url(args, settings)
    if source_url == target_url:
        raise CommandError(f"the source and the target are the same store: {source_url}")
    source, target = open_store(source_url, settings), open_store(target_url, settings)
    on_terminal = sys.stderr.isatty()

    def show(table: str, rows: int) -> None:
        if on_terminal:
            print(f"\r  {table}: {rows:,} rows", end="", file=sys.stderr, flush=True)

    _out(f"copying {source.url} to {target.url}")
    try:
        copies = copy_store(source, target, progress=show)
    except CopyError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if on_terminal:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        source.close()
        target.close()
    width = max(len(c.table) for c in copies)
    for copy in copies:
        verdict = "identical" if copy.identical else "DIFFERS"
        _out(f"  {copy.table:<{width}}  {copy.rows:>10,} rows  sha256 "
             f"{copy.source_checksum[:16]}  {verdict}")
    if not all(copy.identical for copy in copies):
        raise CommandError("the copy differs from the source: run desk migrate again")
    _out("the copy is identical to the source")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy import select
    from sqlalchemy.exc import ProgrammingError

    from desk import lease
    from desk.dialects import is_permission_denied
    from desk.models import SyncState
    from desk.oauth import oauth_connectors, sign_in_needed
    from desk.store import outbox_backlog, recent_inbound, summary
    from desk.timeutil import iso

    settings, store = _open(args)
    try:
        with store.session() as session:
            counts = summary(session)
            states = {s.connector: s for s in session.execute(select(SyncState)).scalars()}
            recent = recent_inbound(session, timedelta(hours=1))
            backlog = outbox_backlog(session)
            daemons = lease.live(session, lease.daemon_role(""))
            running_at = lease.live(session, lease.connector_role(""))
        lapsed = sign_in_needed(store, oauth_connectors(settings))
    except ProgrammingError as exc:
        if not is_permission_denied(exc):
            raise
        raise CommandError("this database role may not read the connectors' cursors and "
                           "leases (they are the daemon's): run desk status as the daemon's "
                           "or the store owner's role") from None
    connectors = []
    for config in settings.connectors:
        state = states.get(config.name)
        runner = running_at.get(config.name)
        connectors.append({
            "name": config.name, "type": config.type, "enabled": config.enabled,
            "running_in": runner.holder if runner else None,
            "last_success": iso(state.last_success_at) if state else None,
            "last_error": state.last_error if state else None,
            "last_error_at": iso(state.last_error_at) if state else None,
            "messages_last_hour": recent.get(config.name, 0),
            "cursor": json.loads(state.cursor) if state else None,
            # OAuth mailboxes whose refresh token was revoked or expired: nothing is fetched
            # or sent until an admin signs in again.
            "state": "sign-in needed" if config.name in lapsed else (
                "failing" if state and state.last_error_at and (
                    not state.last_success_at or state.last_error_at > state.last_success_at)
                else "ok"),
            "sign_in": (f"desk auth login {config.name}" if config.name in lapsed else None),
        })
    running = [{"holder": held.holder, "since": iso(held.acquired_at),
                "lease_expires": iso(held.expires_at),
                "connectors": sorted(name for name, at in running_at.items()
                                     if at.holder == held.holder)}
               for held in daemons.values()]
    if args.json:
        # "daemon" is the first (on SQLite, the only) daemon; "daemons" lists them all.
        _json({"store": store.url, "counts": counts, "daemon": running[0] if running else None,
               "daemons": running, "outbox": backlog, "connectors": connectors})
        return 0
    _out(f"store: {store.url}")
    _out("  " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    if not running:
        _out("  desk sync: not running")
    for daemon in running:
        _out(f"  desk sync: running as {daemon['holder']} since {daemon['since']}")
    _out(f"  outbox: {backlog['queued']} queued, {backlog['sending']} sending, "
         f"{backlog['failed']} failed, {backlog['unknown']} to check")
    for c in connectors:
        line = f"  {c['name']} ({c['type']}{'' if c['enabled'] else ', disabled'}): "
        if c["running_in"]:
            line += f"run by {c['running_in']}, "
        line += f"last success {c['last_success'] or 'never'}, "
        line += f"{c['messages_last_hour']} messages in the last hour"
        if c["last_error"]:
            error = printable(c["last_error"], single_line=True)
            line += f"; last error {c['last_error_at']}: {error}"
        if c["sign_in"]:
            line += f"; SIGN-IN NEEDED: run {c['sign_in']}"
        _out(line)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from desk.stats import StatsError, compute, period_from
    from desk.stats_report import render

    settings, store = _open(args)
    try:
        period = period_from(args.since, args.until)
    except StatsError as exc:
        raise CommandError(str(exc)) from None
    figures = compute(store.engine, period, settings.sla.targets(), daily=args.daily)
    if args.json:
        _json(figures)
        return 0
    for line in render(figures):
        _out(line)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    from desk.config import Secret
    from desk.roles import RolesError, grant_agent, grant_daemon, revoke
    from desk.store import StoreError

    settings = _settings(args)
    url = _db_url(args, settings)
    if url.startswith("sqlite"):
        raise CommandError("roles are a PostgreSQL feature; a SQLite store is protected by its "
                           "file mode")
    password = None
    if getattr(args, "password", None):
        try:
            password = Secret(args.password).reveal()  # ConfigError when unset or unreadable
        except ValueError as exc:
            raise CommandError(f"--password: {exc}") from None
    try:
        store = open_store(url, settings)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        if args.action == "revoke":
            revoke(store.engine, args.name)
        else:
            grant = grant_agent if args.action == "grant-agent" else grant_daemon
            granted = grant(store.engine, args.name, password)
    except RolesError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    role = printable(args.name, single_line=True)
    if args.action == "revoke":
        _out(f'role "{role}" has no rights on {store.url} any more; DROP ROLE "{role}" when '
             "nothing else needs it")
        return 0
    done = "created" if granted.created else "updated"
    _out(f'{granted.kind} role "{role}" {done}'
         f"{', with a password' if granted.password_set else ''}; on {store.url} it may:")
    for rights, tables in granted.by_rights().items():
        _out(f"  {', '.join(rights).lower():<30}  {', '.join(tables)}")
    if granted.withheld:
        _out(f"  {'nothing':<30}  {', '.join(granted.withheld)}")
    _out(f"  {'usage (new ids)':<30}  {', '.join(granted.sequences) or '-'}")
    _out("  and no CREATE, ALTER or DROP: it owns nothing")
    for note in granted.notes:
        _out(f"note: {note}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desk", description="A unified support desk inbox: email, SMS and chat in one place."
    )
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $DESK_CONFIG, ./config.toml, platform dir)")
    parser.add_argument("--db", metavar="PATH|URL",
                        help="the store: a SQLite file or a database URL (default: [store] url)")
    parser.set_defaults(func=cmd_app)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=text, description=text)
        command.set_defaults(func=func)
        return command

    demo = add("demo", cmd_demo, "build a demo store with realistic customers and open the app")
    demo.add_argument("--no-tui", action="store_true", help="only build the store and say where")
    demo.add_argument("--agent", help="the agent you play in the demo (default: alice)")

    check = add("check", cmd_check, "validate a config file; list every error")
    check.add_argument("file", nargs="?", help="the config file (default: as --config)")

    sync = add("sync", cmd_sync, "run the connectors and deliver replies")
    sync.add_argument("--once", action="store_true", help="one pass, then exit (non-zero on error)")
    sync.add_argument("--connector", metavar="NAME", help="run only this connector")
    sync.add_argument("--log-format", choices=("text", "json"), default="text",
                      help="log lines as text (default) or one JSON object per line")

    imp = add("import", cmd_import, "import a Maildir or mbox")
    imp.add_argument("kind", choices=["maildir", "mbox"])
    imp.add_argument("path")
    imp.add_argument("--connector", default="import",
                     help="connector name to file the messages under (default: import); use your "
                          "email connector's name so a later IMAP sync does not store them again")
    imp.add_argument("--quiet", action="store_true", help="no progress display")

    exp = add("export", cmd_export, "write the store as JSON Lines (see README)")
    exp.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    att = add("attachments", cmd_attachments, "list a ticket's attachments, or save one")
    asub = att.add_subparsers(dest="action", required=True, metavar="ACTION")
    alist = asub.add_parser("list", help="a ticket's attachments, newest first")
    alist.add_argument("ticket", type=int)
    asave = asub.add_parser("save", help="write one into a folder, under a safe name")
    asave.add_argument("id", type=int, help="the attachment's id (from list)")
    asave.add_argument("--to", metavar="DIR",
                       help="the folder (default: [desk] attachments_dir, else desk in Downloads)")

    auth = add("auth", cmd_auth, "sign a mailbox in with OAuth 2.0 (Microsoft 365, Google)")
    authsub = auth.add_subparsers(dest="action", required=True, metavar="ACTION")
    login = authsub.add_parser("login", help="sign CONNECTOR in: a code to enter on any "
                               "device, or a browser sign-in")
    login.add_argument("connector")
    login.add_argument("--browser", action="store_true",
                       help="the browser sign-in even where the device code is offered")
    login.add_argument("--no-browser", action="store_true",
                       help="print the address instead of opening a browser here")
    astatus = authsub.add_parser("status", help="who each OAuth mailbox is signed in as")
    astatus.add_argument("--json", action="store_true")
    logout = authsub.add_parser("logout", help="forget CONNECTOR's tokens")
    logout.add_argument("connector")

    search = add("search", cmd_search, "full-text search, newest first")
    search.add_argument("query", nargs="+")
    search.add_argument("--json", action="store_true")
    search.add_argument("--limit", type=int, default=50)

    customers = add("customers", cmd_customers, "list, show, merge and unmerge customers")
    csub = customers.add_subparsers(dest="action", required=True, metavar="ACTION")
    clist = csub.add_parser("list", help="most recently active customers")
    clist.add_argument("--limit", type=int, default=50)
    clist.add_argument("--json", action="store_true")
    cshow = csub.add_parser("show", help="a customer's identities, tickets and merge suggestions")
    cshow.add_argument("id", type=int)
    cshow.add_argument("--json", action="store_true")
    cmerge = csub.add_parser("merge", help="merge SOURCE into TARGET (undo with unmerge)")
    cmerge.add_argument("target", type=int)
    cmerge.add_argument("source", type=int)
    cunmerge = csub.add_parser("unmerge", help="restore a merged customer exactly as before")
    cunmerge.add_argument("id", type=int)
    clink = csub.add_parser("link", help="attach an identity to a customer by hand")
    clink.add_argument("id", type=int)
    clink.add_argument("kind", choices=["email", "phone", "telegram"])
    clink.add_argument("value")

    tickets = add("tickets", cmd_tickets, "list, show and update tickets")
    tsub = tickets.add_subparsers(dest="action", required=True, metavar="ACTION")
    tlist = tsub.add_parser("list", help="newest tickets of a queue")
    tlist.add_argument("--queue", default="open",
                       help="mine, unassigned, open, pending, snoozed, resolved or all")
    tlist.add_argument("--channel", choices=["email", "sms", "telegram"])
    tlist.add_argument("--tag")
    tlist.add_argument("--limit", type=int, default=50)
    tlist.add_argument("--json", action="store_true")
    tshow = tsub.add_parser("show", help="a ticket and its newest messages")
    tshow.add_argument("id", type=int)
    tshow.add_argument("--limit", type=int, default=50)
    tshow.add_argument("--json", action="store_true")
    tshow.add_argument("--events", action="store_true",
                       help="also the audit trail: who did what, and when")
    tstatus = tsub.add_parser("status", help="set open, pending, snoozed or resolved")
    tstatus.add_argument("id", type=int)
    tstatus.add_argument("status", choices=["open", "pending", "snoozed", "resolved"])
    tstatus.add_argument("--until", help="with snoozed: 30m, 4h, 2d, 1w")
    tassign = tsub.add_parser("assign", help="give to an agent ('-' to unassign)")
    tassign.add_argument("id", type=int)
    tassign.add_argument("agent")
    ttag = tsub.add_parser("tag", help="add tags")
    ttag.add_argument("id", type=int)
    ttag.add_argument("tags", nargs="+")
    tprio = tsub.add_parser("priority", help="set low, normal, high or urgent")
    tprio.add_argument("id", type=int)
    tprio.add_argument("priority", choices=["low", "normal", "high", "urgent"])

    reply = add("reply", cmd_reply, "queue a reply or add a private note")
    reply.add_argument("ticket", type=int, nargs="?")
    body = reply.add_mutually_exclusive_group()
    body.add_argument("--text", help="the reply to send")
    body.add_argument("--note", help="a private note instead of a reply")
    reply.add_argument("--channel", choices=["email", "sms", "telegram"],
                       help="default: the channel the customer last wrote on")
    reply.add_argument("--to", help="which address or number, when the customer has several")
    reply.add_argument("--retry", type=int, metavar="MESSAGE", help="requeue a failed reply")

    mig = add("migrate", cmd_migrate,
              "copy the whole store to another database (SQLite <-> PostgreSQL)")
    mig.add_argument("--to", metavar="URL|PATH",
                     help="the database to copy into (default: the configured store)")
    mig.add_argument("--from", dest="source", metavar="URL|PATH",
                     help="the database to copy from (default: the configured store)")
    status = add("status", cmd_status, "what the store holds and how each connector is doing")
    status.add_argument("--json", action="store_true")

    stats = add("stats", cmd_stats, "service figures for a period: volume, response and "
                "resolution times, SLA breaches, channels, agents, tags")
    stats.add_argument("--since", metavar="WHEN",
                       help="start: 30d, 12h, 2w (ago), today, yesterday, 2026-11-01, "
                            "'2026-11-01 09:00' or all (default: 30 days before --until)")
    stats.add_argument("--until", metavar="WHEN", help="end, written like --since (default: now)")
    stats.add_argument("--json", action="store_true", help="one JSON object (see README)")
    stats.add_argument("--daily", action="store_true",
                       help="with --json: add per-day counts (\"daily\")")

    admin = add("admin", cmd_admin, "PostgreSQL roles for agents and daemons (as the owner)")
    asub = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("grant-agent", "a role for an agent: tickets and messages, no DDL, "
                          "no cursors or leases"),
                         ("grant-daemon", "a role for desk sync: what an agent may, cursors "
                          "and leases besides")):
        grant = asub.add_parser(action, help=text, description=text)
        grant.add_argument("name", help="the role to create or update")
        grant.add_argument("--password", metavar="env:VAR|file:PATH",
                           help="the role's login password, read from there (never inline)")
    arevoke = asub.add_parser("revoke", help="take every right on the store from a role")
    arevoke.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from desk.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CommandError as exc:
        print(redact(f"desk: {exc}"), file=sys.stderr)
        return 1
    except ConfigError as exc:
        for error in exc.errors:
            print(redact(str(error)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`desk export | head`); that is not an error of ours.
        sys.stderr.close()
        return 0
    except Exception:
        # A traceback quotes exception messages, and a provider's may carry a secret.
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
