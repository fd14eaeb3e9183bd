"""How ``fame up`` starts the services together (``fame/_cli/_gate.py``): real processes.

A service started with ``--gate-stdin`` opens nothing until ``fame up``
says go on its stdin, and exits quietly when the pipe closes without it; a
node started with ``--after FILE`` waits for the sentinel's ready file, and
a signal during that wait stops it normally. The whole path (both services,
enrollment, the probe) is covered by ``tests/e2e/test_storage_example.py``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

STOP_LIMIT = 20.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    return env | {"FAME_STORAGE_PROFILE": "memory", "FAME_POLICY_FILE": "allow-all"}


def _service(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fame._cli.fame", *args, "--project", str(root),
         "--ready-file", str(root / "ready"), "--gate-stdin"],
        cwd=root,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_gate_closed_without_go_starts_nothing(tmp_path: Path) -> None:
    sentinel = _service(tmp_path, "sentinel")
    out, err = sentinel.communicate(input=b"", timeout=STOP_LIMIT)  # closed, no go
    assert sentinel.returncode == 1
    assert err.decode().splitlines() == ["fame sentinel: fame up did not let it start: not started"]
    assert out == b""
    assert not (tmp_path / "ready").exists()


def test_a_signal_ends_the_nodes_wait_for_the_sentinel(tmp_path: Path) -> None:
    never = tmp_path / "sentinel.ready"
    node = _service(tmp_path, "node", "--after", str(never))
    try:
        assert node.stdin is not None and node.stdout is not None
        node.stdin.write(b"go\n")
        node.stdin.close()
        readable, _, _ = select.select([node.stdout], [], [], STOP_LIMIT)
        assert readable, "the node said nothing"
        line = node.stdout.readline().decode()
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=STOP_LIMIT)
        assert node.stderr is not None
        out, err = node.stdout.read().decode(), node.stderr.read().decode()
        assert line == "fame node: waiting for the sentinel to be ready (sentinel.ready)\n", err
        assert node.returncode == 0, err
        assert out.splitlines() == ["fame node: stopped, storage closed"]
        assert not (tmp_path / "ready").exists()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
