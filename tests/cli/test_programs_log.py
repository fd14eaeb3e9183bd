"""What the programs write, now that the library only logs: real processes on 127.0.0.1.

A ``fame sentinel`` with open admission and ``FAME_SHOW_ENVELOPES=1``, and a
``fame-client --verbose`` calling an agent nobody serves: the warning about
open admission appears once, and both programs print the envelope lines
(``fame send``, ``fame recv``, ``fame route``) as before.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

START_LIMIT = 30.0  # seconds the sentinel may take to write its ready file
STOP_LIMIT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def program_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    # The sentinel publishes its key in conf/sentinel.keys, where the client finds it.
    defaults = {"FAME_STORAGE_PROFILE": "memory", "FAME_POLICY_FILE": "allow-all"}
    return env | defaults | settings


def messages(text: str) -> list[str]:
    """The message of every log record in ``text`` (``TIME LEVEL LOGGER: MESSAGE``)."""
    return [line.split(": ", 1)[1] for line in text.splitlines() if line[:4].isdigit()]


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_LIMIT
    while not path.exists():
        assert proc.poll() is None, proc.communicate(timeout=STOP_LIMIT)
        assert time.monotonic() < deadline, f"no {path} after {START_LIMIT} s"
        time.sleep(0.05)


def test_the_programs_print_the_envelope_lines_and_the_open_admission_warning(
    tmp_path: Path,
) -> None:
    port = free_port()
    ready = tmp_path / "sentinel.ready"
    (tmp_path / "conf").mkdir()
    sentinel = subprocess.Popen(
        [sys.executable, "-m", "fame._cli.fame", "sentinel", "--ready-file", str(ready)],
        cwd=tmp_path,
        env=program_env(
            FAME_SENTINEL_PORT=str(port), FAME_OPEN_ADMISSION="1", FAME_SHOW_ENVELOPES="1"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(ready, sentinel)
        client = subprocess.run(
            [
                sys.executable,
                "-m",
                "fame._cli.client",
                "--url",
                f"ws://127.0.0.1:{port}",
                "--token-file",
                "-",
                "--verbose",
                "get",
                "k",
            ],
            cwd=tmp_path,
            env=program_env(),
            input="any\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sentinel.send_signal(signal.SIGTERM)
        out, err = sentinel.communicate(timeout=STOP_LIMIT)
    assert sentinel.returncode == 0, err
    # Nobody serves storage@fame.fabric: the call fails, one line, after the trace.
    assert client.returncode == 1
    lines = client.stderr.splitlines()
    sent = [line for line in messages(client.stderr) if line.startswith("fame send ")]
    received = [line for line in messages(client.stderr) if line.startswith("fame recv ")]
    assert sent and "to=storage@fame.fabric Request " in sent[0] and sent[0].endswith("B")
    assert received and " Error " in received[0] and "from=-" in received[0]
    assert lines[-1].startswith("fame-client: ")
    # The sentinel: its warning once (logged, no longer also printed), and its routes.
    warnings = [line for line in messages(err) if "OPEN ADMISSION" in line]
    assert warnings == [
        "WARNING: fame sentinel runs with OPEN ADMISSION: any process that can reach"
        f" 127.0.0.1:{port} may attach as a client"
    ]
    assert [line for line in messages(err) if line.startswith("fame route ")], err
    assert "listening on" in out
