"""The quick start's surprises that need no running services, each answered in one line.

Every test runs ``fame-client`` or ``fame`` as a real process, as a person
types it, and checks that a mistake gets one line on stderr saying what is
wrong and what to do, never a raw ``ValueError(...)``, a web page or a
misleading hint. The ones that need a sentinel and a node are in
``tests/e2e/test_client_surprises_e2e.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fame.security import format_public_key

REPO = Path(__file__).resolve().parents[2]
A_KEY = format_public_key(bytes(range(32)))  # any key: these sentinels never get to prove one


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run(
    module: str, *args: str, cwd: Path, stdin: bytes = b"", **extra: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_env(**extra),
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result


def client(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return run("fame._cli.client", *args, cwd=cwd, **extra)


def one_line(result: subprocess.CompletedProcess[str], program: str = "fame-client") -> str:
    """The single stderr line of a failed command, without the program's prefix."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: "), lines
    assert "Traceback" not in result.stderr and "Error(" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("notaurl", "--url 'notaurl' is not a sentinel URL: expected ws://HOST:PORT"),
        ("ws://127.0.0.1:99999", "is not a sentinel URL: expected ws://HOST:PORT"),
        ("http://127.0.0.1:8000", "not HTTP: use ws://127.0.0.1:8000"),
        ("https://example.org:443", "not HTTP: use wss://example.org:443"),
    ],
)
def test_a_bad_url_is_named_with_the_right_form(tmp_path: Path, url: str, expected: str) -> None:
    line = one_line(client("--url", url, "list", cwd=tmp_path, FAME_SENTINEL_KEYS=A_KEY))
    assert expected in line
    assert "is it running" not in line


@pytest.mark.parametrize("port", ["99999", "notanumber", "-1"])
def test_a_bad_sentinel_port_names_the_variable(tmp_path: Path, port: str) -> None:
    result = client("list", cwd=tmp_path, FAME_SENTINEL_PORT=port, FAME_SENTINEL_KEYS=A_KEY)
    line = one_line(result)
    assert line == (
        f"fame-client: FAME_SENTINEL_PORT: expected a port number from 0 to 65535, got {port!r}"
    )


def test_outside_a_project_the_client_says_so(tmp_path: Path) -> None:
    line = one_line(client("list", cwd=tmp_path))
    assert f"{tmp_path.resolve()} is not a fame project" in line
    assert "--project DIR" in line


def test_a_non_utf8_or_missing_value_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00")
    for args, expected in (
        (("--file", "bin.dat"), "store --file: bin.dat is not UTF-8 text"),
        (("--file", "nope.txt"), "store --file: nope.txt does not exist"),
        (("v", "--file", "bin.dat"), "store: give VALUE or --file PATH, not both"),
        ((), "store: give the value to store: store KEY VALUE, store KEY -"),
    ):
        line = one_line(client("store", "k", *args, cwd=tmp_path, FAME_SENTINEL_KEYS=A_KEY))
        assert expected in line, line


@pytest.fixture
def plain_http_server(tmp_path: Path) -> Iterator[int]:
    """``python -m http.server`` on a free port: a web server, not a sentinel."""
    (tmp_path / "index.html").write_text("<html><body><h1>Hello page</h1></body></html>")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert server.stdout is not None
        assert b"Serving HTTP" in server.stdout.readline()  # listening from here
        yield port
    finally:
        server.kill()
        server.wait()


def test_a_plain_http_server_is_not_a_sentinel(tmp_path: Path, plain_http_server: int) -> None:
    url = f"ws://127.0.0.1:{plain_http_server}"
    line = one_line(client("--url", url, "list", cwd=tmp_path, FAME_SENTINEL_KEYS=A_KEY))
    assert "not a fame sentinel (HTTP status " in line, line
    assert "<" not in line and "Hello page" not in line


def test_timeout_bounds_a_server_that_never_answers(tmp_path: Path) -> None:
    """A socket that accepts (the kernel's backlog) and never answers a byte."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        result = client(
            "--timeout", "3", "--url", url, "list", cwd=tmp_path, FAME_SENTINEL_KEYS=A_KEY
        )
    line = one_line(result)
    assert f"cannot reach the sentinel at {url}: no answer within 3 s (--timeout)" in line, line


def test_timeout_must_be_a_positive_number(tmp_path: Path) -> None:
    result = client("--timeout", "0", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected a positive number of seconds, got '0'" in result.stderr


def test_sentinel_config_that_does_not_exist_is_named(tmp_path: Path) -> None:
    result = run("fame._cli.fame", "sentinel", "--config", "nope.env", cwd=tmp_path)
    line = one_line(result, "fame sentinel")
    assert (
        line == f"fame sentinel: config file {tmp_path / 'nope.env'} does not exist: check the name"
    )
    assert "init" not in line
