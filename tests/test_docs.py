"""The user documentation cannot rot: its samples run, its commands parse, its site builds.

- Every runnable sample the guide quotes (``docs/guide/examples/`` and
  ``examples/``) is run as a subprocess, with a bound on its time, and its
  output is checked against what the guide says it prints.
- ``docs/guide/examples/operate.sh``, the operations walk-through, runs for
  real in an empty directory: ``fame init``, ``up``, ``backup``, ``check``,
  ``restore``, ``salvage``, ``rekey`` and ``up`` again.
- Every ``fame``, ``fame-client`` and ``just`` command line in the guide's
  shell blocks is parsed by the program's own argument parser (or found
  among the justfile's recipes), so a renamed option breaks this test, not
  a reader's first try.
- ``mkdocs build --strict`` (what ``just docs`` runs) succeeds, and the API
  reference has an entry for every name each public module exports: a
  broken reference, link or snippet fails here, and so in CI.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import socket
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide"
SAMPLES = GUIDE / "examples"
PUBLIC_MODULES = {
    "fame": "fame",
    "storage": "fame.storage",
    "errors": "fame.errors",
    "lowlevel": "fame.lowlevel",
    "security": "fame.security",
}


def _env(**extra: str) -> dict[str, str]:
    """The environment of a sample: this checkout's fame first, no FAME_* settings inherited."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FAME_")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _run(argv: list[str], *, cwd: Path, timeout: float, **env: str) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order the lines were written
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}"
    return done.stdout


# Each sample, and lines (in order) its output must hold: what the guide says it prints.
SAMPLE_OUTPUT = {
    "docs/guide/examples/ledger.py": [
        "deposit -> 500",
        "retry 1 -> 250",
        "retry 2 -> 250",
        "withdraw -> 380",
        "declared error: InsufficientFunds",
        "invalid argument 'cents'",
        "  acct/ada Ada 380",
        "  acct/bob Bob 250",
        "after a restart, withdrawals paid: 1",
    ],
    "docs/guide/examples/fabric.py": [
        "sentinel listening on ws://127.0.0.1:",
        "client -> Hello, Ada!",
        "client -> Hello, Bob!",
        "refused: PermissionDenied",
    ],
    "examples/embedded.py": [
        "stored 'todo/1' (version 1)",
        "starred todo/2 -> Note(text='run the bench', stars=1)",
        "todo notes: ['todo/1', 'todo/2']",
        "rejected: notes@local: store_value(): invalid argument 'value'",
        "failed as declared:",
        "node closed",
    ],
    "examples/agent_state.py": [
        "run 1: bump -> 1",
        "run 1: bump -> 2",
        "run 2: bump -> 3",
        "run 2: bump -> 4",
    ],
    "examples/typed_client.py": ["ada has 3 points", "best: ada with 7 points", "13 points in all"],
}


def _in_order(output: str, expected: list[str]) -> None:
    position = 0
    for line in expected:
        found = output.find(line, position)
        assert found >= 0, f"{line!r} not found (in order) in:\n{output}"
        position = found + len(line)


@pytest.mark.parametrize("sample", sorted(SAMPLE_OUTPUT))
def test_sample_prints_what_the_guide_says(sample: str, tmp_path: Path) -> None:
    output = _run([sys.executable, str(ROOT / sample)], cwd=tmp_path, timeout=120)
    _in_order(output, SAMPLE_OUTPUT[sample])


def test_every_guide_sample_is_run_here() -> None:
    samples = {
        str(path.relative_to(ROOT)) for path in SAMPLES.iterdir() if path.suffix in (".py", ".sh")
    }
    assert samples - set(SAMPLE_OUTPUT) == {"docs/guide/examples/operate.sh"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_operations_walkthrough_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    port = str(_free_port())
    try:
        output = _run(
            ["bash", str(SAMPLES / "operate.sh")],
            cwd=project,
            timeout=240,
            FAME_SENTINEL_PORT=port,
        )
    finally:
        # Whatever happened, leave no service of ours running.
        subprocess.run(
            [sys.executable, "-m", "fame._cli.fame", "stop"],
            cwd=project,
            env=_env(FAME_SENTINEL_PORT=port),
            capture_output=True,
            timeout=60,
            check=False,
        )
    _in_order(
        output,
        [
            "storage@fame.fabric answers via ws://127.0.0.1:",
            'Retrieved value: {"value":"hello"',
            "fame backup: backups/agent-1: 4 files",
            "all 4 files ok",
            "fame restore: data/agent now holds the backup",
            "fame salvage: every record copied",
            "fame rekey: done: 8 files",
            "backups/agent-1: all 4 files ok",
            'Retrieved value: {"value":"hello"',
            "sentinel stopped",
        ],
    )


def _shell_lines() -> list[tuple[str, str]]:
    """(where, command line) of every command in the guide's shell blocks and scripts."""
    lines = []
    for page in sorted(GUIDE.glob("*.md")):
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(), re.S):
            lines += [(page.name, line) for line in block.splitlines()]
    for script in sorted(SAMPLES.glob("*.sh")):
        lines += [(script.name, line) for line in script.read_text().splitlines()]
    commands = []
    for where, line in lines:
        line = line.split(" #", 1)[0].strip().removeprefix("$ ")
        for part in re.split(r"\s*(?:&&|\|\|?|;)\s*", line):
            if part.split(" ", 1)[0] in ("fame", "fame-client", "just"):
                commands.append((where, part))
    return commands


def _parses(program: str, argv: list[str]) -> bool:
    module = importlib.import_module("fame._cli.fame" if program == "fame" else "fame._cli.client")
    try:
        module._parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def test_every_command_in_the_guide_parses() -> None:
    commands = _shell_lines()
    assert len(commands) >= 30  # the pages and the walk-through are there
    recipes = set(
        re.findall(r"^([a-z][\w-]*)(?: [^:=]*)?:(?!=)", (ROOT / "justfile").read_text(), re.M)
    )
    recipes |= set(re.findall(r"^alias (\w+) :=", (ROOT / "justfile").read_text(), re.M))
    wrong = []
    for where, line in commands:
        program, *argv = shlex.split(line)
        if program == "just":
            if argv and argv[0] not in recipes:
                wrong.append(f"{where}: {line}")
        elif not _parses(program, argv):
            wrong.append(f"{where}: {line}")
    assert wrong == []


@pytest.mark.slow
def test_site_builds_strict_with_every_public_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        timeout=300,
    )
    for page, module_name in PUBLIC_MODULES.items():
        html = (site / "reference" / page / "index.html").read_text()
        anchors = set(re.findall(r'id="([^"]+)"', html))
        module = importlib.import_module(module_name)
        missing = [name for name in module.__all__ if f"{module_name}.{name}" not in anchors]
        assert missing == [], f"reference/{page}.md lacks {missing}"
        shown = {
            a[len(module_name) + 1 :].split(".")[0]
            for a in anchors
            if a.startswith(f"{module_name}.")
        }
        assert sorted(shown - set(module.__all__)) == [], (
            f"reference/{page}.md shows non-public names"
        )
        # docs/hooks/sphinx_roles.py turned the docstrings' Sphinx roles into code.
        assert not re.findall(r":(?:class|func|meth|mod|attr|data|exc):`", html), page
    for page in sorted(GUIDE.glob("*.md")):
        html = (site / "guide" / page.stem / "index.html").read_text()
        _assert_snippets_rendered(page, html)


def _assert_snippets_rendered(page: Path, html: str) -> None:
    """Every ``--8<-- "file:section"`` of ``page`` shows its file's lines in the built page.

    A snippet line that a formatter rewrote (``--8 < --``) or that the
    snippets extension skipped would leave the marker and not the code.
    """
    text = unescape(re.sub(r"<[^>]+>", "", html))
    includes = re.findall(r'^--8<-- "([^":]+)(?::(\w+))?"$', page.read_text(), re.M)
    markers = len(re.findall(r"^-+ ?8 ?<", page.read_text(), re.M))
    assert len(includes) == markers, f"{page.name}: a snippet line is malformed"
    for path, section in includes:
        source = (ROOT / path).read_text()
        if section:
            source = source.split(f"[start:{section}]", 1)[1].split(f"[end:{section}]", 1)[0]
        for line in source.splitlines()[1:-1]:
            line = line.strip()
            if line and "--8<--" not in line:
                assert line in text, f"{page.name}: {path}:{section} not rendered ({line!r})"


def test_every_policy_in_the_guide_is_a_valid_policy() -> None:
    from fame.security import Policy

    blocks = [
        block
        for page in sorted(GUIDE.glob("*.md"))
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(), re.S)
    ]
    assert blocks
    for block in blocks:
        Policy.from_toml(block)


def test_every_setting_in_the_guide_is_a_documented_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    names = {
        name
        for page in sorted(GUIDE.glob("*.md"))
        for block in re.findall(r"```ini\n(.*?)```", page.read_text(), re.S)
        for name in re.findall(r"^(\w+)=", block, re.M)
    }
    assert names
    assert sorted(name for name in names if f"`{name}`" not in readme) == []
