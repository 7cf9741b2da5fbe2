"""Email: IMAP in (imapclient, IDLE when the server has it), SMTP out (smtplib).

imapclient and smtplib block, so every call runs in a worker thread (`asyncio.to_thread`);
the event loop never waits on the network. The cursor is per folder,
`{"folders": {"INBOX": {"uidvalidity": 1795345987, "last_uid": 1234}}}`: a batch's cursor
covers exactly the messages in it, so an interrupted first sync resumes where it stopped.
A changed UIDVALIDITY reads the folder again from the start; the store drops what it already
holds (Message-ID, or a hash of the raw bytes when there is none).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.utils
import hashlib
import logging
import math
import smtplib
import socket
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError

from connectors.base import (
    FLAG_TRUNCATED,
    Batch,
    DeliveryUnknown,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    Receipt,
    SignInNeeded,
    TokenProvider,
    TransientError,
)
from connectors.mime import parse_email

log = logging.getLogger(__name__)

# RFC 2177: servers may drop an IDLE after 30 minutes; renew well before.
IDLE_RENEW_SECONDS = 25 * 60
TIMEOUT_SECONDS = 60
NETWORK_ERRORS = (IMAPClientError, OSError, ssl.SSLError, socket.timeout, EOFError)


class EmailConnector:
    """One mailbox: its IMAP folders in, its SMTP server out."""

    channel = "email"

    def __init__(self, settings: Any, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.name: str = settings.name
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.own_addresses = tuple(
            address.lower()
            for address in (email.utils.parseaddr(settings.from_address)[1], settings.username)
            if "@" in address
        )
        # Set by desk ([store] max_message_bytes): a larger message is read only up to it.
        self.max_message_bytes: int | None = None
        # Set by desk when the mailbox signs in with OAuth (auth = "oauth2").
        self.token_provider: TokenProvider | None = None
        # When each session should sign in afresh; gone with the session.
        self._renew_at: weakref.WeakKeyDictionary[imapclient.IMAPClient, float] = (
            weakref.WeakKeyDictionary())
        self._client: imapclient.IMAPClient | None = None
        self._idler: imapclient.IMAPClient | None = None
        self._idle_lock = threading.Lock()
        self._closing = False
        self._idle_supported = True

    # ---- IMAP -----------------------------------------------------------------------------

    def _connect(self) -> imapclient.IMAPClient:
        settings = self.settings
        tls = settings.imap_tls
        # A mailbox waiting for a new sign-in fails here, before any connection is opened.
        first = self._token_provider()(False) if settings.auth == "oauth2" else None
        client: imapclient.IMAPClient | None = None
        try:
            client = imapclient.IMAPClient(
                settings.imap_host, port=settings.imap_port, ssl=tls == "ssl",
                ssl_context=self.ssl_context if tls == "ssl" else None, timeout=TIMEOUT_SECONDS,
            )
            if tls == "starttls":
                client.starttls(self.ssl_context)
            self._renew_at[client] = self._login(client, first)
        except imapclient.exceptions.LoginError as error:
            _shutdown(client)
            # The server's words, never the password or the token.
            raise PermanentError(f"IMAP login as {settings.username} refused: "
                                 f"{_text(error)}") from None
        except NETWORK_ERRORS as error:
            _shutdown(client)
            raise TransientError(f"IMAP {settings.imap_host}:{settings.imap_port}: "
                                 f"{_text(error)}") from None
        except BaseException:
            _shutdown(client)
            raise
        return client

    def _login(self, client: imapclient.IMAPClient, first: tuple[str, float] | None) -> float:
        """Sign in; returns when the session should be renewed (its access token's end is
        near), or infinity for a password login."""
        settings = self.settings
        if first is None:
            client.login(settings.username, settings.password.reveal())
            return math.inf
        login = (client.oauthbearer_login if b"AUTH=OAUTHBEARER" in client.capabilities()
                 else client.oauth2_login)
        expires = self._with_token(lambda token: login(settings.username, token),
                                   imapclient.exceptions.LoginError, first)
        return _renewal(expires)

    def _with_token(self, sign_in: Callable[[str], object], refused: type[Exception],
                    first: tuple[str, float] | None = None) -> float:
        """Sign in with the current access token and, if the server refuses it (the provider
        may have revoked it early), once more with a fresh one. Returns the token's end."""
        token, expires = first or self._token_provider()(False)
        try:
            sign_in(token)
        except refused:
            token, expires = self._token_provider()(True)
            sign_in(token)
        return expires

    def _token_provider(self) -> TokenProvider:
        if self.token_provider is None:
            raise PermanentError(f"{self.name} signs in with OAuth, but no token source was "
                                 "given to it")
        return self.token_provider

    def ready(self) -> bool:
        """Whether a reply can be tried now: not while an OAuth sign-in is needed (the reply
        then waits, queued, rather than spending its attempts)."""
        if self.settings.auth != "oauth2" or self.token_provider is None:
            return True
        signed_in = getattr(self.token_provider, "signed_in", None)
        return signed_in is None or bool(signed_in())

    def _imap(self, *, renew: bool = False) -> imapclient.IMAPClient:
        """The reading session. With `renew` (only where a folder is selected next), one whose
        token is ending is replaced first: servers end such sessions."""
        if renew and self._client is not None and time.time() >= self._renew_at.get(
                self._client, math.inf):
            self._drop()
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        _shutdown(client)

    def _folder_news(self, folder: str, state: Mapping[str, Any] | None) -> tuple[int, list[int]]:
        """The folder's UIDVALIDITY and the UIDs after the cursor (all of them when the
        UIDVALIDITY changed)."""
        client = self._imap(renew=True)
        selected = client.select_folder(folder, readonly=not self.settings.mark_seen)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        last_uid = 0
        if state and int(state.get("uidvalidity", -1)) == uidvalidity:
            last_uid = int(state.get("last_uid", 0))
        elif state:
            log.warning("%s: %s has a new UIDVALIDITY (%s → %s): reading it again",
                        self.name, folder, state.get("uidvalidity"), uidvalidity)
        # "n:*" always matches the newest message, even below n: filter.
        uids = [uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid]
        return uidvalidity, sorted(uids)

    def _fetch_raw(self, uids: list[int]) -> list[tuple[int, bytes, datetime | None, int]]:
        """(uid, raw, internal date, size on the server) of each message still there. A
        message over `max_message_bytes` is read only up to it (`BODY.PEEK[]<0.n>`)."""
        client = self._imap()
        limit = self.max_message_bytes
        sizes: dict[int, int] = {}
        if limit is not None:
            sizes = {uid: int(data.get(b"RFC822.SIZE") or 0)
                     for uid, data in client.fetch(uids, ["RFC822.SIZE"]).items()}
        large = {uid for uid in uids if limit is not None and sizes.get(uid, 0) > limit}
        whole = [uid for uid in uids if uid not in large]
        found = dict(client.fetch(whole, ["BODY.PEEK[]", "INTERNALDATE"])) if whole else {}
        for uid in sorted(large):
            partial = client.fetch([uid], [f"BODY.PEEK[]<0.{limit}>", "INTERNALDATE"])
            found.update(partial)
        result = []
        for uid in uids:
            data = found.get(uid)
            if data is None:  # expunged meanwhile
                continue
            raw = data.get(b"BODY[]") or data.get(b"BODY[]<0>") or b""
            internal = data.get(b"INTERNALDATE")
            if isinstance(internal, datetime) and internal.tzinfo is None:
                internal = internal.astimezone(UTC)  # imapclient gives local naive times
            result.append((uid, raw, internal, sizes.get(uid, len(raw))))
        if self.settings.mark_seen and uids:
            client.add_flags(uids, [imapclient.SEEN])
        return result

    async def fetch(self, cursor: Mapping[str, Any] | None) -> AsyncIterator[Batch]:
        state: dict[str, Any] = copy.deepcopy(dict(cursor or {}))
        folders: dict[str, Any] = state.setdefault("folders", {})
        for folder in self.settings.folders:
            try:
                uidvalidity, uids = await asyncio.to_thread(
                    self._folder_news, folder, folders.get(folder))
            except NETWORK_ERRORS as error:
                self._drop()
                raise TransientError(f"IMAP {folder}: {_text(error)}") from None
            previous = folders.get(folder) or {}
            if previous.get("uidvalidity") != uidvalidity or folder not in folders:
                folders[folder] = {"uidvalidity": uidvalidity, "last_uid": 0}
                if not uids:
                    yield Batch([], copy.deepcopy(state))
            self.progress_total = len(uids)
            for start in range(0, len(uids), self.settings.batch_size):
                chunk = uids[start : start + self.settings.batch_size]
                try:
                    fetched = await asyncio.to_thread(self._fetch_raw, chunk)
                except NETWORK_ERRORS as error:
                    self._drop()
                    raise TransientError(f"IMAP {folder}: {_text(error)}") from None
                messages = await asyncio.to_thread(self._parse, fetched, folder)
                folders[folder] = {"uidvalidity": uidvalidity, "last_uid": chunk[-1]}
                yield Batch(messages, copy.deepcopy(state))

    progress_total = 0  # messages the current folder's sync found (for progress bars)

    def _parse(self, fetched: list[tuple[int, bytes, datetime | None, int]],
               folder: str) -> list[InboundMessage]:
        messages = []
        for uid, raw, internal, size in fetched:
            message = parse_email(raw, connector=self.name, own_addresses=self.own_addresses,
                                  received_at=internal)
            if size > len(raw):
                message.flags.add(FLAG_TRUNCATED)
                note = (f"[desk: this message is {size / 1024 / 1024:.1f} MB on the server, over"
                        f" max_message_bytes; only its first {len(raw) / 1024 / 1024:.1f} MB"
                        f" were read. The original stays in {folder} (UID {uid}),"
                        f" Message-ID {message.provider_id}.]")
                message.text = f"{message.text.rstrip()}\n\n{note}" if message.text else note
            messages.append(message)
        return messages

    # ---- push -----------------------------------------------------------------------------

    async def wait(self, timeout: float) -> None:
        """Return when the first folder may have new mail (IDLE), or after `timeout`; polling
        servers without IDLE (or with `idle = false`) simply wait `timeout`."""
        if not (self.settings.idle and self._idle_supported):
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.to_thread(self._idle, min(timeout, IDLE_RENEW_SECONDS))
        except NETWORK_ERRORS as error:
            self._drop_idler()
            raise TransientError(f"IMAP IDLE: {_text(error)}") from None

    def _idle(self, timeout: float) -> None:
        with self._idle_lock:
            if self._idler is not None and time.time() >= self._renew_at.get(
                    self._idler, math.inf):
                self._drop_idler()  # its token ended while we were away: never IDLE on it
            if self._idler is None:
                client = self._connect()
                if not client.has_capability("IDLE"):
                    client.logout()
                    self._idle_supported = False
                    return
                client.select_folder(self.settings.folders[0], readonly=True)
                self._idler = client
            idler = self._idler
        idler.idle()
        renew = False
        try:
            deadline = timeout
            renew_at = self._renew_at.get(idler, math.inf)
            while deadline > 0 and not self._closing:
                if time.time() >= renew_at:
                    # The token this session signed in with is ending: stop here, and the
                    # next wait starts a session with a fresh one. Mail that arrives in
                    # between is found by the fetch that follows.
                    renew = True
                    return
                step = min(deadline, 1.0)  # wake up to notice aclose()
                responses = idler.idle_check(timeout=step)
                if any(kind in (b"EXISTS", b"RECENT") for _n, kind in
                       (r[:2] for r in responses if isinstance(r, tuple) and len(r) >= 2)):
                    return
                deadline -= step
        finally:
            try:
                idler.idle_done()
            except NETWORK_ERRORS:
                self._drop_idler()
                raise
            if renew:
                with self._idle_lock:
                    self._drop_idler()

    def _drop_idler(self) -> None:
        idler, self._idler = self._idler, None
        _shutdown(idler)

    # ---- SMTP -----------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        mail = self.compose(message)
        await asyncio.to_thread(self._smtp_send, mail, message.to)
        if self.settings.sent_folder:
            try:
                await asyncio.to_thread(self._append_sent, mail)
            except Exception as error:  # the reply went out; the copy is a courtesy
                log.warning("%s: could not file the reply in %s: %s", self.name,
                            self.settings.sent_folder, _text(error))
        # Stored bare, as parse_email stores the customers' Message-IDs, so their answers'
        # In-Reply-To finds it.
        return Receipt(provider_id=mail["Message-ID"].strip().strip("<>"), status="sent",
                       sent_at=datetime.now(UTC))

    def compose(self, message: OutboundMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.settings.from_address
        mail["To"] = email.utils.formataddr((message.to_name or "", message.to))
        mail["Subject"] = message.subject or ""
        mail["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = self.message_id_for(message)
        in_reply_to = _bracketed(message.in_reply_to) if message.in_reply_to else None
        references = [_bracketed(ref) for ref in message.references if ref.strip("<> ")]
        if in_reply_to:
            mail["In-Reply-To"] = in_reply_to
            if in_reply_to not in references:
                references.append(in_reply_to)
        if references:
            mail["References"] = " ".join(references)
        mail["Auto-Submitted"] = "no"
        mail.set_content(message.text)
        return mail

    def message_id_for(self, message: OutboundMessage) -> str:
        """The same id every time desk sends this reply: a retry after a crash neither starts
        a second thread at the customer's nor hides from `reconcile`."""
        domain = email.utils.parseaddr(self.settings.from_address)[1].rpartition("@")[2]
        token = hashlib.sha256(f"{self.name}:{message.message_id}".encode()).hexdigest()[:16]
        return f"<desk.{message.message_id}.{token}@{domain or 'desk.invalid'}>"

    async def reconcile(self, message: OutboundMessage) -> Receipt | None:
        """Was this reply sent before a crash? Found in the Sent folder: yes. Otherwise desk
        cannot know (the SMTP server may have taken it just before the crash)."""
        message_id = self.message_id_for(message)
        if self.settings.sent_folder:
            try:
                found = await asyncio.to_thread(self._in_sent, message_id)
            except NETWORK_ERRORS as error:
                raise TransientError(f"IMAP {self.settings.sent_folder}: {_text(error)}") from None
            if found:
                return Receipt(provider_id=message_id.strip("<>"), status="sent")
        raise DeliveryUnknown(
            "desk stopped while sending this email and cannot tell whether it went out "
            f"(it is not in {self.settings.sent_folder or 'a Sent folder'}): check, then retry")

    def _in_sent(self, message_id: str) -> bool:
        client = self._connect()
        try:
            if not client.folder_exists(self.settings.sent_folder):
                return False
            client.select_folder(self.settings.sent_folder, readonly=True)
            return bool(client.search(["HEADER", "Message-ID", message_id]))
        finally:
            client.logout()

    def _smtp_send(self, mail: EmailMessage, to: str) -> None:
        settings = self.settings
        try:
            if settings.smtp_tls == "ssl":
                server: smtplib.SMTP = smtplib.SMTP_SSL(
                    settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS,
                    context=self.ssl_context)
            else:
                server = smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                                      timeout=TIMEOUT_SECONDS)
            with server:
                if settings.smtp_tls == "starttls":
                    server.starttls(context=self.ssl_context)
                # Without EHLO first, has_extn knows no extension: over SSL or plain SMTP the
                # login would be skipped and the mail sent unauthenticated (or refused).
                server.ehlo_or_helo_if_needed()
                if settings.auth == "oauth2":
                    self._with_token(lambda token: server.auth(
                        "XOAUTH2", _xoauth2(settings.smtp_username, token)),
                        smtplib.SMTPAuthenticationError)
                elif settings.smtp_password is not None and server.has_extn("auth"):
                    server.login(settings.smtp_username, settings.smtp_password.reveal())
                refused = server.send_message(mail, to_addrs=[to])
        except SignInNeeded as error:
            # The reply waits for the admin to sign in again; it is not the reply's fault.
            raise TransientError(error.reason) from None
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            raise _smtp_error(code, reply) from None
        except smtplib.SMTPResponseException as error:
            raise _smtp_error(error.smtp_code, error.smtp_error) from None
        except (smtplib.SMTPException, OSError) as error:
            raise TransientError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: "
                                 f"{_text(error)}") from None
        if refused:
            code, reply = next(iter(refused.values()))
            raise _smtp_error(code, reply)

    def _append_sent(self, mail: EmailMessage) -> None:
        client = self._connect()
        try:
            if not client.folder_exists(self.settings.sent_folder):
                client.create_folder(self.settings.sent_folder)
            client.append(self.settings.sent_folder, mail.as_bytes(), flags=[imapclient.SEEN])
        finally:
            client.logout()

    async def aclose(self) -> None:
        self._closing = True
        await asyncio.to_thread(self._close_all)

    def _close_all(self) -> None:
        self._drop()
        with self._idle_lock:
            self._drop_idler()


def _renewal(expires: float) -> float:
    """When a session signed in with a token ending at `expires` should start afresh: a fifth
    of the token's remaining life (at most 30 s) before its end."""
    left = max(expires - time.time(), 0.0)
    return expires - min(30.0, left / 5)


def _xoauth2(user: str, token: str) -> Callable[..., str]:
    """smtplib's auth object for XOAUTH2: the initial response, then an empty answer to the
    server's error challenge, so the server ends the exchange with its 535."""

    def answer(challenge: bytes | None = None) -> str:
        return "" if challenge is not None else f"user={user}\x01auth=Bearer {token}\x01\x01"

    return answer


def _shutdown(client: imapclient.IMAPClient | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):  # already broken: nothing to tidy
            client.shutdown()


def _bracketed(message_id: str) -> str:
    """A Message-ID as headers write it: desk stores them without the angle brackets."""
    return f"<{message_id.strip().strip('<>')}>"


def _smtp_error(code: int, reply: bytes | str) -> TransientError | PermanentError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    reason = f"SMTP {code} {text}".strip()
    if 400 <= code < 500:
        return TransientError(reason, code=str(code))
    return PermanentError(reason, code=str(code))


def _text(error: BaseException) -> str:
    return str(error).strip() or type(error).__name__


def from_settings(settings: Any) -> EmailConnector:
    return EmailConnector(settings)
