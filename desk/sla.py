"""Service-level targets: how soon a ticket should be answered and resolved, per priority.

Targets come from `[sla]` in the config. The clock runs in calendar time from the customer's
first message (first response) and from the ticket's opening (resolution); pending and snoozed
time counts too, as the customer experiences it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)\s*([wdhms])")


def parse_duration(spec: str) -> timedelta:
    """`30m`, `4h`, `1d 12h`, `2w`: a timedelta; ValueError for anything else or for zero."""
    text = spec.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f'not a duration: "{spec}"; write e.g. "30m", "4h" or "1d 12h"')
    seconds = sum(int(amount) * _UNITS[unit] for amount, unit in parts)
    if seconds == 0:
        raise ValueError(f'"{spec}" is no time at all; a target must be longer than zero')
    return timedelta(seconds=seconds)


def format_duration(seconds: float | None) -> str:
    """A duration for people: `45s`, `12m`, `3h 20m`, `2d 4h`; `—` for none."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


@dataclass(frozen=True, slots=True)
class Targets:
    """Seconds allowed per priority; a priority missing from a mapping has no target."""

    first_response: Mapping[str, int] = field(default_factory=dict)
    resolution: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.first_response or self.resolution)


@dataclass(frozen=True, slots=True)
class Overdue:
    """A live ticket past a target: which one, and by how long."""

    target: str  # "first response" | "resolution"
    by_seconds: int


def overdue(
    targets: Targets,
    *,
    priority: str,
    status: str,
    created_at: datetime,
    first_inbound_at: datetime | None,
    first_response_at: datetime | None,
    now: datetime,
) -> Overdue | None:
    """The target a live ticket has missed (first response before resolution), or None."""
    if status == "resolved":
        return None
    answer_in = targets.first_response.get(priority)
    if answer_in is not None and first_inbound_at is not None and first_response_at is None:
        late = (now - first_inbound_at).total_seconds() - answer_in
        if late > 0:
            return Overdue("first response", int(late))
    resolve_in = targets.resolution.get(priority)
    if resolve_in is not None:
        late = (now - created_at).total_seconds() - resolve_in
        if late > 0:
            return Overdue("resolution", int(late))
    return None

