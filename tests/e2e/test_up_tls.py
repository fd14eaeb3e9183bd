"""``fame up`` with mutual TLS, end to end: a project made by ``fame init``, served over ``wss://``.

Real processes (``fame init``, ``fame up`` → a sentinel and a node,
``fame-client``, ``fame stop``), a real TLS websocket on 127.0.0.1 and real
SQLCipher files, in a temporary project. The certificates are made in the
test (a CA, the sentinel's certificate for 127.0.0.1 and a client
certificate, as ``tests/cli/test_cli_tls.py`` makes them). Where each
setting goes is what a user writes:

- ``conf/sentinel.env``: ``FAME_SENTINEL_TLS_CERT``/``_KEY`` and
  ``FAME_SENTINEL_TLS_CLIENT_CA`` (mutual TLS), and the client side
  ``FAME_TLS_CA``/``_CERT``/``_KEY``: ``fame-client`` and ``fame up``'s
  probe read this file (with ``conf/secrets.env``), the sentinel ignores
  the client settings;
- ``conf/agent.env``: ``FAME_SENTINEL_URL=wss://127.0.0.1:PORT`` and
  ``FAME_TLS_CA``/``_CERT``/``_KEY``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli.test_cli_tls import make_pki

from .conftest import Project, _alive
from .fame_cli import client, fame
from .test_storage_example import one_error_line, wait_exited

pytestmark = pytest.mark.slow


def add_lines(path: Path, **settings: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(f"{name}={value}\n" for name, value in settings.items()))


def test_up_serves_over_wss_with_mutual_tls(project: Project, tmp_path: Path) -> None:
    root, port = project.root, project.port
    url = f"wss://127.0.0.1:{port}"
    init = fame(project, "init")
    assert init.returncode == 0, init.stderr
    assert (root / "conf" / "sentinel.keys").exists() and (root / "conf" / "policy.toml").exists()

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    client_side = {
        "FAME_TLS_CA": str(pki["ca"]),
        "FAME_TLS_CERT": str(pki["client.crt"]),
        "FAME_TLS_KEY": str(pki["client.key"]),
    }
    add_lines(
        root / "conf" / "sentinel.env",
        FAME_SENTINEL_TLS_CERT=str(pki["sentinel.crt"]),
        FAME_SENTINEL_TLS_KEY=str(pki["sentinel.key"]),
        FAME_SENTINEL_TLS_CLIENT_CA=str(pki["ca"]),
        **client_side,
    )
    add_lines(root / "conf" / "agent.env", FAME_SENTINEL_URL=url, **client_side)

    # fame up: both start, the agent answers over wss://, with mutual TLS.
    up = fame(project, "up")
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"fame up: storage@fame.fabric answers via {url}" in up.stdout, up.stdout
    sentinel_log = (root / "run" / "sentinel.log").read_text()
    assert f"fame sentinel: listening on {url} (storage: " in sentinel_log
    assert ", mutual TLS)" in sentinel_log
    assert f"via {url}" in (root / "run" / "agent.log").read_text()
    pids = project.pids()
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)

    # fame-client over wss:// with its certificate: store, then get.
    store = client(project, "store", "k", "v")
    assert store.returncode == 0, store.stderr
    assert store.stdout.startswith('Stored value: {"value":"v","created":"'), store.stdout
    get = client(project, "get", "k")
    assert get.returncode == 0, get.stderr
    assert get.stdout.startswith('Retrieved value: {"value":"v","created":"'), get.stdout

    # Without a client certificate (the CA and token right): refused, fame's one line.
    bare = client(project, "get", "k", FAME_TLS_CERT="", FAME_TLS_KEY="")
    line = one_error_line(bare, "fame-client")
    assert f"cannot reach the sentinel at {url}" in line, line
    assert "client certificate" in line and "FAME_TLS_CERT" in line, line
    assert "Retrieved value" not in bare.stdout
    # The refusal did not disturb the services: a client with its certificate still gets k.
    again = client(project, "get", "k")
    assert again.returncode == 0 and '"value":"v"' in again.stdout, again.stderr

    # fame stop: both stop, their processes are gone.
    stop = fame(project, "stop")
    assert stop.returncode == 0, stop.stderr
    assert "fame stop: agent stopped" in stop.stdout
    assert "fame stop: sentinel stopped" in stop.stdout
    for pid in pids:
        wait_exited(pid, limit=30.0)
    assert fame(project, "status").returncode == 3
