"""Service figures (`desk stats`): every expected number is worked out by hand from the story in
stats_store.py, for the period [T, T + 10 days) unless a test says otherwise."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from stats_store import NOW, TARGETS, UNTIL, T, build

from connectors.base import FLAG_OWN, InboundMessage
from desk.cli import main
from desk.config import ConfigError, load_config
from desk.ingest import ingest
from desk.models import Ticket
from desk.sla import Targets, format_duration, overdue, parse_duration
from desk.stats import Period, StatsError, compute, parse_moment, percentile, period_from
from desk.store import SCHEMA_VERSION, Store


@pytest.fixture
def story_store(store: Store) -> Store:
    build(store)
    return store


def figures(store: Store, since: datetime | None = T, until: datetime = UNTIL,
            targets: Targets = TARGETS) -> dict[str, Any]:
    return compute(store.engine, Period(since, until), targets, now=NOW)


def test_volume_tickets_and_backlog_for_the_period(story_store: Store) -> None:
    stats = figures(story_store)
    # In: Ann 1, Ben 2, Cleo 3 (Telegram, SMS, email), Dan 1. Out: Ann 1, Ben 2, Cleo 1.
    assert stats["messages"] == {"in": 7, "out": 4}
    tickets = stats["tickets"]
    # Opened: Ann, Ben, Cleo, Dan (not Fay, before; not Eve, after).
    assert tickets["opened"] == 4
    # Resolved in the period and still resolved: Ann, Ben (the second time), Cleo.
    assert tickets["resolved"] == 3
    assert tickets["reopened"] == 1  # Ben wrote again after his ticket was resolved
    # Live now and opened before the period's end: Dan (Eve's ticket is after it).
    assert tickets["backlog"] == 1
    assert tickets["backlog_by_status"] == {"open": 1, "pending": 0, "snoozed": 0}
    # Dan has waited 17 days at NOW.
    assert tickets["backlog_by_age"] == {"0-1d": 0, "1-3d": 0, "3-7d": 0, "7-30d": 1, "30d+": 0}


def test_response_and_resolution_medians_and_90th_percentiles(story_store: Store) -> None:
    stats = figures(story_store)
    # First responses: Ann 1h, Ben 2h, Cleo 4h (from her first message, on Telegram) ->
    # sorted 3600, 7200, 14400: median 7200; p90 at rank 0.9 * 2 = 1.8 ->
    # 7200 + 0.8 * (14400 - 7200) = 12960.
    assert stats["first_response_seconds"] == {"median": 7200, "p90": 12960, "count": 3}
    # Resolutions: Ann 5h = 18000, Cleo 1d = 86400, Ben 1d 1h = 90000 (opening to the last
    # resolution) -> median 86400; p90 = 86400 + 0.8 * 3600 = 89280.
    assert stats["resolution_seconds"] == {"median": 86400, "p90": 89280, "count": 3}


def test_sla_breaches_multichannel_share_sequences_and_reopen_rate(story_store: Store) -> None:
    stats = figures(story_store)
    # First response targets: normal 2h, high and urgent 1h. Ann answered in 1h (normal: ok),
    # Ben in 2h (high: late), Cleo in 4h (urgent: late), Dan never, waiting far past 1h.
    # Resolution target 1d: Ann 5h ok, Ben 1d 1h late, Cleo exactly 1d ok, Dan open 7 days at
    # the period's end: late.
    assert stats["sla_breaches"] == {"first_response": 3, "resolution": 2}
    # Four customers wrote in the period; Cleo alone used more than one channel.
    assert stats["customers"] == 4
    assert stats["multichannel_customer_share"] == 0.25
    assert stats["channel_sequences"] == [
        {"sequence": ["email"], "tickets": 2},  # Ann, Dan
        {"sequence": ["sms"], "tickets": 1},  # Ben
        {"sequence": ["telegram", "sms", "email"], "tickets": 1},  # Cleo
    ]
    # Ann and Cleo were resolved after an email, Ben after an SMS.
    assert stats["resolved_on_channel"] == {"email": 2, "sms": 1}
    # Of the tickets opened in the period and resolved at least once (Ann, Ben, Cleo), Ben's
    # was reopened.
    assert stats["reopen_rate"] == pytest.approx(1 / 3, abs=1e-4)


def test_figures_per_channel_agent_and_tag(story_store: Store) -> None:
    stats = figures(story_store)
    sms = stats["by_channel"]["sms"]
    # SMS messages: Ben's two and Cleo's one in, Ben's two answers out. Tickets opened on SMS:
    # Ben's alone (Cleo's was opened on Telegram).
    assert sms["messages"] == {"in": 3, "out": 2}
    assert sms["tickets"] == {"opened": 1, "resolved": 1, "reopened": 1, "backlog": 0}
    assert sms["first_response_seconds"]["median"] == 7200
    assert sms["reopen_rate"] == 1.0
    email = stats["by_channel"]["email"]
    assert email["messages"] == {"in": 3, "out": 2}  # Ann, Cleo, Dan in; Ann, Cleo out
    assert email["tickets"]["opened"] == 2  # Ann, Dan
    assert email["tickets"]["backlog"] == 1  # Dan
    assert email["sla_breaches"] == {"first_response": 1, "resolution": 1}  # Dan
    assert stats["by_channel"]["telegram"]["tickets"]["opened"] == 1  # Cleo

    alice = stats["by_agent"]["alice"]
    # Alice has Ann (1h, 5h) and Cleo (4h, 1d): medians are the means of the two.
    assert alice["messages"] == {"in": None, "out": 2}
    assert alice["first_response_seconds"] == {"median": 9000, "p90": 13320, "count": 2}
    assert alice["resolution_seconds"]["median"] == (18000 + 86400) / 2
    assert alice["sla_breaches"] == {"first_response": 1, "resolution": 0}
    assert stats["by_agent"]["bob"]["messages"]["out"] == 2
    assert set(stats["by_agent"]) == {"alice", "bob"}  # Dan is unassigned

    billing = stats["by_tag"]["billing"]  # Ben and Cleo
    assert billing["messages"] == {"in": None, "out": None}
    assert billing["tickets"]["opened"] == 2
    assert billing["first_response_seconds"]["median"] == (7200 + 14400) / 2
    assert stats["by_tag"]["vip"]["tickets"]["opened"] == 1


def test_since_and_until_bound_every_figure(story_store: Store) -> None:
    everything = figures(story_store, since=None, until=NOW)
    assert everything["period"]["since"] is None
    # Fay and Eve join: six tickets, Fay's 30-minute answer among the first responses.
    assert everything["tickets"]["opened"] == 6
    assert everything["messages"] == {"in": 9, "out": 5}
    assert everything["first_response_seconds"]["count"] == 4
    assert everything["first_response_seconds"]["median"] == (3600 + 7200) / 2
    assert everything["tickets"]["backlog"] == 2  # Dan and Eve

    # Only Eve's day: one message in, one ticket opened, nothing answered or resolved.
    eve = figures(story_store, since=T + timedelta(days=11), until=T + timedelta(days=13))
    assert eve["messages"] == {"in": 1, "out": 0}
    assert eve["tickets"]["opened"] == 1
    assert eve["tickets"]["resolved"] == 0
    assert eve["first_response_seconds"] == {"median": None, "p90": None, "count": 0}
    assert eve["customers"] == 1

    # The instant at --until is outside: Ann's ticket opened exactly at T is not in [T-1d, T).
    before = figures(story_store, since=T - timedelta(days=1), until=T)
    assert before["tickets"]["opened"] == 0
    assert before["messages"] == {"in": 0, "out": 0}


def test_an_empty_store_gives_zeros_and_nulls(store: Store) -> None:
    stats = compute(store.engine, Period(None, NOW), TARGETS, now=NOW, daily=True)
    assert stats["messages"] == {"in": 0, "out": 0}
    assert stats["tickets"]["opened"] == stats["tickets"]["backlog"] == 0
    assert stats["first_response_seconds"] == {"median": None, "p90": None, "count": 0}
    assert stats["resolution_seconds"]["median"] is None
    assert stats["multichannel_customer_share"] is None
    assert stats["reopen_rate"] is None
    assert stats["channel_sequences"] == []
    assert stats["sla_breaches"] == {"first_response": 0, "resolution": 0}
    assert stats["by_channel"] == stats["by_agent"] == stats["by_tag"] == {}
    assert stats["daily"] == []


def test_without_targets_breaches_are_null_not_zero(story_store: Store) -> None:
    stats = figures(story_store, targets=Targets())
    assert stats["sla_breaches"] == {"first_response": None, "resolution": None}


def test_daily_series_counts_each_day(story_store: Store) -> None:
    stats = compute(story_store.engine, Period(T, T + timedelta(days=4)), TARGETS, now=NOW,
                    daily=True, tz=UTC)
    days = {d["date"]: d for d in stats["daily"]}
    # The period ends at 09:00 on the 6th: that day is in it, in part.
    assert list(days) == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05",
                          "2026-03-06"]
    assert days["2026-03-02"] == {"date": "2026-03-02", "in": 1, "out": 1, "opened": 1,
                                  "resolved": 1}
    # Ben's second message and Cleo's three; Ben's and Cleo's answers; Ben resolved again.
    assert days["2026-03-04"]["in"] == 4
    assert days["2026-03-04"]["out"] == 2
    assert days["2026-03-04"]["resolved"] == 1
    assert days["2026-03-05"]["opened"] == 1  # Dan


def test_percentiles_interpolate_between_ranks() -> None:
    values = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert percentile(values, 0.5) == 55
    assert percentile(values, 0.9) == pytest.approx(91)  # rank 8.1
    assert percentile([42], 0.9) == 42
    assert percentile([], 0.5) is None


def test_periods_are_read_in_local_time() -> None:
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_moment("30d", now) == now - timedelta(days=30)
    assert parse_moment("12h", now) == now - timedelta(hours=12)
    # Midnight in Paris (UTC+1 in winter, UTC+2 in summer).
    assert parse_moment("2026-11-01", now, paris) == datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert parse_moment("2026-07-01 09:00", now, paris) == datetime(2026, 7, 1, 7, tzinfo=UTC)
    assert parse_moment("today", now, paris) == datetime(2026, 11, 27, 23, tzinfo=UTC)
    assert parse_moment("2026-07-01T09:00+00:00", now, paris) == datetime(2026, 7, 1, 9,
                                                                          tzinfo=UTC)
    assert parse_moment("2026-07-01T09:00:00Z", now, paris) == datetime(2026, 7, 1, 9,
                                                                        tzinfo=UTC)
    default = period_from(None, None, now=now)
    assert (default.since, default.until) == (now - timedelta(days=30), now)
    assert period_from("all", None, now=now).since is None
    with pytest.raises(StatsError, match='not a time: "last tuesday"'):
        parse_moment("last tuesday", now)
    with pytest.raises(StatsError, match="the period is empty"):
        period_from("2026-11-20", "2026-11-10", now=now, tz=paris)


def test_a_schema_3_store_gains_the_figures_from_what_it_holds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = Store(url)
    story = build(store)
    # Resolving a resolved ticket again is recorded, and is no reopen.
    story.status("Ann", "resolved", timedelta(hours=6))
    expected = figures(store)
    assert expected["tickets"]["reopened"] == 1
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # the store as desk wrote it before the figures existed
        for index in ("ix_ticket_created", "ix_ticket_first_response", "ix_ticket_resolved",
                      "ix_ticket_reopened", "ix_ticket_customer_channels", "ix_message_stats"):
            conn.execute(text(f"DROP INDEX {index}"))
        for column in ("first_inbound_at", "first_response_seconds", "resolution_seconds",
                       "resolved_channel", "reopen_count", "reopened_at", "channel_path",
                       "customer_channels"):
            conn.execute(text(f"ALTER TABLE ticket DROP COLUMN {column}"))
        conn.execute(text("UPDATE ticket SET first_response_at = NULL"))
        conn.execute(text("UPDATE meta SET value = '3' WHERE key = 'schema_version'"))
    engine.dispose()
    migrated = Store(url)
    with migrated.session() as session:
        cleo = session.get(Ticket, 4)
        assert cleo is not None
        assert cleo.channel_path == "telegram,sms,email"
        assert cleo.first_response_seconds == 4 * 3600
    assert figures(migrated) == expected
    with migrated.engine.connect() as conn:
        version = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'"))
        assert version.scalar() == str(SCHEMA_VERSION)
    migrated.close()


def test_sla_targets_in_the_config_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[sla]\nfirst_response = { urgent = "30m", normal = "1d 12h" }\n'
        'resolution = { hihg = "1d", low = 86400, normal = "0h" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    errors = "\n".join(caught.value.errors)
    assert f'{config}:3: [sla]: unknown key "resolution.hihg" (did you mean "high"?)' in errors
    assert 'resolution.low must be a duration such as "30m", "4h" or "1d 12h", got 86400' in errors
    assert 'resolution.normal must be longer than zero, got "0h"' in errors
    config.write_text('[sla]\nfirst_response = { urgent = "30m", normal = "1d 12h" }\n')
    targets = load_config(config).sla.targets()
    assert targets.first_response == {"urgent": 1800, "normal": 129600}
    assert targets.resolution == {}


def test_durations_read_and_written() -> None:
    assert parse_duration("1d 12h") == timedelta(hours=36)
    assert parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert format_duration(45) == "45s"
    assert format_duration(3 * 3600 + 20 * 60) == "3h 20m"
    assert format_duration(2 * 86400 + 4 * 3600) == "2d 4h"
    assert format_duration(None) == "—"


def test_a_live_ticket_past_its_target_is_overdue() -> None:
    opened = T
    late = overdue(TARGETS, priority="urgent", status="open", created_at=opened,
                   first_inbound_at=opened, first_response_at=None, now=T + timedelta(hours=3))
    assert late is not None and (late.target, late.by_seconds) == ("first response", 7200)
    answered = overdue(TARGETS, priority="urgent", status="pending", created_at=opened,
                       first_inbound_at=opened, first_response_at=T + timedelta(minutes=5),
                       now=T + timedelta(days=2))
    assert answered is not None and answered.target == "resolution"
    assert overdue(TARGETS, priority="urgent", status="resolved", created_at=opened,
                   first_inbound_at=opened, first_response_at=None,
                   now=T + timedelta(days=9)) is None
    assert overdue(TARGETS, priority="low", status="open", created_at=opened,
                   first_inbound_at=opened, first_response_at=None,
                   now=T + timedelta(days=9)) is None  # no target for low


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_prints_a_table_and_json(
    story_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[sla]\nfirst_response = { normal = "2h", high = "1h", urgent = "1h" }\n'
                      'resolution = { normal = "1d", high = "1d", urgent = "1d" }\n')
    db = story_store.url
    window = ("--since", "2026-03-02T09:00+00:00", "--until", "2026-03-12T09:00+00:00")
    code, out, _ = _run(capsys, "--config", str(config), "--db", db, "stats", *window, "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["period"] == {"since": "2026-03-02T09:00:00+00:00",
                               "until": "2026-03-12T09:00:00+00:00"}
    assert stats["messages"] == {"in": 7, "out": 4}
    assert stats["tickets"]["opened"] == 4
    assert stats["first_response_seconds"]["median"] == 7200
    assert stats["channel_sequences"][2] == {"sequence": ["telegram", "sms", "email"],
                                             "tickets": 1}

    code, out, _ = _run(capsys, "--config", str(config), "--db", db, "stats", *window)
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:4] == ["all", "email", "sms",
                                                                  "telegram"])
    assert header
    assert next(line for line in lines if line.startswith("first response, median")).split()[
        3:] == ["2h", "1h", "2h", "4h"]  # all; email: Ann; sms: Ben; telegram: Cleo
    assert "  telegram → sms → email  1" in lines
    assert any(line.startswith("alice") and "2" in line for line in lines)
    assert "SLA targets: first response urgent 1h, high 1h, normal 2h; " \
           "resolution urgent 1d, high 1d, normal 1d" in lines

    code, _, err = _run(capsys, "--config", str(config), "--db", db, "stats", "--since", "soon")
    assert code == 1
    assert 'not a time: "soon"' in err


def test_an_answer_stored_before_its_question_still_counts(store: Store) -> None:
    """The Sent-folder copy of an answer fetched before the customer's message it answers."""
    answer = InboundMessage(
        connector="mail", channel="email", provider_id="<a@desk>", sender="support@example.com",
        recipients=["ann@example.com"], subject="Re: Help", text="Here you go",
        sent_at=T + timedelta(minutes=10), flags={FLAG_OWN},
    )
    question = InboundMessage(
        connector="mail", channel="email", provider_id="<q@ann>", sender="ann@example.com",
        subject="Help", text="Where is my order?", sent_at=T,
    )
    ingest(store, [answer])
    ingest(store, [question])
    stats = figures(store)
    assert stats["tickets"]["opened"] == 1
    assert stats["first_response_seconds"] == {"median": 600, "p90": 600, "count": 1}
    assert stats["sla_breaches"]["first_response"] == 0


def test_a_reply_that_failed_answered_no_one(story_store: Store) -> None:
    """Dan's ticket gets an answer that the provider then refuses: still unanswered, still
    late; retried, it counts again."""
    from desk import outbox
    from desk.timeutil import use_clock

    with use_clock(lambda: T + timedelta(days=3, minutes=20)), \
            story_store.transaction() as session:
        reply = outbox.queue_reply(session, 5, "On it", agent="bob",
                                   connectors_by_channel={"email": "mail"})
        reply_id = reply.id
    assert figures(story_store)["first_response_seconds"]["count"] == 4
    with story_store.transaction() as session:
        outbox.record_failure(session, reply_id, "550 mailbox unavailable", permanent=True)
    stats = figures(story_store)
    assert stats["first_response_seconds"]["count"] == 3  # as before the reply
    assert stats["sla_breaches"]["first_response"] == 3  # Dan's is late again
    assert stats["messages"]["out"] == 4
    with story_store.transaction() as session:
        outbox.retry(session, reply_id, actor="bob")
    stats = figures(story_store)
    assert stats["first_response_seconds"]["count"] == 4
    assert stats["first_response_seconds"]["p90"] is not None
    assert stats["sla_breaches"]["first_response"] == 2  # answered within 20 minutes
