"""The quick start from the built wheel, in an empty directory, as a user runs it.

The wheel is built from a copy of the checkout and installed (not editable,
``--no-deps``) into a fresh venv whose dependencies come from the running
environment through a ``.pth`` line, so no package index is needed. Then,
with the working directory an empty temporary directory and only the venv's
``bin/`` ahead on ``PATH``: ``fame init``, a small agent module written as a
user would, ``fame up``, calls through ``fame-client``, ``fame stop``. The
checkout is nowhere on ``sys.path``: ``import fame`` must resolve inside the
venv, and the example's ``agents`` package must not be installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, _alive, free_port

pytestmark = pytest.mark.slow

# The build needs the package and its metadata only. The tests stay out: their
# sources hold sample secrets that the run's leak scan would find in the copy.
SKIP_IN_COPY = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "data", "run", "secrets.env", "tests", "bench",
)  # fmt: skip

GREETER_POLICY = """
[[bind]]
who = ["node:agent"]
addresses = ["greeter@fame.fabric"]

[[call]]
who = ["role:client"]
addresses = ["greeter@fame.fabric"]
operations = ["greet"]
"""

GREETER = '''\
"""A user's own agent, written next to the starter one."""

import fame


class Greeter(fame.BaseAgent):
    @fame.operation
    async def greet(self, name: str) -> str:
        return f"Hello, {name}!"
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build --wheel`` of a copy of the checkout (the checkout stays untouched)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=SKIP_IN_COPY)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(root / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (built,) = (root / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its dependencies are the running environment's."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib) / "_running_env_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    # Without PYTHONPATH: a checkout on it makes pip see fame-actors as installed
    # already (its .egg-info) and install nothing.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        check=True,
        timeout=120,
        env=env,
    )  # fmt: skip
    return path


def test_the_wheel_holds_the_library_only(wheel: Path) -> None:
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = archive.read(f"{dist_info}/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {"fame", dist_info}
    assert "fame/_cli/starter/storage_agent.py" in names
    headers = dict(
        line.split(": ", 1) for line in meta.split("\n\n", 1)[0].splitlines() if ": " in line
    )
    assert headers["Name"] == "fame-actors"
    assert headers["License-Expression"] == "Apache-2.0"


def test_the_starter_agent_is_the_example(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        starter = archive.read("fame/_cli/starter/storage_agent.py").decode()
    assert starter == (REPO / "agents" / "storage_agent.py").read_text()


class User:
    """Runs the installed programs in an empty directory, with the venv first on ``PATH``."""

    def __init__(self, venv: Path, cwd: Path, port: int) -> None:
        self.venv = venv
        self.cwd = cwd
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("FAME_") and name not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        self.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
        self.env["FAME_SENTINEL_PORT"] = str(port)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        program = shutil.which(argv[0], path=str(self.venv / "bin"))
        assert program is not None, f"{argv[0]} is not installed in the venv"
        return subprocess.run(
            [program, *argv[1:]],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pids(self) -> list[int]:
        found = []
        for path in (self.cwd / "run").glob("*.pid"):
            with contextlib.suppress(ValueError):
                found.append(int(path.read_text().strip()))
        return found


@pytest.fixture
def user(venv: Path, tmp_path: Path, suite_secrets: Any) -> Iterator[User]:
    empty = tmp_path / "my-project"
    empty.mkdir()
    person = User(venv, empty, free_port())
    try:
        yield person
    finally:
        suite_secrets.add_env_file(empty / "conf" / "secrets.env")
        pids = person.pids()
        person.run("fame", "stop")
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_quick_start_from_the_wheel_in_an_empty_directory(user: User, venv: Path) -> None:
    where = user.run("python", "-c", "import fame, sys; print(fame.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(REPO)
    no_agents = user.run("python", "-c", "import importlib.util as u; print(u.find_spec('agents'))")
    assert no_agents.stdout.strip() == "None", "the example's agents package was installed"

    # Outside a project, up says what to do, naming fame (there is no justfile here).
    outside = user.run("fame", "up")
    assert outside.returncode == 1
    assert "fame init" in outside.stderr and "just " not in outside.stderr, outside.stderr

    init = user.run("fame", "init")
    assert init.returncode == 0, init.stderr
    for name in ("conf/sentinel.env", "conf/agent.env", "conf/secrets.env", "storage_agent.py"):
        assert (user.cwd / name).is_file(), name

    # The user writes an agent module and names it in conf/agent.env.
    (user.cwd / "greeter.py").write_text(GREETER)
    agent_env = user.cwd / "conf" / "agent.env"
    lines = agent_env.read_text().splitlines()
    agents_line = next(i for i, line in enumerate(lines) if line.startswith("FAME_AGENTS="))
    lines[agents_line] += " greeter:Greeter@greeter@fame.fabric"
    agent_env.write_text("\n".join(lines) + "\n")
    # Deny by default: the README's rules let the node serve it and clients call it.
    with (user.cwd / "conf" / "policy.toml").open("a") as policy:
        policy.write(GREETER_POLICY)

    up = user.run("fame", "up")
    assert up.returncode == 0, up.stderr + up.stdout
    assert "storage@fame.fabric answers" in up.stdout
    assert "greeter@fame.fabric answers" in up.stdout
    # The services run the venv's interpreter, so they import the installed fame.
    for pid in user.pids():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert Path(command[0].decode()).parent == venv / "bin", command

    greet = user.run("fame-client", "call", "greeter@fame.fabric", "greet", "name=World")
    assert greet.returncode == 0, greet.stderr
    assert json.loads(greet.stdout) == "Hello, World!"
    store = user.run("fame-client", "--json", "store", "k1", "v1")
    assert store.returncode == 0, store.stderr
    assert json.loads(store.stdout)["value"] == "v1"
    get = user.run("fame-client", "--json", "get", "k1")
    assert get.returncode == 0, get.stderr
    assert json.loads(get.stdout)["value"] == "v1"

    stop = user.run("fame", "stop")
    assert stop.returncode == 0, stop.stderr
    assert user.run("fame", "status").returncode != 0
    assert not any(_alive(pid) for pid in user.pids())
