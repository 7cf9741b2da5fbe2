"""Writing a reply in the agent's own editor ($VISUAL, $EDITOR, else vi)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path


class EditorError(RuntimeError):
    pass


def editor_command(env: dict[str, str] | None = None) -> list[str]:
    env = dict(os.environ) if env is None else env
    return shlex.split(env.get("VISUAL") or env.get("EDITOR") or "vi")


def edit(text: str, *, suffix: str = ".txt") -> str:
    """Open `text` in the editor and return what the agent saved. The temporary file is
    private to the agent (0600: it holds a customer conversation) and removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="desk-reply-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        command = editor_command()
        try:
            result = subprocess.run([*command, str(path)], check=False)
        except OSError as error:
            raise EditorError(f"cannot run the editor {command[0]!r}: {error.strerror}") from None
        if result.returncode != 0:
            raise EditorError(f"the editor {command[0]!r} exited with {result.returncode}; "
                              "the reply was left as it was")
        return path.read_text(encoding="utf-8", errors="replace")
    finally:
        path.unlink(missing_ok=True)
