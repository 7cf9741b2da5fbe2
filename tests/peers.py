"""Real peers for the connector tests: a throwaway Dovecot (IMAP + LMTP) on loopback and an
aiosmtpd sink. A peer that is not installed skips its tests locally, and fails them under
CI=true (CI installs every peer).

`start_dovecot(oauth_introspection_url=...)` gives a Dovecot that signs in with OAuth 2.0 bearer
tokens only (XOAUTH2, OAUTHBEARER), each checked at that RFC 7662 introspection URL (see
tests/fake_oauth.py); its test helpers (`append`, `reset`) then work through doveadm, since
no password login exists."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

# `desk` as a user runs it, in a child process (from this checkout, without a console script).
DESK = [sys.executable, "-c", "import sys; from desk.cli import main; sys.exit(main())"]

USER = "support@example.test"
PASSWORD = "secret"

DOVECOT_CONF = """\
instance_name = desk-test-{imap_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
default_internal_group = dovecot
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"""


def missing_peer(reason: str) -> None:
    """Skip locally; under CI a missing peer is a failure, never a silent skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must provide this peer: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_banner(port: int, banner: bytes, timeout: float = 10.0) -> None:
    """Wait for the service's greeting: an open port alone may close again at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(64).startswith(banner):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answered {banner!r} on port {port}")
        time.sleep(0.02)


# PEERS.md 1b: the oauth2 passdb asks the provider about every token; there is no password.
# The static userdb would check that a user exists (for LMTP and doveadm) by a passdb lookup,
# which the oauth2 passdb cannot answer ("All password databases were skipped"; Dovecot 2.3.19
# also skips a `mechanisms = none` passdb there), so users are listed in a passwd-file userdb.
OAUTH_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
"""

# A refused token is answered after auth_failure_delay (2 s). On top of that, Dovecot makes
# every login from an IP that failed recently wait 4, 8, then 15 s, even with a good token:
# over a test session that adds up and outlasts client timeouts. Without access to anvil's
# penalty socket, the auth process does without (login_trusted_networks does not help: 2.3.19
# sends no `no-penalty` for trusted clients).
NO_AUTH_PENALTY = """\
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""

OAUTH_USERDB = """\
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = uid=nobody gid=nogroup home={d}/mail/%u
}}
"""

OAUTH2_CONF_EXT = """\
introspection_url = {url}
introspection_mode = post
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""

TLS_CONF = """
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
service imap-login {{
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
"""


@dataclass
class Dovecot:
    """A Dovecot of our own: config, users and Maildirs in a temp dir. With `tls`, it has a
    self-signed certificate for localhost: IMAPS on `imaps_port`, STARTTLS on `imap_port`.
    With `oauth_introspection_url`, logins are by bearer token only (see OAUTH_PASSDB)."""

    root: Path
    tls: bool = False
    imap_port: int = field(default_factory=free_port)
    imaps_port: int = field(default_factory=free_port)
    lmtp_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    oauth_introspection_url: str | None = None

    @property
    def ca_file(self) -> Path:
        return self.root / "cert.pem"

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    def setup(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root / "mail", "nobody", "nogroup")
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        conf = DOVECOT_CONF.format(d=self.root, imap_port=self.imap_port,
                                   lmtp_port=self.lmtp_port)
        if self.oauth_introspection_url is not None:
            conf = self._oauth(conf)
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", str(self.root / "key.pem"), "-out", str(self.ca_file)],
                check=True, capture_output=True)
            conf = conf.replace("ssl = no\n", "").replace(
                "disable_plaintext_auth = no", "disable_plaintext_auth = yes")
            conf += TLS_CONF.format(d=self.root, imaps_port=self.imaps_port)
        self.conf.write_text(conf)

    @property
    def oauth(self) -> bool:
        return self.oauth_introspection_url is not None

    def _oauth(self, conf: str) -> str:
        (self.root / "oauth2.conf.ext").write_text(
            OAUTH2_CONF_EXT.format(url=self.oauth_introspection_url))
        (self.root / "users").write_text(f"{USER}::::::\n")
        password_passdb = conf[conf.index("passdb {"):conf.index("userdb {")]
        static_userdb = conf[conf.index("userdb {"):conf.index("service imap-login {")]
        return conf.replace(
            "auth_mechanisms = plain login", "auth_mechanisms = xoauth2 oauthbearer"
        ).replace(password_passdb, OAUTH_PASSDB.format(d=self.root)).replace(
            static_userdb, OAUTH_USERDB.format(d=self.root)) + NO_AUTH_PENALTY

    def start(self) -> None:
        self.process = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)])
        wait_banner(self.imap_port, b"* OK")
        wait_banner(self.lmtp_port, b"220")
        if self.tls:
            wait_port(self.imaps_port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
            self.process = None

    def doveadm(self, *args: str) -> str:
        return subprocess.run(["doveadm", "-c", str(self.conf), *args], check=True,
                              capture_output=True, text=True).stdout

    def client(self, token: str | None = None) -> Any:
        """An IMAPClient logged in with the password, or with `token` by XOAUTH2 (the only
        way into an OAuth Dovecot)."""
        import imapclient

        client = imapclient.IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10)
        if token is not None:
            client.oauth2_login(USER, token)
        else:
            client.login(USER, PASSWORD)
        return client

    def client_tls(self) -> Any:
        import ssl

        import imapclient

        context = ssl.create_default_context(cafile=str(self.ca_file))
        client = imapclient.IMAPClient("127.0.0.1", port=self.imaps_port, ssl=True,
                                       ssl_context=context, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def folders(self) -> list[str]:
        return self.doveadm("mailbox", "list", "-u", USER).splitlines()

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        if self.oauth:  # no password to log in with: doveadm needs none
            if folder not in self.folders():
                self.doveadm("mailbox", "create", "-u", USER, folder)
            for raw in messages:
                subprocess.run(["doveadm", "-c", str(self.conf), "save", "-u", USER, "-m", folder],
                               input=raw, check=True, capture_output=True)
            return
        client = self.client()
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in messages:
                client.append(folder, raw)
        finally:
            client.logout()

    def reset(self) -> None:
        """Every folder emptied and removed but INBOX (between tests)."""
        if self.oauth:
            # Children sort after their parent: deleting in reverse order empties parents first.
            for name in sorted(self.folders(), reverse=True):
                if name != "INBOX":
                    self.doveadm("mailbox", "delete", "-u", USER, name)
            self.doveadm("expunge", "-u", USER, "mailbox", "INBOX", "all")
            return
        client = self.client()
        try:
            for _flags, _sep, name in client.list_folders():
                if name != "INBOX":
                    client.delete_folder(name)
            client.select_folder("INBOX")
            uids = client.search(["ALL"])
            if uids:
                client.delete_messages(uids)
                client.expunge()
        finally:
            client.logout()


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def start_dovecot(*, tls: bool = False, oauth_introspection_url: str | None = None) -> Dovecot:
    """A running Dovecot; with `oauth_introspection_url` (an RFC 7662 endpoint, e.g.
    fake_oauth's base URL + "/introspect"), one that takes bearer tokens instead of passwords."""
    if not shutil.which("dovecot"):
        missing_peer("Dovecot is not installed: apt-get install -y dovecot-imapd dovecot-lmtpd")
    if tls and not shutil.which("openssl"):
        missing_peer("openssl is needed to make the test certificate: apt-get install openssl")
    # Short (sockets live under it) and traversable by Dovecot's own users.
    root = Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))
    root.chmod(0o755)
    server = Dovecot(root, tls=tls, oauth_introspection_url=oauth_introspection_url)
    server.setup()
    server.start()
    return server


def mail(
    n: int,
    *,
    sender: str = "Ana Lima <ana@example.org>",
    subject: str = "My order",
    text: str = "Hello, where is my order?",
    **headers: str,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = USER
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Mar 2026 09:00:00 +0100"
    message["Message-ID"] = f"<m{n}@example.org>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(f"{text}\n(#{n})\n")
    return message.as_bytes()


async def serve_app(app: Any) -> tuple[Any, str]:
    """Start an aiohttp app on a free loopback port; returns its runner and base URL."""
    from aiohttp import web

    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
