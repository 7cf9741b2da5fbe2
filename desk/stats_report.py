"""`desk stats` as text: the figures of desk.stats laid out as tables for a terminal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from desk.models import PRIORITIES
from desk.sla import format_duration
from desk.textsafe import printable

# Most pressing first.
PRIORITY_ORDER = tuple(reversed(PRIORITIES))


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _when(value: str | None) -> str:
    if value is None:
        return "the beginning"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Rows under headers: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]),
                          *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def figure_rows(columns: list[dict[str, Any]], with_messages: bool) -> list[list[str]]:
    def row(label: str, get: Any) -> list[str]:
        return [label, *(get(c) for c in columns)]

    rows = []
    if with_messages:
        rows += [row("messages in", lambda c: count(c["messages"]["in"])),
                 row("messages out", lambda c: count(c["messages"]["out"]))]
    rows += [
        row("tickets opened", lambda c: count(c["tickets"]["opened"])),
        row("tickets resolved", lambda c: count(c["tickets"]["resolved"])),
        row("tickets reopened", lambda c: count(c["tickets"]["reopened"])),
        row("backlog now", lambda c: count(c["tickets"]["backlog"])),
        row("first response, median",
            lambda c: format_duration(c["first_response_seconds"]["median"])),
        row("first response, 90%", lambda c: format_duration(c["first_response_seconds"]["p90"])),
        row("resolution, median", lambda c: format_duration(c["resolution_seconds"]["median"])),
        row("resolution, 90%", lambda c: format_duration(c["resolution_seconds"]["p90"])),
        row("reopen rate", lambda c: percent(c["reopen_rate"])),
        row("SLA breaches: first response", lambda c: count(c["sla_breaches"]["first_response"])),
        row("SLA breaches: resolution", lambda c: count(c["sla_breaches"]["resolution"])),
    ]
    return rows


def slice_rows(
    title: str, slices: dict[str, dict[str, Any]], messages: bool
) -> tuple[list[str], list[list[str]]]:
    """One row per agent or tag, so a long list of them stays readable."""
    headers = [title, *(["out"] if messages else []), "opened", "resolved", "backlog",
               "1st resp.", "resolution", "reopen", "breaches"]
    rows = [
        [printable(name, single_line=True),
         *([count(f["messages"]["out"])] if messages else []),
         count(f["tickets"]["opened"]), count(f["tickets"]["resolved"]),
         count(f["tickets"]["backlog"]),
         format_duration(f["first_response_seconds"]["median"]),
         format_duration(f["resolution_seconds"]["median"]),
         percent(f["reopen_rate"]),
         f"{count(f['sla_breaches']['first_response'])}/"
         f"{count(f['sla_breaches']['resolution'])}"]
        for name, f in slices.items()
    ]
    return headers, rows


def overview(stats: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every figure, for the whole desk and per channel."""
    overall = {"messages": stats["messages"], "tickets": stats["tickets"],
               "first_response_seconds": stats["first_response_seconds"],
               "resolution_seconds": stats["resolution_seconds"],
               "reopen_rate": stats["reopen_rate"], "sla_breaches": stats["sla_breaches"]}
    columns = {"all": overall, **stats["by_channel"]}
    return ["", *columns], figure_rows(list(columns.values()), True)


def period_line(stats: dict[str, Any]) -> str:
    period = stats["period"]
    return f"{_when(period['since'])} → {_when(period['until'])} (local time)"


def facts(stats: dict[str, Any]) -> list[str]:
    """Backlog, customers, where tickets end, SLA targets: one line each."""
    tickets = stats["tickets"]
    lines = [
        "backlog now: " + ", ".join(
            f"{count(n)} {status}" for status, n in tickets["backlog_by_status"].items())
        + "; by age " + ", ".join(
            f"{label} {count(n)}" for label, n in tickets["backlog_by_age"].items()),
        f"customers who wrote: {count(stats['customers'])}, on more than one channel: "
        f"{percent(stats['multichannel_customer_share'])}",
    ]
    if stats["resolved_on_channel"]:
        lines.append("resolved on: " + ", ".join(
            f"{channel} {count(n)}" for channel, n in stats["resolved_on_channel"].items()))
    targets = stats["sla_targets"]
    if targets["first_response"] or targets["resolution"]:
        lines.append("SLA targets: " + "; ".join(
            f"{name.replace('_', ' ')} " + ", ".join(
                f"{p} {format_duration(targets[name][p])}" for p in PRIORITY_ORDER
                if p in targets[name])
            for name in ("first_response", "resolution") if targets[name]))
    else:
        lines.append("SLA targets: none set (add [sla] to the config to count breaches)")
    return lines


def sequence_rows(stats: dict[str, Any]) -> list[list[str]]:
    return [[" → ".join(s["sequence"]), count(s["tickets"])] for s in stats["channel_sequences"]]


def render(stats: dict[str, Any]) -> list[str]:
    """The report's lines."""
    lines = [f"desk stats: {period_line(stats)}", "", *table(*overview(stats)), ""]
    lines += facts(stats)
    if stats["channel_sequences"]:
        lines += ["", "channel sequences (tickets opened):"]
        lines += ["  " + line for line in table(["", ""], sequence_rows(stats))[1:]]
    for title, key, messages in (("by agent", "by_agent", True), ("by tag", "by_tag", False)):
        if stats[key]:
            lines += ["", *table(*slice_rows(title, stats[key], messages))]
    return lines
