"""Attachments as an agent sees them: listed per message, saved to a folder of their choosing.

Contents live in `Blob` by SHA-256; the name a sender gave is data. Saving writes one new,
owner-only file directly inside the chosen folder, under a name made safe by
`connectors.filenames.safe_filename` (no `..`, no absolute path, no control character, no
reserved device name, at most 200 bytes), never over an existing file and never through a
symbolic link.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlmodel import Session

from connectors.filenames import safe_filename
from desk.models import Attachment, Blob, Message
from desk.private import open_private, private_dir

# A folder with this many copies of one name is not one a person browses; stop there.
_MAX_NUMBERED = 1000


class AttachmentError(Exception):
    """An attachment that cannot be saved, said so an agent understands why."""


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    id: int
    message_id: int
    filename: str  # as the sender wrote it: display it through desk.textsafe
    content_type: str
    size: int
    stored: bool  # False when the message was over max_message_bytes: no content kept


def _infos() -> Select[Any]:
    """AttachmentInfo's columns; whether the content is stored, from its blob's presence."""
    return (select(Attachment.id, Attachment.message_id, Attachment.filename,
                   Attachment.content_type, Attachment.size, Blob.sha256.is_not(None))  # type: ignore[union-attr]
            .outerjoin(Blob, Blob.sha256 == Attachment.sha256))


def attachments_of(session: Session, message_ids: Iterable[int]) -> dict[int, list[AttachmentInfo]]:
    """The attachments of `message_ids`, by message, in the order they came."""
    ids = sorted(set(message_ids))
    found: dict[int, list[AttachmentInfo]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            _infos().where(Attachment.message_id.in_(ids[start:start + 500]))  # type: ignore[attr-defined]
            .order_by(Attachment.id))
        for row in rows:
            found.setdefault(row[1], []).append(AttachmentInfo(*row))
    return found


def ticket_attachments(session: Session, ticket_id: int, limit: int = 200) -> list[AttachmentInfo]:
    """The newest `limit` attachments of a ticket's messages, newest first."""
    rows = session.execute(
        _infos().join(Message, Message.id == Attachment.message_id)
        .where(Message.ticket_id == ticket_id)
        .order_by(Message.sent_at.desc(), Attachment.id.desc())  # type: ignore[union-attr]
        .limit(limit))
    return [AttachmentInfo(*row) for row in rows]


def save(session: Session, attachment_id: int, folder: Path) -> Path:
    """Write attachment `attachment_id` into `folder` (created owner-only if missing) and return
    the file's path. An existing file is never replaced: "name (1).ext" and so on."""
    attachment = session.get(Attachment, attachment_id)
    if attachment is None:
        raise AttachmentError(f"no attachment {attachment_id}")
    blob = session.get(Blob, attachment.sha256)
    if blob is None:
        raise AttachmentError(
            f"the content of attachment {attachment_id} was not stored: its message was over"
            " max_message_bytes. The provider still has the original.")
    folder = private_dir(folder.expanduser())
    name = safe_filename(attachment.filename, fallback=f"attachment-{attachment_id}")
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, dot, extension = name, "", ""
    for n in range(_MAX_NUMBERED):
        candidate = folder / (name if n == 0 else f"{stem} ({n}){dot}{extension}")
        try:
            # Exclusive and without following links: a file or symlink already there, even
            # one planted to point elsewhere, is skipped rather than written through.
            with open_private(candidate, exclusive=True, binary=True) as handle:
                handle.write(blob.data)
        except FileExistsError:
            continue
        return candidate
    raise AttachmentError(f"{folder} already has {_MAX_NUMBERED} files named like {name}")


def default_folder(configured: str | None = None) -> Path:
    """Where saved attachments go unless the agent says otherwise: `[desk] attachments_dir`,
    else desk's own folder in the user's downloads."""
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_downloads_dir()) / "desk"
