"""Untrusted text made safe to show on a terminal.

Message text, names and subjects come from strangers. Before they reach a terminal, escape
sequences (CSI, OSC such as the OSC 52 clipboard write, DCS, …) and other control characters are
removed, so they print as plain characters and do nothing. Rich/Textual markup is a separate
concern: the app renders such text as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

import re

# ESC-introduced sequences: CSI (ESC [ … final), OSC/DCS/SOS/PM/APC (ESC ] … BEL or ST), and
# two-character escapes; plus the 8-bit C1 forms of CSI (0x9b) and OSC/DCS/… strings.
_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]              # CSI
  | \x1b[\]PX^_].*?(?:\x07|\x1b\\|\Z)     # OSC, DCS, SOS, PM, APC up to BEL/ST or the end
  | \x1b[@-Z\\-_]                        # other two-character escapes
  | \x9b[0-?]*[ -/]*[@-~]                # 8-bit CSI
  | [\x90\x98\x9d\x9e\x9f].*?(?:\x07|\x9c|\Z)  # 8-bit string controls
    """,
    re.VERBOSE | re.DOTALL,
)
# Remaining C0 (except tab and newline), DEL, C1 controls, and bidi overrides that can make
# text read differently from what it is.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str | None, *, single_line: bool = False) -> str:
    """`text` without escape sequences or control characters; `single_line` also folds newlines
    and tabs into spaces (for names, subjects, list rows)."""
    if not text:
        return ""
    cleaned = _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    if single_line:
        cleaned = re.sub(r"[\n\t]+", " ", cleaned)
    return cleaned
