"""Secrets revealed in this process, and the one function that blanks them out of text.

desk keeps secrets as references (`desk.config.Secret`) and reads a value only where a provider
needs it. Provider libraries do not share that discipline: an HTTP client logs the Telegram URL
with the bot token in its path, an exception carries a URL with credentials. So every value read
through `Secret.reveal` is remembered here, and what leaves the process or reaches the store as
free text — log lines, recorded errors, the CLI's error messages, tracebacks — goes through
`redact` first. A remembered value is replaced by `***` in any of the forms it travels in.
"""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "***"
# Blanking a shorter value would blank ordinary words out of every message; a password or
# token that short protects nothing anyway.
MIN_LENGTH = 4

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """The spellings a secret takes on its way out: as is, URL-encoded (a password in a URL or
    a form body) and base64 (HTTP basic auth, SASL PLAIN/XOAUTH2 lines in a protocol trace)."""
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value)}
    encoded = base64.b64encode(value.encode()).decode().rstrip("=")
    # The base64 of a secret inside a longer string ("user:secret") shifts with its offset;
    # the encoding of the value alone still catches a secret sent by itself.
    if len(encoded) >= MIN_LENGTH:
        forms.add(encoded)
    return {form for form in forms if len(form) >= MIN_LENGTH}


def remember(value: str) -> str:
    """Note a revealed secret so `redact` blanks it; returns the value for use in place."""
    if len(value) >= MIN_LENGTH and value not in _values:
        with _lock:
            _values.add(value)
            _compile()
    return value


def _compile() -> None:
    global _pattern
    forms = set().union(*(_forms(v) for v in _values)) if _values else set()
    # Longest first, so a secret containing another is blanked whole.
    _pattern = re.compile("|".join(
        re.escape(form) for form in sorted(forms, key=len, reverse=True))) if forms else None


def forget(value: str) -> None:
    """Stop blanking `value`: a token that was replaced (rotation) and is no longer valid.
    Without this a daemon that refreshes hourly would grow the set, and the pattern, forever."""
    if value in _values:
        with _lock:
            _values.discard(value)
            _compile()


def redact(text: str) -> str:
    """`text` with every remembered secret replaced by `***`."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def forget_all() -> None:
    """Drop every remembered secret (tests that reveal many distinct values)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None
