"""What desk writes is owner-only (0600 files, 0700 folders) whatever the umask, and `desk check`
says when the config or a secret file could be read by other accounts."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import DESK


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def desk(tmp_path: Path, umask: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """desk in a child process started under `umask` (as a shell with that umask would)."""
    return subprocess.run(
        [*DESK, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
             "XDG_CONFIG_HOME": str(tmp_path / "config"), **env},
        preexec_fn=lambda: os.umask(umask))


def test_the_store_its_journal_and_its_folders_are_owner_only(tmp_path: Path, umask: int) -> None:
    from desk.store import Store

    db = tmp_path / "new" / "deeper" / "desk.db"
    store = Store(f"sqlite:///{db}")  # creating the schema writes the -wal and -shm
    files = [db, db.with_name("desk.db-wal"), db.with_name("desk.db-shm")]
    for path in files:
        assert path.exists(), path
        assert mode(path) == 0o600, f"{path.name}: {mode(path):o} under umask {umask:03o}"
    for folder in (db.parent, db.parent.parent):
        assert mode(folder) == 0o700, f"{folder}: {mode(folder):o}"
    store.close()


def test_an_existing_store_keeps_the_mode_its_admin_gave_it(tmp_path: Path, umask: int) -> None:
    from desk.store import Store

    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o660)  # a team's accounts share it through their group, on purpose
    Store(f"sqlite:///{db}").close()
    assert mode(db) == 0o660


def test_the_demo_store_and_an_export_are_owner_only(tmp_path: Path, umask: int) -> None:
    built = desk(tmp_path, umask, "demo", "--no-tui")
    assert built.returncode == 0, built.stderr
    demo = tmp_path / "data" / "desk" / "demo.db"
    assert mode(demo) == 0o600
    assert mode(demo.parent) == 0o700 and mode(demo.parent.parent) == 0o700
    out = tmp_path / "export.jsonl"
    exported = desk(tmp_path, umask, "--db", str(demo), "export", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert out.stat().st_size > 0 and mode(out) == 0o600
    # Exporting over a file others could read leaves it owner-only: it now holds the store.
    out.chmod(0o644)
    again = desk(tmp_path, umask, "--db", str(demo), "export", "-o", str(out))
    assert again.returncode == 0 and mode(out) == 0o600


def test_the_editor_gets_a_private_file(tmp_path: Path, umask: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from desk.editor import edit

    seen = tmp_path / "seen"
    # The "editor" records the mode of the file it was handed, then writes the reply.
    script = tmp_path / "editor.sh"
    script.write_text(f'#!/bin/sh\nstat -c %a "$1" > {seen}\necho "the reply" > "$1"\n')
    script.chmod(0o700)
    monkeypatch.setenv("VISUAL", str(script))
    assert edit("draft").strip() == "the reply"
    assert seen.read_text().strip() == "600"


def test_check_warns_about_a_config_and_a_secret_file_others_can_read(tmp_path: Path) -> None:
    token = tmp_path / "bot.token"
    token.write_text("123:abc\n")
    config = tmp_path / "config.toml"
    config.write_text('[[connector]]\nname = "chat"\ntype = "telegram"\ntoken = "file:bot.token"\n')
    token.chmod(0o644)
    config.chmod(0o644)
    run = desk(tmp_path, 0o022, "check", str(config))
    assert run.returncode == 0, run.stderr  # a warning, not an error
    assert (f"warning: {config}: the config file is readable by other accounts (mode 0644);"
            f" make it owner-only: chmod 600 {config}") in run.stderr
    assert (f'warning: {token}: the secret file of connector "chat" token is readable by other'
            " accounts (mode 0644)") in run.stderr
    assert "123:abc" not in run.stdout + run.stderr
    token.chmod(0o600)
    config.chmod(0o600)
    quiet = desk(tmp_path, 0o022, "check", str(config))
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
