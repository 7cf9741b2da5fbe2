"""Datetimes in desk are timezone-aware UTC, in memory and in the store.

SQLModel's UTCDateTime column type stores them as UTC (SQLite keeps no offset, so every value
must be UTC for ordering to hold) and hands them back aware; these helpers bring values from
the outside world to that form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_clock: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    """Now, or the time of the clock installed by `use_clock`."""
    return _clock() if _clock is not None else datetime.now(UTC)


@contextmanager
def use_clock(read: Callable[[], datetime]) -> Iterator[None]:
    """Make `utcnow` read `read()` for the duration: the demo replays a month of history in a
    few seconds, and tests pin time. Process-wide, so not for use beside other desk work."""
    global _clock
    saved, _clock = _clock, read
    try:
        yield
    finally:
        _clock = saved


def to_store(moment: datetime | None) -> datetime | None:
    """`moment` in UTC; a naive value is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """A short age such as `5m`, `3h` or `2d`; empty for no time."""
    if moment is None:
        return ""
    seconds = max(0, int(((now or utcnow()) - to_store(moment)).total_seconds()))  # type: ignore[operator]
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return "now"


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC offset, for JSON output."""
    aware = to_store(moment)
    return aware.isoformat() if aware is not None else None
