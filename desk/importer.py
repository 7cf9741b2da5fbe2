"""`desk import maildir|mbox PATH`: bring an existing mailbox into the store.

Parsing is the slow step (~6,000 msg/s per core with compat32), so it runs in a process pool
while the main process ingests finished batches. Re-importing the same mailbox stores nothing
new: messages are deduplicated on (connector, Message-ID or a hash of the raw bytes).
"""

from __future__ import annotations

import mailbox
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from connectors.base import InboundMessage
from connectors.mime import parse_email
from desk.ingest import IngestOptions, IngestResult, ingest
from desk.store import Store
from desk.timeutil import utcnow

BATCH = 1000
DEFAULT_CONNECTOR = "import"


class ImportError_(Exception):
    """The path is not a mailbox of the kind asked for."""


def maildir_files(path: Path) -> list[Path]:
    """Message files of a Maildir (cur/ and new/), or of a folder of .eml files."""
    if not path.is_dir():
        raise ImportError_(f"{path}: not a directory, so not a Maildir")
    folders = [path / "cur", path / "new"]
    if not any(folder.is_dir() for folder in folders):
        # Also accept a plain folder of message files (e.g. exported .eml files).
        folders = [path]
    files: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            files.extend(
                sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            )
    return files


def _parse_files(args: tuple[str, list[str], list[str]]) -> list[InboundMessage]:
    connector, paths, own = args
    received = utcnow()
    messages = []
    for name in paths:
        raw = Path(name).read_bytes()
        messages.append(
            parse_email(raw, connector=connector, own_addresses=own, received_at=received)
        )
    return messages


def _parse_blobs(args: tuple[str, list[bytes], list[str]]) -> list[InboundMessage]:
    connector, blobs, own = args
    received = utcnow()
    return [
        parse_email(raw, connector=connector, own_addresses=own, received_at=received)
        for raw in blobs
    ]


def _chunked(items: Sequence[object] | Iterable[object], size: int) -> Iterator[list[object]]:
    chunk: list[object] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _mbox_blobs(path: Path) -> Iterator[bytes]:
    if not path.is_file():
        raise ImportError_(f"{path}: not a file, so not an mbox")
    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)
    finally:
        box.close()


def import_mailbox(
    store: Store,
    kind: str,
    path: Path,
    *,
    connector: str = DEFAULT_CONNECTOR,
    own_addresses: Sequence[str] = (),
    options: IngestOptions | None = None,
    workers: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> IngestResult:
    """Import a Maildir or an mbox; `progress(done, total)` is called after each batch."""
    own = list(own_addresses)
    total: int | None
    if kind == "maildir":
        files = [str(p) for p in maildir_files(path)]
        total = len(files)
        jobs: Iterable[tuple[str, list, list[str]]] = (
            (connector, chunk, own) for chunk in _chunked(files, 250)
        )
        worker: Callable = _parse_files
    elif kind == "mbox":
        total = None
        jobs = ((connector, chunk, own) for chunk in _chunked(_mbox_blobs(path), 250))
        worker = _parse_blobs
    else:
        raise ImportError_(f"unknown mailbox kind {kind!r}; expected maildir or mbox")

    result = IngestResult()
    pending: list[InboundMessage] = []
    done = 0
    workers = workers or os.cpu_count() or 1

    def flush() -> None:
        nonlocal done
        if pending:
            result.add(ingest(store, pending, options=options))
            done += len(pending)
            pending.clear()
            if progress:
                progress(done, total)

    if workers <= 1:
        parsed_chunks: Iterable[list[InboundMessage]] = map(worker, jobs)
        for chunk in parsed_chunks:
            pending.extend(chunk)
            if len(pending) >= BATCH:
                flush()
    else:
        # A bounded window of jobs in flight keeps memory flat on a huge mbox, where
        # Executor.map would read the whole file ahead.
        with ProcessPoolExecutor(max_workers=workers) as pool:
            in_flight: deque[Future[list[InboundMessage]]] = deque()
            for job in jobs:
                in_flight.append(pool.submit(worker, job))
                if len(in_flight) >= workers * 4:
                    pending.extend(in_flight.popleft().result())
                    if len(pending) >= BATCH:
                        flush()
            while in_flight:
                pending.extend(in_flight.popleft().result())
                if len(pending) >= BATCH:
                    flush()
    flush()
    return result
