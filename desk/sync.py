"""`desk sync`: fetch every connector into the store and deliver queued replies.

This is the first, sequential version: one pass runs each enabled connector in turn, then the
outbox. A connector that fails is recorded (SyncState.last_error) and the others still run.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connectors.base import Connector, SignInNeeded
from desk import lease
from desk.config import AnyConnectorSettings, Settings
from desk.ingest import IngestOptions, IngestResult, ingest
from desk.models import SyncState
from desk.outbox import (
    DeliveryReport,
    deliver_due,
    follow_deliveries,
    reconcile_sending,
    record_delivery_of,
)
from desk.redact import redact
from desk.store import Store, get_cursor, is_sqlite
from desk.tickets import wake_snoozed
from desk.timeutil import utcnow

log = logging.getLogger("desk.sync")
# How often a connector waiting for a new OAuth sign-in looks for one.
SIGN_IN_POLL_SECONDS = 5.0

# The module implementing each connector type; each exposes `from_settings(settings)`.
CONNECTOR_MODULES = {
    "email": "connectors.email",
    "twilio": "connectors.sms",
    "telegram": "connectors.telegram",
}


class ConnectorUnavailable(Exception):
    """The connector type has no implementation in this version of desk."""


def ingest_options(settings: Settings) -> IngestOptions:
    return IngestOptions(
        region=settings.desk.default_region,
        reopen_window=timedelta(days=settings.desk.reopen_window_days),
        max_message_bytes=settings.store.max_message_bytes,
    )


def build_connector(config: AnyConnectorSettings, max_message_bytes: int | None = None,
                    store: Store | None = None) -> Connector:
    module_name = CONNECTOR_MODULES[config.type]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConnectorUnavailable(
            f'connector "{config.name}": type "{config.type}" is not available in this version'
            " of desk"
        ) from exc
    connector = module.from_settings(config)
    if max_message_bytes is not None and hasattr(connector, "max_message_bytes"):
        # A connector that can read part of a message (IMAP) stops at the limit, so a huge
        # one is never held in memory whole.
        connector.max_message_bytes = max_message_bytes
    if getattr(config, "auth", None) == "oauth2" and store is not None:
        from desk.oauth import TokenSource

        connector.token_provider = TokenSource(store, config)  # type: ignore[attr-defined,arg-type]
    return connector


@dataclass(slots=True)
class SyncReport:
    fetched: dict[str, IngestResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)  # connector: the daemon running it
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    @property
    def ok(self) -> bool:
        return not self.errors


def record_error(store: Store, connector: str, error: str) -> None:
    def write(session: Any) -> None:
        state = session.get(SyncState, connector)
        now = utcnow()
        if state is None:
            state = SyncState(connector=connector, cursor="{}", updated_at=now)
            session.add(state)
        state.last_error = redact(error)
        state.last_error_at = now

    store.write(write)


async def fetch_into_store(
    store: Store,
    connector: Connector,
    options: IngestOptions,
    progress: Callable[[IngestResult], None] | None = None,
) -> IngestResult:
    """Every batch the connector has now, each stored with its cursor in one transaction."""
    with store.session() as session:
        cursor = get_cursor(session, connector.name)
    total = IngestResult()
    async for batch in connector.fetch(cursor):
        # Ingest blocks on SQLite; keep it off the event loop so other connectors keep going.
        result = await asyncio.to_thread(
            ingest, store, batch.messages, connector=connector.name, cursor=batch.cursor,
            options=options,
        )
        total.add(result)
        if progress:
            progress(total)
    return total


SyncProgress = Callable[[str, int, int | None], None]  # connector, messages read, of how many


async def run_once(
    store: Store,
    settings: Settings,
    *,
    only: str | None = None,
    connectors: Mapping[str, Connector] | None = None,
    progress: SyncProgress | None = None,
    holder: str | None = None,
) -> SyncReport:
    """One pass: fetch each enabled connector, then deliver due replies. With `holder`, only
    the connectors no daemon is running (their leases are held for the pass)."""
    report = SyncReport()
    options = ingest_options(settings)
    running: dict[str, Connector] = dict(connectors or {})
    configs = [c for c in settings.connectors if c.enabled and (only is None or c.name == only)]
    if only is not None and not configs:
        report.errors[only] = f'no enabled connector named "{only}"'
        return report
    seconds = settings.store.lease_seconds
    if holder is not None:
        claims = store.write(lambda session: {
            c.name: lease.claim(session, lease.connector_role(c.name), holder, seconds)
            for c in configs})
        report.busy = {name: held.holder for name, held in claims.items() if held is not None}
        configs = [c for c in configs if c.name not in report.busy]
    try:
        for config in configs:
            try:
                connector = running.get(config.name) or build_connector(
                    config, options.max_message_bytes, store)
                running[config.name] = connector
                report.fetched[config.name] = await fetch_into_store(
                    store, connector, options, progress=_reporter(config.name, connector, progress))
                log.info("%s: %d new messages", config.name, report.fetched[config.name].stored)
            except Exception as exc:  # one connector failing never stops the others
                reason = f"{type(exc).__name__}: {exc}"
                report.errors[config.name] = reason
                log.warning("%s: %s", config.name, reason)
                await asyncio.to_thread(record_error, store, config.name, reason)
        await reconcile_sending(store, running)
        report.delivery = await deliver_due(store, running)
        await follow_deliveries(store, running)
        store.write(lambda session: wake_snoozed(session))
    finally:
        if connectors is None:
            for connector in running.values():
                await connector.aclose()
        if holder is not None:
            store.write(lambda session: [
                lease.release(session, lease.connector_role(c.name), holder) for c in configs])
    return report


async def watch_connector(
    store: Store,
    connector: Connector,
    options: IngestOptions,
    *,
    poll_interval: float,
    backoff_cap: float = 300.0,
) -> None:
    """Keep one connector's messages flowing into the store until cancelled: fetch, then wait
    for news (IMAP IDLE where the connector can push, else `poll_interval`). Errors are
    recorded and retried with capped exponential backoff and jitter; they never end the loop."""
    failures = 0
    signed_out = False
    while True:
        try:
            await fetch_into_store(store, connector, options)
            failures, signed_out = 0, False
            wait = getattr(connector, "wait", None)
            if wait is not None:
                await wait(poll_interval)
            else:
                await asyncio.sleep(poll_interval)
        except asyncio.CancelledError:
            raise
        except SignInNeeded as exc:
            # Retrying cannot help until an admin signs in again: say so once, then look
            # every few seconds so a new sign-in is used at once.
            if not signed_out:
                log.warning("%s: %s", connector.name, exc.reason)
                await asyncio.to_thread(record_error, store, connector.name, exc.reason)
            signed_out = True
            await asyncio.sleep(SIGN_IN_POLL_SECONDS)
        except Exception as exc:
            failures += 1
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("%s: %s (attempt %d)", connector.name, reason, failures)
            await asyncio.to_thread(record_error, store, connector.name, reason)
            delay = min(backoff_cap, 0.5 * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
            await asyncio.sleep(delay)


async def deliver_forever(
    store: Store, connectors: Mapping[str, Connector], interval: float = 2.0
) -> None:
    """Send due replies and wake snoozed tickets every `interval` seconds until cancelled."""
    while True:
        try:
            await deliver_due(store, connectors)
            await follow_deliveries(store, connectors)
            await asyncio.to_thread(store.write, lambda session: wake_snoozed(session))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next round tries again
            log.warning("outbox: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(interval)


def _reporter(
    name: str, connector: Connector, progress: SyncProgress | None
) -> Callable[[IngestResult], None] | None:
    if progress is None:
        return None

    def report(total: IngestResult) -> None:
        # A connector that knows how much it has to read says so (IMAP: the folder's new UIDs).
        expected = getattr(connector, "progress_total", None) or None
        progress(name, total.stored + total.duplicates, expected)

    return report


def webhook_handlers(
    store: Store, connector: str, options: IngestOptions
) -> tuple[Callable[[Any], Any], Callable[[str, str, str | None], Any]]:
    """What a connector's webhook does with what it is told: messages go through the same
    ingest as polling (so the two together store each message once), delivery reports update
    the sent message."""

    async def on_message(message: Any) -> None:
        await asyncio.to_thread(ingest, store, [message], connector=connector, options=options)

    async def on_status(provider_id: str, status: str, error: str | None) -> None:
        await asyncio.to_thread(store.write, lambda session: record_delivery_of(
            session, connector, provider_id, status, error))

    return on_message, on_status


class ConnectorPool:
    """The connectors this daemon runs: those whose lease it holds. `balance()` renews those
    leases, takes over connectors whose holder is gone and stops any it lost, so that each
    connector runs in exactly one of the daemons sharing a store."""

    def __init__(
        self, store: Store, settings: Settings, *, only: str | None, holder: str,
        lease_seconds: float,
    ) -> None:
        self.store, self.holder, self.lease_seconds = store, holder, lease_seconds
        self.options = ingest_options(settings)
        self.configs = [c for c in settings.connectors
                        if c.enabled and (only is None or c.name == only)]
        # On SQLite a store has one daemon, which holds the store's lease as well.
        self.exclusive = is_sqlite(store.engine)
        self.running: dict[str, Connector] = {}  # the outbox sends through these
        self._tasks: dict[str, list[asyncio.Task[Any]]] = {}

    def _claim_all(self, session: Any) -> dict[str, lease.Held | None]:
        if self.exclusive:
            held = lease.claim(session, lease.DAEMON, self.holder, self.lease_seconds)
            if held is not None:
                raise LeaseLost(f"{held.holder} took over this store's desk sync lease: "
                                "this daemon stopped")
        lease.claim(session, lease.daemon_role(self.holder), self.holder, self.lease_seconds)
        return {config.name: lease.claim(session, lease.connector_role(config.name),
                                         self.holder, self.lease_seconds)
                for config in self.configs}

    async def balance(self) -> None:
        claims = await asyncio.to_thread(self.store.write, self._claim_all)
        for config in self.configs:
            held = claims[config.name]
            if held is None and config.name not in self._tasks:
                await self._start(config)
            elif held is not None and config.name in self._tasks:
                log.warning("%s: %s took it over; stopping it here", config.name, held.holder)
                await self._stop(config.name)

    async def _start(self, config: AnyConnectorSettings) -> None:
        log.info("%s: running it here", config.name)
        self._tasks[config.name] = []
        try:
            connector = build_connector(config, self.options.max_message_bytes, self.store)
        except Exception as exc:  # e.g. a type this desk lacks: recorded, others carry on
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("%s: %s", config.name, reason)
            await asyncio.to_thread(record_error, self.store, config.name, reason)
            return
        # Whoever ran it before may have died mid-send: settle those replies first.
        await reconcile_sending(self.store, {config.name: connector})
        self.running[config.name] = connector
        tasks = [asyncio.create_task(watch_connector(
            self.store, connector, self.options, poll_interval=config.poll_interval))]
        serve = getattr(connector, "serve_webhook", None)
        if serve is not None and getattr(config, "webhook_listen", None):
            tasks.append(asyncio.create_task(
                serve(*webhook_handlers(self.store, config.name, self.options))))
        self._tasks[config.name] = tasks

    async def _stop(self, name: str) -> None:
        tasks = self._tasks.pop(name, [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        connector = self.running.pop(name, None)
        if connector is not None:
            await connector.aclose()

    async def close(self) -> None:
        """Stop every connector and give up the leases, so another daemon takes over now."""
        for name in list(self._tasks):
            await self._stop(name)
        await asyncio.to_thread(self.store.write,
                                lambda session: lease.release_all(session, self.holder))

    def failed(self) -> BaseException | None:
        """The error of a connector task that ended (a webhook that could not listen)."""
        for tasks in self._tasks.values():
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    return task.exception()
        return None


async def run_forever(
    store: Store, settings: Settings, *, only: str | None = None, holder: str | None = None,
    lease_seconds: float | None = None,
) -> None:
    """Run the connectors this daemon can lease, each in its own loop, and the outbox, until
    cancelled; every `lease_seconds / 3` renew the leases and take over connectors whose
    daemon is gone."""
    seconds = lease_seconds or settings.store.lease_seconds
    pool = ConnectorPool(store, settings, only=only, holder=holder or lease.me(),
                         lease_seconds=seconds)

    async def supervise() -> None:
        while True:
            await pool.balance()
            failure = pool.failed()
            if failure is not None:
                raise failure
            await asyncio.sleep(seconds / 3)

    try:
        await asyncio.gather(supervise(), deliver_forever(store, pool.running))
    finally:
        await pool.close()


class LeaseLost(RuntimeError):
    """Another daemon took the store's lease (this one stalled past it): stop at once."""


async def run_daemon(
    store: Store,
    settings: Settings,
    *,
    only: str | None,
    holder: str,
    lease_seconds: float,
) -> None:
    """`desk sync`: `run_forever` until SIGTERM or SIGINT, which finish what is in hand (a batch
    being stored completes in its thread), give up the leases and return."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    try:
        await run_forever(store, settings, only=only, holder=holder,
                          lease_seconds=lease_seconds)
    except asyncio.CancelledError:
        log.info("stopped")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
