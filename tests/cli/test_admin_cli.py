"""``fame identity|enroll|revoke|admin`` as real processes, on a project made by ``fame init``.

Every command is run with ``python -m fame._cli.fame`` in the project; the
sentinel's register is then read from its stores directly (the master key
from ``conf/secrets.env``), so each test checks what was stored, not only
what was printed. A refusal is one line on stderr, exit status 1, no
traceback, and leaves the stores as they were.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from reliability.fame_services import fame_env, free_port, run_fame

from fame._fabric._identity import KEYSTORE, ROUTE_STORE, NodeStores
from fame._fabric.sentinel._registry import NodeRegistry
from fame._protocol._credentials import Enrollment, format_public_key
from fame.storage import StorageConfig, open_storage, parse_master_key

from .test_programs_log import START_LIMIT, STOP_LIMIT

pytestmark = pytest.mark.slow

KEY_1 = format_public_key(bytes(range(32)))
KEY_2 = format_public_key(bytes(range(1, 33)))


def key_bytes(text: str) -> bytes:
    body = text.removeprefix("ed25519:")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


class Project:
    """A project directory after ``fame init``, and a view of its sentinel's stores."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def fame(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_fame(self.root, *args)

    def ok(self, *args: str) -> str:
        done = self.fame(*args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        return done.stdout

    def refused(self, *args: str) -> str:
        """The one line a refused command printed (stderr), checked for shape."""
        done = self.fame(*args)
        assert done.returncode == 1, (done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(f"fame {args[0]}"), lines
        return lines[0]

    def _config(self) -> StorageConfig:
        values = dict(
            line.split("=", 1)
            for line in (self.root / "conf" / "secrets.env").read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        return StorageConfig(
            profile="encrypted-sqlite",
            directory=self.root / "data" / "sentinel",
            master_key=parse_master_key(values["FAME_STORAGE_MASTER_KEY"]),
        )

    def _stored(self) -> tuple[dict[str, Enrollment], dict[str, bytes], dict[str, str]]:
        async def read() -> tuple[dict[str, Enrollment], dict[str, bytes], dict[str, str]]:
            async with open_storage(self._config(), purge_interval=3600) as provider:
                registry = NodeRegistry(NodeStores(provider))
                return (
                    await registry.enrollments(),
                    await registry.pins(),
                    await registry.bindings(),
                )

        return trio.run(read)

    def enrollments(self) -> dict[str, Enrollment]:
        return self._stored()[0]

    def pins(self) -> dict[str, bytes]:
        return self._stored()[1]

    def bindings(self) -> dict[str, str]:
        return self._stored()[2]

    def seed(self, pins: dict[str, bytes], bindings: dict[str, str]) -> None:
        """What an attached node would have left: a pinned key and stored bindings."""

        async def write() -> None:
            async with open_storage(self._config(), purge_interval=3600) as provider:
                stores = NodeStores(provider)
                for node_id, key in pins.items():
                    await stores.set(KEYSTORE, "pin:" + node_id, key)
                for address, record in bindings.items():
                    await stores.set(ROUTE_STORE, address, record.encode())

        trio.run(write)

    def rotated_long_ago(self, node_id: str, old: bytes, new: bytes) -> None:
        """An enrollment whose first key ended a minute ago, as a past rotation leaves it."""

        async def write() -> None:
            async with open_storage(self._config(), purge_interval=3600) as provider:
                registry = NodeRegistry(NodeStores(provider))
                then = time.time() - 120
                await registry.enroll(node_id, node_id, old, now=then)
                await registry.enroll(node_id, node_id, new, old_until=then + 60, now=then)

        trio.run(write)


def make_project(
    root: Path, suite_secrets: Any, agent_env: str | None = None
) -> tuple[Project, str]:
    if agent_env is not None:
        (root / "conf").mkdir()
        (root / "conf" / "agent.env").write_text(agent_env)
    init = run_fame(root, "init")
    suite_secrets.add_env_file(root / "conf" / "secrets.env")
    assert init.returncode == 0, init.stderr
    return Project(root), init.stdout


@pytest.fixture
def project(tmp_path: Path, suite_secrets: Any) -> Project:
    return make_project(tmp_path, suite_secrets)[0]


def test_init_enrolls_the_agent_whose_identity_fame_identity_prints(
    tmp_path: Path, suite_secrets: Any
) -> None:
    project, said = make_project(tmp_path, suite_secrets)
    node_id, key = project.ok("identity").split()
    assert f"fame init: enrolled {node_id} as agent with {key}" in said
    assert project.ok("identity") == f"{node_id} {key}\n"  # the same identity every time
    enrollment = project.enrollments()[node_id]
    assert enrollment.name == "agent"
    assert [k.public_key for k in enrollment.keys] == [key_bytes(key)]
    assert [k.not_after for k in enrollment.keys] == [None]


def test_enrolling_again_says_so_and_changes_nothing(project: Project) -> None:
    node_id, key = project.ok("identity").split()
    before = project.enrollments()
    said = project.ok("enroll")
    assert said == f"{node_id} is already enrolled as agent with {key}: nothing changed\n"
    assert "already enrolled" in project.ok("init")
    assert project.enrollments() == before


def test_a_node_of_another_machine_is_enrolled_then_its_key_rotated(project: Project) -> None:
    said = project.ok("enroll", "--name", "web", "nweb1", KEY_1)
    assert said == f"enrolled nweb1 as web with {KEY_1}\n"
    assert project.enrollments()["nweb1"].keys[0].public_key == key_bytes(KEY_1)
    started = time.time()
    said = project.ok("enroll", "nweb1", KEY_2, "--rotate-grace", "60")
    assert said.startswith(f"updated nweb1 (web): added {KEY_2}; its other keys end at ")
    keys = {k.public_key: k.not_after for k in project.enrollments()["nweb1"].keys}
    assert keys[key_bytes(KEY_2)] is None
    old_end = keys[key_bytes(KEY_1)]
    assert old_end is not None and started + 59 <= old_end <= time.time() + 60


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("enroll", "nweb1", "rsa:AAAA"), "bad public key: a public key starts with 'ed25519:'"),
        (("enroll", "nweb1", "ed25519:AAAA"), "bad public key: an Ed25519 public key is 32 bytes"),
        (("enroll", "nweb1"), "give both NODE_ID and PUBLIC_KEY"),
        (("enroll", "bad.id", KEY_1), "node id 'bad.id' is not valid"),
        (("enroll", "--name", "agent", "nweb1", KEY_1), "the name 'agent' is already enrolled"),
    ],
)
def test_a_bad_enrollment_is_one_line_and_stores_nothing(
    project: Project, args: tuple[str, ...], words: str
) -> None:
    before = project.enrollments()
    line = project.refused(*args)
    assert words in line and "nothing was" in line
    assert project.enrollments() == before


def test_revoke_removes_enrollment_pin_and_bindings_and_keeps_other_pool_members(
    project: Project,
) -> None:
    project.ok("enroll", "--name", "web", "nweb1", KEY_1)
    project.seed(
        pins={"nweb1": key_bytes(KEY_1), "nother": key_bytes(KEY_2)},
        bindings={"web@x": "nweb1", "pool@x": "pool:nother,nweb1", "db@x": "nother"},
    )
    said = project.ok("revoke", "nweb1")
    assert said == (
        "revoked nweb1: removed its enrollment, its pinned key, its bindings of pool@x, web@x\n"
    )
    assert "nweb1" not in project.enrollments()
    assert project.pins() == {"nother": key_bytes(KEY_2)}
    assert project.bindings() == {"pool@x": "pool:nother", "db@x": "nother"}
    line = project.refused("revoke", "nweb1")
    assert "nothing is stored for nweb1" in line


def test_release_drops_one_binding(project: Project) -> None:
    project.seed(pins={}, bindings={"web@x": "nweb1", "db@x": "nother"})
    assert project.ok("admin", "release", "web@x") == "released web@x (was bound to nweb1)\n"
    assert project.bindings() == {"db@x": "nother"}
    assert "web@x has no stored binding" in project.refused("admin", "release", "web@x")


def test_admin_lists_nodes_pins_and_bindings(project: Project) -> None:
    node_id, key = project.ok("identity").split()
    project.rotated_long_ago("nweb1", key_bytes(KEY_1), key_bytes(KEY_2))
    project.seed(pins={"nweb1": key_bytes(KEY_2)}, bindings={"web@x": "pool:nweb1"})
    lines = project.ok("admin", "nodes").splitlines()
    assert lines[0].startswith(f"{node_id} agent (enrolled ")
    assert lines[1] == f"  {key} (no end)"
    assert lines[2].startswith("nweb1 nweb1 (enrolled ")
    assert lines[3].startswith(f"  {KEY_1} (") and lines[3].endswith(", ended)")
    assert lines[4] == f"  {KEY_2} (no end)"
    assert len(lines) == 5
    assert project.ok("admin", "pins") == f"nweb1 {KEY_2}\n"
    assert project.ok("admin", "bindings") == "web@x pool:nweb1\n"


def test_a_rotation_without_grace_drops_the_old_key_at_once(project: Project) -> None:
    project.ok("enroll", "nweb1", KEY_1)
    said = project.ok("enroll", "nweb1", KEY_2, "--rotate-grace", "0")
    assert said == f"updated nweb1 (nweb1): added {KEY_2}; its other keys ended now\n"
    assert [k.public_key for k in project.enrollments()["nweb1"].keys] == [key_bytes(KEY_2)]


def test_an_agent_on_the_memory_profile_is_not_enrolled_and_init_still_succeeds(
    tmp_path: Path, suite_secrets: Any
) -> None:
    project, said = make_project(
        tmp_path, suite_secrets, agent_env="FAME_STORAGE_PROFILE=memory\nFAME_AGENTS=\n"
    )
    assert "its identity does not persist, so it was not enrolled" in said
    assert "memory" in project.refused("identity")
    assert "cannot be enrolled" in project.refused("enroll")
    assert project.ok("admin", "nodes") == "no enrolled nodes\n"


@pytest.fixture
def running_sentinel(project: Project) -> Iterator[int]:
    """A real ``fame sentinel`` of the project, recorded in run/sentinel.pid as ``fame up`` does."""
    run = project.root / "run"
    run.mkdir(exist_ok=True)
    ready = run / "sentinel.ready"
    # In its config, as `fame up` would find it: the commands ask it there.
    with (project.root / "conf" / "sentinel.env").open("a") as conf:
        conf.write(f"FAME_SENTINEL_PORT={free_port()}\n")
    with open(run / "sentinel.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fame._cli.fame", "sentinel",
             "--config", "conf/sentinel.env", "--config", "conf/secrets.env",
             "--ready-file", str(ready)],
            cwd=project.root,
            env=fame_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        (run / "sentinel.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_LIMIT
        while not ready.exists():
            assert proc.poll() is None, (run / "sentinel.log").read_text()
            assert time.monotonic() < deadline, f"no {ready} after {START_LIMIT} s"
            time.sleep(0.02)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_LIMIT)


def test_while_the_sentinel_runs_the_commands_ask_it(
    project: Project, running_sentinel: int
) -> None:
    # Its stores are locked: enroll, revoke and admin go to the running sentinel.
    said = project.ok("enroll", "--name", "web", "nweb1", KEY_1)
    assert said == f"enrolled nweb1 as web with {KEY_1}\n"
    assert "nweb1 web" in project.ok("admin", "nodes")
    line = project.refused("admin", "release", "web@x")
    assert "web@x has no binding: nothing changed" in line
    assert project.ok("revoke", "nweb1") == "revoked nweb1: removed its enrollment\n"
    said = project.ok("init")
    assert f"the sentinel is running (pid {running_sentinel}): the agent was not enrolled" in said
    # A sentinel that runs but does not answer where the config says: one line, no change.
    conf = project.root / "conf" / "sentinel.env"
    kept = conf.read_text()
    conf.write_text(kept + f"FAME_SENTINEL_PORT={free_port()}\n")
    try:
        line = project.refused("enroll", "nweb2", KEY_2)
        assert "the sentinel is running, but" in line and "nothing was changed" in line, line
    finally:
        conf.write_text(kept)


def test_after_the_sentinel_stopped_writes_work_again(project: Project) -> None:
    (project.root / "run").mkdir(exist_ok=True)
    (project.root / "run" / "sentinel.pid").write_text("999999999\n")  # a stale pid file
    assert project.ok("enroll", "nweb1", KEY_1) == f"enrolled nweb1 as nweb1 with {KEY_1}\n"
