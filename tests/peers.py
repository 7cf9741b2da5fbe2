"""Real peers for the connector tests: a throwaway Dovecot (IMAP + LMTP) on loopback and an
aiosmtpd sink. A peer that is not installed skips its tests locally, and fails them under
CI=true (CI installs every peer)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

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
    self-signed certificate for localhost: IMAPS on `imaps_port`, STARTTLS on `imap_port`."""

    root: Path
    tls: bool = False
    imap_port: int = field(default_factory=free_port)
    imaps_port: int = field(default_factory=free_port)
    lmtp_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

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

    def client(self) -> Any:
        import imapclient

        client = imapclient.IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10)
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

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
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


def start_dovecot(*, tls: bool = False) -> Dovecot:
    if not shutil.which("dovecot"):
        missing_peer("Dovecot is not installed: apt-get install -y dovecot-imapd dovecot-lmtpd")
    if tls and not shutil.which("openssl"):
        missing_peer("openssl is needed to make the test certificate: apt-get install openssl")
    # Short (sockets live under it) and traversable by Dovecot's own users.
    root = Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))
    root.chmod(0o755)
    server = Dovecot(root, tls=tls)
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
