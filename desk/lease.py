"""Leases: a role held by one process at a time, through a row in the store (not a pid file),
so it works for processes on other machines and a holder that crashed loses it by expiry."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from desk.models import Lease
from desk.timeutil import utcnow

DAEMON = "desk-sync"


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Held:
    """Someone else holds it."""

    holder: str
    acquired_at: datetime
    expires_at: datetime


def claim(session: Session, name: str, holder: str, seconds: float) -> Held | None:
    """Take or renew the lease; returns who holds it instead when that is someone else whose
    lease has not expired. Call inside a write transaction (BEGIN IMMEDIATE on SQLite), so two
    claimants cannot both win."""
    now = utcnow()
    lease = session.get(Lease, name)
    if lease is not None and lease.holder != holder and lease.expires_at > now:
        return Held(lease.holder, lease.acquired_at, lease.expires_at)
    if lease is None:
        session.add(Lease(name=name, holder=holder, acquired_at=now,
                          expires_at=now + timedelta(seconds=seconds)))
    else:
        if lease.holder != holder:
            lease.holder, lease.acquired_at = holder, now
        lease.expires_at = now + timedelta(seconds=seconds)
    session.flush()
    return None


def release(session: Session, name: str, holder: str) -> None:
    lease = session.get(Lease, name)
    if lease is not None and lease.holder == holder:
        session.delete(lease)
        session.flush()


def holder_of(session: Session, name: str) -> Held | None:
    lease = session.get(Lease, name)
    if lease is None or lease.expires_at <= utcnow():
        return None
    return Held(lease.holder, lease.acquired_at, lease.expires_at)
