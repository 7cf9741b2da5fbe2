"""The OAuth 2.0 test peers behave as the RFCs say, so that desk's tests against them mean
something: the fake provider (device grant, auth code + PKCE, rotation, introspection,
revocation), a Dovecot that takes its tokens over XOAUTH2/OAUTHBEARER, and the XOAUTH2 SMTP
sink."""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fake_oauth import DEVICE_GRANT, OAuthSink, State, s256, serve, serve_in_thread, xoauth2
from peers import USER, Dovecot, free_port, mail, start_dovecot

REDIRECT = "http://127.0.0.1:8765/callback"
VERIFIER = "v" * 43 + "-._~"  # RFC 7636 §4.1: 43-128 unreserved characters


@pytest.fixture
def provider() -> Iterator[tuple[State, httpx.Client]]:
    state = State()
    url, stop = serve_in_thread(state)
    with httpx.Client(base_url=url, timeout=5) as http:
        yield state, http
    stop()


def claims(jwt: str) -> dict[str, Any]:
    header, payload, signature = jwt.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "none", "typ": "JWT"}
    assert signature == ""
    return json.loads(base64.urlsafe_b64decode(payload + "=="))


def start_device(http: httpx.Client) -> dict[str, Any]:
    answer = http.post("/device", data={"client_id": "desk", "scope": "openid email"})
    assert answer.status_code == 200
    return answer.json()


def poll(http: httpx.Client, device_code: str) -> httpx.Response:
    return http.post("/token", data={"grant_type": DEVICE_GRANT, "device_code": device_code,
                                     "client_id": "desk"})


def authorize(http: httpx.Client, **changes: str) -> httpx.Response:
    query = {"response_type": "code", "client_id": "desk", "redirect_uri": REDIRECT,
             "scope": "openid email", "state": "xyz", "code_challenge": s256(VERIFIER),
             "code_challenge_method": "S256", **changes}
    return http.get("/authorize", params=query)


def redirect_query(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(http: httpx.Client, code: str, verifier: str = VERIFIER) -> httpx.Response:
    return http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": REDIRECT, "client_id": "desk",
                                     "code_verifier": verifier})


def refresh(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                     "client_id": "desk"})


def introspect(http: httpx.Client, token: str) -> dict[str, Any]:
    return http.post("/introspect", data={"token": token}).json()


def test_device_flow_pending_then_approved_gives_tokens_once(provider) -> None:
    state, http = provider
    device = start_device(http)
    assert device["verification_uri"] == str(http.base_url).rstrip("/") + "/activate"
    assert device["verification_uri_complete"].endswith(f"?user_code={device['user_code']}")
    assert (device["expires_in"], device["interval"]) == (600, 1)
    assert len(device["user_code"]) == 9 and device["user_code"][4] == "-"

    pending = poll(http, device["device_code"])
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    state.approve(device["user_code"].lower())  # what a user types is case-insensitive
    tokens = poll(http, device["device_code"]).json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "openid email" and tokens["refresh_token"]
    identity = claims(tokens["id_token"])
    assert identity["preferred_username"] == identity["email"] == USER
    assert identity["exp"] > time.time()
    assert state.issued == [tokens["access_token"]] == state.live_access_tokens()
    assert poll(http, device["device_code"]).json()["error"] == "invalid_grant"  # spent
    assert len(state.polls[device["device_code"]]) == 3


def test_device_flow_slow_down_denied_and_expired(provider) -> None:
    state, http = provider
    device = start_device(http)
    state.slow_down_next = 1
    slow = poll(http, device["device_code"]).json()
    assert slow["error"] == "slow_down" and "6 s" in slow["error_description"]
    assert poll(http, device["device_code"]).json()["error"] == "authorization_pending"
    assert len(state.poll_gaps(device["device_code"])) == 1
    assert state.early_polls[device["device_code"]] == 1  # a client must wait 1 + 5 s here

    denied = start_device(http)
    state.deny(denied["user_code"])
    assert poll(http, denied["device_code"]).json()["error"] == "access_denied"

    expired = start_device(http)
    state.expire(expired["device_code"])
    assert poll(http, expired["device_code"]).json()["error"] == "expired_token"
    state.device_ttl = 0.2
    lapsed = start_device(http)
    time.sleep(0.25)
    assert poll(http, lapsed["device_code"]).json()["error"] == "expired_token"
    assert poll(http, "made-up").json()["error"] == "invalid_grant"
    assert state.issued == []


def test_authorization_code_with_pkce(provider) -> None:
    state, http = provider
    first = redirect_query(authorize(http))
    assert first["state"] == "xyz"
    assert state.authorize_requests[0]["code_challenge_method"] == "S256"
    wrong = exchange(http, first["code"], verifier="w" * 43)
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    assert exchange(http, first["code"]).json()["error"] == "invalid_grant"  # burnt by the try

    code = redirect_query(authorize(http))["code"]
    moved = http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                      "redirect_uri": REDIRECT + "/elsewhere", "client_id": "desk",
                                      "code_verifier": VERIFIER})
    assert moved.json()["error"] == "invalid_grant"

    code = redirect_query(authorize(http))["code"]
    tokens = exchange(http, code).json()
    assert introspect(http, tokens["access_token"])["active"] is True
    replay = exchange(http, code).json()
    assert replay["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: a replayed code revokes what it had issued.
    assert introspect(http, tokens["access_token"]) == {"active": False}

    assert redirect_query(authorize(http, code_challenge_method="plain"))["error"] == \
        "invalid_request"
    state.authorize_mode = "deny"
    assert redirect_query(authorize(http)) == {
        "error": "access_denied", "error_description": "the user denied consent", "state": "xyz"}


def test_refresh_rotates_and_refuses_the_old_token(provider) -> None:
    state, http = provider
    first = state.issue(client_id="desk")
    second = refresh(http, first["refresh_token"]).json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    reused = refresh(http, first["refresh_token"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert "rotated" in reused.json()["error_description"]
    third = refresh(http, second["refresh_token"]).json()
    assert state.refreshes == 2 and len(state.issued) == 3
    assert state.live_refresh_tokens() == [third["refresh_token"]]
    assert state.live_access_tokens() == state.issued  # a refresh leaves older ones alive
    wider = http.post("/token", data={"grant_type": "refresh_token", "client_id": "desk",
                                      "refresh_token": third["refresh_token"], "scope": "admin"})
    assert wider.json()["error"] == "invalid_scope"


def test_confidential_client_must_authenticate() -> None:
    state = State(client_id="desk", client_secret="s3cret")
    url, stop = serve_in_thread(state)
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.post("/device", data={"client_id": "other"}).status_code == 401
            device = start_device(http)
            state.approve(device["user_code"])
            grant = {"grant_type": DEVICE_GRANT, "device_code": device["device_code"]}
            bare = http.post("/token", data={**grant, "client_id": "desk"})
            assert (bare.status_code, bare.json()["error"]) == (401, "invalid_client")
            basic = http.post("/token", data=grant, auth=("desk", "wrong"))
            assert basic.status_code == 401 and "Basic" in basic.headers["WWW-Authenticate"]
            tokens = http.post("/token", data=grant, auth=("desk", "s3cret")).json()
            posted = http.post("/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": "desk", "client_secret": "s3cret"})
            assert posted.status_code == 200
            assert state.token_requests[-1]["client_secret"] == "***"
            as_json = http.post("/token", json=grant, auth=("desk", "s3cret"))
            assert as_json.json()["error"] == "invalid_request"  # RFC 6749 §3.2: a form
    finally:
        stop()


def test_introspection_expiry_and_revocation(provider) -> None:
    state, http = provider
    state.access_ttl = 0.5  # fractional, as a test needs; expires_in is whole seconds
    short = state.issue()
    assert short["expires_in"] == 0
    live = introspect(http, short["access_token"])
    assert live["active"] is True and live["username"] == USER and live["exp"] <= time.time() + 1
    time.sleep(0.6)
    assert introspect(http, short["access_token"]) == {"active": False}

    state.access_ttl = 3600
    kept, dropped = state.issue(), state.issue()
    assert http.post("/revoke", data={"token": dropped["refresh_token"],
                                      "client_id": "test-client"}).status_code == 200
    # RFC 7009 §2.1: the refresh token's access tokens go with it.
    assert introspect(http, dropped["access_token"]) == {"active": False}
    assert refresh(http, dropped["refresh_token"]).json()["error"] == "invalid_grant"
    assert http.post("/revoke", data={"token": "never-issued",
                                      "client_id": "x"}).status_code == 200
    assert introspect(http, kept["access_token"])["active"] is True
    # Dovecot's introspection_mode=get and =auth put the token in the URL or a header.
    assert http.get("/introspect", params={"token": kept["access_token"]}).json()["active"]
    assert http.get("/introspect", headers={
        "Authorization": f"Bearer {kept['access_token']}"}).json()["active"]
    state.revoke_all()
    assert state.live_access_tokens() == [] and state.live_refresh_tokens() == []
    assert state.introspections == 6


async def test_serves_on_the_test_event_loop_too() -> None:
    state = State()
    runner, url = await serve(state)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            meta = (await http.get("/.well-known/oauth-authorization-server")).json()
            assert meta["device_authorization_endpoint"] == f"{url}/device"
            token = state.issue()["access_token"]
            info = await http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
            assert info.json()["email"] == USER
    finally:
        await runner.cleanup()


# --- Dovecot with OAuth ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[tuple[State, Dovecot]]:
    """One provider and one Dovecot that asks it about every token (it must know the URL
    before it starts, so both outlive the tests)."""
    state = State()
    url, stop = serve_in_thread(state)
    try:
        server = start_dovecot(oauth_introspection_url=f"{url}/introspect")
        yield state, server
        server.stop()
    finally:
        stop()


@pytest.fixture
def oauth_dovecot(oauth_server) -> tuple[State, Dovecot]:
    state, server = oauth_server
    state.reset()
    server.reset()
    return state, server


@pytest.mark.peer
def test_dovecot_takes_a_live_token_over_xoauth2(oauth_dovecot) -> None:
    state, server = oauth_dovecot
    server.append(mail(1), mail(2))
    server.append(mail(3), folder="Archive")
    token = state.issue()["access_token"]
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=15)
    assert "AUTH=XOAUTH2" in imap.capabilities and "LOGINDISABLED" in imap.capabilities
    assert imap.authenticate("XOAUTH2", lambda _: xoauth2(USER, token))[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"2"])
    imap.logout()
    sent = state.introspection_requests[-1]
    assert sent["method"] == "POST"
    assert sent["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent["body"].startswith(f"token={token}&")

    client = server.client(token=token)  # imapclient's oauth2_login
    assert client.select_folder("Archive")[b"EXISTS"] == 1
    client.logout()
    import imapclient

    bearer = imapclient.IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=15)
    bearer.oauthbearer_login(USER, token)
    bearer.logout()
    server.reset()
    assert server.folders() == ["INBOX"]


@pytest.mark.peer
def test_dovecot_refuses_unknown_revoked_and_borrowed_tokens(oauth_dovecot) -> None:
    import imapclient

    state, server = oauth_dovecot
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=15)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.authenticate("XOAUTH2", lambda _: xoauth2(USER, "at-unknown"))
    imap.shutdown()

    revoked = state.issue()["access_token"]
    state.revoke_all()
    client = imapclient.IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=15)
    with pytest.raises(imapclient.exceptions.LoginError):
        client.oauth2_login(USER, revoked)
    client.shutdown()

    # A live token is good only for the user the provider says it belongs to.
    theirs = state.issue(user="someone@example.test")["access_token"]
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=15)
    with pytest.raises(imaplib.IMAP4.error):
        imap.authenticate("XOAUTH2", lambda _: xoauth2(USER, theirs))
    imap.shutdown()


# --- the XOAUTH2 SMTP sink ------------------------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[tuple[State, OAuthSink, int]]:
    from aiosmtpd.controller import Controller

    state = State()
    sink = OAuthSink(state)
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, auth_require_tls=False)
    controller.start()
    yield state, sink, port
    controller.stop()


def test_smtp_sink_takes_a_live_token(smtp_sink) -> None:
    state, sink, port = smtp_sink
    token = state.issue()["access_token"]
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].strip() == "XOAUTH2"
        code, _ = smtp.auth("XOAUTH2", lambda challenge=None: xoauth2(USER, token).decode())
        assert code == 235
        smtp.sendmail(USER, ["ana@example.org"], mail(1))
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:  # no initial response: 334 first
        smtp.ehlo()
        smtp.auth("XOAUTH2", lambda challenge=None: xoauth2(USER, token).decode(),
                  initial_response_ok=False)
    assert len(sink.messages) == 1 and sink.messages[0].rcpt_tos == ["ana@example.org"]
    assert sink.logins == [(USER, token), (USER, token)]


def test_smtp_sink_refuses_a_revoked_token_and_unauthenticated_mail(smtp_sink) -> None:
    state, sink, port = smtp_sink
    token = state.issue()["access_token"]
    state.revoke_all()
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("XOAUTH2", lambda challenge=None: xoauth2(USER, token).decode())
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
            smtp.sendmail(USER, ["ana@example.org"], mail(1))
        assert unauthenticated.value.smtp_code == 530
        assert smtp.docmd("AUTH", "PLAIN AHN1cHBvcnQAc2VjcmV0")[0] == 504
    assert sink.messages == [] and sink.refusals == [(USER, token)]
