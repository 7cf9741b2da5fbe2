"""Files and folders only their owner can read: 0600 and 0700, whatever the umask.

The store, its attachments and its exports hold customers' private conversations. A permissive
umask (0o022 is the common default, 0o000 happens in containers) would leave them readable by
every account on the machine, so desk never relies on it: each is created with an explicit mode
and then `chmod`ed to it, since the umask can only have removed bits (0o700 would even leave
desk unable to read its own file).

Only what desk creates is changed. A store or folder that already exists keeps the mode its
admin gave it (a group-readable store shared by a team's accounts is a deliberate choice);
`desk check` reports a configuration file others can read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents as owner-only folders; existing ones are left as
    they are."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile: it chose its mode
        os.chmod(folder, DIR_MODE)
    return path


def create_private_file(path: Path) -> bool:
    """Create `path` empty and owner-only if it does not exist (its folder too). Returns whether
    it was created; an existing file is left untouched."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def open_private(path: Path, *, exclusive: bool = False, binary: bool = False) -> IO:
    """Open `path` for writing, owner-only. An existing regular file is truncated and made
    owner-only too (what is written next is as private as a new file); with `exclusive` an
    existing one is an error (FileExistsError). Devices and pipes (`-o /dev/stdout`) are
    written as they are, their mode untouched."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    flags |= getattr(os, "O_NOFOLLOW", 0) if exclusive else 0
    fd = os.open(path, flags, FILE_MODE)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    if binary:
        return os.fdopen(fd, "wb")
    return os.fdopen(fd, "w", encoding="utf-8")


def readable_by_others(path: Path) -> bool:
    """Whether accounts other than the owner may read `path` (group or world read bits)."""
    return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
