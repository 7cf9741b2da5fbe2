"""Leases: a role held by one process at a time, through a row in the store (not a pid file),
so it works for processes on other machines and a holder that crashed loses it by expiry.

The roles: each connector ("connector:NAME", run by one daemon at a time), each running daemon
("daemon:HOST:PID", so `desk status` can list them) and, on SQLite, the store itself
("desk-sync": one daemon per store file).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlmodel import Session

from desk import dialects
from desk.models import Lease
from desk.timeutil import utcnow

DAEMON = "desk-sync"


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def connector_role(name: str) -> str:
    return f"connector:{name}"


def daemon_role(holder: str) -> str:
    return f"daemon:{holder}"


@dataclass(frozen=True, slots=True)
class Held:
    """Who holds a lease (someone else, when `claim` returns it)."""

    holder: str
    acquired_at: datetime
    expires_at: datetime


def claim(session: Session, name: str, holder: str, seconds: float) -> Held | None:
    """Take or renew the lease; returns who holds it instead when that is someone else whose
    lease has not expired. The row is read `FOR UPDATE SKIP LOCKED`: a claimant that finds
    another one mid-claim moves on instead of queueing behind it (PostgreSQL; SQLite's
    BEGIN IMMEDIATE lets one writer in at a time anyway)."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    lease = session.execute(
        select(Lease).where(Lease.name == name).with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if lease is None:
        row = {"name": name, "holder": holder, "acquired_at": now, "expires_at": expires}
        if dialects.insert_new(session.connection(), Lease.__table__, row):  # type: ignore[attr-defined]
            return None
        # The row exists and another claimant has it locked right now.
        current = session.execute(
            select(Lease.holder, Lease.acquired_at, Lease.expires_at).where(Lease.name == name)
        ).one_or_none()
        return Held(*current) if current else Held("another process", now, expires)
    if lease.holder != holder and lease.expires_at > now:
        return Held(lease.holder, lease.acquired_at, lease.expires_at)
    if lease.holder != holder:
        lease.holder, lease.acquired_at = holder, now
    lease.expires_at = expires
    session.flush()
    return None


def release(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def release_all(session: Session, holder: str) -> None:
    """Give up every lease `holder` has, so others take them over at once."""
    session.execute(delete(Lease).where(Lease.holder == holder))


def live(session: Session, prefix: str) -> dict[str, Held]:
    """Unexpired leases whose role starts with `prefix`, by the rest of their name."""
    rows = session.execute(
        select(Lease).where(Lease.name.startswith(prefix, autoescape=True),
                            Lease.expires_at > utcnow()).order_by(Lease.name)
    ).scalars()
    return {row.name[len(prefix):]: Held(row.holder, row.acquired_at, row.expires_at)
            for row in rows}
