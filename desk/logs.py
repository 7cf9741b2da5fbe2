"""The daemon's log lines: readable text, or one JSON object per line for log collectors.

Every line, its traceback included, passes through `desk.redact`: provider libraries log URLs
and errors that can carry a token (the Bot API puts it in the path), and their log records are
formatted by these formatters like ours.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from desk.redact import redact
from desk.textsafe import printable


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return redact(json.dumps(entry, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """Plain lines; provider errors can carry anything, so control characters are removed."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(printable(super().format(record), single_line=True))


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name("desk")
    root = logging.getLogger()
    # Replace only our own handler (configure may run twice in one process, e.g. in tests).
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "desk"] + [handler]
    root.setLevel(level)
    # One line per HTTP request (every Bot API long poll) drowns what an operator looks for.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
