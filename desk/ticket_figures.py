"""The aggregates a ticket row keeps about its messages, updated as each one is written.

Ingest (dict rows, bulk writes) and the outbox and ticket actions (ORM rows) both call these, so
the queue lists and `desk stats` read figures that were computed once, when the message or the
status change was written, instead of aggregating over messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping
from datetime import datetime
from typing import Any

# A ticket's channel path keeps its first steps: "telegram,sms,email" says how the conversation
# moved; a long back-and-forth between two channels would otherwise grow without bound.
PATH_LIMIT = 6
SNIPPET_LENGTH = 160

Row = MutableMapping[str, Any]


class Fields(MutableMapping[str, Any]):
    """An ORM row seen as a mapping of its columns, so one function updates both kinds."""

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __getitem__(self, key: str) -> Any:
        return getattr(self._obj, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self._obj, key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError("a ticket's columns cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        raise TypeError("not iterable: read the columns by name")

    def __len__(self) -> int:
        raise TypeError("not sized")


def seconds_between(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds()))


def with_channel(channels: str, channel: str) -> str:
    """`channels` (comma-separated, in order of first use) with `channel` added once."""
    used = [c for c in channels.split(",") if c]
    return channels if channel in used else ",".join([*used, channel])


def with_step(path: str, channel: str) -> str:
    """The channel path with `channel` as its next step, unless it is already the last one."""
    steps = [c for c in path.split(",") if c]
    if (steps and steps[-1] == channel) or len(steps) >= PATH_LIMIT:
        return path
    return ",".join([*steps, channel])


def snippet(text: str) -> str:
    return re.sub(r"\s+", " ", text[: SNIPPET_LENGTH * 4]).strip()[:SNIPPET_LENGTH]


def fresh(opened_at: datetime) -> dict[str, Any]:
    """The aggregates of a ticket before its first message (opened at `opened_at`)."""
    return {
        "message_count": 0, "unread_count": 0, "snippet": "", "channels": "",
        "channel_path": "", "customer_channels": "", "last_channel": None,
        "last_message_at": opened_at, "last_inbound_at": None, "last_outbound_at": None,
        "waiting_since": None, "first_inbound_at": None, "first_response_at": None,
        "first_response_seconds": None, "resolution_seconds": None, "resolved_channel": None,
        "reopen_count": 0, "reopened_at": None,
    }  # fmt: skip


def account(
    row: Row, *, channel: str, direction: str, sent_at: datetime, text: str,
    automatic: bool = False,
) -> None:
    """Count one inbound or outbound message (not a note) on its ticket's row."""
    row["message_count"] += 1
    row["channels"] = with_channel(row["channels"], channel)
    row["channel_path"] = with_step(row["channel_path"], channel)
    if sent_at >= row["last_message_at"] or row["message_count"] == 1:
        row["last_message_at"] = sent_at
        row["snippet"] = snippet(text)
        row["last_channel"] = channel
    if direction == "in" and automatic:
        return  # an out-of-office answer is no one waiting for us
    if direction == "in":
        row["unread_count"] += 1
        row["customer_channels"] = with_channel(row["customer_channels"], channel)
        row["last_inbound_at"] = max(filter(None, [row["last_inbound_at"], sent_at]))
        if row["first_inbound_at"] is None or sent_at < row["first_inbound_at"]:
            row["first_inbound_at"] = sent_at
            # Messages may be stored out of order (a late fetch, an answer copied from the
            # Sent folder before the question): measure from the earliest question to the
            # answer known to follow it (the latest one, when only that is known).
            answer = row["first_response_at"] or row["last_outbound_at"]
            if answer is not None and answer >= sent_at:
                row["first_response_at"] = answer
                row["first_response_seconds"] = seconds_between(sent_at, answer)
        if row["waiting_since"] is None and (
            row["last_outbound_at"] is None or sent_at > row["last_outbound_at"]
        ):
            row["waiting_since"] = sent_at
        return
    row["last_outbound_at"] = max(filter(None, [row["last_outbound_at"], sent_at]))
    # The first response answers the customer's first message: a ticket we opened ourselves
    # has none until they write and we answer that.
    first_in = row["first_inbound_at"]
    if row["first_response_at"] is None and first_in is not None and sent_at >= first_in:
        row["first_response_at"] = sent_at
        row["first_response_seconds"] = seconds_between(first_in, sent_at)
    if row["waiting_since"] is not None and sent_at >= row["waiting_since"]:
        row["waiting_since"] = None


def resolve(row: Row, now: datetime) -> None:
    row["status"] = "resolved"
    row["resolved_at"] = now
    row["resolution_seconds"] = seconds_between(row["created_at"], now)
    row["resolved_channel"] = row["last_channel"]


def reopen(row: Row, now: datetime, status: str = "open") -> None:
    """A resolved ticket back in the queue: its resolution no longer counts, its reopen does."""
    row["status"] = status
    row["resolved_at"] = None
    row["resolution_seconds"] = None
    row["resolved_channel"] = None
    row["reopen_count"] = (row["reopen_count"] or 0) + 1
    row["reopened_at"] = now
