"""Which lines of a message are quoted history or a signature, so the app can fold them.

Pure functions over plain text: the text is never changed, only line ranges are reported. Lines
are `text.split("\\n")` (a trailing "\\r" is ignored when matching), the same numbering the app
uses when it renders a message line by line.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import islice
from typing import Literal

__all__ = ["Fold", "FoldKind", "fold_regions", "split_lines"]

FoldKind = Literal["quote", "signature"]


@dataclass(frozen=True, slots=True)
class Fold:
    """Lines `start_line` (inclusive) to `end_line` (exclusive) can be folded into `summary`."""

    start_line: int
    end_line: int
    kind: FoldKind
    summary: str


# A single quoted line is usually an inline answer's context; folding it saves nothing.
MIN_QUOTE_LINES = 2
# "--" without the trailing space (clients that strip it) is only trusted for a short block:
# a long tail after a bare "--" is more likely a separator in the customer's own text.
_BARE_DASHES_MAX_LINES = 10
# Attribution lines wrap when the name and address are long; never look further up than this.
_ATTRIBUTION_MAX_LINES = 3

_ATTRIBUTION_VERB = re.compile(
    r"\b(wrote|writes|said|a écrit|schrieb|escribió|escreveu|scrisse|schreef|skrev|kirjoitti"
    r"|napisał|napsal|написал|написала|написал\(а\)|írta|yazdı|έγραψε|写道|が書きました)"
    r".{0,120}:\s*$",
    re.IGNORECASE,
)
# How a wrapped attribution begins: "On …", "Le …", "Am …", "El …", "Il …", "Op …", "Em …".
_ATTRIBUTION_START = re.compile(r"^\s*(on|le|am|el|il|op|em|den|w dniu|в|dne)\b", re.IGNORECASE)

_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine"
    r"|mensaje original|messaggio originale|oorspronkelijk bericht|mensagem original"
    r"|opprinnelig melding|ursprungligt meddelande|alkuperäinen viesti)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\s*\*?(from|de|von|van|da|från|fra|od)\s*\*?\s*:", re.IGNORECASE)
_HEADER_DATE = re.compile(
    r"^\s*\*?(sent|date|gesendet|datum|envoyé|enviado|inviato|verzonden|skickat|sendt"
    r"|wysłano|fecha|data)\s*\*?\s*:",
    re.IGNORECASE,
)
_HEADER_OTHER = re.compile(
    r"^\s*\*?(to|cc|subject|an|betreff|à|objet|para|asunto|a|oggetto|aan|onderwerp|till|ämne"
    r"|til|emne|do|temat)\s*\*?\s*:",
    re.IGNORECASE,
)
# A forwarded message is what the customer wants us to read, not history to hide.
_FORWARD_MARKER = re.compile(
    r"(forwarded message|begin forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|mensagem encaminhada)",
    re.IGNORECASE,
)
# The rule Outlook draws above the header block of the message it quotes.
_UNDERSCORE_RULE = re.compile(r"^\s*_{8,}\s*$")
_HEADER_BLOCK_SPAN = 6

_MOBILE_SIGNATURE = re.compile(
    r"^\s*(sent from my \S.*|sent from (mail|outlook|yahoo mail|gmail|my mobile|my phone)\b.*"
    r"|sent from \S+ for (ios|android|iphone|ipad)\b.*|get outlook for (ios|android)\b.*"
    r"|envoyé de mon \S.*|envoyé depuis mon \S.*|von meinem \S.* gesendet\.?"
    r"|enviado desde mi \S.*|enviado do meu \S.*|inviato da(l mio)? \S.*"
    r"|verzonden vanaf mijn \S.*|skickat från min \S.*)\s*$",
    re.IGNORECASE,
)
_MOBILE_SIGNATURE_MAX_CHARS = 80


def split_lines(text: str) -> list[str]:
    """The lines `Fold` numbers refer to."""
    return text.split("\n")


def fold_regions(text: str) -> list[Fold]:
    """Foldable regions of `text`, sorted and non-overlapping."""
    lines = [line.rstrip("\r") for line in split_lines(text)]
    folds: list[Fold] = []

    history_start = _outlook_history_start(lines)
    body_end = _trim_end(lines, 0, len(lines) if history_start is None else history_start)

    folds.extend(_quote_folds(lines, body_end))
    signature = _signature_fold(lines, body_end, folds)
    if signature is not None:
        folds.append(signature)
    if history_start is not None:
        end = _trim_end(lines, history_start, len(lines))
        if end > history_start:
            folds.append(Fold(history_start, end, "quote", _quoted_summary(end - history_start)))
    folds.sort(key=lambda fold: fold.start_line)
    return folds


def _quote_folds(lines: list[str], limit: int) -> list[Fold]:
    folds: list[Fold] = []
    i = 0
    while i < limit:
        if not _is_quoted(lines[i]):
            i += 1
            continue
        start, quoted, end = i, 0, i
        j = i
        # Blank lines between quoted paragraphs belong to the same quote.
        while j < limit and (_is_quoted(lines[j]) or not lines[j].strip()):
            if _is_quoted(lines[j]):
                quoted += 1
                end = j + 1
            j += 1
        i = end
        if quoted < MIN_QUOTE_LINES:
            continue
        previous_end = folds[-1].end_line if folds else 0
        start = _attribution_start(lines, start, previous_end)
        folds.append(Fold(start, end, "quote", _quoted_summary(end - start)))
    return folds


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_start(lines: list[str], quote_start: int, floor: int) -> int:
    """Where the fold starts once the "On …, Jane wrote:" line above the quote is included."""
    k = quote_start - 1
    if k >= floor and not lines[k].strip():
        k -= 1  # one blank line between the attribution and the quote is common
    if k < floor or not _ATTRIBUTION_VERB.search(lines[k]):
        return quote_start
    start = k
    if _ATTRIBUTION_START.match(lines[k]):
        return start  # complete on one line; "On my side…" above it is the customer's text
    # A wrapped attribution: "On Tue, 3 Mar 2026 at 10:00, Jane Doe <" / "jane@x> wrote:".
    for above in range(k - 1, max(floor, k - _ATTRIBUTION_MAX_LINES) - 1, -1):
        line = lines[above]
        if not line.strip() or _is_quoted(line):
            break
        if _ATTRIBUTION_START.match(line):
            start = above
            break
    return start


def _outlook_history_start(lines: list[str]) -> int | None:
    """First line of an Outlook-style quoted message; everything below it is history."""
    for i, line in enumerate(lines):
        if _ORIGINAL_MESSAGE.match(line):
            return i
        if (
            _HEADER_FROM.match(line)
            and _looks_like_header_block(lines, i)
            and not _is_forward(lines, i)
        ):
            # Include the rule and blank line Outlook puts above the block.
            start = i
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            if k >= 0 and _UNDERSCORE_RULE.match(lines[k]):
                start = k
            return start
    return None


def _looks_like_header_block(lines: list[str], from_index: int) -> bool:
    """A "From:" line followed by a date line and another header, as mail clients quote them;
    a customer's "From: my account page" line is not followed by "Sent:" and "To:"."""
    has_date = others = 0
    for line in lines[from_index + 1 : from_index + 1 + _HEADER_BLOCK_SPAN]:
        if not line.strip():
            break
        if _HEADER_DATE.match(line):
            has_date += 1
        elif _HEADER_OTHER.match(line):
            others += 1
    return has_date >= 1 and others >= 1


def _is_forward(lines: list[str], from_index: int) -> bool:
    return any(_FORWARD_MARKER.search(line) for line in lines[max(0, from_index - 3) : from_index])


def _signature_fold(lines: list[str], limit: int, quotes: list[Fold]) -> Fold | None:
    # Hostile text (thousands of "--" lines) must not make this quadratic: the app calls it
    # while rendering, so every lookup below is a bisect or a bounded scan.
    quote_starts = [fold.start_line for fold in quotes]
    quote_ends = [fold.end_line for fold in quotes]
    content_end = _content_ends(lines, limit)

    def inside_quote(index: int) -> bool:
        k = bisect_right(quote_starts, index) - 1
        return k >= 0 and index < quote_ends[k]

    for i in range(limit):
        marker = lines[i]
        if marker not in ("-- ", "--") or inside_quote(i):
            continue
        # The signature ends where quoted history starts (a top-posted reply with a signature).
        k = bisect_right(quote_starts, i)
        end = max(i, content_end[quote_starts[k] if k < len(quote_starts) else limit])
        if marker == "--":
            tail = (j for j in range(i + 1, end) if lines[j].strip())
            content = sum(1 for _ in islice(tail, _BARE_DASHES_MAX_LINES + 1))
            if content == 0 or content > _BARE_DASHES_MAX_LINES:
                continue
        if end - i >= 2:
            return Fold(i, end, "signature", _signature_summary(end - i))

    # No delimiter: a trailing "Sent from my iPhone" line above any quoted history.
    last = content_end[min([*quote_starts, limit])] - 1
    if last >= 0 and not inside_quote(last):
        line = lines[last]
        if len(line.strip()) <= _MOBILE_SIGNATURE_MAX_CHARS and _MOBILE_SIGNATURE.match(line):
            return Fold(last, last + 1, "signature", "signature")
    return None


def _content_ends(lines: list[str], limit: int) -> list[int]:
    """`ends[k]`: the exclusive end of lines[:k] once trailing blank lines are dropped."""
    ends = [0] * (limit + 1)
    for k in range(1, limit + 1):
        ends[k] = k if lines[k - 1].strip() else ends[k - 1]
    return ends


def _trim_end(lines: list[str], start: int, end: int) -> int:
    """`end` moved up past trailing blank lines, never above `start`."""
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _quoted_summary(count: int) -> str:
    return "1 quoted line" if count == 1 else f"{count} quoted lines"


def _signature_summary(count: int) -> str:
    return "signature" if count <= 1 else f"signature ({count} lines)"
