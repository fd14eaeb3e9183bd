"""``fame backup|restore|export|import`` on a real project: services up, then stopped.

While the services run every store holds its file locked, so ``fame
backup`` asks the running node (and sentinel) to copy their own files: the
backup is made while a client keeps writing, passes ``fame check`` and
holds every record acknowledged before it began; restore refuses while the
node runs, then puts it back, and the node reads the records again.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability.fame_services import fame_env, free_port, run_cli, run_fame

pytestmark = pytest.mark.slow

NAMESPACE = "storage_agent_namespace"
_WRITER = """
import trio, fame
from fame._cli._settings import SECRETS_FILE, SENTINEL_CONF, client_tls, load_settings, sentinel_url
from fame._cli._trust import client_token, sentinel_keys

async def main():
    settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
    async with fame.connect(
        sentinel_url(settings), token=client_token(settings), ssl_context=client_tls(settings),
        sentinel_keys=sentinel_keys(settings),
    ) as node:
        agent = node.proxy("storage@fame.fabric").with_timeout(30)
        i = 0
        while True:
            await agent.store_value(key=f"w{i:06}", value=f"v{i}")
            print(f"acked {i}", flush=True)
            i += 1

trio.run(main)
"""
WRITER_LIMIT = 60.0


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = fame_env(FAME_SENTINEL_PORT=str(free_port()))

    def fame(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_fame(self.root, *args, env=self.env)

    def ok(self, *args: str) -> str:
        done = self.fame(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def client(self, *args: str) -> str:
        done = run_cli(self.root, "fame._cli.client", *args, env=self.env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout


@pytest.fixture
def project(tmp_path: Path, suite_secrets: Any) -> Iterator[Project]:
    made = Project(tmp_path)
    made.ok("init")
    suite_secrets.add_env_file(tmp_path / "conf" / "secrets.env")
    try:
        yield made
    finally:
        made.fame("stop")


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str | None], wanted: str) -> None:
    while True:
        line = lines.get(timeout=WRITER_LIMIT)
        assert line is not None, f"the writer ended before {wanted!r}"
        if line.strip() == wanted:
            return


def test_backup_of_running_services_while_a_client_writes(project: Project) -> None:
    project.ok("up")
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _lines(writer)
        _wait_for(lines, "acked 50")  # 0..50 acknowledged before the backup begins
        said = project.ok("backup", "data/agent", "backups/agent")
        assert "asking the running agent node (admin@agent.fame)" in said, said
        _wait_for(lines, "acked 60")  # still writing after the backup
        said = project.ok("backup", "data/sentinel", "backups/sentinel")
        assert "asking the running sentinel" in said, said
    finally:
        writer.kill()
        writer.wait(timeout=WRITER_LIMIT)
    manifest = json.loads((project.root / "backups/agent/fame-backup.json").read_text())
    names = {entry["namespace"] for entry in manifest["files"]}
    assert {NAMESPACE, "__node_meta"} <= names, names
    records = next(e["records"] for e in manifest["files"] if e["namespace"] == NAMESPACE)
    assert records >= 51
    # A backup is not taken into a used directory; restore refuses while the node runs.
    refused = project.fame("backup", "data/agent", "backups/agent")
    assert refused.returncode == 1 and "not an empty directory" in refused.stderr
    refused = project.fame("restore", "backups/agent", "--to", "data/agent", "--yes")
    assert refused.returncode == 1 and "in use by a running process" in refused.stderr
    refused = project.fame("export", "data/agent", NAMESPACE, "-o", "x.jsonl")
    assert refused.returncode == 1 and "nothing was exported" in refused.stderr
    # Only the admin credential may ask a node for a backup: an ordinary client may not.
    destination = f"destination={project.root / 'stolen'}"
    done = run_cli(
        project.root, "fame._cli.client", "call", "admin@agent.fame", "backup", destination,
        env=project.env,
    )  # fmt: skip
    assert done.returncode == 1 and "may not call 'backup'" in done.stderr, done.stderr
    assert not (project.root / "stolen").exists()
    project.ok("stop")
    # The backup passes fame check (which leaves it restorable), then goes back in place.
    for name in ("agent", "sentinel"):
        assert "all" in project.ok("check", f"backups/{name}")
    unconfirmed = project.fame("restore", "backups/agent", "--to", "data/agent")
    assert unconfirmed.returncode == 1 and "not confirmed" in unconfirmed.stderr
    said = project.ok("restore", "backups/agent", "--to", "data/agent", "--yes")
    assert "the previous directory was kept at data/agent.before-restore-" in said, said
    project.ok("restore", "backups/sentinel", "--to", "data/sentinel", "--yes")
    exported = project.ok("export", "data/agent", NAMESPACE)
    keys = {json.loads(line)["key"] for line in exported.splitlines()}
    assert {f"w{i:06}" for i in range(51)} <= keys  # every write acknowledged before it
    project.ok("up")
    for i in (0, 25, 50):
        assert f"v{i}" in project.client("get", f"w{i:06}")


def test_offline_backup_export_and_import(project: Project) -> None:
    project.ok("up")
    for i in range(5):
        project.client("store", f"k{i}", f"value {i}")
    project.ok("stop")
    said = project.ok("backup", "data/agent", "backups/agent", "--offline")
    assert "copying data/agent (stopped) offline" in said
    assert "all" in project.ok("check", "backups/agent")
    # Export, import into a new directory (twice: idempotent), export again: the same lines.
    project.ok("export", "data/agent", NAMESPACE, "-o", "a.jsonl")
    project.ok("import", "moved", NAMESPACE, "a.jsonl")
    project.ok("import", "moved", NAMESPACE, "a.jsonl")
    project.ok("export", "moved", NAMESPACE, "-o", "b.jsonl")
    first = (project.root / "a.jsonl").read_text()
    assert first == (project.root / "b.jsonl").read_text()
    assert len(first.splitlines()) == 5
    assert json.loads(first.splitlines()[0])["key"] == "k0"
