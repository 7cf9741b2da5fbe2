"""First sync of a mailbox from a real Dovecot: messages per second, end to end.

    python bench/email_sync.py [--messages 10000] [--batch 500]

Starts a throwaway Dovecot on loopback (as the tests do: `apt-get install dovecot-imapd
dovecot-lmtpd`), fills its INBOX with a realistic corpus (`bench/corpus.py`: names, threads,
HTML parts, attachments, several languages), then times `desk sync --once`'s path — IMAP
`UID FETCH BODY.PEEK[]` in batches, MIME parsing, identity and ticket routing, and the store's
writes — into a fresh SQLite store. Prints messages/s and the store's size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from peers import PASSWORD, USER, start_dovecot  # noqa: E402

from bench.corpus import generate, write_maildir  # noqa: E402
from connectors.email import EmailConnector  # noqa: E402
from desk.config import EmailConnectorSettings  # noqa: E402
from desk.ingest import IngestOptions  # noqa: E402
from desk.store import Store  # noqa: E402
from desk.sync import fetch_into_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    server = start_dovecot()
    work = Path(tempfile.mkdtemp(prefix="desk-bench-"))
    try:
        corpus = generate(args.messages)
        inbox = server.root / "mail" / USER
        write_maildir(inbox, corpus)  # Dovecot indexes a Maildir written behind its back
        if os.geteuid() == 0:
            for path in [inbox, *inbox.rglob("*")]:
                shutil.chown(path, "nobody", "nogroup")
        size = sum(len(raw) for raw in corpus)
        os.environ["DESK_BENCH_MAIL_PASSWORD"] = PASSWORD
        settings = EmailConnectorSettings.model_validate({
            "name": "mail", "type": "email", "imap_host": "127.0.0.1",
            "imap_port": server.imap_port, "imap_tls": "none", "username": USER,
            "password": "env:DESK_BENCH_MAIL_PASSWORD", "smtp_host": "127.0.0.1",
            "smtp_tls": "none", "from_address": USER, "batch_size": args.batch,
        })
        store = Store(f"sqlite:///{work}/desk.db")
        connector = EmailConnector(settings)

        async def first_sync() -> int:
            try:
                return (await fetch_into_store(store, connector, IngestOptions())).stored
            finally:
                await connector.aclose()

        started = time.perf_counter()
        stored = asyncio.run(first_sync())
        took = time.perf_counter() - started
        db_size = (work / "desk.db").stat().st_size
        print(f"first sync of {args.messages:,} messages ({size / 1e6:.1f} MB) from Dovecot, "
              f"batches of {args.batch}: {stored:,} stored in {took:.1f} s = "
              f"{stored / took:,.0f} messages/s; store {db_size / 1e6:.1f} MB")
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
