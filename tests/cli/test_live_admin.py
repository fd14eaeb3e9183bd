"""Administration and rotation while the services run: real ``fame`` processes, one project.

``fame up`` starts the sentinel and the agent; the sentinel's stores are
then locked, so ``fame admin`` / ``enroll`` / ``revoke`` ask the running
sentinel (the admin credential, ``FAME_ADMIN_TOKEN``), and ``fame rotate``
changes tokens and keys with the old ones accepted for a grace period. A
client keeps reading the value stored at the start through all of it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability.fame_services import fame_env, free_port, run_cli, run_fame

pytestmark = pytest.mark.slow

OTHER_ID = "n" + "ab" * 10
OTHER_KEY = "ed25519:" + "A" * 43


class Running:
    """A project made by ``fame init`` with its services up."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = fame_env(FAME_SENTINEL_PORT=str(free_port()))

    def fame(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_fame(self.root, *args, env=self.env)

    def ok(self, *args: str) -> str:
        done = self.fame(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def client(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = run_cli(self.root, "fame._cli.client", *args, env=env or self.env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def secrets(self) -> dict[str, str]:
        text = (self.root / "conf" / "secrets.env").read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture
def running(tmp_path: Path, suite_secrets: Any) -> Iterator[Running]:
    project = Running(tmp_path)
    project.ok("init")
    suite_secrets.add_env_file(tmp_path / "conf" / "secrets.env")
    try:
        project.ok("up")
        yield project
    finally:
        project.fame("stop")
        # The rotations wrote new secrets: the leak scan knows them too.
        suite_secrets.add_env_file(tmp_path / "conf" / "secrets.env")


def test_the_register_is_administered_live_while_the_sentinel_runs(running: Running) -> None:
    running.client("store", "k", "kept")
    nodes = running.ok("admin", "nodes")
    agent_id = re.match(r"(n[0-9a-f]{20}) agent, attached", nodes)
    assert agent_id is not None, nodes
    assert "storage@fame.fabric " + agent_id.group(1) in running.ok("admin", "bindings")
    assert agent_id.group(1) in running.ok("admin", "pins")
    enrolled = running.ok("enroll", OTHER_ID, OTHER_KEY, "--name", "other")
    assert enrolled.strip() == f"enrolled {OTHER_ID} as other with {OTHER_KEY}"
    assert f"{OTHER_ID} other" in running.ok("admin", "nodes")
    revoked = running.ok("revoke", OTHER_ID)
    assert revoked.strip() == f"revoked {OTHER_ID}: removed its enrollment"
    assert OTHER_ID not in running.ok("admin", "nodes")
    # The sentinel's own id (the owner of its admin address) is not for revoking.
    sentinel_id = re.search(
        r"admin@sentinel\.fame (n[0-9a-f]{20})", running.ok("admin", "bindings")
    )
    assert sentinel_id is not None
    done = running.fame("revoke", sentinel_id.group(1))
    assert done.returncode == 1 and "this sentinel's own id" in done.stderr, done.stderr
    # Without the admin credential the running sentinel is not administered.
    env = {k: v for k, v in running.env.items()}
    secrets_file = running.root / "conf" / "secrets.env"
    kept = secrets_file.read_text()
    secrets_file.write_text(
        re.sub(r"FAME_ADMIN_TOKEN=.*", "FAME_ADMIN_TOKEN=wrong-wrong-wrong", kept)
    )
    try:
        done = run_fame(running.root, "admin", "nodes", env=env)
        assert done.returncode == 1 and "refused the admin credential" in done.stderr
    finally:
        secrets_file.write_text(kept)
    assert "kept" in running.client("get", "k")


def test_tokens_and_keys_rotate_while_the_services_run(running: Running) -> None:
    running.client("store", "k", "kept")
    old_token = running.secrets()["FAME_ADMISSION_TOKEN"]
    said = running.ok("rotate", "token", "--grace", "600")
    assert "told the running sentinel" in said
    secrets = running.secrets()
    assert secrets["FAME_ADMISSION_TOKEN"] != old_token
    assert secrets["FAME_ADMISSION_TOKEN_PREVIOUS"] == old_token
    assert os.stat(running.root / "conf" / "secrets.env").st_mode & 0o777 == 0o600
    # The new token works at once (the sentinel took it on SIGHUP), and the old one still does.
    assert "kept" in running.client("get", "k")
    old = dict(running.env, FAME_ADMISSION_TOKEN=old_token)
    assert "kept" in running.client("get", "k", env=old)
    log = (running.root / "run" / "sentinel.log").read_text()
    assert "SIGHUP: reloaded the credentials and the policy" in log

    keys_file = running.root / "conf" / "sentinel.keys"
    before = [line for line in keys_file.read_text().splitlines() if line.startswith("ed25519:")]
    assert "added the new key" in running.ok("rotate", "sentinel-key", "--grace", "600")
    after = [line for line in keys_file.read_text().splitlines() if line.startswith("ed25519:")]
    assert len(after) == len(before) + 1 and set(before) < set(after)
    # A client that trusts only the new key attaches: the sentinel signs with both.
    new_only = dict(running.env, FAME_SENTINEL_KEYS=after[-1])
    assert "kept" in running.client("get", "k", env=new_only)

    # The agent's own key: stopped, rotated, enrolled, and back with the new key.
    refused = running.fame("rotate", "node-key")
    assert refused.returncode == 1 and "the agent node is running" in refused.stderr
    running.ok("stop")
    said = running.ok("rotate", "node-key", "--grace", "0")
    assert "added ed25519:" in said and "its other keys ended now" in said
    running.ok("up")
    assert "kept" in running.client("get", "k")
    nodes = running.ok("admin", "nodes")
    assert nodes.count("ed25519:") == 1, nodes  # the old key ended, and is gone
