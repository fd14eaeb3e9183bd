"""The storage example end to end, as a user runs it: ``just up``, ``just run``, restarts.

Real processes (``just`` → ``fame up`` → a sentinel and a node), real
sockets on 127.0.0.1 and real SQLCipher files, in a temporary project root.
Walks issue 5's "What a user must see": the exact file listing, encrypted
files without plaintext, persistence across ``stop``/``up``, a changed
master key refused with every file unchanged, and ``clean``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import socket
import stat
from pathlib import Path

import pytest

from .conftest import Project, _alive

pytestmark = pytest.mark.slow

SEED_FILES = {
    "data/agent/__node_meta_encrypted_value.db",
    "data/agent/storage_agent_namespace_encrypted_value.db",
    "data/agent/__keystore_encrypted_value.db",
    "data/agent/__binding_store_encrypted_value.db",
    "data/sentinel/__node_meta_encrypted_value.db",
    "data/sentinel/__route_store_encrypted_value.db",
    "data/sentinel/__keystore_encrypted_value.db",
    "data/sentinel/__binding_store_encrypted_value.db",
}
RECORD = r'\{"value":"(?P<value>[^"]*)","created":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"\}'
RUN_OUTPUT = re.compile(
    rf"Stored value: {RECORD}\n\n"
    rf"Retrieved value: {RECORD.replace('value>', 'value2>')}\n\n"
    r"All stored key-values:\n"
    r"(?P<pairs>(?:\[\"[^\"]+\",\{[^\n]*\}\]\n)*)"
    r"\nTotal stored values: (?P<total>\d+)\n\Z"
)


def wait_exited(pid: int, limit: float) -> None:
    """Block until process ``pid`` has exited (an event: its pidfd turns readable).

    ``limit`` is a guard against hanging: past it, AssertionError.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        exited, _, _ = select.select([fd], [], [], limit)
    finally:
        os.close(fd)
    assert exited, f"process {pid} still runs {limit:g} s after SIGTERM"


def data_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "data").rglob("*") if p.is_file()}


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "data").rglob("*"))
        if p.is_file()
    }


def run_client(project: Project) -> tuple[dict[str, dict[str, str]], int, str]:
    """``just run``; return the listed pairs, the total and the stored key's value."""
    result = project.just("run")
    assert result.returncode == 0, result.stderr
    match = RUN_OUTPUT.match(result.stdout)
    assert match, f"unexpected client output:\n{result.stdout}"
    assert match["value"] == match["value2"] == "Hello, World!"
    pairs = {}
    for line in match["pairs"].splitlines():
        key, record = json.loads(line)
        pairs[key] = record
    assert int(match["total"]) == len(pairs)
    stored = json.loads(result.stdout.splitlines()[0].removeprefix("Stored value: "))
    new_keys = [k for k, v in pairs.items() if v == stored and re.fullmatch(r"key_\d{13}", k)]
    assert new_keys, "the stored record is not listed under a key_<epoch-ms> key"
    return pairs, int(match["total"]), new_keys[0]


def one_error_line(result: object, program: str) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{program}: "), lines[0]
    return lines[0]


def test_storage_example_end_to_end(project: Project) -> None:
    root = project.root

    # just up: init writes the secrets, both nodes start, the agent answers.
    up = project.just("up")
    assert up.returncode == 0, up.stderr + up.stdout
    assert "storage@fame.fabric answers" in up.stdout
    secrets_file = root / "conf" / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    secrets = secrets_file.read_text()

    # While running: the seed's files, plus SQLite's -wal/-shm of those only.
    running = data_files(root)
    assert running >= SEED_FILES
    extra = running - SEED_FILES
    assert all(re.sub(r"-(wal|shm)$", "", name) in SEED_FILES for name in extra), extra

    # just run several times: every run adds one key and lists all of them.
    seen: dict[str, dict[str, str]] = {}
    total = 0
    for _ in range(3):
        pairs, new_total, key = run_client(project)
        assert key not in seen
        assert seen.items() <= pairs.items()
        assert new_total == total + 1
        seen, total = pairs, new_total
    marker_value = "plaintext-marker-7f3a9c"
    store = project.just("run", "store", "marker_key_e2e", marker_value)
    assert store.returncode == 0, store.stderr
    total += 1

    # Running up again is harmless; init keeps the secrets.
    again = project.just("up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    init = project.just("init")
    assert init.returncode == 0 and "keeping" in init.stdout
    assert secrets_file.read_text() == secrets

    # A wrong admission token: one line, non-zero, no traceback.
    (root / "wrong-token").write_text("not-the-token\n")
    bad = project.just("run", "--token-file", str(root / "wrong-token"))
    assert "admission" in one_error_line(bad, "fame-client")
    # The token is never taken from the command line, where ps shows it.
    argv = project.just("run", "--token", "not-the-token")
    assert argv.returncode == 2
    assert "--token-file" in one_error_line(argv, "fame-client")

    # The agent gone: one line naming the missing agent.
    agent_pid = int((root / "run" / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGTERM)
    wait_exited(agent_pid, limit=30.0)
    missing = project.just("run")
    assert "storage@fame.fabric" in one_error_line(missing, "fame-client")

    # just stop: exactly the seed's files, WAL checkpointed into them.
    stop = project.just("stop")
    assert stop.returncode == 0, stop.stderr
    assert data_files(root) == SEED_FILES
    assert project.just("status").returncode != 0

    # Encrypted: no SQLite header, no key or value in clear anywhere.
    for name in SEED_FILES:
        content = (root / name).read_bytes()
        assert content and not content.startswith(b"SQLite format 3"), name
        for needle in (b"Hello, World!", marker_value.encode(), b"marker_key_e2e", b"key_1"):
            assert needle not in content, (name, needle)

    # Restart: every earlier key is still there and the total keeps growing.
    up = project.just("start")
    assert up.returncode == 0, up.stderr + up.stdout
    pairs, new_total, _ = run_client(project)
    assert seen.items() <= pairs.items()
    assert pairs["marker_key_e2e"]["value"] == marker_value
    assert new_total == total + 1
    stop = project.just("down")
    assert stop.returncode == 0

    # A changed master key: refused at once, naming the directory; no file changed.
    before = digests(root)
    fresh = os.urandom(32).hex()
    secrets_file.write_text(
        re.sub(r"FAME_STORAGE_MASTER_KEY=.*", f"FAME_STORAGE_MASTER_KEY={fresh}", secrets)
    )
    refused = project.just("up")
    line = one_error_line(refused, "fame up")
    assert re.search(
        r"the master key does not match the databases in data/(sentinel|agent)\b", line
    ), line
    assert digests(root) == before
    assert project.pids() == [] or not any(_alive(pid) for pid in project.pids())

    # clean: without a terminal it needs --yes, and removes nothing without it.
    secrets_file.write_text(secrets)
    before = digests(root)
    unasked = project.just("clean")
    assert "nothing was removed: not asked on a terminal" in one_error_line(unasked, "fame clean")
    assert digests(root) == before and secrets_file.read_text() == secrets
    # clean --yes: stops, removes the secrets, data/ and run/; keeps the committed config.
    clean = project.just("clean", "--yes")
    assert clean.returncode == 0, clean.stderr
    assert not (root / "data").exists()
    assert not (root / "run").exists()
    assert not secrets_file.exists()
    assert (root / "conf" / "sentinel.env").exists() and (root / "conf" / "agent.env").exists()


def test_client_without_sentinel_says_so(project: Project) -> None:
    assert project.just("init").returncode == 0
    result = project.just("run")
    line = one_error_line(result, "fame-client")
    url = f"ws://127.0.0.1:{project.port}"
    assert f"cannot reach the sentinel at {url}: no websocket handshake" in line


def test_port_taken_is_reported(project: Project) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", project.port))
        blocker.listen()
        result = project.just("up")
    line = one_error_line(result, "fame up")
    assert "sentinel" in line and str(project.port) in line, line
    assert not any(_alive(pid) for pid in project.pids())
