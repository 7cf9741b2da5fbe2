"""The `desk` command as admins and agents use it: exit codes, what it prints, what it stores."""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import run
from sqlalchemy import select

from desk import identity, outbox, sync
from desk.ingest import IngestOptions, ingest
from desk.models import Customer, Message, Ticket
from desk.store import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "config.toml.example"
EXAMPLE_ENV = {"DESK_MAIL_PASSWORD": "x", "TWILIO_AUTH_TOKEN": "x", "TELEGRAM_BOT_TOKEN": "x",
               "DESK_DB_PASSWORD": "x"}

CONFIG = """
[desk]
agent = "alice"
default_region = "FR"

[[connector]]
name = "mail"
type = "email"
imap_host = "imap.example.com"
username = "support@example.com"
password = "env:DESK_MAIL_PASSWORD"
smtp_host = "smtp.example.com"
from_address = "Support <support@example.com>"
"""

ESC = "\x1b"
HOSTILE = "\x1b[2J\x1b]52;c;ZXZpbA==\x07"


@pytest.fixture
def desk_env(isolated: Path) -> tuple[Path, Path]:
    """A config file (agent alice, region FR, an email connector "mail") and a store path."""
    config = isolated / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    db = isolated / "desk.db"
    return config, db


@pytest.fixture
def populated(desk_env, inbound) -> tuple[Path, Path, dict[str, int]]:
    """The store holds two customers with a ticket each: Jane (older) and Bob (newer)."""
    config, db = desk_env
    store = Store(f"sqlite:///{db}")
    ingest(store, [
        inbound("My grinder makes a loud noise", provider_id="j1", sender="jane@example.com",
                sender_name="Jane Doe", subject="Noisy grinder"),
        inbound("Refund please", provider_id="b1", sender="bob@example.org",
                sender_name="Bob Smith", subject="Refund", at=timedelta(hours=1)),
    ], options=IngestOptions(region="FR"))
    with store.session() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        bob = identity.find_customer(session, "email", "bob@example.org")
        ticket_of = dict(session.execute(select(Ticket.customer_id, Ticket.id)).all())
    store.close()
    return config, db, {"jane": jane, "bob": bob, "jane_ticket": ticket_of[jane],
                        "bob_ticket": ticket_of[bob]}


def stored(db: Path, *where) -> list[Message]:
    store = Store(f"sqlite:///{db}")
    with store.session() as session:
        rows = list(session.execute(select(Message).where(*where)).scalars())
    store.close()
    return rows


# ---------------------------------------------------------------------------- desk check


def test_check_accepts_the_example_config(isolated, monkeypatch, capsys) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "check", EXAMPLE)
    assert code == 0, err
    assert "ok" in out
    for name in ("support-mail", "sms", "chat"):
        assert f"connector {name}:" in out


def test_check_reports_a_missing_secret(isolated, monkeypatch, capsys) -> None:
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)
    code, _out, err = run(capsys, "check", EXAMPLE)
    assert code == 1
    assert "DESK_MAIL_PASSWORD" in err


def test_check_lists_every_error_at_once(isolated, capsys) -> None:
    bad = isolated / "bad.toml"
    bad.write_text(
        """
[[connector]]
name = "support-mail"
type = "email"
imap_host = "imap.example.com"
imap_port = "abc"
password = "env:DESK_MAIL_PASSWORD"
smtp_host = "smtp.example.com"
from_address = "Support <support@example.com>"

[[connector]]
name = "fax"
type = "fax"
""",
        encoding="utf-8",
    )
    code, out, err = run(capsys, "check", bad)
    assert code == 1
    assert out == ""
    assert "imap_port" in err and '"abc"' in err  # the wrong type
    assert '"fax"' in err and "email, twilio, telegram" in err  # the unknown connector type
    assert "missing required key username" in err  # the missing key
    assert "3 errors" in err


def test_check_without_any_config_says_where_it_looked(isolated, capsys) -> None:
    code, _out, err = run(capsys, "check")
    assert code == 1
    assert "no config file found" in err


# ---------------------------------------------------------------------------- desk reply


def test_reply_queues_a_reply_for_the_sync_to_deliver(populated, capsys) -> None:
    config, db, ids = populated
    code, out, err = run(capsys, "--config", config, "--db", db, "reply", ids["jane_ticket"],
                         "--text", "It ships today.")
    assert code == 0, err
    assert "queued on email to jane@example.com via mail" in out
    [reply] = stored(db, Message.direction == "out")
    assert (reply.text, reply.status, reply.author) == ("It ships today.", "queued", "alice")
    assert reply.subject == f"Re: Noisy grinder [#{ids['jane_ticket']}]"


def test_reply_note_adds_a_private_note(populated, capsys) -> None:
    config, db, ids = populated
    code, out, _err = run(capsys, "--config", config, "--db", db, "reply", ids["jane_ticket"],
                          "--note", "VIP, be nice")
    assert code == 0
    assert f"added to ticket #{ids['jane_ticket']}" in out
    [note] = stored(db, Message.direction == "note")
    assert (note.text, note.author, note.status) == ("VIP, be nice", "alice", "note")


def test_reply_to_an_unknown_ticket_fails_cleanly(populated, capsys) -> None:
    config, db, _ids = populated
    code, out, err = run(capsys, "--config", config, "--db", db, "reply", 999, "--text", "hi")
    assert code == 1
    assert "no ticket #999" in err
    assert out == ""
    assert stored(db, Message.direction == "out") == []


def test_reply_on_a_channel_the_customer_lacks_names_the_ones_they_have(populated,
                                                                         capsys) -> None:
    config, db, ids = populated
    code, _out, err = run(capsys, "--config", config, "--db", db, "reply", ids["jane_ticket"],
                          "--text", "hi", "--channel", "sms")
    assert code == 1
    assert "email (jane@example.com)" in err


def test_reply_retry_requeues_a_failed_reply(populated, capsys) -> None:
    config, db, ids = populated
    run(capsys, "--config", config, "--db", db, "reply", ids["jane_ticket"], "--text", "hi")
    [reply] = stored(db, Message.direction == "out")
    store = Store(f"sqlite:///{db}")
    with store.transaction() as session:
        outbox.record_failure(session, reply.id, "550: no such user", permanent=True)
    store.close()
    code, out, _err = run(capsys, "--config", config, "--db", db, "reply", "--retry", reply.id)
    assert code == 0
    assert f"message {reply.id} queued again" in out
    [reply] = stored(db, Message.direction == "out")
    assert reply.status == "queued"
    code, _out, err = run(capsys, "--config", config, "--db", db, "reply", "--retry", reply.id)
    assert code == 1
    assert "not failed" in err


def test_export_to_a_file(populated, capsys) -> None:
    config, db, _ids = populated
    target = db.parent / "out.jsonl"
    code, out, err = run(capsys, "--config", config, "--db", db, "export", "-o", target)
    assert (code, out) == (0, "")
    assert "2 customers, 2 tickets, 2 messages" in err
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["customer"] * 2 + ["ticket"] * 2 + [
        "message"] * 2


# ---------------------------------------------------------------------------- tickets, customers


def test_tickets_list_and_show(populated, capsys) -> None:
    config, db, ids = populated
    code, out, _err = run(capsys, "--config", config, "--db", db, "tickets", "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert f"#{ids['bob_ticket']}" in lines[0] and "Bob Smith" in lines[0]  # newest first
    assert f"#{ids['jane_ticket']}" in lines[1] and "Noisy grinder" in lines[1]
    assert lines[1].startswith("*")  # unread

    code, out, _err = run(capsys, "--config", config, "--db", db, "tickets", "list", "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == [ids["bob_ticket"], ids["jane_ticket"]]
    assert all(r["type"] == "ticket" and r["status"] == "open" for r in records)

    code, out, _err = run(capsys, "--config", config, "--db", db, "tickets", "show",
                          ids["jane_ticket"])
    assert code == 0
    assert f"ticket #{ids['jane_ticket']} [open] Noisy grinder" in out
    assert "Jane Doe" in out
    assert "My grinder makes a loud noise" in out

    code, _out, err = run(capsys, "--config", config, "--db", db, "tickets", "show", 999)
    assert (code, err.strip()) == (1, "desk: no ticket #999")


def test_every_agent_action_is_in_the_tickets_audit_trail(populated, capsys) -> None:
    config, db, ids = populated
    ticket = ids["jane_ticket"]
    base = ["--config", config, "--db", db]
    for args in (["tickets", "status", ticket, "pending"], ["tickets", "assign", ticket, "bob"],
                 ["tickets", "tag", ticket, "vip"], ["tickets", "priority", ticket, "high"],
                 ["reply", ticket, "--text", "On its way."],
                 ["reply", ticket, "--note", "checked the courier"]):
        assert run(capsys, *base, *args)[0] == 0, args
    store = Store(f"sqlite:///{db}")
    with store.transaction() as session:  # the reply failed at the provider; alice retries it
        reply = session.execute(select(Message).where(Message.direction == "out")).scalar_one()
        reply.status, reply.error = "failed", "550 mailbox unavailable"
    store.close()
    assert run(capsys, *base, "reply", "--retry", reply.id)[0] == 0
    assert run(capsys, *base, "customers", "merge", ids["jane"], ids["bob"])[0] == 0

    code, out, _err = run(capsys, *base, "tickets", "show", ticket, "--events")
    assert code == 0
    trail = out.split("--- audit trail\n", 1)[1].splitlines()
    kinds = [line.split()[3] for line in trail]
    assert kinds == ["status", "assign", "tags", "priority", "reply", "note", "retry", "merge"]
    assert all(line.split()[2] == "alice" for line in trail)  # who, with the time before it
    assert "alice replied on email to jane@example.com" in trail[4]
    assert "alice retried message" in trail[6]
    code, out, _err = run(capsys, *base, "tickets", "show", ticket, "--events", "--json")
    events = [json.loads(line) for line in out.splitlines() if '"event"' in line]
    assert [e["kind"] for e in events] == kinds
    assert events[4]["data"]["message_id"] == reply.id and events[0]["actor"] == "alice"
    # Without --events, the trail is not printed.
    assert "audit trail" not in run(capsys, *base, "tickets", "show", ticket)[1]


def test_ticket_actions_from_the_command_line(populated, capsys) -> None:
    config, db, ids = populated
    base = ["--config", config, "--db", db, "tickets"]
    assert run(capsys, *base, "assign", ids["jane_ticket"], "bob")[0] == 0
    assert run(capsys, *base, "tag", ids["jane_ticket"], "Hardware")[0] == 0
    code, out, _err = run(capsys, *base, "status", ids["jane_ticket"], "resolved")
    assert code == 0
    assert f"ticket #{ids['jane_ticket']}: resolved, assignee bob" in out
    assert "tags hardware" in out
    code, out, _err = run(capsys, *base, "list", "--queue", "resolved")
    assert f"#{ids['jane_ticket']}" in out
    code, _out, err = run(capsys, *base, "status", ids["jane_ticket"], "snoozed")
    assert code == 1 and "snoozing needs a time" in err


def test_customers_merge_and_unmerge(populated, capsys) -> None:
    config, db, ids = populated
    jane, bob = ids["jane"], ids["bob"]
    code, out, err = run(capsys, "--config", config, "--db", db, "customers", "merge", jane, bob)
    assert code == 0, err
    assert f"customer {bob} merged into {jane}" in out
    assert f"desk customers unmerge {bob}" in out
    code, out, _err = run(capsys, "--config", config, "--db", db, "customers", "list", "--json")
    [only] = [json.loads(line) for line in out.splitlines()]
    assert only["id"] == jane
    assert {i["value"] for i in only["identities"]} == {"jane@example.com", "bob@example.org"}
    code, out, _err = run(capsys, "--config", config, "--db", db, "customers", "show", bob)
    assert f"merged into customer {jane}" in out

    code, out, _err = run(capsys, "--config", config, "--db", db, "customers", "unmerge", bob)
    assert code == 0
    assert f"customer {bob} restored" in out
    code, out, _err = run(capsys, "--config", config, "--db", db, "customers", "list")
    assert len(out.splitlines()) == 2
    assert "email:bob@example.org" in out

    code, _out, err = run(capsys, "--config", config, "--db", db, "customers", "unmerge", bob)
    assert code == 1
    assert "is not merged" in err


def test_search_json(populated, capsys) -> None:
    config, db, ids = populated
    code, out, _err = run(capsys, "--config", config, "--db", db, "search", "grind*", "--json")
    assert code == 0
    [hit] = [json.loads(line) for line in out.splitlines()]
    assert hit["ticket_id"] == ids["jane_ticket"]
    assert hit["customer"] == "Jane Doe"
    assert (hit["channel"], hit["direction"], hit["subject"]) == ("email", "in", "Noisy grinder")
    assert "grinder" in hit["snippet"]
    assert hit["sent_at"].endswith("+00:00")

    code, out, err = run(capsys, "--config", config, "--db", db, "search", "nothinglikethis")
    assert (code, out) == (0, "")
    assert "no matches" in err
    code, _out, err = run(capsys, "--config", config, "--db", db, "search", '"', "*")
    assert code == 1
    assert "nothing to search for" in err


# ---------------------------------------------------------------------------- hostile text


def test_terminal_escapes_from_customers_never_reach_the_terminal(desk_env, inbound,
                                                                  capsys) -> None:
    config, db = desk_env
    store = Store(f"sqlite:///{db}")
    ingest(store, [inbound(f"clear{HOSTILE} screen{HOSTILE}\nsecond line", provider_id="evil",
                           sender="evil@example.com", sender_name=f"Mallory{HOSTILE}",
                           subject=f"Subject{HOSTILE}")])
    with store.session() as session:
        ticket_id = session.execute(select(Ticket.id)).scalar_one()
        customer_id = session.execute(select(Customer.id)).scalar_one()
    store.close()
    base = ["--config", config, "--db", db]
    for args in (["tickets", "show", ticket_id], ["tickets", "list"], ["search", "screen"],
                 ["customers", "list"], ["customers", "show", customer_id]):
        code, out, err = run(capsys, *base, *args)
        assert code == 0, (args, err)
        assert ESC not in out and ESC not in err, args
        assert "\x07" not in out, args
        assert "Mallory" in out or "screen" in out, args  # the rest of the text is shown
    code, out, _err = run(capsys, *base, "tickets", "show", ticket_id)
    assert "Mallory" in out and "Subject" in out and "second line" in out
    # JSON output escapes control characters instead of emitting them.
    code, out, _err = run(capsys, *base, "search", "screen", "--json")
    assert ESC not in out
    assert json.loads(out)["customer"] == f"Mallory{HOSTILE}"


# ---------------------------------------------------------------------------- sync and status


def test_sync_once_with_an_unavailable_connector_fails_and_says_so(desk_env, monkeypatch,
                                                                   capsys) -> None:
    _config, db = desk_env
    config = db.parent / "chat.toml"
    config.write_text(
        '[[connector]]\nname = "chat"\ntype = "telegram"\ntoken = "env:TELEGRAM_BOT_TOKEN"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    if importlib.util.find_spec(sync.CONNECTOR_MODULES["telegram"]) is not None:
        # The Telegram connector exists now: stand in a type that still has no module.
        monkeypatch.setitem(sync.CONNECTOR_MODULES, "telegram", "connectors.not_written_yet")

    code, _out, err = run(capsys, "--config", config, "--db", db, "sync", "--once")
    assert code == 1
    assert 'chat: FAILED: ConnectorUnavailable: connector "chat"' in err
    assert "not available in this version of desk" in err

    code, out, _err = run(capsys, "--config", config, "--db", db, "status", "--json")
    assert code == 0
    status = json.loads(out)
    [chat] = status["connectors"]
    assert chat["name"] == "chat"
    assert "not available" in chat["last_error"]
    assert chat["last_error_at"].endswith("+00:00")
    assert chat["last_success"] is None
    assert chat["messages_last_hour"] == 0
    assert status["daemon"] is None and status["outbox"]["failed"] == 0

    code, out, _err = run(capsys, "--config", config, "--db", db, "status")
    assert ("chat (telegram): last success never, 0 messages in the last hour; last error"
            in out)
    assert "desk sync: not running" in out and "outbox: 0 queued" in out
