"""Full-text search over message text and subjects, newest matches first.

The index and the query over it are dialect-specific (FTS5 on SQLite, a tsvector column with a
GIN index on PostgreSQL) and live in `desk.dialects`; this module reads the user's words and
shapes the results the same way for both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from desk import dialects
from desk.models import Customer, Message, Meta

_TOKEN = re.compile(r'"[^"]+"|\S+')


class SearchError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SearchHit:
    message_id: int
    ticket_id: int | None
    customer_id: int
    customer_name: str
    channel: str
    direction: str
    subject: str | None
    sent_at: datetime
    snippet: str


def terms(query: str) -> list[tuple[str, bool, bool]]:
    """A user's words as (word, is_prefix, is_phrase): every one must match, each taken
    literally (no search operators), `word*` a prefix search and "a phrase" a phrase."""
    found = []
    for token in _TOKEN.findall(query.replace("\x00", " ")):  # SQLite ends a string at NUL
        phrase = token.startswith('"')
        prefix = token.endswith("*") and not phrase
        word = token.strip('"').rstrip("*").replace('"', "").strip()
        if word:
            found.append((word, prefix, phrase))
    if not found:
        raise SearchError("nothing to search for")
    return found


def search(
    session: Session, query: str, *, limit: int = 50, before_id: int | None = None,
) -> list[SearchHit]:
    """Messages matching every word of `query`, newest first (by message id), a page at a time."""
    words = terms(query)
    config = session.get(Meta, "search_config")  # the one the store was indexed with
    ids = dialects.search_ids(session, words, config.value if config else dialects.SEARCH_CONFIG,
                              limit, before_id)
    if not ids:
        return []
    rows = session.execute(
        select(Message.id, Message.ticket_id, Message.customer_id, Customer.name,
               Message.channel, Message.direction, Message.subject, Message.sent_at,
               Message.text)
        .join(Customer, Customer.id == Message.customer_id)
        .where(Message.id.in_(ids))
    ).all()
    by_id = {row[0]: row for row in rows}
    return [
        SearchHit(
            message_id=row[0], ticket_id=row[1], customer_id=row[2], customer_name=row[3],
            channel=row[4], direction=row[5], subject=row[6], sent_at=row[7],
            snippet=_snippet(row[8], query),
        )
        for row in (by_id[i] for i in ids if i in by_id)
    ]


def _snippet(body: str, query: str, width: int = 160) -> str:
    """The part of `body` around the first matched word."""
    words = [w.strip('"').rstrip("*").lower() for w in _TOKEN.findall(query)]
    lowered = body.lower()
    positions = [p for p in (lowered.find(w) for w in words if w) if p >= 0]
    start = max(0, min(positions) - width // 3) if positions else 0
    if start:
        # begin at a word boundary, and say that the text goes on before it
        space = body.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    text = re.sub(r"\s+", " ", body[start : start + width]).strip()
    return f"…{text}" if start else text
