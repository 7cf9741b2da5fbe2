"""Mailboxes that sign in with OAuth 2.0, end to end: `desk auth login` through the device grant
and through the browser grant (loopback redirect, or a pasted address), then `desk sync`
reading a Dovecot that validates the tokens at the local provider (XOAUTH2 / OAUTHBEARER),
replies through an SMTP server that takes XOAUTH2 only, refreshes and rotation with tokens
that live 5 s, and a revoked sign-in that says "sign-in needed" while the rest carries on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import fake_oauth
import fake_telegram
import httpx
import pytest
from peers import DESK, USER, free_port, mail, start_dovecot
from sqlalchemy import func, select

from desk import outbox
from desk.config import load_config
from desk.ingest import ingest
from desk.models import Message, OAuthToken
from desk.oauth import Tokens, save_sign_in
from desk.store import Store
from desk.timeutil import utcnow

pytestmark = pytest.mark.peer

CLIENT_ID = "desk-test-client"
SENT_FOLDER = 'sent_folder = "Sent"'


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[fake_oauth.State, str]]:
    state = fake_oauth.State(user=USER)
    with fake_oauth.running(state) as base:
        yield state, base


@pytest.fixture(scope="module")
def oauth_dovecot(provider: tuple[fake_oauth.State, str]) -> Iterator[Any]:
    server = start_dovecot(oauth_introspection_url=f"{provider[1]}/introspect")
    yield server
    server.stop()


@pytest.fixture
def oauth(provider: tuple[fake_oauth.State, str], oauth_dovecot: Any
          ) -> tuple[fake_oauth.State, str, Any]:
    state, base = provider
    state.reset()
    state.access_ttl = 3600.0
    oauth_dovecot.reset()
    return state, base, oauth_dovecot


@pytest.fixture
def smtp(oauth: tuple[fake_oauth.State, str, Any]) -> Iterator[tuple[fake_oauth.OAuthSink, int]]:
    from aiosmtpd.controller import Controller

    sink = fake_oauth.OAuthSink(oauth[0])
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, auth_require_tls=False)
    controller.start()
    yield sink, port
    controller.stop()


def write_config(tmp_path: Path, base: str, imap_port: int, smtp_port: int, *,
                 device: bool = True, sent_folder: bool = False, more: str = "") -> Path:
    config = tmp_path / "config.toml"
    device_line = f'oauth_device_endpoint = "{base}/device"\n' if device else ""
    config.write_text(
        f'[[connector]]\nname = "mail"\ntype = "email"\nimap_host = "127.0.0.1"\n'
        f'imap_port = {imap_port}\nimap_tls = "none"\nusername = "{USER}"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\nsmtp_tls = "none"\n'
        f'from_address = "{USER}"\nidle = true\npoll_interval = 2\n'
        f'auth = "oauth2"\noauth_provider = "custom"\noauth_client_id = "{CLIENT_ID}"\n'
        f'{device_line}oauth_authorize_endpoint = "{base}/authorize"\n'
        f'oauth_token_endpoint = "{base}/token"\n'
        f"{SENT_FOLDER if sent_folder else ''}\n{more}")
    config.chmod(0o600)
    return config


def store_of(tmp_path: Path) -> Store:
    """The store the test's desk commands use (`--db tmp_path/desk.db`)."""
    return Store(f"sqlite:///{tmp_path / 'desk.db'}")


def desk(tmp_path: Path, config: Path) -> list[str]:
    """The command line of desk on this test's config and store."""
    return [*DESK, "--config", str(config), "--db", str(tmp_path / "desk.db")]


def desk_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "cfg")}


def run(tmp_path: Path, config: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run([*desk(tmp_path, config), *args], capture_output=True, text=True,
                          timeout=120, env=desk_env(tmp_path))
    return done.returncode, done.stdout + done.stderr


def login(tmp_path: Path, config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*desk(tmp_path, config), "auth", "login", "mail", *args], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=desk_env(tmp_path),
        bufsize=1)


def read_until(process: subprocess.Popen[str], marker: str, seen: list[str]) -> str:
    """Lines of the process until one containing `marker` (which is returned)."""
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"{marker!r} never came: {''.join(seen)}")


def signed_in(tmp_path: Path, state: fake_oauth.State) -> None:
    """A sign-in as `desk auth login` stores it, without going through a flow."""
    answer = state.issue(client_id=CLIENT_ID)
    config = load_config(tmp_path / "config.toml", check_secrets=False)
    store = store_of(tmp_path)
    save_sign_in(store, config.connectors[0], Tokens(  # type: ignore[arg-type]
        answer["access_token"], utcnow() + timedelta(seconds=answer["expires_in"]),
        answer["refresh_token"], USER))
    store.close()


def tokens_of(state: fake_oauth.State) -> list[str]:
    """Every token the provider handed out: none may show anywhere desk writes for people."""
    found = list(state.issued)
    for request in state.token_requests:
        found.extend(v for k, v in request.items() if k in ("refresh_token", "code"))
    return [t for t in found if t and t != "***"]


def assert_no_token(state: fake_oauth.State, *outputs: str) -> None:
    tokens = tokens_of(state)
    assert tokens
    for output in outputs:
        leaked = [t for t in tokens if t in output]
        assert not leaked, f"a token was printed: {output[:400]}"


def stored_errors(tmp_path: Path) -> str:
    """Every error and event desk recorded: where a provider's words are kept."""
    from desk.models import Event, SyncState

    store = store_of(tmp_path)
    with store.session() as session:
        texts = [*session.execute(select(SyncState.last_error)).scalars(),
                 *session.execute(select(Message.error)).scalars(),
                 *session.execute(select(Event.data)).scalars()]
    store.close()
    return "\n".join(t for t in texts if t)


# ---- desk auth login ------------------------------------------------------------------------


def test_the_device_sign_in_completes_once_the_code_is_approved(oauth, tmp_path) -> None:
    state, base, dovecot = oauth
    state.slow_down_next = 1  # the provider asks desk to slow down once
    config = write_config(tmp_path, base, dovecot.imap_port, free_port())
    process = login(tmp_path, config)
    seen: list[str] = []
    line = read_until(process, "enter the code:", seen)
    user_code = line.rsplit(":", 1)[1].strip()
    assert f"{base}/activate" in "".join(seen)
    time.sleep(2.5)  # the first poll was told to slow down: desk now waits 1 + 5 s
    state.approve(user_code)
    out, _ = process.communicate(timeout=60)
    output = "".join(seen) + out
    assert process.returncode == 0, output
    assert f"mail: signed in as {USER}" in output
    (device_code,) = state.polls
    gaps = state.poll_gaps(device_code)
    assert gaps and gaps[0] >= 5.9, gaps  # RFC 8628: slow_down adds 5 s to the interval
    assert state.early_polls.get(device_code, 0) == 0

    code, status = run(tmp_path, config, "auth", "status", "--json")
    assert code == 0
    (entry,) = json.loads(status)["connectors"]
    assert (entry["state"], entry["signed_in_as"], entry["command"]) == ("signed in", USER, None)
    assert entry["access_expires_at"] and entry["last_refresh_at"]
    assert_no_token(state, output, status)


def test_a_declined_device_sign_in_stops_and_says_so(oauth, tmp_path) -> None:
    state, base, dovecot = oauth
    config = write_config(tmp_path, base, dovecot.imap_port, free_port())
    process = login(tmp_path, config)
    seen: list[str] = []
    line = read_until(process, "enter the code:", seen)
    state.deny(line.rsplit(":", 1)[1].strip())
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "mail: the sign-in was declined" in out
    _code, status = run(tmp_path, config, "auth", "status")
    assert "mail: not signed in; run desk auth login mail" in status


def test_the_browser_sign_in_through_the_loopback_redirect(oauth, tmp_path) -> None:
    state, base, dovecot = oauth
    config = write_config(tmp_path, base, dovecot.imap_port, free_port(), device=False)
    process = login(tmp_path, config, "--no-browser")
    seen: list[str] = []
    url = read_until(process, f"{base}/authorize?", seen).strip()
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"][0]
    assert query["redirect_uri"][0].startswith("http://127.0.0.1:")
    # The "browser": the provider approves and redirects to desk's loopback server.
    page = httpx.get(url, follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "You may close this tab" in page.text
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(seen) + out
    assert f"mail: signed in as {USER}" in out
    (exchange,) = [r for r in state.token_requests if r.get("grant_type") == "authorization_code"]
    assert exchange["code_verifier"]  # PKCE: the provider checked it against the challenge


def _redirect_of(url: str) -> str:
    """Where the provider sends the browser: the address the admin copies."""
    answer = httpx.get(url, follow_redirects=False, timeout=30)
    assert answer.status_code in (302, 303)
    return answer.headers["location"]


def paste_ready(oauth: tuple[fake_oauth.State, str, Any], tmp_path: Path
                ) -> tuple[subprocess.Popen[str], list[str], str]:
    """A browser sign-in waiting for its address to be pasted: the process, what it printed,
    and the address the provider redirects the browser to."""
    _state, base, dovecot = oauth
    config = write_config(tmp_path, base, dovecot.imap_port, free_port(), device=False)
    process = login(tmp_path, config, "--no-browser")
    seen: list[str] = []
    url = read_until(process, f"{base}/authorize?", seen).strip()
    read_until(process, "paste that address here", seen)
    return process, seen, _redirect_of(url)


def test_the_browser_sign_in_by_pasting_the_address(oauth, tmp_path) -> None:
    state = oauth[0]
    process, seen, redirected = paste_ready(oauth, tmp_path)
    out, _ = process.communicate(redirected + "\n", timeout=60)
    assert process.returncode == 0, "".join(seen) + out
    assert f"mail: signed in as {USER}" in out
    assert_no_token(state, "".join(seen) + out)


def test_a_pasted_address_with_another_state_is_refused(oauth, tmp_path) -> None:
    state = oauth[0]
    process, _seen, redirected = paste_ready(oauth, tmp_path)
    parts = urlsplit(redirected)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = "forged-" + query["state"]
    forged = urlunsplit(parts._replace(query=urlencode(query)))
    out, _ = process.communicate(forged + "\n", timeout=60)
    assert process.returncode == 1
    assert "state does not match this sign-in: refused" in out
    assert not [r for r in state.token_requests if r.get("grant_type") == "authorization_code"]
    store = store_of(tmp_path)
    with store.session() as session:
        assert session.get(OAuthToken, "mail") is None
    store.close()


# ---- desk sync with OAuth ------------------------------------------------------------------


def test_sync_reads_the_mailbox_over_xoauth2_and_replies_over_smtp_xoauth2(
    oauth, smtp, tmp_path, inbound
) -> None:
    state, base, dovecot = oauth
    sink, smtp_port = smtp
    config = write_config(tmp_path, base, dovecot.imap_port, smtp_port)
    signed_in(tmp_path, state)
    dovecot.append(mail(1), mail(2))
    store = store_of(tmp_path)
    ingest(store, [inbound("Where is my order?", sender="jane@example.com", connector="mail")])
    with store.transaction() as session:
        reply = outbox.queue_reply(session, 1, "It left today.", agent="alice",
                                   connectors_by_channel={"email": "mail"})
    store.close()
    code, output = run(tmp_path, config, "sync", "--once")
    assert code == 0, output
    store = store_of(tmp_path)
    with store.session() as session:
        stored = session.execute(select(func.count()).select_from(Message).where(
            Message.connector == "mail", Message.direction == "in")).scalar()
        sent = session.get(Message, reply.id)
    store.close()
    assert stored == 3  # the two from Dovecot, and the one ingested above
    assert sent.status == "sent", sent.error
    (envelope,) = sink.messages
    assert b"It left today." in envelope.content
    assert [user for user, _token in sink.logins] == [USER]
    _code, exported = run(tmp_path, config, "export")
    assert_no_token(state, output, exported, stored_errors(tmp_path))


def test_a_revoked_sign_in_shows_sign_in_needed_and_the_rest_carries_on(
    oauth, tmp_path, inbound
) -> None:
    state, base, dovecot = oauth

    async def scenario() -> tuple[int, str, int, str, str]:
        telegram = fake_telegram.State()
        runner, telegram_base = await fake_telegram.serve(telegram)
        try:
            config = write_config(
                tmp_path, base, dovecot.imap_port, free_port(), sent_folder=True,
                more=(f'\n[[connector]]\nname = "chat"\ntype = "telegram"\n'
                      f'token = "env:DESK_TEST_TELEGRAM"\napi_base = "{telegram_base}"\n'))
            signed_in(tmp_path, state)
            state.revoke_all()  # an admin withdrew the app's consent
            store = store_of(tmp_path)
            ingest(store, [inbound("Any news?", sender="jane@example.com", connector="mail")])
            with store.transaction() as session:
                # Queued, and one left "sending" by a crash: neither may fail for want of a
                # sign-in, nor stop the daemon.
                waiting = outbox.queue_reply(session, 1, "Soon.", agent="alice",
                                             connectors_by_channel={"email": "mail"})
                stuck = outbox.queue_reply(session, 1, "Sent?", agent="alice",
                                           connectors_by_channel={"email": "mail"})
                stuck.status = "sending"
            store.close()
            await telegram.push(telegram.message(
                {"id": 4242, "is_bot": False, "first_name": "Ana"}, "still there?"))
            env = {**desk_env(tmp_path), "DESK_TEST_TELEGRAM": fake_telegram.TOKEN}
            base_args = desk(tmp_path, config)
            sync = await asyncio.create_subprocess_exec(
                *base_args, "sync", "--once", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env)
            synced = (await sync.communicate())[0].decode()
            status = await asyncio.create_subprocess_exec(
                *base_args, "status", "--json", stdout=asyncio.subprocess.PIPE, env=env)
            status_json = (await status.communicate())[0].decode()
            auth = await asyncio.create_subprocess_exec(
                *base_args, "auth", "status", stdout=asyncio.subprocess.PIPE, env=env)
            auth_text = (await auth.communicate())[0].decode()
            store = store_of(tmp_path)
            with store.session() as session:
                chats = session.execute(select(func.count()).select_from(Message).where(
                    Message.connector == "chat")).scalar()
                replies = [(m.status, m.attempts) for m in (
                    session.get(Message, waiting.id), session.get(Message, stuck.id))]
            store.close()
            assert replies == [("queued", 0), ("sending", 0)], replies
            return sync.returncode or 0, synced, chats, status_json, auth_text
        finally:
            await runner.cleanup()

    code, synced, chats, status_json, auth_text = asyncio.run(scenario())
    assert code == 1  # the mailbox failed ...
    assert chats == 1  # ... and the Telegram connector still fetched
    connectors = {c["name"]: c for c in json.loads(status_json)["connectors"]}
    assert connectors["mail"]["state"] == "sign-in needed"
    assert connectors["mail"]["sign_in"] == "desk auth login mail"
    assert "invalid_grant" in connectors["mail"]["last_error"]
    assert connectors["chat"]["state"] == "ok"
    assert "mail: sign-in needed (invalid_grant" in auth_text
    assert "run desk auth login mail" in auth_text
    assert_no_token(state, synced, status_json, auth_text, stored_errors(tmp_path))


def test_tokens_that_live_five_seconds_keep_a_30_second_sync_fetching(oauth, tmp_path) -> None:
    state, base, dovecot = oauth
    state.access_ttl = 5.0
    config = write_config(tmp_path, base, dovecot.imap_port, free_port())
    signed_in(tmp_path, state)
    daemon = subprocess.Popen(
        [*desk(tmp_path, config), "sync"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=desk_env(tmp_path))
    sent = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < 30:
            sent += 1
            dovecot.append(mail(sent))
            time.sleep(1.0)
        store = store_of(tmp_path)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with store.session() as session:
                ids = session.execute(select(Message.provider_id).where(
                    Message.connector == "mail")).scalars().all()
            if len(ids) >= sent:
                break
            time.sleep(0.5)
        store.close()
    finally:
        daemon.terminate()
        output, _ = daemon.communicate(timeout=20)
    print(f"30 s sync with 5 s tokens: {sent} mails appended, {len(ids)} stored, "
          f"{state.refreshes} refreshes, {state.introspections} IMAP sign-ins")
    assert sorted(ids) == sorted(f"m{n}@example.org" for n in range(1, sent + 1)), output
    assert state.refreshes >= 4, output  # a 5 s token, refreshed all along
    # Each IMAP session signs in with a token Dovecot checks at the provider: sessions were
    # renewed before their tokens ended, the IDLE one included.
    assert state.introspections >= 8, (state.introspections, output)
    assert "Authenticat" not in output and "refused" not in output, output
    assert_no_token(state, output, stored_errors(tmp_path))
