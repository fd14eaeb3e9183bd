"""The quick start's surprises that need the services, driven as a person types them.

Real processes in a temporary project (``fame init``, ``fame up``, the
client through ``just`` from a real ``bash``, ``fame stop``). Each bullet of
issue 15's list that needs a running sentinel becomes a test here: quoted
arguments reach the client intact, values come from stdin or a file, a new
shell finds the running sentinel's port, a second ``up`` on another port is
told at once, a missing token is named as missing, ``--timeout`` bounds a
frozen sentinel, ``just logs -n`` passes through, and a node whose address
another node holds fails ``up`` at once with its own reason.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import JUST, REPO, Project, free_port
from .fame_cli import client, fame
from .test_storage_example import one_error_line, wait_exited

pytestmark = pytest.mark.slow


def shell(project: Project, line: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``line`` as typed at a bash prompt, ``just`` meaning this repository's justfile."""
    just = (
        f"{shlex.quote(str(JUST))} --justfile {shlex.quote(str(REPO / 'justfile'))}"
        f" --working-directory {shlex.quote(str(project.root))}"
    )
    return project.run(["bash", "-c", line.replace("just ", just + " ", 1)], line, env=env)


def started(project: Project) -> None:
    init = fame(project, "init")
    assert init.returncode == 0, init.stderr
    up = fame(project, "up")
    assert up.returncode == 0, up.stdout + up.stderr


def stored(project: Project, key: str) -> str:
    got = client(project, "--json", "get", key)
    assert got.returncode == 0, got.stderr
    value: str = json.loads(got.stdout)["value"]
    return value


def test_just_run_passes_each_argument_as_typed(project: Project) -> None:
    started(project)
    for line, key, value in (
        ('just run store greeting "hello world"', "greeting", "hello world"),
        ("just run store k '$(echo INJECTED)'", "k", "$(echo INJECTED)"),
        ('just run store k2 "it\'s"', "k2", "it's"),
        ("just run-verbose store k3 'a  b;c|d'", "k3", "a  b;c|d"),
    ):
        result = shell(project, line)
        assert result.returncode == 0, (line, result.stderr)
        assert stored(project, key) == value


def test_store_reads_the_value_from_stdin_or_a_file(project: Project, tmp_path: Path) -> None:
    started(project)
    result = shell(project, "printf 'line one\\nline two\\n' | just run store piped -")
    assert result.returncode == 0, result.stderr
    assert stored(project, "piped") == "line one\nline two\n"
    big = tmp_path / "big.txt"
    big.write_text("é" * 300_000, encoding="utf-8")  # 600 kB: beyond a typical argv entry
    result = shell(project, f"just run store big --file {shlex.quote(str(big))}")
    assert result.returncode == 0, result.stderr
    assert stored(project, "big") == "é" * 300_000
    huge = tmp_path / "huge.txt"
    huge.write_text("x" * 5_000_000)  # larger than one message: refused in one line
    line = one_error_line(client(project, "store", "huge", "--file", str(huge)), "fame-client")
    assert "exceeds the limit of" in line and "a value must fit in one message" in line, line


def test_a_new_shell_finds_the_port_the_services_run_on(project: Project) -> None:
    init = fame(project, "init")
    assert init.returncode == 0, init.stderr
    up = fame(project, "up")  # on the project's free port, given in the environment only
    assert up.returncode == 0, up.stderr
    url = f"ws://127.0.0.1:{project.port}"
    assert (project.root / "run" / "sentinel.url").read_text().strip() == url
    new_shell = {k: v for k, v in project.env.items() if k != "FAME_SENTINEL_PORT"}
    sub = project.root / "agents"  # from a subdirectory of the project, too
    for cwd in (project.root, sub):
        result = subprocess.run(
            [*shlex.split(f"{shlex.quote(sys.executable)} -m fame._cli.client list")],
            cwd=cwd, env=new_shell, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Total stored values: 0" in result.stdout


def test_up_on_another_port_is_told_at_once(project: Project) -> None:
    started(project)
    other = free_port()
    result = fame(project, "up", FAME_SENTINEL_PORT=str(other))
    line = one_error_line(result, "fame up")
    assert line.startswith(
        f"fame up: the sentinel already runs at ws://127.0.0.1:{project.port} (pid "
    ), line
    assert f"not at ws://127.0.0.1:{other}: stop it first with: fame stop" in line
    assert "already running" not in result.stdout
    again = fame(project, "up")  # the same port: idempotent as before
    assert again.returncode == 0, again.stderr


def test_no_token_from_another_directory_is_said(project: Project, tmp_path: Path) -> None:
    started(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in project.env.items() if k != "FAME_SENTINEL_PORT"}
    env["FAME_SENTINEL_KEYS_FILE"] = str(project.root / "conf" / "sentinel.keys")
    url = f"ws://127.0.0.1:{project.port}"
    result = subprocess.run(
        [sys.executable, "-m", "fame._cli.client", "--url", url, "list"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    line = one_error_line(result, "fame-client")
    assert "wants an admission token and none was found" in line, line
    assert str(elsewhere / "conf" / "secrets.env") in line
    assert "wrong" not in line


def test_timeout_bounds_a_stopped_sentinel(project: Project) -> None:
    started(project)
    pid = int((project.root / "run" / "sentinel.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        result = client(project, "--timeout", "3", "list")
    finally:
        os.kill(pid, signal.SIGCONT)
    line = one_error_line(result, "fame-client")
    assert "within 3 s (--timeout)" in line, line


def test_just_logs_takes_its_options(project: Project) -> None:
    started(project)
    result = shell(project, "just logs -n 3")
    assert result.returncode == 0, result.stderr
    sections = result.stdout.split("==> ")[1:]
    assert len(sections) == 2
    for section in sections:
        assert 1 <= len(section.splitlines()) - 1 <= 3, section


def test_an_address_held_by_another_node_fails_up_at_once(project: Project) -> None:
    """``data/agent`` replaced: the new node's address is still bound to the old one."""
    (project.root / "conf" / "policy.toml").parent.mkdir(exist_ok=True)
    init = fame(project, "init")
    assert init.returncode == 0, init.stderr
    allow_all = {"FAME_POLICY_FILE": "allow-all"}  # the new node may bind what the old held
    up = fame(project, "up", **allow_all)
    assert up.returncode == 0, up.stderr
    agent_pid = int((project.root / "run" / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGKILL)  # gone without a goodbye: its binding stays
    (project.root / "data" / "agent").rename(project.root / "data" / "agent.old")
    enroll = fame(project, "enroll", "--name", "agent2")
    assert enroll.returncode == 0, enroll.stderr
    result = fame(project, "up", **allow_all)
    line = one_error_line(result, "fame up")
    assert "the agent failed to start: the sentinel refused to route storage@fame.fabric" in line
    assert "already bound to another node" in line
    assert "fame admin release storage@fame.fabric" in line
    status = fame(project, "status")
    assert "serving" not in status.stdout, status.stdout


def test_status_does_not_say_serving_for_a_refused_address(project: Project) -> None:
    """The sentinel comes back with a policy that refuses the agent's address: not serving."""
    started(project)
    root = project.root
    sentinel_pid = int((root / "run" / "sentinel.pid").read_text())
    os.kill(sentinel_pid, signal.SIGKILL)  # the node stays, and re-attaches when it is back
    wait_exited(sentinel_pid, 30)
    (root / "conf" / "deny.toml").write_text("# nothing may be bound or called\n")
    log = (root / "run" / "sentinel-again.log").open("wb")
    sentinel = subprocess.Popen(
        [
            sys.executable, "-m", "fame._cli.fame", "sentinel",
            "--config", "conf/sentinel.env", "--config", "conf/secrets.env",
        ],
        cwd=root, env={**project.env, "FAME_POLICY_FILE": "conf/deny.toml"},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ready = root / "run" / "agent.ready"
        deadline = time.monotonic() + 60  # the node's reconnect backoff is at most 10 s
        while not ready.read_text().startswith("NOT serving"):
            assert time.monotonic() < deadline, ready.read_text()
            time.sleep(0.05)
        status = fame(project, "status")
        agent = next(line for line in status.stdout.splitlines() if line.startswith("agent"))
        assert "(pid " in agent and ", not serving) NOT serving storage@fame.fabric" in agent
        assert "the sentinel refused it" in agent
    finally:
        sentinel.terminate()
        sentinel.wait(30)
        log.close()
