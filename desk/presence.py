"""Agents' live activity on tickets ("bob is writing a reply"), shared through the store so
app instances in other processes (or on other machines) see it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlmodel import Session

from desk.models import Presence
from desk.timeutil import utcnow

# An app renews its row every RENEW; a row older than EXPIRES belongs to an app that is gone.
RENEW = timedelta(seconds=30)
EXPIRES = timedelta(seconds=90)


def announce(session: Session, agent: str, ticket_id: int, activity: str) -> None:
    """`agent` is doing `activity` ("reply", "note") on the ticket; call again to renew."""
    row = session.get(Presence, (agent, ticket_id))
    if row is None:
        session.add(Presence(agent=agent, ticket_id=ticket_id, activity=activity,
                             updated_at=utcnow()))
    else:
        row.activity, row.updated_at = activity, utcnow()
    session.flush()


def withdraw(session: Session, agent: str, ticket_id: int) -> None:
    session.execute(delete(Presence).where(Presence.agent == agent,
                                           Presence.ticket_id == ticket_id))


def others_on(session: Session, ticket_id: int, agent: str) -> list[Presence]:
    """Other agents active on the ticket now, most recent first."""
    return list(
        session.execute(
            select(Presence)
            .where(Presence.ticket_id == ticket_id, Presence.agent != agent,
                   Presence.updated_at > utcnow() - EXPIRES)
            .order_by(Presence.updated_at.desc())
        ).scalars()
    )
