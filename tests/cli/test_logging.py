"""The programs' logging, seen in real ``fame sentinel`` and ``fame node`` processes.

Each process writes its stdout and stderr to one file, as ``fame up`` does
with ``run/<service>.log``. A sentinel (memory storage, a token, trust on
first use) and a node hosting ``Crashy``, whose ``boom`` operation crashes
the first time only, on 127.0.0.1; ``fame-client call`` makes it crash once.
Every wait is on a ready file or a line of a log, bounded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WAIT_LIMIT = 60.0  # seconds a process may take to get ready or write an awaited line
STOP_LIMIT = 30.0
TRACEBACK = "Traceback (most recent call last)"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)$")

AGENT = """
import fame


class Crashy(fame.BaseAgent):
    crashed = False  # on the class: the restarted instance is a fresh one

    @fame.operation
    async def boom(self) -> str:
        if not Crashy.crashed:
            Crashy.crashed = True
            raise RuntimeError("crashy boom")
        return "fine now"


class CrashyConcurrent(fame.BaseAgent):
    # Its calls run in tasks of their own: a crash reaches the supervisor via its mailbox.

    max_concurrency = 4
    crashed = False

    @fame.operation
    async def boom(self) -> str:
        if not CrashyConcurrent.crashed:
            CrashyConcurrent.crashed = True
            raise RuntimeError("crashy boom")
        return "fine now"


class Doomed(fame.BaseAgent):
    # Crashes on its call, then in every restart: the supervisor gives up, the node stops.
    started = 0

    async def start(self) -> None:
        Doomed.started += 1
        if Doomed.started > 1:
            raise RuntimeError("doomed restart")

    @fame.operation
    async def boom(self) -> str:
        raise RuntimeError("crashy boom")


class Broken(fame.BaseAgent):
    async def start(self) -> None:
        raise RuntimeError("broken start")
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scene:
    """A project directory, its sentinel's port and token, and the processes started."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")} | {
            "FAME_STORAGE_PROFILE": "memory",
            "FAME_POLICY_FILE": "allow-all",
            "FAME_ADMISSION_TOKEN": self.token,
            "FAME_TRUST_ON_FIRST_USE": "1",
            "FAME_SENTINEL_PORT": str(self.port),
            "PYTHONPATH": os.pathsep.join(sys.path),
            **env,
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        (root / "conf").mkdir(parents=True)
        (root / "crashy.py").write_text(AGENT, encoding="utf-8")

    def start(self, name: str, *args: str, ready: bool = True) -> subprocess.Popen[bytes]:
        """``fame NAME ARGS`` with its output in ``NAME.log``; waits for its ready file."""
        ready_file = self.root / f"{name}.ready"
        command = "sentinel" if name == "sentinel" else "node"
        with (self.root / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "fame._cli.fame", command,
                 "--ready-file", str(ready_file), *args],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(process)
        if ready:
            deadline = time.monotonic() + WAIT_LIMIT
            while not ready_file.exists():
                assert process.poll() is None, self.log(name)
                assert time.monotonic() < deadline, f"{name} not ready: {self.log(name)}"
                time.sleep(0.05)
        return process

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(encoding="utf-8")

    def wait_for(self, name: str, text: str) -> None:
        deadline = time.monotonic() + WAIT_LIMIT
        while text not in self.log(name):
            assert time.monotonic() < deadline, f"no {text!r} in {name}.log: {self.log(name)}"
            time.sleep(0.05)

    def call(self, address: str, op: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fame._cli.client", "--url", f"ws://127.0.0.1:{self.port}",
             "--token-file", "-", "--timeout", "20", "call", address, op],
            cwd=self.root, env=self.env, input=self.token + "\n",
            capture_output=True, text=True, timeout=WAIT_LIMIT,
        )  # fmt: skip

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout=STOP_LIMIT)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_LIMIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def scene(tmp_path: Path, suite_secrets: Any) -> Iterator[Any]:
    made: list[Scene] = []

    def make(**env: str) -> Scene:
        one = Scene(tmp_path / f"scene{len(made)}", env)
        suite_secrets.add("token", one.token)
        made.append(one)
        return one

    try:
        yield make
    finally:
        for one in made:
            one.close()


def crash_once(scene: Scene, *, info: bool = True, agent: str = "Crashy") -> tuple[str, str]:
    """Start both, crash the agent once, stop both; return the sentinel's and the node's log."""
    sentinel = scene.start("sentinel")
    node = scene.start("node", "--agent", f"crashy:{agent}@crashy@fame.fabric")
    first = scene.call("crashy@fame.fabric", "boom")
    assert first.returncode == 1, first
    scene.wait_for("node", "crashy@fame.fabric restarted")
    again = scene.call("crashy@fame.fabric", "boom")
    assert again.returncode == 0 and json.loads(again.stdout) == "fine now", again
    assert scene.stop(node) == 0
    if info:  # the sentinel's log ends once the node's link is gone
        scene.wait_for("sentinel", "detached")
    assert scene.stop(sentinel) == 0
    return scene.log("sentinel"), scene.log("node")


def records(log: str) -> list[tuple[str, str, str]]:
    """``(level, logger, message)`` of every readable record; other lines are not records."""
    return [m.groups() for m in map(TEXT_LINE.match, log.splitlines()) if m]  # type: ignore[misc]


@pytest.mark.parametrize("agent", ["Crashy", "CrashyConcurrent"])
def test_readable_lines_show_attach_detach_and_one_traceback_per_crash(
    scene: Any, agent: str
) -> None:
    sentinel_log, node_log = crash_once(scene(), agent=agent)
    sentinel = records(sentinel_log)
    assert any(
        level == "INFO" and logger == "fame.sentinel" and re.match(r"node \S+ attached as ", text)
        for level, logger, text in sentinel
    ), sentinel_log
    assert any(re.match(r"node \S+ detached", text) for _, _, text in sentinel), sentinel_log
    node = records(node_log)
    crashes = [r for r in node if r[0] == "ERROR" and "crashed (RuntimeError: crashy boom)" in r[2]]
    assert len(crashes) == 1, node_log
    assert ("INFO", "fame.supervisor", "crashy@fame.fabric restarted (restart 1)") in node
    assert node_log.count(TRACEBACK) == 1, node_log
    assert "  RuntimeError: crashy boom" in node_log  # the traceback, indented under its record
    assert "fame node: serving crashy@fame.fabric via ws://" in node_log


def test_json_format_writes_one_object_per_line(scene: Any) -> None:
    # At the most verbose: the session's leak scan reads these logs for the token too.
    verbose = {"FAME_LOG_LEVEL": "debug", "FAME_SHOW_ENVELOPES": "1"}
    sentinel_log, node_log = crash_once(scene(FAME_LOG_FORMAT="json", **verbose))
    sentinel = [json.loads(line) for line in sentinel_log.splitlines()]
    node = [json.loads(line) for line in node_log.splitlines()]
    for document in sentinel + node:
        assert {"ts", "level", "logger", "message"} <= document.keys(), document
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", document["ts"])
    # The node, then each client call (a client attaches as a node too).
    attached = [d for d in sentinel if re.match(r"node \S+ attached as ", d["message"])]
    assert {(d["level"], d["logger"]) for d in attached} == {("INFO", "fame.sentinel")}
    assert len(attached) == 3, sentinel_log
    assert any(d["message"].startswith("listening on ws://") for d in sentinel)
    assert any(d["logger"] == "fame.trace" for d in sentinel + node)
    crashes = [d for d in node if "exception" in d]
    assert len(crashes) == 1, node_log
    assert crashes[0]["level"] == "ERROR" and crashes[0]["logger"] == "fame.supervisor"
    assert crashes[0]["exception"].startswith(TRACEBACK)
    assert "RuntimeError: crashy boom" in crashes[0]["exception"]


def test_a_record_carries_its_extra_fields_in_json() -> None:
    import logging

    from fame._cli._log_format import JsonFormatter

    record = logging.LogRecord("fame.x", logging.WARNING, "", 0, "hi %s", ("there",), None)
    record.__dict__.update({"node_id": "n1", "count": 3, "opaque": object()})
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == "hi there" and document["level"] == "WARNING"
    assert document["node_id"] == "n1" and document["count"] == 3
    assert document["opaque"].startswith("<object object")


def test_warning_level_hides_info_lines_and_a_logger_may_say_more(scene: Any) -> None:
    sentinel_log, node_log = crash_once(
        scene(FAME_LOG_LEVEL="warning", FAME_LOG_LEVELS="fame.supervisor=info"), info=False
    )
    assert all(level != "INFO" for level, _, _ in records(sentinel_log)), sentinel_log
    assert " attached as " not in sentinel_log
    infos = [r for r in records(node_log) if r[0] == "INFO"]
    assert infos == [("INFO", "fame.supervisor", "crashy@fame.fabric restarted (restart 1)")]
    assert node_log.count(TRACEBACK) == 1


def test_a_fatal_error_logs_one_traceback_and_one_line(scene: Any) -> None:
    one = scene()
    one.start("sentinel")
    node = one.start("node", "--agent", "crashy:Broken@broken@fame.fabric", ready=False)
    assert node.wait(timeout=WAIT_LIMIT) == 1
    log = one.log("node")
    assert log.count(TRACEBACK) == 1, log
    assert log.count("RuntimeError: broken start") == 2, log  # ends the traceback; the one line
    assert log.splitlines()[-1] == "fame node: RuntimeError: broken start"


def test_a_supervisor_giving_up_logs_each_crash_once_and_stops_with_one_line(
    scene: Any,
) -> None:
    one = scene()
    one.start("sentinel")
    node = one.start("node", "--agent", "crashy:Doomed@crashy@fame.fabric")
    assert one.call("crashy@fame.fabric", "boom").returncode == 1
    assert node.wait(timeout=WAIT_LIMIT) == 1
    log = one.log("node")
    crashes = [r for r in records(log) if r[0] == "ERROR"]
    assert all(logger == "fame.supervisor" for _, logger, _ in crashes), log
    assert crashes[-1][2].endswith("the supervisor gives up on it"), log
    assert log.count(TRACEBACK) == len(crashes) == 6, log  # the call's crash, 5 restarts
    last = log.splitlines()[-1]
    assert last.startswith("fame node: crashy@fame.fabric crashed 6 times"), log


LEVELS = "debug, info, warning, error, critical"
BAD = [  # variable, value, the accepted values said, the part of the value shown
    ("FAME_LOG_LEVEL", "loud", LEVELS, "'loud'"),
    ("FAME_LOG_FORMAT", "xml", "text or json", "'xml'"),
    ("FAME_LOG_LEVELS", "fame.storage", "LOGGER=LEVEL", "'fame.storage'"),
    ("FAME_LOG_LEVELS", "fame.storage=noisy", LEVELS, "'noisy'"),
]


@pytest.mark.parametrize(("name", "value", "accepted", "shown"), BAD)
@pytest.mark.parametrize("program", ["sentinel", "node", "inspect", "client"])
def test_a_bad_value_is_one_line_naming_the_variable(
    tmp_path: Path, program: str, name: str, value: str, accepted: str, shown: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")} | {name: value}
    argv = {
        "sentinel": ["-m", "fame._cli.fame", "sentinel"],
        "node": ["-m", "fame._cli.fame", "node", "--agent", "crashy:Crashy@crashy@fame.fabric"],
        "inspect": ["-m", "fame._cli.fame", "inspect", "data"],
        "client": ["-m", "fame._cli.client", "list"],
    }[program]
    done = subprocess.run(
        [sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=WAIT_LIMIT,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(("fame ", "fame-client: ")) and f"{name}" in lines[0]
    assert accepted in lines[0] and shown in lines[0]
