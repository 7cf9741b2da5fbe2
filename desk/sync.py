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

from connectors.base import Connector
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
from desk.store import Store, get_cursor
from desk.tickets import wake_snoozed
from desk.timeutil import utcnow

log = logging.getLogger("desk.sync")

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
    )


def build_connector(config: AnyConnectorSettings) -> Connector:
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
    return module.from_settings(config)


@dataclass(slots=True)
class SyncReport:
    fetched: dict[str, IngestResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
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
        state.last_error = error
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
) -> SyncReport:
    """One pass: fetch each enabled connector, then deliver due replies."""
    report = SyncReport()
    options = ingest_options(settings)
    running: dict[str, Connector] = dict(connectors or {})
    configs = [c for c in settings.connectors if c.enabled and (only is None or c.name == only)]
    if only is not None and not configs:
        report.errors[only] = f'no enabled connector named "{only}"'
        return report
    try:
        for config in configs:
            try:
                connector = running.get(config.name) or build_connector(config)
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
    while True:
        try:
            await fetch_into_store(store, connector, options)
            failures = 0
            wait = getattr(connector, "wait", None)
            if wait is not None:
                await wait(poll_interval)
            else:
                await asyncio.sleep(poll_interval)
        except asyncio.CancelledError:
            raise
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


async def run_forever(store: Store, settings: Settings, *, only: str | None = None) -> None:
    """Every enabled connector in its own loop, and the outbox, until cancelled."""
    options = ingest_options(settings)
    configs = [c for c in settings.connectors if c.enabled and (only is None or c.name == only)]
    connectors = {config.name: build_connector(config) for config in configs}
    loops = [
        watch_connector(store, connectors[config.name], options,
                        poll_interval=config.poll_interval)
        for config in configs
    ]
    for config in configs:
        serve = getattr(connectors[config.name], "serve_webhook", None)
        if serve is not None and getattr(config, "webhook_listen", None):
            loops.append(serve(*webhook_handlers(store, config.name, options)))
    try:
        # A previous daemon may have died mid-send: settle those replies before sending more.
        await reconcile_sending(store, connectors)
        await asyncio.gather(*loops, deliver_forever(store, connectors))
    finally:
        for connector in connectors.values():
            await connector.aclose()


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
    """`desk sync`: `run_forever` while renewing the store's lease, until SIGTERM or SIGINT,
    which finish what is in hand (a batch being stored completes in its thread) and return."""
    from desk import lease

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)

    async def keep_lease() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            held = await asyncio.to_thread(
                store.write, lambda s: lease.claim(s, lease.DAEMON, holder, lease_seconds))
            if held is not None:
                raise LeaseLost(f"{held.holder} took over this store's desk sync lease: "
                                "this daemon stopped")

    work = asyncio.gather(run_forever(store, settings, only=only), keep_lease())
    try:
        await work
    except asyncio.CancelledError:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        log.info("stopped")
    except LeaseLost:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
