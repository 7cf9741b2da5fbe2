"""Tickets: where an inbound message goes, and the status rules agents act on.

Routing (`route`) is pure: given the candidate tickets it returns a decision, so the ingest
path can apply it to a whole batch in memory. The agent actions below each write an Event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

from sqlalchemy import delete, select
from sqlmodel import Session

from desk import ticket_figures
from desk.models import LIVE_STATUSES, PRIORITIES, TICKET_STATUSES, Event, Ticket, TicketTag
from desk.store import record_event
from desk.ticket_figures import Fields
from desk.timeutil import utcnow

SUBJECT_TOKEN = re.compile(r"\[#(\d{1,12})\]")
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|tr|sv|vs|antw)\s*(\[\d+\])?\s*:\s*)+", re.I)


class TicketError(ValueError):
    """An action that does not apply (unknown ticket, bad status, bad priority)."""


def subject_tokens(subject: str | None) -> list[int]:
    """Ticket ids written as [#123] in a subject, first one first."""
    return [int(match) for match in SUBJECT_TOKEN.findall(subject or "")]


def clean_subject(subject: str | None) -> str | None:
    """A subject without reply/forward prefixes and [#id] tokens, for a new ticket's title."""
    if not subject:
        return None
    cleaned = SUBJECT_TOKEN.sub("", _REPLY_PREFIX.sub("", subject)).strip()
    return cleaned or None


def reply_subject(subject: str | None, ticket_id: int) -> str:
    """The subject of our email reply: `Re: <subject> [#id]`, keeping a token already there."""
    base = clean_subject(subject) or "Your request"
    return f"Re: {base} [#{ticket_id}]"


@dataclass(frozen=True, slots=True)
class Candidate:
    """What routing needs to know of a ticket."""

    key: object  # the ticket id, or a placeholder for one created earlier in the same batch
    customer_key: object
    status: str
    resolved_at: datetime | None
    last_message_at: datetime


Action = Literal["join", "reopen", "new", "none"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    ticket: Candidate | None = None


def route(
    *,
    sent_at: datetime,
    threaded: Candidate | None,
    customer_tickets: Sequence[Candidate],
    reopen_window: timedelta,
    may_open: bool = True,
) -> Decision:
    """Where an inbound message goes.

    A threaded ticket (In-Reply-To/References or a [#id] token) wins when it is live or
    resolved within the reopen window; otherwise the customer's live ticket; otherwise their
    most recently resolved ticket within the window is reopened; otherwise a new ticket opens.
    Automatic mail (`may_open=False`) joins a live ticket but never opens or reopens one.
    """
    if threaded is not None:
        if threaded.status in LIVE_STATUSES:
            return Decision("join", threaded)
        if _within(threaded, sent_at, reopen_window):
            return Decision("reopen" if may_open else "none", threaded if may_open else None)
    live = [t for t in customer_tickets if t.status in LIVE_STATUSES]
    if live:
        return Decision("join", max(live, key=lambda t: t.last_message_at))
    if not may_open:
        return Decision("none")
    resolved = [t for t in customer_tickets if t.status == "resolved" and t.resolved_at]
    if resolved:
        latest = max(resolved, key=lambda t: t.resolved_at or t.last_message_at)
        if _within(latest, sent_at, reopen_window):
            return Decision("reopen", latest)
    return Decision("new")


def _within(ticket: Candidate, sent_at: datetime, window: timedelta) -> bool:
    return ticket.resolved_at is not None and sent_at - ticket.resolved_at <= window


# --------------------------------------------------------------------------------------------
# Agent actions


def _ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketError(f"no ticket #{ticket_id}")
    return ticket


def _event(session: Session, ticket: Ticket, kind: str, actor: str, **data: object) -> None:
    record_event(session, kind, actor=actor, ticket_id=ticket.id,
                 customer_id=ticket.customer_id, **data)


def set_status(
    session: Session,
    ticket_id: int,
    status: str,
    *,
    actor: str,
    snooze_until: datetime | None = None,
) -> Ticket:
    """Move a ticket to open, pending, snoozed (until a time) or resolved."""
    if status not in TICKET_STATUSES:
        expected = ", ".join(TICKET_STATUSES)
        raise TicketError(f"unknown status {status!r}; expected one of {expected}")
    if status == "snoozed" and snooze_until is None:
        raise TicketError("snoozing needs a time to wake up")
    ticket = _ticket(session, ticket_id)
    before = ticket.status
    now = utcnow()
    if status == "resolved" and before != "resolved":
        ticket_figures.resolve(Fields(ticket), now)
    elif before == "resolved" and status != "resolved":
        ticket_figures.reopen(Fields(ticket), now, status)
    ticket.status = status
    ticket.snoozed_until = snooze_until if status == "snoozed" else None
    ticket.updated_at = now
    _event(session, ticket, "status", actor, before=before, after=status, until=snooze_until)
    session.flush()
    return ticket


def wake_snoozed(session: Session, now: datetime | None = None) -> list[int]:
    """Reopen snoozed tickets whose time has come; returns their ids."""
    now = now or utcnow()
    due = session.execute(
        select(Ticket).where(Ticket.status == "snoozed", Ticket.snoozed_until <= now)
    ).scalars().all()
    for ticket in due:
        set_status(session, ticket.id, "open", actor="system")  # type: ignore[arg-type]
    return [ticket.id for ticket in due]  # type: ignore[misc]


def assign(session: Session, ticket_id: int, assignee: str | None, *, actor: str) -> Ticket:
    """Give a ticket to an agent (None: unassign)."""
    ticket = _ticket(session, ticket_id)
    before = ticket.assignee
    ticket.assignee = assignee or None
    ticket.updated_at = utcnow()
    _event(session, ticket, "assign", actor, before=before, after=ticket.assignee)
    session.flush()
    return ticket


def set_priority(session: Session, ticket_id: int, priority: str, *, actor: str) -> Ticket:
    if priority not in PRIORITIES:
        raise TicketError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
    ticket = _ticket(session, ticket_id)
    before = ticket.priority
    ticket.priority = priority
    ticket.updated_at = utcnow()
    _event(session, ticket, "priority", actor, before=before, after=priority)
    session.flush()
    return ticket


def normalize_tag(tag: str) -> str:
    cleaned = re.sub(r"[\s,]+", "-", tag.strip().lower()).strip("-")
    if not cleaned:
        raise TicketError(f"not a usable tag: {tag!r}")
    return cleaned[:64]


def set_tags(session: Session, ticket_id: int, tags: Iterable[str], *, actor: str) -> Ticket:
    """Replace a ticket's tags."""
    ticket = _ticket(session, ticket_id)
    wanted = sorted({normalize_tag(tag) for tag in tags})
    before = [tag for tag in ticket.tags.split(",") if tag]
    session.execute(delete(TicketTag).where(TicketTag.ticket_id == ticket_id))
    for tag in wanted:
        session.add(TicketTag(ticket_id=ticket_id, tag=tag))
    ticket.tags = ",".join(wanted)
    ticket.updated_at = utcnow()
    _event(session, ticket, "tags", actor, before=before, after=wanted)
    session.flush()
    return ticket


def add_tags(session: Session, ticket_id: int, tags: Iterable[str], *, actor: str) -> Ticket:
    ticket = _ticket(session, ticket_id)
    current = [tag for tag in ticket.tags.split(",") if tag]
    return set_tags(session, ticket_id, [*current, *tags], actor=actor)


def mark_read(session: Session, ticket_id: int) -> bool:
    """The agent has read the ticket; False when there was nothing unread."""
    ticket = _ticket(session, ticket_id)
    if not ticket.unread_count:
        return False
    ticket.unread_count = 0
    session.flush()
    return True


def ticket_events(session: Session, ticket_id: int, limit: int = 200) -> list[Event]:
    return list(
        session.execute(
            select(Event).where(Event.ticket_id == ticket_id).order_by(Event.id.desc()).limit(limit)
        ).scalars()
    )[::-1]


def tickets_of_customer(session: Session, customer_id: int, limit: int = 50) -> list[Ticket]:
    return list(
        session.execute(
            select(Ticket)
            .where(Ticket.customer_id == customer_id)
            .order_by(Ticket.last_message_at.desc())
            .limit(limit)
        ).scalars()
    )


def snooze_delta(spec: str) -> timedelta:
    """`30m`, `4h`, `2d`, `1w` as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", spec)
    if not match:
        raise TicketError(f"not a duration: {spec!r}; write e.g. 30m, 4h, 2d or 1w")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: amount})


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MORNING = time(9, 0)


def snooze_until(spec: str, now: datetime | None = None, tz: tzinfo | None = None) -> datetime:
    """When a snooze written by an agent ends, in UTC. Accepts a duration (`4h`, `2d`), a time
    of day (`14:30`, the next one), `tomorrow` or a weekday (`mon`, optionally with a time;
    09:00 when none), or a date (`2026-12-01`, optionally with a time). Days and times are read
    in `tz`, by default the machine's local time (with its daylight-saving rules on that day)."""
    now = now or utcnow()
    words = spec.strip().lower().split()
    if len(words) == 1 and re.fullmatch(r"\d+\s*[mhdw]", words[0]):
        return now + snooze_delta(words[0])
    unreadable = TicketError(
        f"not a time: {spec!r}; write e.g. 4h, 2d, 14:30, tomorrow or mon 9:00")
    if not words or len(words) > 2:
        raise unreadable
    at = _time_of_day(words[-1])
    day_words = words[:-1] if at is not None else words
    if len(day_words) > 1:
        raise unreadable
    today = _local(now, tz).date()
    day = day_words[0] if day_words else None
    if day is None:
        days: list[date] = [today, today + timedelta(days=1)]  # the next such time
    elif day == "today":
        days = [today]
    elif day == "tomorrow":
        days = [today + timedelta(days=1)]
    elif len(day) >= 3 and any(name.startswith(day) for name in _WEEKDAYS):
        weekday = next(i for i, name in enumerate(_WEEKDAYS) if name.startswith(day))
        ahead = (weekday - today.weekday()) % 7
        days = [today + timedelta(days=ahead), today + timedelta(days=ahead + 7)]
    else:
        try:
            days = [datetime.strptime(day, "%Y-%m-%d").date()]
        except ValueError:
            raise unreadable from None
    at = at or _MORNING
    for candidate in days:
        moment = _from_local(datetime.combine(candidate, at), tz)
        if moment > now:
            return moment
    raise TicketError(f"{spec!r} is in the past")


def _local(moment: datetime, tz: tzinfo | None) -> datetime:
    return moment.astimezone(tz) if tz is not None else moment.astimezone()


def _from_local(wall_clock: datetime, tz: tzinfo | None) -> datetime:
    """A naive wall-clock time in `tz` (or the machine's zone, whose offset on that very day
    the C library knows) as an aware UTC datetime."""
    if tz is not None:
        return wall_clock.replace(tzinfo=tz).astimezone(UTC)
    return wall_clock.astimezone().astimezone(UTC)  # a naive astimezone() reads local time


def _time_of_day(word: str) -> time | None:
    match = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?(am|pm)?", word)
    if not match or (match.group(2) is None and match.group(3) is None):
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if match.group(3):
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match.group(3) == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)
