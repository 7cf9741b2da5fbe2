"""What the agent sees, frozen: each snapshot is one visual state on the fixed store of
`tui_store` under a fixed clock, at a wide (120×40) and a small (80×24) terminal.

Update with `pytest tests/test_snapshots.py --snapshot-update` only after looking at the
report of what changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tui_store

from desk.store import Store
from desk.timeutil import use_clock
from desk.tui.app import DeskApp

SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((80, 24), id="80x24")]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeskApp]:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    store = Store(f"sqlite:///{tmp_path}/desk.db")
    tui_store.build(store)
    with use_clock(lambda: tui_store.NOW):
        yield DeskApp(store, tui_store.settings(tmp_path))
    store.close()
    monkeypatch.undo()
    time.tzset()


async def settle(pilot) -> None:
    await tui_store.settle(pilot)


def steps(*keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare, app, size) -> None:
    """Queues with counts (status, channel, tag), the Open queue, Marta's ticket selected."""
    assert snap_compare(app, terminal_size=size, run_before=steps())


@pytest.mark.parametrize("size", SIZES)
def test_timeline_across_channels(snap_compare, app, size) -> None:
    """Marta's ticket opened: email, SMS and Telegram in one timeline, the failed SMS with
    Twilio's reason, the private note, identity-link and assignment events."""
    assert snap_compare(app, terminal_size=size, run_before=steps("enter"))


@pytest.mark.parametrize("size", SIZES)
def test_composer(snap_compare, app, size) -> None:
    """The reply composer on Telegram (her last channel), a draft typed, the counter."""
    assert snap_compare(app, terminal_size=size,
                        run_before=steps("enter", "r", *"Did it help?"))


@pytest.mark.parametrize("size", SIZES)
def test_search_results(snap_compare, app, size) -> None:
    """`/` then a query: matching messages newest first, with customer, channel and age."""
    assert snap_compare(app, terminal_size=size,
                        run_before=steps("slash", *"noise", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, app, size) -> None:
    """`?`: every key with its description and the id `[keymap]` rebinds it by."""
    assert snap_compare(app, terminal_size=size, run_before=steps("question_mark"))


@pytest.fixture
def stats_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeskApp]:
    import stats_store

    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    store = Store(f"sqlite:///{tmp_path}/desk.db")
    stats_store.build(store)
    with use_clock(lambda: stats_store.NOW):
        yield DeskApp(store, tui_store.settings(tmp_path, stats_store.SLA_CONFIG))
    store.close()
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", SIZES)
def test_stats_screen(snap_compare, stats_app, size) -> None:
    """`f` on the store of stats_store: the figures of the last 30 days overall and per channel,
    a sparkline per day for messages and tickets, backlog, SLA targets, channel sequences,
    agents and tags."""
    assert snap_compare(stats_app, terminal_size=size, run_before=steps("f"))


@pytest.mark.parametrize("size", SIZES)
def test_sla_marks_in_the_ticket_list(snap_compare, stats_app, size) -> None:
    """The Open queue with [sla] targets: Dan and Eve flagged with how late their reply is."""
    assert snap_compare(stats_app, terminal_size=size, run_before=steps())
