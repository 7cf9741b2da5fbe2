"""Service figures for a period: what `desk stats`, `desk stats --json` and the app's stats
screen show, computed from the store.

Ticket figures come from the aggregates each ticket row keeps (desk.ticket_figures), read in one
pass over the tickets the period touches; message volume comes from the `ix_message_stats` index
alone. What each figure counts is defined in the README ("Service figures").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, String, and_, case, cast, false, func, literal, or_, select
from sqlalchemy.engine import Connection, Engine

from desk import dialects
from desk.models import LIVE_STATUSES, Message, Ticket
from desk.sla import Targets
from desk.timeutil import iso, utcnow

DEFAULT_DAYS = 30
_T = TypeVar("_T")
TOP_SEQUENCES = 10
# Backlog age buckets, by time since opening: (label, lower bound in days).
AGE_BUCKETS = (("0-1d", 0), ("1-3d", 1), ("3-7d", 3), ("7-30d", 7), ("30d+", 30))


class StatsError(ValueError):
    """A period that cannot be read, named as the user wrote it."""


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime | None  # None: from the store's beginning
    until: datetime


# ---- reading a period ------------------------------------------------------------------------

_AGO = re.compile(r"(\d+)\s*([hdw])")


def parse_moment(spec: str, now: datetime, tz: tzinfo | None = None) -> datetime:
    """A moment as written on the command line, in UTC: `30d`, `12h`, `2w` (that long ago),
    `today`, `yesterday` (local midnight), `2026-11-01` (local midnight), `2026-11-01 09:00`
    (local time) or ISO 8601 with an offset."""
    text = spec.strip().lower()
    local_today = now.astimezone(tz).date()
    if match := _AGO.fullmatch(text):
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{{"h": "hours", "d": "days", "w": "weeks"}[unit]: amount})
    if text in ("today", "yesterday"):
        day = local_today - timedelta(days=1 if text == "yesterday" else 0)
        return _local_midnight(day, tz)
    written = spec.strip()  # as written: fromisoformat wants its "T" and "Z" upper-case
    try:
        moment = datetime.fromisoformat(written.replace(" ", "T", 1))
    except ValueError:
        raise StatsError(
            f'not a time: "{spec}"; write e.g. 30d, 12h, today, 2026-11-01 or '
            '"2026-11-01 09:00"'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()
    return moment.astimezone(UTC)


def _local_midnight(day: date, tz: tzinfo | None) -> datetime:
    midnight = datetime.combine(day, time())
    local = midnight.replace(tzinfo=tz) if tz is not None else midnight.astimezone()
    return local.astimezone(UTC)


def period_from(
    since: str | None, until: str | None, *, now: datetime | None = None,
    tz: tzinfo | None = None,
) -> Period:
    """The period the user asked for: by default the last 30 days; `since="all"` is the whole
    store."""
    now = now or utcnow()
    end = parse_moment(until, now, tz) if until else now
    if since is None:
        start: datetime | None = end - timedelta(days=DEFAULT_DAYS)
    elif since.strip().lower() == "all":
        start = None
    else:
        start = parse_moment(since, now, tz)
    if start is not None and start >= end:
        raise StatsError(f"the period is empty: --since {since} is not before the end "
                         f"({iso(end)})")
    return Period(start, end)


# ---- figures ---------------------------------------------------------------------------------


def percentile(ordered: list[int], q: float) -> float | None:
    """The q-quantile of sorted values by linear interpolation between the closest ranks
    (the median is the middle value, or the mean of the two middle ones)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    rounded = round(value, 1)
    return int(rounded) if rounded.is_integer() else rounded


def durations(values: list[int]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"median": _number(percentile(ordered, 0.5)),
            "p90": _number(percentile(ordered, 0.9)), "count": len(ordered)}


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(slots=True)
class Figures:
    """The figures of one slice: the whole desk, one channel, one agent or one tag."""

    messages_in: int | None = 0
    messages_out: int | None = 0
    opened: int = 0
    resolved: int = 0
    reopened: int = 0
    backlog: int = 0
    first_response: list[int] = field(default_factory=list)
    resolution: list[int] = field(default_factory=list)
    cohort_resolved: int = 0  # opened in the period and resolved at least once
    cohort_reopened: int = 0  # ... of which reopened at least once
    first_response_breaches: int = 0
    resolution_breaches: int = 0

    def as_json(self, targets: Targets) -> dict[str, Any]:
        return {
            "messages": {"in": self.messages_in, "out": self.messages_out},
            "tickets": {"opened": self.opened, "resolved": self.resolved,
                        "reopened": self.reopened, "backlog": self.backlog},
            "first_response_seconds": durations(self.first_response),
            "resolution_seconds": durations(self.resolution),
            "reopen_rate": share(self.cohort_reopened, self.cohort_resolved),
            # No target, no breach to count: null rather than a reassuring 0.
            "sla_breaches": {
                "first_response": (self.first_response_breaches if targets.first_response
                                   else None),
                "resolution": self.resolution_breaches if targets.resolution else None,
            },
        }


@dataclass(slots=True)
class _Slices:
    """The overall figures and every slice a ticket or message belongs to."""

    overall: Figures = field(default_factory=Figures)
    channels: dict[str, Figures] = field(default_factory=dict)
    agents: dict[str, Figures] = field(default_factory=dict)
    tags: dict[str, Figures] = field(default_factory=dict)

    def of_ticket(self, path: str, assignee: str | None, tags: str) -> Iterator[Figures]:
        yield self.overall
        if path:
            yield self.channel(path.split(",", 1)[0])
        if assignee:
            yield self.agent(assignee)
        for tag in filter(None, tags.split(",")):
            # Messages are not tagged, only tickets: no volume per tag.
            yield self.tags.setdefault(tag, Figures(messages_in=None, messages_out=None))

    def channel(self, name: str) -> Figures:
        return self.channels.setdefault(name, Figures())

    def agent(self, name: str) -> Figures:
        # Inbound messages are the customer's, not any agent's: only "out" counts per agent.
        return self.agents.setdefault(name, Figures(messages_in=None))


def _within(column: Any, period: Period) -> ColumnElement[bool]:
    if period.since is None:
        return column < period.until
    return and_(column >= period.since, column < period.until)


def _flag(condition: ColumnElement[bool]) -> Any:
    return case((condition, 1), else_=0)


def _breach_conditions(
    targets: Targets, deadline_base: datetime
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """SQL for "this ticket missed its first-response / resolution target", evaluated at
    `deadline_base` for tickets still waiting, with the targets as bound values."""
    live = Ticket.status != "resolved"
    first = [
        and_(Ticket.priority == priority,
             or_(Ticket.first_response_seconds > seconds,
                 and_(Ticket.first_response_seconds.is_(None), live,
                      Ticket.first_inbound_at < deadline_base - timedelta(seconds=seconds))))
        for priority, seconds in targets.first_response.items()
    ]
    resolution = [
        and_(Ticket.priority == priority,
             or_(Ticket.resolution_seconds > seconds,
                 and_(live, Ticket.created_at < deadline_base - timedelta(seconds=seconds))))
        for priority, seconds in targets.resolution.items()
    ]
    return (or_(*first) if first else false(), or_(*resolution) if resolution else false())


def compute(
    engine: Engine,
    period: Period,
    targets: Targets | None = None,
    *,
    now: datetime | None = None,
    daily: bool = False,
    tz: tzinfo | None = None,
) -> dict[str, Any]:
    """Every figure for `period`, as the JSON object `desk stats --json` prints.

    The reads are independent, so each runs on its own connection in its own thread: the
    database works on them at once (SQLite releases the GIL while it steps)."""
    targets = targets or Targets()
    now = now or utcnow()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="desk-stats") as pool:

        def read(query: Callable[..., _T], *args: Any) -> Future[_T]:
            def run() -> _T:
                with engine.connect() as conn:
                    return query(conn, *args)
            return pool.submit(run)

        tickets = read(_ticket_rows, period, targets, min(now, period.until))
        messages = read(_message_rows, period)
        customers = read(_count_customers, period)
        backlog = read(_backlog_rows, period, now)
        series = read(daily_series, period, now, tz) if daily else None
        slices = _Slices()
        _add_messages(slices, *messages.result())
        sequences, resolved_on = _add_tickets(slices, tickets.result())
        backlog_detail = _add_backlog(slices, backlog.result())
        customer_count, multichannel = customers.result()
    overall = slices.overall.as_json(targets)
    result: dict[str, Any] = {
        "period": {"since": iso(period.since), "until": iso(period.until)},
        "generated_at": iso(now),
        "messages": overall["messages"],
        "tickets": {**overall["tickets"], **backlog_detail},
        "first_response_seconds": overall["first_response_seconds"],
        "resolution_seconds": overall["resolution_seconds"],
        "customers": customer_count,
        "multichannel_customer_share": share(multichannel, customer_count),
        "reopen_rate": overall["reopen_rate"],
        "channel_sequences": [
            {"sequence": path.split(","), "tickets": count}
            for path, count in _ranked(sequences)[:TOP_SEQUENCES]
        ],
        "resolved_on_channel": dict(_ranked(resolved_on)),
        "sla_targets": {"first_response": dict(targets.first_response),
                        "resolution": dict(targets.resolution)},
        "sla_breaches": overall["sla_breaches"],
        "by_channel": {k: v.as_json(targets) for k, v in sorted(slices.channels.items())},
        "by_agent": {k: v.as_json(targets) for k, v in sorted(slices.agents.items())},
        "by_tag": {k: v.as_json(targets) for k, v in sorted(slices.tags.items())},
    }
    if series is not None:
        result["daily"] = series.result()
    return result


_Rows = list[tuple[Any, ...]]


def _ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most frequent first; ties in name order, so the output is stable."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _message_rows(conn: Connection, period: Period) -> tuple[_Rows, _Rows]:
    # Only columns of ix_message_stats, so SQLite counts from the index alone.
    sent = conn.execute(
        select(Message.direction, Message.channel, Message.author, func.count())
        .where(Message.direction.in_(("in", "out")), _within(Message.sent_at, period))
        .group_by(Message.direction, Message.channel, Message.author)
    ).all()
    # Failed sends are few and found through the outbox index; they are taken back out.
    # (Only outbound messages fail: a condition on direction would steer the planner to
    # ix_message_stats and a row look-up per outbound message.)
    failed = conn.execute(
        select(Message.channel, Message.author, func.count())
        .where(Message.status == "failed", _within(Message.sent_at, period))
        .group_by(Message.channel, Message.author)
    ).all()
    return [tuple(r) for r in sent], [tuple(r) for r in failed]


def _add_messages(slices: _Slices, sent: _Rows, failed: _Rows) -> None:
    for direction, channel, author, count in sent:
        figures = [slices.overall, slices.channel(channel)]
        if direction == "in":
            for f in figures:
                f.messages_in = (f.messages_in or 0) + count
            continue
        for f in [*figures, *([slices.agent(author)] if author else [])]:
            f.messages_out = (f.messages_out or 0) + count
    for channel, author, count in failed:
        for f in [slices.overall, slices.channel(channel),
                  *([slices.agent(author)] if author else [])]:
            f.messages_out = (f.messages_out or 0) - count


def _ticket_rows(
    conn: Connection, period: Period, targets: Targets, deadline_base: datetime
) -> _Rows:
    """The tickets the period touches, grouped in SQL by what the slices need; durations
    come back as one comma-separated list per group, for exact percentiles."""
    first_breach, resolution_breach = _breach_conditions(targets, deadline_base)
    opened_in = _within(Ticket.created_at, period)
    answered_in = _within(Ticket.first_response_at, period)
    resolved_in = _within(Ticket.resolved_at, period)
    reopened_in = _within(Ticket.reopened_at, period)
    ever_resolved = or_(Ticket.resolved_at.is_not(None), Ticket.reopen_count > 0)
    # One row of 0/1 flags per ticket, summed per group.
    per_ticket = select(
        Ticket.channel_path, Ticket.assignee, Ticket.tags, Ticket.resolved_channel,
        _flag(opened_in).label("opened"),
        _flag(resolved_in).label("resolved"),
        _flag(reopened_in).label("reopened"),
        _flag(ever_resolved).label("ever_resolved"),
        _flag(Ticket.reopen_count > 0).label("ever_reopened"),
        _flag(first_breach).label("first_late"),
        _flag(resolution_breach).label("resolution_late"),
        case((answered_in, cast(Ticket.first_response_seconds, String))).label("first"),
        case((resolved_in, cast(Ticket.resolution_seconds, String))).label("resolution"),
    )
    if period.since is not None:
        # A full scan costs less than the index look-ups when the period covers most of the
        # store; a bounded period reads only what its four indexed times point at.
        per_ticket = per_ticket.where(or_(opened_in, answered_in, resolved_in, reopened_in))
    t = per_ticket.subquery()
    keys = (t.c.channel_path, t.c.assignee, t.c.tags, t.c.resolved_channel)
    rows = conn.execute(
        select(
            *keys,
            func.sum(t.c.opened), func.sum(t.c.resolved), func.sum(t.c.reopened),
            func.sum(t.c.opened * t.c.ever_resolved), func.sum(t.c.opened * t.c.ever_reopened),
            func.sum(t.c.opened * t.c.first_late), func.sum(t.c.opened * t.c.resolution_late),
            func.aggregate_strings(t.c.first, ","), func.aggregate_strings(t.c.resolution, ","),
        ).group_by(*keys)
    )
    return [tuple(r) for r in rows]


def _add_tickets(slices: _Slices, rows: _Rows) -> tuple[Counter[str], Counter[str]]:
    sequences: Counter[str] = Counter()
    resolved_on: Counter[str] = Counter()
    for (path, assignee, tags, resolved_channel, opened, resolved, reopened, cohort_resolved,
         cohort_reopened, first_late, resolution_late, first_seconds, resolution_seconds) in rows:
        if not (opened or resolved or reopened or first_seconds or resolution_seconds):
            continue  # tickets after the period (a whole-store period reads every ticket)
        if path:
            sequences[path] += opened
        if resolved_channel:
            resolved_on[resolved_channel] += resolved
        first = [int(v) for v in first_seconds.split(",")] if first_seconds else []
        resolution = [int(v) for v in resolution_seconds.split(",")] if resolution_seconds else []
        for f in slices.of_ticket(path, assignee, tags):
            f.opened += opened
            f.resolved += resolved
            f.reopened += reopened
            f.cohort_resolved += cohort_resolved
            f.cohort_reopened += cohort_reopened
            f.first_response_breaches += first_late
            f.resolution_breaches += resolution_late
            f.first_response += first
            f.resolution += resolution
    return sequences, resolved_on


def _live_before(period: Period) -> ColumnElement[bool]:
    return and_(Ticket.status.in_(LIVE_STATUSES), Ticket.created_at < period.until)


def _backlog_rows(conn: Connection, period: Period, now: datetime) -> _Rows:
    """Live tickets by slice, status and age bucket (since opening), in one pass."""
    age = case(
        *[(Ticket.created_at > now - timedelta(days=older), literal(label))
          for (label, _), (_, older) in pairwise(AGE_BUCKETS)],
        else_=literal(AGE_BUCKETS[-1][0]),
    )
    keys = (Ticket.channel_path, Ticket.assignee, Ticket.tags, Ticket.status, age)
    rows = conn.execute(
        select(*keys, func.count()).where(_live_before(period)).group_by(*keys)
    )
    return [tuple(r) for r in rows]


def _add_backlog(slices: _Slices, rows: _Rows) -> dict[str, Any]:
    by_status = {status: 0 for status in LIVE_STATUSES}
    by_age = {label: 0 for label, _ in AGE_BUCKETS}
    for path, assignee, tags, status, bucket, count in rows:
        by_status[status] += count
        by_age[bucket] += count
        for f in slices.of_ticket(path, assignee, tags):
            f.backlog += count
    return {"backlog_by_status": by_status, "backlog_by_age": by_age}


def _count_customers(conn: Connection, period: Period) -> tuple[int, int]:
    """Customers who wrote in the period, and those of them who wrote on several channels.
    A customer's tickets with different sets of channels mean at least two channels, so the
    question is answered by counting, without splitting the sets."""
    wrote = and_(Ticket.customer_channels != "", Ticket.first_inbound_at < period.until,
                 *([Ticket.last_inbound_at >= period.since] if period.since else []))
    several = or_(
        func.count(func.distinct(Ticket.customer_channels)) > 1,
        func.max(_flag(Ticket.customer_channels.like("%,%"))) == 1,
    )
    per_customer = (
        select(Ticket.customer_id, _flag(several).label("several"))
        .where(wrote).group_by(Ticket.customer_id).subquery()
    )
    customers, multichannel = conn.execute(
        select(func.count(), func.coalesce(func.sum(per_customer.c.several), 0))
    ).one()
    return int(customers), int(multichannel)


# ---- per day, for the app's charts -----------------------------------------------------------


def daily_series(
    conn: Connection, period: Period, now: datetime | None = None, tz: tzinfo | None = None
) -> list[dict[str, Any]]:
    """Messages in and out, tickets opened and resolved, per local day of the period (days
    counted with today's UTC offset)."""
    now = now or utcnow()
    offset = now.astimezone(tz).utcoffset() or timedelta()
    days: dict[str, dict[str, int]] = {}

    def add(rows: Iterable[Any], *keys: str) -> None:
        for day, *counts in rows:
            entry = days.setdefault(str(day), {"in": 0, "out": 0, "opened": 0, "resolved": 0})
            for key, count in zip(keys, counts, strict=True):
                entry[key] += count

    sent_day = dialects.local_day(Message.sent_at, conn, offset)
    add(conn.execute(
        select(sent_day, func.sum(_flag(Message.direction == "in")),
               func.sum(_flag(and_(Message.direction == "out", Message.status != "failed"))))
        .where(_within(Message.sent_at, period), Message.direction.in_(("in", "out")))
        .group_by(sent_day)), "in", "out")
    opened_day = dialects.local_day(Ticket.created_at, conn, offset)
    add(conn.execute(select(opened_day, func.count()).where(_within(Ticket.created_at, period))
                     .group_by(opened_day)), "opened")
    resolved_day = dialects.local_day(Ticket.resolved_at, conn, offset)
    add(conn.execute(select(resolved_day, func.count())
                     .where(_within(Ticket.resolved_at, period)).group_by(resolved_day)),
        "resolved")
    if not days and period.since is None:
        return []  # an empty store has no first day
    first = date.fromisoformat(min(days)) if period.since is None else (
        (period.since + offset).date())
    last = (period.until - timedelta(microseconds=1) + offset).date()
    series = []
    day = first
    while day <= last:
        key = day.isoformat()
        series.append({"date": key, **days.get(key, {"in": 0, "out": 0, "opened": 0,
                                                     "resolved": 0})})
        day += timedelta(days=1)
    return series
