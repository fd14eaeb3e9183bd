"""A key is never replaced by accident: real ``fame`` processes on a project with data.

The project is made as a user makes it (``fame init``, ``fame up``, ``fame
stop``: real SQLCipher files in ``data/sentinel`` and ``data/agent``), once,
and copied for each test. Then:

- with ``conf/secrets.env`` gone, ``fame up`` and ``fame init`` refuse to
  write a new master key: one line naming the directories, the missing file
  and how to get the key back; every file is unchanged (sha256), no file is
  added;
- a wrong key's hint names the project's ``data/`` and ``conf/secrets.env``
  for the project's own directories, and never ``clean`` for a directory
  elsewhere (built by :func:`wrong_master_key_hint` from the
  :class:`WrongMasterKey` fields the line names);
- ``fame clean`` removes nothing without a terminal unless ``--yes``; on a
  terminal (a pty) it lists what goes and ``n`` keeps everything, ``y``
  removes it; it never removes the key of data it does not manage.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability.fame_services import fame_env, free_port

from fame._cli._errors import wrong_master_key_hint
from fame._cli._stored_data import encrypted_data, lost_key_message
from fame.errors import WrongMasterKey
from fame.storage import MasterKey

pytestmark = pytest.mark.slow

WAIT = 60.0  # seconds any one command may take
OWN_DIRS = ("data/agent", "data/sentinel")


class Project:
    """A copy of the template project and the ``fame`` commands run in it."""

    def __init__(self, root: Path, logs: Path, port: int) -> None:
        self.root = root
        self.logs = logs
        self.env = fame_env(FAME_SENTINEL_PORT=str(port))

    def fame(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``fame ARGS`` without a terminal (stdin is /dev/null); output logged outside."""
        done = subprocess.run(
            [sys.executable, "-m", "fame._cli.fame", *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
            check=False,
        )
        self.logs.mkdir(exist_ok=True)
        with (self.logs / "commands.log").open("a", encoding="utf-8") as log:
            log.write(f"$ fame {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def refused(self, *args: str) -> str:
        """The one line a refused command printed on stderr."""
        done = self.fame(*args)
        assert done.returncode == 1, (done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        return lines[0]

    def on_terminal(self, *args: str, answer: bytes) -> tuple[int, str]:
        """Run ``fame ARGS`` on a pty; answer its ``[y/N]`` question; (exit status, output)."""
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fame._cli.fame", *args],
            cwd=self.root,
            env=self.env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        output = b""
        deadline = time.monotonic() + WAIT
        try:
            asked = False
            while True:
                if not asked and b"[y/N] " in output:
                    os.write(master, answer + b"\n")
                    asked = True
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no end of output within {WAIT} s: {output!r}"
                readable, _, _ = select.select([master], [], [], remaining)
                if not readable:
                    continue
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal's other end is gone
                    chunk = b""
                if not chunk:
                    break
                output += chunk
            assert asked, output
            status = proc.wait(timeout=WAIT)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
        text = output.decode(errors="replace").replace("\r\n", "\n")
        self.logs.mkdir(exist_ok=True)
        with (self.logs / "commands.log").open("a", encoding="utf-8") as log:
            log.write(f"$ fame {' '.join(args)} (terminal) -> {status}\n{text}")
        return status, text

    def digests(self) -> dict[str, str]:
        """sha256 of every file of the project (and any storage directory beside it)."""
        return {
            str(path.relative_to(self.root.parent)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(self.root.parent.rglob("*"))
            if path.is_file() and self.logs not in path.parents
        }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, suite_secrets: Any) -> Path:
    """A stopped project with data: ``fame init``, ``fame up``, ``fame stop``."""
    root = tmp_path_factory.mktemp("template") / "project"
    root.mkdir()
    maker = Project(root, root.parent / "logs", free_port())
    try:
        for command in ("init", "up"):
            done = maker.fame(command)
            suite_secrets.add_env_file(root / "conf" / "secrets.env")
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert maker.fame("stop").returncode == 0
    for directory in OWN_DIRS:
        assert encrypted_files(root / directory), directory
    return root


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "project"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("run"))
    yield Project(root, tmp_path / "logs", free_port())


def encrypted_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*_encrypted_value.db"))


@contextlib.contextmanager
def inside(root: Path) -> Iterator[None]:
    """Work in ``root`` as the ``fame`` process does (it changes into the project)."""
    here = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(here)


def lost_key_line(project: Project, command: str) -> str:
    with inside(project.root):
        return lost_key_message(command, encrypted_data(project.env))


# -- a missing key is not replaced -------------------------------------------------


def test_up_and_init_refuse_a_new_key_where_data_is(project: Project) -> None:
    root = project.root
    (root / "conf" / "secrets.env").unlink()
    before = project.digests()
    for command in ("up", "init"):
        line = project.refused(command)
        assert line == lost_key_line(project, command)
        # What it names, in the order a user should act: the key back first.
        assert line.startswith(
            f"fame {command}: conf/secrets.env is missing, but data/agent, data/sentinel hold 8"
            " encrypted store files that only its master key opens; no new key was written"
        ), line
        restore = line.index("Restore conf/secrets.env from your backup")
        assert "FAME_STORAGE_MASTER_KEY=" in line
        assert line.index("move it aside first (mv data data.old)") > restore
        assert "clean" not in line and "delete" not in line
        assert project.digests() == before  # nothing changed, nothing added
        assert not (root / "conf" / "secrets.env").exists()
        assert not (root / "run").exists()


def test_the_key_put_back_alone_is_enough_to_start_again(
    project: Project, template: Path, suite_secrets: Any
) -> None:
    """The refusal's way out works: only the master key line restored, ``fame up`` serves."""
    root = project.root
    secrets_file = root / "conf" / "secrets.env"
    key_line = next(
        line for line in secrets_file.read_text().splitlines() if line.startswith("FAME_STORAGE_")
    )
    secrets_file.write_text("# restored by hand\n")
    for command in ("up", "init"):
        assert project.refused(command) == (
            f"fame {command}: conf/secrets.env exists but lacks FAME_STORAGE_MASTER_KEY; it was"
            " left unchanged (add the line FAME_STORAGE_MASTER_KEY=... with the key data/agent,"
            " data/sentinel was created with, from your backup)"
        )
    assert secrets_file.read_text() == "# restored by hand\n"

    secrets_file.write_text(key_line + "\n")
    try:
        up = project.fame("up")
        suite_secrets.add_env_file(secrets_file)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "fame up: added a new admission token (FAME_ADMISSION_TOKEN)" in up.stdout
        assert "fame up: storage@fame.fabric answers" in up.stdout, up.stdout
    finally:
        assert project.fame("stop").returncode == 0
    assert (root / "conf" / "secrets.env").read_text().startswith(key_line + "\n")


def test_the_refusal_names_a_storage_directory_outside_data(project: Project) -> None:
    root = project.root
    elsewhere = root.parent / "elsewhere" / "agent"
    elsewhere.parent.mkdir()
    shutil.move(root / "data" / "agent", elsewhere)
    agent_env = root / "conf" / "agent.env"
    agent_env.write_text(
        re.sub(
            r"FAME_STORAGE_DB_DIRECTORY=.*",
            f"FAME_STORAGE_DB_DIRECTORY={elsewhere}",
            agent_env.read_text(),
        )
    )
    (root / "conf" / "secrets.env").unlink()
    before = project.digests()
    line = project.refused("up")
    assert line == lost_key_line(project, "up")
    assert f"{elsewhere}, data/sentinel hold 8 encrypted store files" in line, line
    assert f"(mv data data.old and mv {elsewhere} {elsewhere}.old)" in line, line
    assert project.digests() == before

    shutil.rmtree(root / "data")  # only the directory elsewhere left: still refused
    before = project.digests()
    line = project.refused("init")
    assert f"but {elsewhere} holds 4 encrypted store files" in line, line
    assert f"(mv {elsewhere} {elsewhere}.old)" in line and "mv data " not in line, line
    assert project.digests() == before


def test_a_project_without_data_still_gets_a_new_key(project: Project) -> None:
    root = project.root
    shutil.rmtree(root / "data")
    (root / "conf" / "secrets.env").unlink()
    done = project.fame("init")
    assert done.returncode == 0, done.stderr
    assert "wrote conf/secrets.env" in done.stdout
    assert "FAME_STORAGE_MASTER_KEY=" in (root / "conf" / "secrets.env").read_text()


# -- a wrong key's hint ---------------------------------------------------------------


def replace_key(project: Project) -> None:
    secrets_file = project.root / "conf" / "secrets.env"
    secrets_file.write_text(
        re.sub(
            r"FAME_STORAGE_MASTER_KEY=.*",
            f"FAME_STORAGE_MASTER_KEY={MasterKey.generate().export()}",
            secrets_file.read_text(),
        )
    )


def hint_of(project: Project, line: str, command: str, directory: Path) -> str:
    """The hint fame makes for the WrongMasterKey this line reports (its file from the line)."""
    match = re.search(r"\((\S+) cannot be decrypted", line)
    assert match, line
    assert match[1] in encrypted_files(directory), line
    with inside(project.root):
        return f"fame {command}: " + wrong_master_key_hint(
            WrongMasterKey(str(directory.resolve()), match[1])
        )


def test_a_wrong_key_in_the_project_names_data_and_secrets_env(project: Project) -> None:
    replace_key(project)
    before = project.digests()
    line = project.refused("up")
    assert line == hint_of(project, line, "up", project.root / "data" / "sentinel")
    assert line.startswith("fame up: the master key does not match the databases in data/sentinel")
    restore = line.index("restore conf/secrets.env from your backup")
    assert line.index("move it aside (mv data data.old)") > restore
    assert line.index("fame clean (it asks first)") > restore
    assert "just clean" not in line
    assert project.digests() == before


def test_a_wrong_key_elsewhere_never_says_clean(project: Project) -> None:
    elsewhere = project.root.parent / "elsewhere"
    shutil.copytree(project.root / "data" / "agent", elsewhere)
    replace_key(project)
    before = project.digests()
    line = project.refused("inspect", str(elsewhere))
    assert line == hint_of(project, line, "inspect", elsewhere)
    assert line.startswith(
        f"fame inspect: the master key does not match the databases in {elsewhere}"
    )
    assert f"move it aside (mv {elsewhere} {elsewhere}.old)" in line
    assert "clean" not in line and "conf/secrets.env" not in line
    assert project.digests() == before


# -- clean asks first -----------------------------------------------------------------


def test_clean_without_a_terminal_needs_yes(project: Project) -> None:
    root = project.root
    (root / "run").mkdir()
    (root / "run" / "agent.log").write_text("a log line\n")
    before = project.digests()
    line = project.refused("clean")
    assert line.startswith("fame clean: would stop the services and remove data/ (8 files"), line
    assert "conf/secrets.env (the master key" in line and "run/ (1 file" in line, line
    assert line.endswith(
        "nothing was removed: not asked on a terminal (run: fame clean --yes, or just clean --yes)"
    ), line
    assert project.digests() == before

    done = project.fame("clean", "--yes")
    assert done.returncode == 0, done.stderr
    for gone in ("data/", "conf/secrets.env", "run/"):
        assert f"fame clean: removed {gone}" in done.stdout
    assert not (root / "data").exists() and not (root / "run").exists()
    assert not (root / "conf" / "secrets.env").exists()
    assert (root / "conf" / "agent.env").exists() and (root / "conf" / "sentinel.env").exists()


def test_clean_on_a_terminal_asks_and_no_keeps_everything(project: Project) -> None:
    root = project.root
    before = project.digests()
    status, output = project.on_terminal("clean", answer=b"n")
    assert status == 1, output
    assert "fame clean: this stops the services and removes, for good:" in output
    assert re.search(r"^  data/  \(8 files, [\d.]+ KiB, 8 encrypted stores", output, re.M), output
    assert re.search(r"^  conf/secrets\.env  \(the master key", output, re.M), output
    assert "Remove them? [y/N] n\n" in output and "fame clean: nothing was removed" in output
    assert "fame stop" not in output  # a "no" leaves the services as they were
    assert project.digests() == before

    status, output = project.on_terminal("clean", answer=b"y")
    assert status == 0, output
    assert (
        "fame clean: removed data/" in output and "fame clean: removed conf/secrets.env" in output
    )
    assert not (root / "data").exists() and not (root / "conf" / "secrets.env").exists()


def test_a_no_leaves_running_services_running(project: Project) -> None:
    try:
        up = project.fame("up")
        assert up.returncode == 0, up.stdout + up.stderr
        status, output = project.on_terminal("clean", answer=b"n")
        assert status == 1 and "fame clean: nothing was removed" in output, output
        assert "fame stop" not in output
        running = project.fame("status")
        assert running.returncode == 0, running.stdout
    finally:
        assert project.fame("stop").returncode == 0


def test_clean_keeps_the_key_of_data_it_does_not_manage(project: Project) -> None:
    root = project.root
    elsewhere = root.parent / "elsewhere"
    shutil.move(root / "data" / "agent", elsewhere)
    agent_env = root / "conf" / "agent.env"
    agent_env.write_text(
        re.sub(
            r"FAME_STORAGE_DB_DIRECTORY=.*",
            f"FAME_STORAGE_DB_DIRECTORY={elsewhere}",
            agent_env.read_text(),
        )
    )
    secrets_text = (root / "conf" / "secrets.env").read_text()
    line = project.refused("clean")
    assert "conf/secrets.env" not in line.split("nothing was removed")[0], line

    done = project.fame("clean", "--yes")
    assert done.returncode == 0, done.stderr
    assert not (root / "data").exists()
    assert (root / "conf" / "secrets.env").read_text() == secrets_text
    assert (
        f"fame clean: conf/secrets.env is kept: {elsewhere} (not managed by fame clean) holds"
        " encrypted data under its master key"
    ) in done.stdout
    assert encrypted_files(elsewhere)
