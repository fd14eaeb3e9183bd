"""Secret hygiene at the programs' edge: real ``fame`` processes on 127.0.0.1.

- The admission token never comes from argv (``ps`` shows argv to every
  user): ``fame-client --token VALUE`` is refused with one line, and the
  token comes from ``--token-file PATH``, ``--token-file -`` (stdin),
  ``FAME_ADMISSION_TOKEN`` or ``conf/secrets.env``.
- ``fame sentinel`` and ``fame node`` (and every ``fame`` command, and
  ``fame-client``) run with ``RLIMIT_CORE`` (0, 0) and are not dumpable.
  Dumpability is read from outside: the kernel makes the ``/proc/<pid>``
  files of a non-dumpable process owned by root:root, so the processes
  are started with a group other than root's (or, run by another user,
  keep their own), and a control process started the same way shows that
  the owner is otherwise its own.
- The programs drop the master key's text once it is parsed.
- ``fame keygen`` writes checked keys, ``--convert`` rewrites an older key
  checked (the same key: the data stays readable), and a mistyped checked
  key stops a service at start with one line naming the variable.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fame.storage import MasterKey, parse_master_key

from .test_programs_log import START_LIMIT, STOP_LIMIT, free_port

REPO = Path(__file__).resolve().parents[2]
ECHO_AGENT = "tests.fabric.fabric_agents:Echo@echo@fame.fabric"
NOGROUP = 65534
PR_GET_DUMPABLE = 3


# These programs are about secrets, not about who may do what: every admitted
# peer may do everything, and nodes are enrolled at first sight. The sentinel
# writes its keys into conf/sentinel.keys of the directory it runs in, where
# the node and the client find them.
TRUSTING = {"FAME_POLICY_FILE": "allow-all", "FAME_TRUST_ON_FIRST_USE": "1"}


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | TRUSTING | settings


def _popen_options() -> dict[str, Any]:
    """Run as root, start children with another group, so that root:root means non-dumpable."""
    return {"group": NOGROUP} if os.getuid() == 0 else {}


def _owner(pid: int) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/status")
    return st.st_uid, st.st_gid


def _core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core limit in /proc/<pid>/limits")


def _dumpable(pid: int) -> bool:
    return _owner(pid) != (0, 0)


class Service:
    def __init__(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.ready = root / f"{name}.ready"
        self.log = root / f"{name}.log"
        (root / "conf").mkdir(exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fame._cli.fame", *args, "--ready-file", str(self.ready)],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **_popen_options(),
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_LIMIT
        while not self.ready.exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"not ready in {START_LIMIT} s"
            time.sleep(0.02)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_LIMIT)


@pytest.fixture
def fabric(tmp_path: Path, suite_secrets: Any) -> Iterator[dict[str, Any]]:
    """A ``fame sentinel`` and a ``fame node`` serving Echo, encrypted, checked master key."""
    token = secrets.token_urlsafe(32)
    key = MasterKey.generate().export()
    suite_secrets.add("token", token)
    suite_secrets.add("master_key", key)
    port = free_port()
    common = {
        "FAME_SENTINEL_PORT": str(port),
        "FAME_ADMISSION_TOKEN": token,
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_MASTER_KEY": key,
    }
    sentinel = Service(
        tmp_path,
        "sentinel",
        ["sentinel"],
        _env(**common, FAME_STORAGE_DB_DIRECTORY=str(tmp_path / "data" / "sentinel")),
    )
    started = [sentinel]
    try:
        sentinel.wait_ready()
        node = Service(
            tmp_path,
            "node",
            ["node", "--agent", ECHO_AGENT],
            _env(**common, FAME_STORAGE_DB_DIRECTORY=str(tmp_path / "data" / "node")),
        )
        started.append(node)
        node.wait_ready()
        yield {
            "root": tmp_path,
            "url": f"ws://127.0.0.1:{port}",
            "token": token,
            "sentinel": sentinel,
            "node": node,
        }
    finally:
        for service in reversed(started):
            assert service.stop() == 0, service.log.read_text()


def _client(
    root: Path, *args: str, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.client", *args],
        cwd=root,
        env=_env(**env),
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_services_run_without_core_dumps_and_are_not_dumpable(fabric: dict[str, Any]) -> None:
    # The control: a process started the same way, that hardens nothing, is dumpable.
    control = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        **_popen_options(),
    )
    try:
        assert _dumpable(control.pid), _owner(control.pid)
    finally:
        assert control.stdin is not None
        control.stdin.close()
        control.wait(STOP_LIMIT)
    for name in ("sentinel", "node"):
        pid = fabric[name].proc.pid
        assert _core_limit(pid) == ("0", "0"), name
        assert not _dumpable(pid), (name, _owner(pid))
    # Still serving: hardening costs nothing to a legitimate client.
    done = _client(fabric["root"], "--url", fabric["url"], "call", "echo@fame.fabric", "say",
                   "text=hi", FAME_ADMISSION_TOKEN=fabric["token"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '"hi"'


def test_the_client_hardens_itself_before_reading_anything(tmp_path: Path) -> None:
    code = (
        "import ctypes, sys\n"
        "from fame._cli import client\n"
        "status = client.main(['--token', 'x', 'list'])\n"
        f"dumpable = ctypes.CDLL(None).prctl({PR_GET_DUMPABLE}, 0, 0, 0, 0)\n"
        "core = [l for l in open('/proc/self/limits') if l.startswith('Max core')][0].split()\n"
        "print(status, dumpable, core[4], core[5])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.split() == ["2", "0", "0", "0"], done.stdout + done.stderr


def test_the_client_refuses_a_token_in_argv_and_reads_it_from_a_file_or_stdin(
    fabric: dict[str, Any],
) -> None:
    root, url, token = fabric["root"], fabric["url"], fabric["token"]
    call = ["--url", url, "call", "echo@fame.fabric", "say", "text=hi"]
    # Refused wherever it is written, before anything is sent; the value is never echoed.
    for argv in (
        ["--token", token, *call],
        [f"--token={token}", *call],
        [*call, "--token", token],
        # A token may start with '-' (token_urlsafe does, 1 time in 64); argparse
        # would read it as an option and print its own usage instead.
        ["--token", "-" + token, *call],
        [*call, "--token", "-" + token],
    ):
        done = _client(root, *argv)
        assert done.returncode == 2, done.stdout
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fame-client: --token is refused"), lines
        assert "--token-file" in lines[0] and "FAME_ADMISSION_TOKEN" in lines[0]
        assert token not in done.stderr + done.stdout
    token_file = root / "token.env"  # .env: a file that holds a secret on purpose
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    for argv, stdin in (
        (["--token-file", str(token_file), *call], None),
        (["--token-file", "-", *call], token + "\n"),
        ([*call, "--token-file", "-"], token),
    ):
        done = _client(root, *argv, input=stdin)
        assert (done.returncode, done.stdout.strip()) == (0, '"hi"'), done.stderr
    # The environment still works; a wrong token in a file is refused as any wrong token.
    assert _client(root, *call, FAME_ADMISSION_TOKEN=token).returncode == 0
    wrong = root / "wrong-token.env"
    wrong.write_text(secrets.token_urlsafe(32))
    done = _client(root, "--token-file", str(wrong), *call)
    assert done.returncode == 1 and "refused admission" in done.stderr
    for argv, stdin, reason in (
        (["--token-file", str(root / "missing"), *call], None, "does not exist"),
        (["--token-file", "-", *call], "\n", "holds no token"),
    ):
        done = _client(root, *argv, input=stdin)
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1 and reason in lines[0], lines


def test_no_fame_command_takes_a_token_in_argv() -> None:
    from fame._cli import fame as fame_cli

    parser = fame_cli._parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        texts += [sub.format_help() for sub in action.choices.values()]  # type: ignore[union-attr]
    assert len(texts) > 10
    assert not [text for text in texts if "--token" in text]


def test_the_programs_drop_the_master_key_text_once_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fame._cli import _runner

    text = MasterKey.generate().export()
    monkeypatch.setenv("FAME_STORAGE_MASTER_KEY", text)
    settings = {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": "/nonexistent/not-opened-here",
        "FAME_STORAGE_MASTER_KEY": text,
    }
    config = _runner.storage_config(settings)
    assert config.master_key == parse_master_key(text)
    assert "FAME_STORAGE_MASTER_KEY" not in settings
    assert "FAME_STORAGE_MASTER_KEY" not in os.environ
    assert all(text not in value for value in (*config.env.values(), *settings.values()))


def _fame(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", *args], cwd=root, env=_env(**env),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_keygen_keys_are_checked_and_convert_keeps_the_key(
    tmp_path: Path, suite_secrets: Any
) -> None:
    made = _fame(tmp_path, "keygen")
    assert made.returncode == 0, made.stderr
    suite_secrets.add("master_key", made.stdout.strip())
    assert parse_master_key(made.stdout.strip()).checked
    legacy = secrets.token_urlsafe(32)
    suite_secrets.add("master_key", legacy)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "secrets.env").write_text(f"FAME_STORAGE_MASTER_KEY={legacy}\n")
    converted = _fame(tmp_path, "keygen", "--convert")
    assert (converted.returncode, converted.stderr) == (0, ""), converted.stderr
    suite_secrets.add("master_key", converted.stdout.strip())
    assert parse_master_key(converted.stdout.strip()) == parse_master_key(legacy)
    (tmp_path / "conf" / "secrets.env").unlink()
    missing = _fame(tmp_path, "keygen", "--convert")
    assert missing.returncode == 1 and "FAME_STORAGE_MASTER_KEY is not set" in missing.stderr


def test_services_refuse_a_mistyped_key_and_warn_about_an_older_one(
    tmp_path: Path, suite_secrets: Any
) -> None:
    key = MasterKey.generate().export()
    mistyped = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    legacy = secrets.token_urlsafe(32)
    for value in (key, mistyped, legacy):
        suite_secrets.add("master_key", value)
    settings = {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": str(tmp_path / "data"),
        "FAME_ADMISSION_TOKEN": secrets.token_urlsafe(32),
        "FAME_SENTINEL_PORT": "0",
    }
    suite_secrets.add("token", settings["FAME_ADMISSION_TOKEN"])
    done = _fame(tmp_path, "sentinel", **settings, FAME_STORAGE_MASTER_KEY=mistyped)
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("fame sentinel: FAME_STORAGE_MASTER_KEY: fails its checksum")
    assert not (tmp_path / "data").exists()  # refused before the storage opened
    # An older key, as today's conf/secrets.env holds: one warning line, then it serves.
    sentinel = Service(
        tmp_path, "sentinel", ["sentinel"], _env(**settings, FAME_STORAGE_MASTER_KEY=legacy)
    )
    try:
        sentinel.wait_ready()
    finally:
        assert sentinel.stop() == 0
    log = sentinel.log.read_text()
    warnings = [line for line in log.splitlines() if "FAME_STORAGE_MASTER_KEY" in line]
    assert len(warnings) == 1 and "fame keygen --convert" in warnings[0], log
    assert "listening on" in log and legacy not in log
    # The offline commands too: one warning, however often they open the files.
    checked = _fame(tmp_path, "check", str(tmp_path / "data"), **settings,
                    FAME_STORAGE_MASTER_KEY=legacy)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    warnings = [line for line in checked.stderr.splitlines() if "FAME_STORAGE_MASTER_KEY" in line]
    assert len(warnings) == 1 and "fame keygen --convert" in warnings[0], checked.stderr
