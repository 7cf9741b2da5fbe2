"""File names from senders, made safe to join to a directory.

A name in a message is whatever the sender wrote: `../../etc/passwd`, `C:\\boot.ini`, `CON`,
a right-to-left override that shows `gpj.exe` as `exe.jpg`, a NUL, 4,000 characters. desk keeps
it as data and only ever writes a file under `safe_filename`'s answer, which names a single
entry inside any directory, on POSIX and on Windows.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")}
)
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MAX_NAME_BYTES = 200
_MAX_EXTENSION_BYTES = 16


def _clean_filename(name: str) -> str:
    name = unicodedata.normalize("NFC", str(name))
    # Format characters include U+202E, which makes "gpj.exe" display as "exe.jpg".
    name = "".join(
        " " if ch == "\t" else ch
        for ch in name
        if ch == "\t" or unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    parts = [p for p in re.split(r"[/\\]", name) if p.strip()]
    name = parts[-1] if parts else ""
    name = _WINDOWS_FORBIDDEN.sub("_", name)
    name = _WHITESPACE.sub(" ", name)
    name = re.sub(r"\.{2,}", ".", name)
    # Leading dots hide files; Windows drops trailing dots and spaces, changing the name.
    name = name.strip(" .")
    if not name:
        return ""
    if name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem or len(extension.encode("utf-8")) > _MAX_EXTENSION_BYTES:
            stem, extension = name, ""
        else:
            extension = "." + extension
        budget = _MAX_NAME_BYTES - len(extension.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
        name = (stem + extension).strip(" .") if stem else ""
    if name in ("", ".", ".."):
        return ""
    return unicodedata.normalize("NFC", name)


def safe_filename(name: str | None, *, fallback: str = "attachment") -> str:
    """A file name that stays inside any directory it is joined to, on POSIX and Windows."""
    cleaned = _clean_filename(name) if name else ""
    if cleaned:
        return cleaned
    cleaned = _clean_filename(fallback) if fallback else ""
    return cleaned or "attachment"
