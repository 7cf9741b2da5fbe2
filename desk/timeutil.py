"""Datetimes in desk are timezone-aware UTC, in memory and in the store.

SQLModel's UTCDateTime column type stores them as UTC (SQLite keeps no offset, so every value
must be UTC for ordering to hold) and hands them back aware; these helpers bring values from
the outside world to that form.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_store(moment: datetime | None) -> datetime | None:
    """`moment` in UTC; a naive value is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC offset, for JSON output."""
    aware = to_store(moment)
    return aware.isoformat() if aware is not None else None
