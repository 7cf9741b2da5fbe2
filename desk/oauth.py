"""OAuth 2.0 for mailboxes that no longer take passwords (Microsoft 365, Google Workspace).

An admin signs a connector in once from the terminal (`desk auth login NAME`), over SSH too:

- the Device Authorization Grant (RFC 8628) where the provider allows it (Microsoft, custom):
  desk prints a URL and a code, the admin enters the code on any device, desk polls;
- else the authorization code grant with PKCE (RFC 7636) and a loopback redirect on 127.0.0.1
  (RFC 8252); when the browser runs on another machine, the admin pastes the address the
  browser ended on instead. `state` is checked either way.

The tokens live in the store's `oauthtoken` table, which only the daemon's role may read on
PostgreSQL. `TokenSource` hands connectors an access token, refreshing it before it expires
and once more when the server refused it; a rotated refresh token replaces the old one in the
same transaction as the new access token. A refresh token the provider no longer honours
(`invalid_grant`) puts the connector in the "sign-in needed" state until the next login.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import select

from connectors.base import PermanentError, SignInNeeded, TransientError
from desk import redact
from desk.config import EmailConnectorSettings
from desk.models import OAuthToken
from desk.store import Store
from desk.textsafe import printable
from desk.timeutil import to_store, utcnow

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# `openid email`: an ID token saying who signed in, shown by `desk auth status`.
MICROSOFT_SCOPES = ("https://outlook.office.com/IMAP.AccessAsUser.All",
                    "https://outlook.office.com/SMTP.Send", "offline_access", "openid", "email")
GOOGLE_SCOPES = ("https://mail.google.com/", "openid", "email")
TIMEOUT_SECONDS = 30.0
# A loopback sign-in the admin walked away from ends rather than holding the port forever.
CODE_WAIT_SECONDS = 600.0


class OAuthError(Exception):
    """A sign-in that did not complete, said so an admin knows what to do next."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    device: str | None
    authorize: str | None
    token: str
    scopes: tuple[str, ...]
    # Google hands out a refresh token only when asked for offline access, with consent.
    authorize_extra: tuple[tuple[str, str], ...] = ()
    # The redirect's host. Entra ID matches `http://localhost` (any port) as registered in
    # its portal; 127.0.0.1 (RFC 8252's advice) elsewhere. The server listens on 127.0.0.1.
    loopback_host: str = "127.0.0.1"


def endpoints(settings: EmailConnectorSettings) -> Endpoints:
    provider = settings.oauth_provider
    scopes = tuple(settings.oauth_scopes or ())
    if provider == "microsoft":
        base = (f"https://login.microsoftonline.com/{settings.oauth_tenant or 'organizations'}"
                "/oauth2/v2.0")
        return Endpoints(f"{base}/devicecode", f"{base}/authorize", f"{base}/token",
                         scopes or MICROSOFT_SCOPES, loopback_host="localhost")
    if provider == "google":
        # Google's device grant does not allow the Gmail scope: the browser grant only.
        return Endpoints(None, "https://accounts.google.com/o/oauth2/v2/auth",
                         "https://oauth2.googleapis.com/token", scopes or GOOGLE_SCOPES,
                         (("access_type", "offline"), ("prompt", "consent")))
    assert settings.oauth_token_endpoint is not None  # checked with the config
    return Endpoints(settings.oauth_device_endpoint, settings.oauth_authorize_endpoint,
                     settings.oauth_token_endpoint, scopes)


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    expires_at: datetime
    refresh_token: str | None
    account: str | None


def _client_fields(settings: EmailConnectorSettings) -> dict[str, str]:
    fields = {"client_id": settings.oauth_client_id or ""}
    if settings.oauth_client_secret is not None:
        fields["client_secret"] = settings.oauth_client_secret.reveal()
    return fields


def _post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    import httpx  # here: the app reads sign-in states without loading an HTTP client

    try:
        answer = httpx.post(url, data=form, timeout=TIMEOUT_SECONDS,
                            headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        raise TransientError(f"OAuth provider {urlsplit(url).netloc}: {error}") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return answer.status_code, body


def _problem(body: dict[str, Any], status: int) -> str:
    error = str(body.get("error") or f"HTTP {status}")
    description = str(body.get("error_description") or "").strip()
    return redact.redact(f"{error}: {description}" if description else error)


def _account(id_token: object) -> str | None:
    """Who signed in, read from the ID token's claims. For display only: desk trusts the
    token endpoint it called over TLS, not this unverified payload."""
    if not isinstance(id_token, str) or id_token.count(".") < 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    for claim in ("preferred_username", "email", "upn"):
        if isinstance(claims.get(claim), str):
            return claims[claim]
    return None


def _tokens(body: dict[str, Any]) -> Tokens:
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuthError("the provider's answer has no access token")
    try:
        lifetime = float(body.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    refresh = body.get("refresh_token")
    redact.remember(access)
    if isinstance(refresh, str) and refresh:
        redact.remember(refresh)
    else:
        refresh = None
    return Tokens(access, utcnow() + timedelta(seconds=lifetime), refresh,
                  _account(body.get("id_token")))


# ---- device authorization grant (RFC 8628) -------------------------------------------------


def device_login(
    settings: EmailConnectorSettings,
    out: TextIO = sys.stdout,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Tokens:
    """Sign in with a code entered on any device; polls until the admin has, or fails."""
    where = endpoints(settings)
    if where.device is None:
        raise OAuthError(f"{settings.oauth_provider} does not offer the device sign-in for "
                         "mail: use the browser sign-in (desk auth login --browser)")
    status, body = _post(where.device, {**_client_fields(settings),
                                        "scope": " ".join(where.scopes)})
    if status != 200 or "device_code" not in body:
        raise OAuthError(f"the provider refused to start the sign-in: {_problem(body, status)}")
    uri = printable(str(body.get("verification_uri") or body.get("verification_url")),
                    single_line=True)
    print(f"To sign {settings.name} in as {settings.username}, open {uri}", file=out)
    print(f"and enter the code: {printable(str(body.get('user_code')), single_line=True)}",
          file=out)
    if body.get("verification_uri_complete"):
        complete = printable(str(body["verification_uri_complete"]), single_line=True)
        print(f"(or open {complete})", file=out)
    print("Waiting for the sign-in… (Ctrl-C cancels)", file=out, flush=True)
    interval = _seconds(body.get("interval"), 5.0)
    deadline = time.monotonic() + _seconds(body.get("expires_in"), 900.0)
    form = {**_client_fields(settings), "grant_type": DEVICE_GRANT,
            "device_code": str(body["device_code"])}
    while True:
        if time.monotonic() > deadline:
            raise OAuthError("the code expired before the sign-in was completed: run "
                             f"desk auth login {settings.name} again")
        sleep(interval)
        try:
            status, answer = _post(where.token, form)
        except TransientError:
            interval += 5  # RFC 8628 3.5: a connection timeout is a reason to slow down
            continue
        if status == 200:
            return _tokens(answer)
        error = answer.get("error")
        if error == "authorization_pending" or status == 429 or status >= 500:
            pass
        elif error == "slow_down":
            interval += 5  # RFC 8628 3.5: every slow_down adds five seconds, for good
        elif error == "expired_token":
            raise OAuthError("the code expired before the sign-in was completed: run "
                             f"desk auth login {settings.name} again")
        elif error == "access_denied":
            raise OAuthError("the sign-in was declined")
        else:
            raise OAuthError(f"the sign-in failed: {_problem(answer, status)}")


def _seconds(value: object, default: float) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default


# ---- authorization code grant with PKCE and a loopback redirect (RFC 7636, RFC 8252) --------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


class _Loopback(http.server.ThreadingHTTPServer):
    # A browser's preconnect that never sends a request must not hold the server up.
    daemon_threads = True
    answers: queue.Queue[str]


class _Redirected(http.server.BaseHTTPRequestHandler):
    server: _Loopback
    timeout = 10

    def do_GET(self) -> None:
        query = urlsplit(self.path).query
        if "code=" not in query and "error=" not in query:
            self.send_error(404)  # a favicon, a probe: not the provider's answer
            return
        self.server.answers.put(f"http://127.0.0.1{self.path}")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"desk received the sign-in. You may close this tab.\n")

    def log_message(self, *args: object) -> None:
        pass  # the query holds the code: never logged


def code_login(
    settings: EmailConnectorSettings,
    out: TextIO = sys.stdout,
    *,
    lines: TextIO | None = sys.stdin,
    open_browser: bool = True,
) -> Tokens:
    """Sign in through a browser: the provider redirects to a one-off server on 127.0.0.1,
    or the admin pastes the address the browser ended on (the browser may be elsewhere)."""
    where = endpoints(settings)
    if where.authorize is None:
        raise OAuthError("this provider has no browser sign-in configured "
                         "(oauth_authorize_endpoint)")
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(24)
    server = _Loopback(("127.0.0.1", 0), _Redirected)
    server.answers = queue.Queue()
    redirect_uri = f"http://{where.loopback_host}:{server.server_address[1]}/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = where.authorize + "?" + urlencode({
            "response_type": "code", "client_id": settings.oauth_client_id or "",
            "redirect_uri": redirect_uri, "scope": " ".join(where.scopes), "state": state,
            "code_challenge": challenge, "code_challenge_method": "S256",
            **dict(where.authorize_extra)})
        print(f"To sign {settings.name} in as {settings.username}, open this address in a "
              f"browser:\n\n{url}\n", file=out)
        print("If the browser is on another machine, it ends on an address starting with "
              f"{redirect_uri} that does not load: paste that address here and press enter.",
              file=out, flush=True)
        if lines is not None:
            threading.Thread(target=_read_pasted, args=(lines, server.answers),
                             daemon=True).start()
        if open_browser and _graphical_session():
            import webbrowser

            webbrowser.open(url)
        deadline = time.monotonic() + CODE_WAIT_SECONDS
        answer = None
        while answer is None:
            if time.monotonic() > deadline:
                raise OAuthError("no sign-in arrived in 10 minutes: run desk auth login again")
            try:
                answer = server.answers.get(timeout=0.2)  # short, so Ctrl-C is heard at once
            except queue.Empty:
                continue
    finally:
        server.shutdown()
        server.server_close()
    query = {key: values[0] for key, values in parse_qs(urlsplit(answer.strip()).query).items()}
    if query.get("state") != state:
        raise OAuthError("the address's state does not match this sign-in: refused (it comes "
                         "from another sign-in, or was forged)")
    if "error" in query:
        raise OAuthError(f"the sign-in failed: {_problem(query, 400)}")
    if not query.get("code"):
        raise OAuthError("the address has no authorization code")
    status, body = _post(where.token, {
        **_client_fields(settings), "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": redirect_uri, "code_verifier": verifier})
    if status != 200:
        raise OAuthError(f"the provider refused the code: {_problem(body, status)}")
    return _tokens(body)


def _graphical_session() -> bool:
    """Whether a browser opened here is one the admin sees. Over SSH, or on a console,
    `webbrowser` would start a text browser that takes the terminal over."""
    import os

    if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_TTY"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _read_pasted(lines: TextIO, answers: queue.Queue[str]) -> None:
    for line in lines:
        if "code=" in line or "error=" in line:
            answers.put(line)
            return


# ---- the stored sign-in -------------------------------------------------------------------


def save_sign_in(store: Store, settings: EmailConnectorSettings, tokens: Tokens) -> None:
    if tokens.refresh_token is None:
        raise OAuthError("the provider gave no refresh token, so desk could not stay signed in"
                         " (Microsoft: include offline_access in oauth_scopes)")
    now = utcnow()

    def write(session: Any) -> None:
        row = session.get(OAuthToken, settings.name) or OAuthToken(
            connector=settings.name, provider=settings.oauth_provider or "", updated_at=now)
        row.provider = settings.oauth_provider or ""
        row.account = tokens.account or settings.username
        row.refresh_token, row.access_token = tokens.refresh_token, tokens.access_token
        row.access_expires_at, row.last_refresh_at = tokens.expires_at, now
        row.state, row.reason, row.updated_at = "signed_in", None, now
        session.add(row)

    store.write(write)


def sign_out(store: Store, connector: str) -> bool:
    def write(session: Any) -> bool:
        row = session.get(OAuthToken, connector)
        if row is not None:
            session.delete(row)
        return row is not None

    return store.write(write)


def status(store: Store, connectors: list[EmailConnectorSettings]) -> list[dict[str, Any]]:
    """Per OAuth connector: who is signed in, the access token's expiry, the last refresh, and
    the state (`signed in`, `sign-in needed`, `not signed in`) with the command that fixes it."""
    from desk.timeutil import iso

    names = [c.name for c in connectors]
    with store.session() as session:
        # The columns shown, not the whole row: the tokens stay where they are.
        rows = {row.connector: row for row in session.execute(
            select(OAuthToken.connector, OAuthToken.state, OAuthToken.reason,
                   OAuthToken.account, OAuthToken.access_expires_at, OAuthToken.last_refresh_at)
            .where(OAuthToken.connector.in_(names)))}  # type: ignore[attr-defined]
    found = []
    for config in connectors:
        row = rows.get(config.name)
        state = _state(row.state if row else None)
        found.append({
            "connector": config.name, "provider": config.oauth_provider, "state": state,
            "signed_in_as": row.account if row else None,
            "access_expires_at": iso(row.access_expires_at) if row else None,
            "last_refresh_at": iso(row.last_refresh_at) if row else None,
            "reason": row.reason if row else None,
            "command": None if state == "signed in" else f"desk auth login {config.name}",
        })
    return found


class TokenSource:
    """A connector's access tokens (`connectors.base.TokenProvider`): the stored one while it
    has a fifth of its life (at most a minute) left, else a refreshed one."""

    def __init__(self, store: Store, settings: EmailConnectorSettings) -> None:
        self.store, self.settings = store, settings
        self._lock = threading.Lock()

    def _row(self) -> OAuthToken | None:
        with self.store.session() as session:
            return session.get(OAuthToken, self.settings.name)

    def signed_in(self) -> bool:
        return not sign_in_needed(self.store, [self.settings.name])

    def __call__(self, fresh: bool = False) -> tuple[str, float]:
        with self._lock:
            for _attempt in range(3):
                row = self._row()
                if row is None:
                    raise SignInNeeded(f"not signed in: run desk auth login {self.settings.name}")
                if row.state == "sign_in_needed":
                    raise SignInNeeded(f"sign-in needed ({row.reason}): run desk auth login "
                                       f"{self.settings.name}")
                if row.access_token and row.access_expires_at and not fresh:
                    expires = to_store(row.access_expires_at)
                    assert expires is not None
                    since = to_store(row.last_refresh_at or row.updated_at)
                    margin = min(timedelta(minutes=1), (expires - since) / 5)  # type: ignore[operator]
                    if expires - utcnow() > margin:
                        redact.remember(row.access_token)
                        return row.access_token, expires.timestamp()
                try:
                    refreshed = self._refresh(row)
                except TransientError:
                    # The provider is unreachable for now: the token we have still works
                    # until it ends, which is what the margin was for.
                    expires = to_store(row.access_expires_at) if row.access_expires_at else None
                    if row.access_token and expires and expires > utcnow() and not fresh:
                        return row.access_token, expires.timestamp()
                    raise
                if refreshed is not None:
                    return refreshed
                # Someone else changed the sign-in meanwhile (`desk auth login`, or another
                # daemon that refreshed): read it again rather than undo theirs.
            raise TransientError(f"{self.settings.name}: the sign-in kept changing while "
                                 "refreshing it; trying again later")

    def _refresh(self, row: OAuthToken) -> tuple[str, float] | None:
        settings = self.settings
        used = row.refresh_token or ""
        redact.remember(used)
        where = endpoints(settings)
        status, body = _post(where.token, {
            **_client_fields(settings), "grant_type": "refresh_token", "refresh_token": used,
            **({"scope": " ".join(where.scopes)} if where.scopes else {})})
        if status == 200:
            tokens = _tokens(body)
            now = utcnow()

            def write(session: Any) -> bool:
                stored = session.get(OAuthToken, settings.name)
                if stored is None or stored.refresh_token != used:
                    return False  # signed out, or signed in afresh, while we asked
                stored.access_token = tokens.access_token
                stored.access_expires_at = tokens.expires_at
                # Rotation: the new refresh token replaces the old in this same transaction.
                stored.refresh_token = tokens.refresh_token or stored.refresh_token
                stored.last_refresh_at = stored.updated_at = now
                return True

            if not self.store.write(write):
                return None
            if row.access_token:
                redact.forget(row.access_token)  # superseded: the set stays small
            if tokens.refresh_token and tokens.refresh_token != used:
                redact.forget(used)
            return tokens.access_token, tokens.expires_at.timestamp()
        problem = _problem(body, status)
        error = body.get("error")
        if error in ("invalid_client", "unauthorized_client"):
            # The app registration or its secret, not the sign-in: a config matter.
            raise PermanentError(f"the provider refused the client ({problem}): check "
                                 "oauth_client_id and oauth_client_secret")
        if error == "invalid_grant":
            def lapse(session: Any) -> bool:
                stored = session.get(OAuthToken, settings.name)
                if stored is None or stored.refresh_token != used:
                    return False
                stored.state, stored.reason, stored.updated_at = (
                    "sign_in_needed", problem, utcnow())
                return True

            if not self.store.write(lapse):
                return None
            raise SignInNeeded(f"sign-in needed ({problem}): run desk auth login {settings.name}")
        raise TransientError(f"token refresh for {settings.name}: {problem}")


def sign_in_needed(store: Store, connectors: list[str]) -> dict[str, str]:
    """Which of the OAuth `connectors` cannot work until an admin signs in (never signed in,
    signed out, or the provider refused the refresh token), with why: for `desk status` and
    the app. Reads no token."""
    if not connectors:
        return {}
    with store.session() as session:
        rows = {name: (state, reason) for name, state, reason in session.execute(
            select(OAuthToken.connector, OAuthToken.state, OAuthToken.reason)
            .where(OAuthToken.connector.in_(connectors)))}  # type: ignore[attr-defined]
    waiting = {}
    for name in connectors:
        state, reason = rows.get(name, (None, None))
        if _state(state) == "not signed in":
            waiting[name] = "not signed in"
        elif _state(state) == "sign-in needed":
            waiting[name] = reason or "the provider refused the refresh token"
    return waiting


def _state(stored: str | None) -> str:
    """A stored sign-in state (None: no row) as desk shows it."""
    if stored is None:
        return "not signed in"
    return "sign-in needed" if stored == "sign_in_needed" else "signed in"


def oauth_mailboxes(settings: Any) -> list[EmailConnectorSettings]:
    """The email connectors that sign in with OAuth, enabled or not."""
    return [c for c in settings.connectors if getattr(c, "auth", None) == "oauth2"]


def oauth_connectors(settings: Any) -> list[str]:
    """The names of the enabled ones: those whose sign-in desk status and the app watch."""
    return [c.name for c in oauth_mailboxes(settings) if c.enabled]
