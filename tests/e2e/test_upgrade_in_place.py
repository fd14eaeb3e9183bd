"""A project made by the version before enrollment keeps working after the upgrade.

Real processes (``fame init|up|stop|identity|revoke|admin``, ``fame-client``),
real websockets on 127.0.0.1 and real SQLCipher files, in a temporary project.

An older project is simulated from a current one: ``fame init``, ``fame up``,
a value stored, ``fame stop``; then what the older version did not have is
taken away: ``conf/policy.toml``, ``conf/sentinel.keys`` and the sentinel's
record of the agent (``fame revoke``, which removes its enrollment, pin and
bindings). The agent's data and identity and the sentinel's own data stay as
the older version left them. A plain ``fame up`` must then do the rest and
say so, and nothing stored is lost.
"""

from __future__ import annotations

import re

import pytest

from .conftest import Project, _alive
from .fame_cli import client, fame
from .test_storage_example import wait_exited

pytestmark = pytest.mark.slow

KEY = r"ed25519:[A-Za-z0-9_-]+"


def ok(project: Project, *args: str) -> str:
    done = fame(project, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def stop(project: Project) -> None:
    pids = project.pids()
    out = ok(project, "stop")
    assert "fame stop: agent stopped" in out and "fame stop: sentinel stopped" in out, out
    for pid in pids:
        wait_exited(pid, limit=30.0)


def test_up_upgrades_a_project_made_before_enrollment(project: Project) -> None:
    root = project.root
    policy, keys = root / "conf" / "policy.toml", root / "conf" / "sentinel.keys"

    # A project as the older version left it, with a value stored.
    ok(project, "init")
    assert "storage@fame.fabric answers" in ok(project, "up")
    store = client(project, "store", "k", "v")
    assert store.returncode == 0, store.stderr
    stored = store.stdout.strip().removeprefix("Stored value: ")
    assert stored.startswith('{"value":"v","created":"'), store.stdout
    stop(project)
    identity = ok(project, "identity").split()
    assert len(identity) == 2 and re.fullmatch(KEY, identity[1]), identity
    node_id, public_key = identity
    policy.unlink()
    keys.unlink()
    revoked = ok(project, "revoke", node_id)
    assert revoked.startswith(f"revoked {node_id}: removed its enrollment"), revoked
    assert ok(project, "admin", "nodes") == "no enrolled nodes\n"
    agent_data = sorted(p.name for p in (root / "data" / "agent").iterdir())

    # fame up, nothing else: it writes the policy and the keys file, enrolls the agent, serves.
    up = fame(project, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    lines = up.stdout.splitlines()
    assert any(line.startswith("fame up: wrote conf/policy.toml: ") for line in lines), lines
    assert any(
        re.fullmatch(rf"fame up: wrote the sentinel's key {KEY} to conf/sentinel\.keys", line)
        for line in lines
    ), lines
    assert f"fame up: enrolled {node_id} as agent with {public_key}" in lines, lines
    assert "fame up: storage@fame.fabric answers via ws://127.0.0.1:" in up.stdout, lines
    assert policy.is_file() and keys.is_file()

    # Nothing lost: the value stored before the upgrade is there, as it was stored.
    get = client(project, "get", "k")
    assert get.returncode == 0, get.stderr
    assert get.stdout.strip() == f"Retrieved value: {stored}", get.stdout

    # After fame stop the sentinel's register lists the agent with its key.
    stop(project)
    nodes = ok(project, "admin", "nodes").splitlines()
    assert re.fullmatch(
        rf"{node_id} agent \(enrolled \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", nodes[0]
    ), nodes
    assert nodes[1:] == [f"  {public_key} (no end)"], nodes
    # The agent kept its identity and its store files: none made anew.
    assert ok(project, "identity").split() == identity
    assert sorted(p.name for p in (root / "data" / "agent").iterdir()) == agent_data

    # A second fame up has nothing left to upgrade: it says nothing about enrollment.
    again = ok(project, "up")
    assert "enrolled" not in again and "wrote" not in again, again
    stop(project)
    assert not any(_alive(pid) for pid in project.pids())


def test_init_with_a_memory_agent_says_it_cannot_enroll(project: Project) -> None:
    agent_env = project.root / "conf" / "agent.env"
    agent_env.write_text(agent_env.read_text() + "FAME_STORAGE_PROFILE=memory\n")
    init = fame(project, "init")
    assert init.returncode == 0, init.stdout + init.stderr
    assert "Traceback" not in init.stderr and init.stderr == "", init.stderr
    assert (
        "fame init: the agent's storage profile is 'memory': its identity does not persist,"
        " so it was not enrolled" in init.stdout
    ), init.stdout
    # The rest of the project was still made; no agent store was created on disk.
    conf = project.root / "conf"
    for name in ("secrets.env", "policy.toml", "sentinel.keys"):
        assert (conf / name).is_file(), name
    assert not (project.root / "data" / "agent").exists()
    assert ok(project, "admin", "nodes") == "no enrolled nodes\n"
