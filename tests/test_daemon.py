"""`desk sync` as operators run it: one per store (a lease in the store), a clean stop on
SIGTERM/SIGINT, and what `desk status` says about it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peers import free_port

DESK = [sys.executable, "-c", "import sys; from desk.cli import main; sys.exit(main())"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    # An IMAP server that is not there: the daemon keeps retrying it with backoff.
    path.write_text(
        "[store]\nlease_seconds = 2\n\n[[connector]]\nname = \"mail\"\ntype = \"email\"\n"
        f"imap_host = \"127.0.0.1\"\nimap_port = {free_port()}\nimap_tls = \"none\"\n"
        "username = \"support@example.test\"\npassword = \"env:DESK_TEST_PW\"\n"
        "smtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"\nfrom_address = \"support@example.test\"\n")
    return path


def desk(config: Path, db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*DESK, "--config", str(config), "--db", str(db), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DESK_TEST_PW": "x"})


def wait_running(config: Path, db: Path, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = desk(config, db, "status", "--json")
        out, _ = status.communicate(timeout=10)
        found = json.loads(out)
        if found["daemon"]:
            return found
        time.sleep(0.1)
    raise AssertionError("desk sync never took the store")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_daemon_cleanly_within_five_seconds(config, tmp_path, signum) -> None:
    db = tmp_path / "desk.db"
    daemon = desk(config, db, "sync")
    try:
        status = wait_running(config, db)
        assert status["daemon"]["holder"].endswith(f":{daemon.pid}")
        time.sleep(0.5)
        started = time.monotonic()
        daemon.send_signal(signum)
        assert daemon.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        daemon.kill()
        daemon.wait()
    # it let go of the store: a new daemon may start at once, and status says none runs
    status = desk(config, db, "status", "--json")
    assert json.loads(status.communicate(timeout=10)[0])["daemon"] is None


def test_a_second_daemon_on_the_same_store_is_refused(config, tmp_path) -> None:
    db = tmp_path / "desk.db"
    first = desk(config, db, "sync")
    try:
        wait_running(config, db)
        second = desk(config, db, "sync", "--once")
        _out, err = second.communicate(timeout=20)
        assert second.returncode == 1
        assert f"another desk sync ({os.uname().nodename}:{first.pid})" in err
        assert "only one may" in err
        assert first.poll() is None  # the first one is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)


def test_a_killed_daemons_lease_runs_out_and_a_new_one_starts(config, tmp_path) -> None:
    db = tmp_path / "desk.db"
    first = desk(config, db, "sync")
    wait_running(config, db)
    first.kill()  # SIGKILL: no chance to let go
    first.wait()
    refused = desk(config, db, "sync", "--once")
    refused.communicate(timeout=20)
    assert refused.returncode == 1  # its lease (2 s here) still holds
    time.sleep(2.2)
    second = desk(config, db, "sync")
    try:
        status = wait_running(config, db)
        assert status["daemon"]["holder"].endswith(f":{second.pid}")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
