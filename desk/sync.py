"""`desk sync`: fetch every connector into the store and deliver queued replies.

This is the first, sequential version: one pass runs each enabled connector in turn, then the
outbox. A connector that fails is recorded (SyncState.last_error) and the others still run.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connectors.base import Connector
from desk.config import AnyConnectorSettings, Settings
from desk.ingest import IngestOptions, IngestResult, ingest
from desk.models import SyncState
from desk.outbox import DeliveryReport, deliver_due
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


async def run_once(
    store: Store,
    settings: Settings,
    *,
    only: str | None = None,
    connectors: Mapping[str, Connector] | None = None,
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
                report.fetched[config.name] = await fetch_into_store(store, connector, options)
                log.info("%s: %d new messages", config.name, report.fetched[config.name].stored)
            except Exception as exc:  # one connector failing never stops the others
                reason = f"{type(exc).__name__}: {exc}"
                report.errors[config.name] = reason
                log.warning("%s: %s", config.name, reason)
                await asyncio.to_thread(record_error, store, config.name, reason)
        report.delivery = await deliver_due(store, running)
        store.write(lambda session: wake_snoozed(session))
    finally:
        if connectors is None:
            for connector in running.values():
                await connector.aclose()
    return report


async def run_forever(store: Store, settings: Settings, *, only: str | None = None) -> None:
    """Repeat passes at the shortest poll interval until cancelled."""
    intervals = [c.poll_interval for c in settings.connectors if c.enabled] or [60.0]
    pause = max(1.0, min(intervals))
    while True:
        await run_once(store, settings, only=only)
        await asyncio.sleep(pause)
