"""A local OAuth 2.0 provider speaking the protocols desk's email sign-in uses, so a real OAuth
client works against it: device authorization (RFC 8628), authorization code with PKCE S256
(RFC 6749 §4.1, RFC 7636), refresh tokens with rotation, token introspection (RFC 7662, which
Dovecot's `oauth2` passdb calls for every login) and revocation (RFC 7009), plus an OpenID-style
unsigned id_token, /userinfo and discovery metadata. Tests steer it through its `State`
(approve or deny a device code, answer `slow_down`, expire a code, revoke every grant) and read
back what clients did (polls and their times, authorize requests, tokens issued, refreshes,
introspection calls).

`OAuthSink` is an aiosmtpd handler for an SMTP server that takes `AUTH XOAUTH2` with a live
token of the provider and nothing else."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode

from aiohttp import web

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid email offline_access https://mail.example.test/"
# RFC 8628 §6.1: no vowels or look-alikes, so a user code never spells a word or is misread.
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier (RFC 7636 §4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass
class _Device:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    status: str = "pending"  # pending | approved | denied | expired | used


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    expires_at: float
    grant: str
    used: bool = False


@dataclass
class _Token:
    user: str
    client_id: str
    scope: str
    grant: str  # every token of one sign-in (and its refreshes) shares it
    expires_at: float | None  # None: a refresh token, which lives until rotated or revoked
    revoked: bool = False


_CONFIGURATION = frozenset({"user", "access_ttl", "client_id", "client_secret", "device_ttl",
                            "interval", "issuer", "_lock"})


@dataclass
class State:
    user: str = "support@example.test"
    access_ttl: float = 3600.0
    client_id: str | None = None  # None: any client_id is accepted
    client_secret: str | None = None  # set: the token endpoint demands it (a confidential client)
    device_ttl: float = 600.0
    interval: int = 1
    slow_down_next: int = 0  # the next N polls of a pending device code answer slow_down
    authorize_mode: str = "approve"  # or "deny": the user refuses consent at /authorize
    polls: dict[str, list[float]] = field(default_factory=dict)  # device_code: monotonic times
    # device_code: polls that came sooner than the interval then in force (RFC 8628 §3.5)
    early_polls: dict[str, int] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # access tokens, in order
    refreshes: int = 0
    introspections: int = 0
    introspection_requests: list[dict[str, Any]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)  # form, secret masked
    revoked: list[str] = field(default_factory=list)  # tokens posted to /revoke
    _devices: dict[str, _Device] = field(default_factory=dict, repr=False)
    _codes: dict[str, _Code] = field(default_factory=dict, repr=False)
    _access: dict[str, _Token] = field(default_factory=dict, repr=False)
    _refresh: dict[str, _Token] = field(default_factory=dict, repr=False)
    _rotated: dict[str, str] = field(default_factory=dict, repr=False)  # old refresh: grant
    issuer: str = "fake-oauth"  # the base URL once served: the id_token's `iss`
    # The app may run in its own thread (serve_in_thread) while the test calls approve() etc.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- what a test does -------------------------------------------------------------------

    def approve(self, user_code: str) -> None:
        self._device_by_user_code(user_code).status = "approved"

    def deny(self, user_code: str) -> None:
        self._device_by_user_code(user_code).status = "denied"

    def expire(self, device_code: str) -> None:
        with self._lock:
            self._devices[device_code].status = "expired"

    def revoke_all(self) -> None:
        """What an admin revoking the app's consent does: every token dies at once."""
        with self._lock:
            for token in (*self._access.values(), *self._refresh.values()):
                token.revoked = True

    def reset(self) -> None:
        """Forget every code, token and record, and the test switches (slow_down_next,
        authorize_mode), keeping the configuration: for a provider shared by a session."""
        fresh = State()
        with self._lock:
            for name in self.__dataclass_fields__:
                if name not in _CONFIGURATION:
                    setattr(self, name, getattr(fresh, name))

    def issue(self, scope: str = DEFAULT_SCOPE, client_id: str | None = None,
              user: str | None = None) -> dict[str, Any]:
        """The token answer of a sign-in (by `user`, default `self.user`), for tests that do
        not exercise a flow."""
        with self._lock:
            return self._tokens(client_id or self.client_id or "test-client", scope,
                                secrets.token_hex(8), user)

    def user_of(self, access_token: str) -> str | None:
        """Whom a live access token belongs to (None: not live)."""
        with self._lock:
            return self._access[access_token].user if self.is_live(access_token) else None

    # --- what a test reads ------------------------------------------------------------------

    def is_live(self, access_token: str) -> bool:
        with self._lock:
            token = self._access.get(access_token)
            return token is not None and not token.revoked and time.time() < (
                token.expires_at or 0.0)

    def live_access_tokens(self) -> list[str]:
        with self._lock:
            return [t for t in self._access if self.is_live(t)]

    def live_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [t for t, record in self._refresh.items() if not record.revoked]

    def poll_gaps(self, device_code: str) -> list[float]:
        """Seconds between successive polls of a device code."""
        times = self.polls.get(device_code, [])
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    # --- internals --------------------------------------------------------------------------

    def _device_by_user_code(self, user_code: str) -> _Device:
        wanted = user_code.upper().replace("-", "").strip()
        with self._lock:
            for device in self._devices.values():
                if device.user_code.replace("-", "") == wanted:
                    return device
        raise KeyError(f"no device authorization with user code {user_code!r}")

    def _tokens(self, client_id: str, scope: str, grant: str,
                user: str | None = None) -> dict[str, Any]:
        user = user or self.user
        access, refresh = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        now = time.time()
        self._access[access] = _Token(user, client_id, scope, grant, now + self.access_ttl)
        self._refresh[refresh] = _Token(user, client_id, scope, grant, None)
        self.issued.append(access)
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": int(self.access_ttl), "refresh_token": refresh, "scope": scope,
                "id_token": self._id_token(user, client_id, now)}

    def _id_token(self, user: str, client_id: str, now: float) -> str:
        header = {"alg": "none", "typ": "JWT"}
        claims = {"iss": self.issuer, "aud": client_id, "sub": _subject(user),
                  "preferred_username": user, "email": user, "email_verified": True,
                  "iat": int(now), "exp": int(now + self.access_ttl)}
        # Unsigned: `alg` none has an empty signature part, hence the trailing dot.
        return ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims)) + "."

    def _revoke_grant(self, grant: str) -> None:
        for token in (*self._access.values(), *self._refresh.values()):
            if token.grant == grant:
                token.revoked = True


def _subject(user: str) -> str:
    """A stable opaque `sub`, as providers give one."""
    return hashlib.sha256(user.encode()).hexdigest()[:21]


def _error(error: str, description: str | None = None, status: int = 400,
           **headers: str) -> web.Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return web.json_response(body, status=status,
                             headers={"Cache-Control": "no-store", **headers})


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = decoded.partition(":")
    # RFC 6749 §2.3.1: both halves are form-urlencoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


def make_app(state: State) -> web.Application:
    app = web.Application()

    async def form_of(request: web.Request) -> dict[str, str] | None:
        """The form body: RFC 6749 endpoints take application/x-www-form-urlencoded only."""
        if request.content_type != "application/x-www-form-urlencoded":
            return None
        return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}

    def client_of(request: web.Request, form: dict[str, str],
                  secret_needed: bool) -> tuple[str | None, web.Response | None]:
        """The authenticated client_id, or the error answer (RFC 6749 §2.3, §5.2)."""
        basic = _basic_credentials(request)
        if basic is not None and "client_secret" in form:
            return None, _error("invalid_request", "more than one client authentication method")
        client_id, secret = basic if basic is not None else (
            form.get("client_id"), form.get("client_secret"))
        if basic is not None and form.get("client_id") not in (None, client_id):
            return None, _error("invalid_request", "client_id differs from the Basic credentials")
        challenge = {"WWW-Authenticate": 'Basic realm="fake-oauth"'} if basic else {}
        if not client_id:
            return None, _error("invalid_client", "client authentication failed", 401, **challenge)
        if state.client_id is not None and client_id != state.client_id:
            return None, _error("invalid_client", "unknown client", 401, **challenge)
        if secret_needed and state.client_secret is not None and secret != state.client_secret:
            return None, _error("invalid_client", "client authentication failed", 401, **challenge)
        return client_id, None

    def tokens(answer: dict[str, Any]) -> web.Response:
        return web.json_response(answer, headers={"Cache-Control": "no-store",
                                                  "Pragma": "no-cache"})

    async def device(request: web.Request) -> web.Response:
        form = await form_of(request)
        if form is None:
            return _error("invalid_request", "expected application/x-www-form-urlencoded")
        client_id, failure = client_of(request, form, secret_needed=False)
        if failure is not None:
            return failure
        assert client_id is not None
        letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
        user_code = f"{letters[:4]}-{letters[4:]}"
        device_code = secrets.token_urlsafe(32)
        with state._lock:
            state._devices[device_code] = _Device(
                device_code, user_code, client_id, form.get("scope") or DEFAULT_SCOPE,
                time.time() + state.device_ttl, state.interval)
        base = f"{request.scheme}://{request.host}"
        return web.json_response({
            "device_code": device_code, "user_code": user_code,
            "verification_uri": f"{base}/activate",
            "verification_uri_complete": f"{base}/activate?{urlencode({'user_code': user_code})}",
            "expires_in": int(state.device_ttl), "interval": state.interval,
        }, headers={"Cache-Control": "no-store"})

    def device_grant(client_id: str, form: dict[str, str]) -> web.Response:
        device_code, now = form.get("device_code", ""), time.monotonic()
        times = state.polls.setdefault(device_code, [])
        found = state._devices.get(device_code)
        if times and found is not None and now - times[-1] < found.interval - 0.01:
            state.early_polls[device_code] = state.early_polls.get(device_code, 0) + 1
        times.append(now)
        if found is None or found.client_id != client_id:
            return _error("invalid_grant", "unknown device_code")
        if found.status == "pending" and time.time() >= found.expires_at:
            found.status = "expired"
        if found.status == "expired":
            return _error("expired_token", "the device code has expired")
        if found.status == "denied":
            return _error("access_denied", "the user denied the request")
        if found.status == "used":
            return _error("invalid_grant", "the device code was already exchanged")
        if found.status == "pending":
            if state.slow_down_next > 0:
                state.slow_down_next -= 1
                found.interval += 5  # RFC 8628 §3.5: the client must wait 5 s more from now on
                return _error("slow_down", f"poll at most every {found.interval} s")
            return _error("authorization_pending")
        found.status = "used"
        return tokens(state._tokens(client_id, found.scope, secrets.token_hex(8)))

    def code_grant(client_id: str, form: dict[str, str]) -> web.Response:
        code = state._codes.get(form.get("code", ""))
        if code is None or code.client_id != client_id:
            return _error("invalid_grant", "unknown authorization code")
        if code.used:
            # RFC 6749 §4.1.2: a replayed code also revokes what the first exchange issued.
            state._revoke_grant(code.grant)
            return _error("invalid_grant", "the authorization code was already used")
        if time.time() >= code.expires_at:
            return _error("invalid_grant", "the authorization code has expired")
        if form.get("redirect_uri") != code.redirect_uri:
            return _error("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier")
        if not verifier:
            return _error("invalid_request", "code_verifier is required (PKCE)")
        code.used = True  # a wrong verifier burns the code too, as real servers do
        if s256(verifier) != code.challenge:
            return _error("invalid_grant", "code_verifier does not match the code_challenge")
        return tokens(state._tokens(client_id, code.scope, code.grant))

    def refresh_grant(client_id: str, form: dict[str, str]) -> web.Response:
        presented = form.get("refresh_token", "")
        if presented in state._rotated:
            return _error("invalid_grant", "the refresh token was already used (rotated)")
        record = state._refresh.get(presented)
        if record is None or record.client_id != client_id:
            return _error("invalid_grant", "unknown refresh token")
        if record.revoked:
            return _error("invalid_grant", "the refresh token has been revoked")
        scope = form.get("scope") or record.scope
        if not set(scope.split()) <= set(record.scope.split()):
            return _error("invalid_scope", "a refresh cannot widen the granted scope")
        # Rotation: the presented token is spent; the answer carries its successor.
        del state._refresh[presented]
        state._rotated[presented] = record.grant
        state.refreshes += 1
        return tokens(state._tokens(client_id, scope, record.grant, record.user))

    async def token(request: web.Request) -> web.Response:
        form = await form_of(request)
        if form is None:
            return _error("invalid_request", "expected application/x-www-form-urlencoded")
        state.token_requests.append(
            {k: ("***" if k == "client_secret" else v) for k, v in form.items()})
        client_id, failure = client_of(request, form, secret_needed=True)
        if failure is not None:
            return failure
        assert client_id is not None
        grant_type = form.get("grant_type")
        with state._lock:
            if grant_type == DEVICE_GRANT:
                return device_grant(client_id, form)
            if grant_type == "authorization_code":
                return code_grant(client_id, form)
            if grant_type == "refresh_token":
                return refresh_grant(client_id, form)
        return _error("unsupported_grant_type", f"grant_type {grant_type!r}")

    async def authorize(request: web.Request) -> web.Response:
        query = dict(request.query)
        state.authorize_requests.append(query)
        client_id, redirect_uri = query.get("client_id"), query.get("redirect_uri")
        # RFC 6749 §4.1.2.1: without a trustworthy client and redirect URI, never redirect.
        if not client_id or (state.client_id is not None and client_id != state.client_id):
            return web.Response(status=400, text="unknown client_id")
        if not redirect_uri:
            return web.Response(status=400, text="redirect_uri is required")

        def back(**params: str) -> web.Response:
            if "state" in query:
                params["state"] = query["state"]
            joiner = "&" if "?" in redirect_uri else "?"
            return web.Response(status=302, headers={
                "Location": f"{redirect_uri}{joiner}{urlencode(params)}"})

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        challenge = query.get("code_challenge")
        if not challenge:
            return back(error="invalid_request", error_description="code_challenge required")
        if query.get("code_challenge_method") != "S256":
            return back(error="invalid_request",
                        error_description="transform algorithm not supported")
        if state.authorize_mode == "deny":
            return back(error="access_denied", error_description="the user denied consent")
        code = secrets.token_urlsafe(24)
        with state._lock:
            state._codes[code] = _Code(client_id, redirect_uri, challenge,
                                       query.get("scope") or DEFAULT_SCOPE, time.time() + 600,
                                       secrets.token_hex(8))
        return back(code=code)

    async def introspect(request: web.Request) -> web.Response:
        body = await request.text()
        state.introspections += 1
        state.introspection_requests.append({
            "method": request.method, "path": request.path_qs,
            "headers": dict(request.headers), "body": body})
        # Accept every way Dovecot's introspection_mode can send it: a `token` form field
        # (post), the token appended to the URL (get), or a Bearer header (auth).
        form = await form_of(request) if request.method == "POST" else None
        presented = (form or {}).get("token") or request.query.get("token") \
            or request.query.get("access_token")
        header = request.headers.get("Authorization", "")
        if not presented and header.lower().startswith("bearer "):
            presented = header[7:].strip()
        with state._lock:
            record = state._access.get(presented or "")
            if record is None or not state.is_live(presented or ""):
                return web.json_response({"active": False})
            return web.json_response({
                "active": True, "username": record.user, "email": record.user,
                "sub": _subject(record.user), "scope": record.scope,
                "client_id": record.client_id, "token_type": "Bearer",
                "exp": int(record.expires_at or 0)})

    async def revoke(request: web.Request) -> web.Response:
        form = await form_of(request)
        if form is None:
            return _error("invalid_request", "expected application/x-www-form-urlencoded")
        _client, failure = client_of(request, form, secret_needed=True)
        if failure is not None:
            return failure
        presented = form.get("token", "")
        state.revoked.append(presented)
        with state._lock:
            if presented in state._refresh:
                # RFC 7009 §2.1: revoking a refresh token ends its access tokens too.
                state._revoke_grant(state._refresh[presented].grant)
            elif presented in state._access:
                state._access[presented].revoked = True
        return web.Response(status=200)  # RFC 7009 §2.2: unknown tokens are no error

    async def userinfo(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        user = state.user_of(header[7:].strip()) if header.lower().startswith("bearer ") else None
        if user is None:
            return web.json_response({"error": "invalid_token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return web.json_response({"sub": _subject(user), "email": user,
                                  "preferred_username": user, "email_verified": True})

    async def activate(request: web.Request) -> web.Response:
        """The verification page a user would open; POST action=approve|deny decides."""
        if request.method == "POST":
            form = await form_of(request) or {}
            decide = state.deny if form.get("action") == "deny" else state.approve
            try:
                decide(form.get("user_code", ""))
            except KeyError:
                return web.Response(status=400, text="unknown code")
            return web.Response(text="You may close this window.")
        code = request.query.get("user_code", "")
        return web.Response(content_type="text/html", text=(
            "<form method=post><input name=user_code value='" + "".join(
                c for c in code if c in string.ascii_letters + "-") + "'>"
            "<button name=action value=approve>Allow</button>"
            "<button name=action value=deny>Deny</button></form>"))

    async def metadata(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.json_response({
            "issuer": base, "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "device_authorization_endpoint": f"{base}/device",
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke", "userinfo_endpoint": f"{base}/userinfo",
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT],
            "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                      "client_secret_basic", "none"],
            "scopes_supported": DEFAULT_SCOPE.split()})

    app.router.add_post("/device", device)
    app.router.add_post("/token", token)
    app.router.add_get("/authorize", authorize)
    app.router.add_route("*", "/introspect", introspect)
    app.router.add_post("/revoke", revoke)
    app.router.add_get("/userinfo", userinfo)
    app.router.add_route("*", "/activate", activate)
    app.router.add_get("/.well-known/openid-configuration", metadata)
    app.router.add_get("/.well-known/oauth-authorization-server", metadata)
    return app


async def serve(state: State) -> tuple[web.AppRunner, str]:
    """Start the provider on a free loopback port; returns the runner and its base URL."""
    from peers import serve_app

    runner, url = await serve_app(make_app(state))
    state.issuer = url
    return runner, url


def serve_in_thread(state: State) -> tuple[str, Callable[[], None]]:
    """The provider on its own event loop in a daemon thread, so that it can outlive tests
    (Dovecot is configured with its introspection URL before it starts). Returns the base URL
    and a function that stops it."""
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["runner"], started["url"] = loop.run_until_complete(serve(state))
        except BaseException as error:  # handed to the starting thread, raised there
            started["error"] = error
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(started["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="fake-oauth", daemon=True)
    thread.start()
    ready.wait(10)
    if "error" in started:
        raise started["error"]

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    return started["url"], stop


@contextmanager
def running(state: State) -> Iterator[str]:
    """`with running(state) as base_url:` the provider in a thread for the block's duration."""
    url, stop = serve_in_thread(state)
    try:
        yield url
    finally:
        stop()


def xoauth2(user: str, token: str) -> bytes:
    """The SASL XOAUTH2 initial response (before base64), as Gmail and Outlook define it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


@dataclass
class OAuthSink:
    """An aiosmtpd handler: `AUTH XOAUTH2` with a live token of `state`, for the user it was
    issued to, is the only way in; MAIL before it is refused. A refusal follows Gmail: a 334
    challenge carrying a base64 JSON error, then 535 5.7.8 after the client's (empty) answer."""

    state: State
    messages: list[Any] = field(default_factory=list)  # aiosmtpd Envelopes
    logins: list[tuple[str, str]] = field(default_factory=list)  # (user, token) that got in
    refusals: list[tuple[str, str]] = field(default_factory=list)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        # aiosmtpd always offers its built-in PLAIN and LOGIN; this server takes tokens only.
        return [("250-AUTH XOAUTH2" if line.startswith("250-AUTH ") else line)
                for line in responses]

    async def handle_AUTH(self, server: Any, session: Any, envelope: Any,
                          args: list[str]) -> Any:
        from aiosmtpd.smtp import MISSING

        if args and args[0].upper() != "XOAUTH2":
            return "504 5.5.4 Unrecognized authentication type"
        return MISSING  # on to auth_XOAUTH2

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01")
                      if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer[7:] if bearer[:7].lower() == "bearer " else ""
        owner = self.state.user_of(token) if token else None
        if owner is not None and owner.lower() == user.lower():
            self.logins.append((user, token))
            return AuthResult(success=True, auth_data=user)
        self.refusals.append((user, token))
        error = json.dumps({"status": "401", "schemes": "bearer",
                            "scope": "https://mail.example.test/"})
        if await server.challenge_auth(error) is MISSING:
            return AuthResult(success=False, handled=True)  # the client aborted with "*"
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication Required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"
