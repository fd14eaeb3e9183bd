"""``/metrics`` and ``/healthz`` of real ``fame sentinel`` and ``fame node`` processes.

``fame init`` and ``fame up`` in a temporary project, with
``FAME_SENTINEL_METRICS_PORT`` and ``FAME_NODE_METRICS_PORT`` on free ports;
``fame-client`` stores and reads values; the endpoints are scraped over
HTTP and parsed with prometheus-client's parser, and the counters checked
against the calls made. Without the variables nothing more listens.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from reliability.fame_services import fame_env, free_port, run_cli, run_fame

from fame._cli._settings import SettingError, metrics_endpoint

pytestmark = pytest.mark.slow

STORAGE = "storage@fame.fabric"
STORES = 4
READS = 3


class Project:
    """A project made by ``fame init``, its services started with ``settings``."""

    def __init__(self, root: Path, **settings: str) -> None:
        self.root = root
        self.env = fame_env(FAME_SENTINEL_PORT=str(free_port()), **settings)

    def ok(self, *args: str) -> str:
        done = run_fame(self.root, *args, env=self.env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def client(self, *args: str) -> str:
        done = run_cli(self.root, "fame._cli.client", "--timeout", "20", *args, env=self.env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def pid(self, service: str) -> int:
        return int((self.root / "run" / f"{service}.pid").read_text().split()[0])


@contextlib.contextmanager
def services(root: Path, suite_secrets: Any, **settings: str) -> Iterator[Project]:
    project = Project(root, **settings)
    project.ok("init")
    suite_secrets.add_env_file(root / "conf" / "secrets.env")
    try:
        project.ok("up")
        yield project
    finally:
        run_fame(root, "stop", env=project.env)


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """One HTTP GET: the status code and the body."""
    with socket.create_connection((host, port), timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, text = get(port, "/metrics")
    assert code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, from ``/proc`` (Linux)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_counters_match_the_calls_made(tmp_path: Path, suite_secrets: Any) -> None:
    sentinel_port, node_port = free_port(), free_port()
    with services(
        tmp_path,
        suite_secrets,
        FAME_SENTINEL_METRICS_PORT=str(sentinel_port),
        FAME_NODE_METRICS_PORT=str(node_port),
    ) as project:
        for service, port in (("sentinel", sentinel_port), ("node", node_port)):
            code, body = get(port, "/healthz")
            assert code == 200, body
            health = json.loads(body)
            assert health["status"] == "ok" and health["service"] == service
        before = scrape(node_port)
        sentinel_before = scrape(sentinel_port)
        for n in range(STORES):
            project.client("store", f"k{n}", f"value {n}")
        for n in range(READS):
            assert f"value {n}" in project.client("get", f"k{n}")
        node = scrape(node_port)
        sentinel = scrape(sentinel_port)
        # Bound to the loopback address only: another local address is refused.
        with pytest.raises(OSError):
            get(node_port, "/metrics", host="127.0.0.2")
        log = (project.root / "run" / "agent.log").read_text()
        assert f"metrics on http://127.0.0.1:{node_port}/metrics" in log

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return node.get(key, 0.0) - before.get(key, 0.0)

    stored = {"address": STORAGE, "operation": "store_value"}
    read = {"address": STORAGE, "operation": "retrieve_value"}
    assert delta("fame_calls_total", **stored, outcome="ok") == STORES
    assert delta("fame_call_seconds_count", **stored) == STORES
    assert delta("fame_calls_total", **read, outcome="ok") == READS
    assert delta("fame_call_seconds_count", **read) == READS
    # No call of the workload failed (`fame up` probed the agent before: unknown_operation).
    failed = [k for k in node if k[0] == "fame_calls_total" and ("outcome", "ok") not in k[1]]
    assert [k for k in failed if delta(k[0], **dict(k[1]))] == []
    probe = {"address": STORAGE, "operation": "(unknown)", "outcome": "unknown_operation"}
    assert before[("fame_calls_total", frozenset(probe.items()))] >= 1
    # Each store is one write, committed before its answer; the calls came one by one.
    commits = {
        labels: v - before.get(("fame_storage_commit_batch_size_sum", labels), 0.0)
        for (name, labels), v in node.items()
        if name == "fame_storage_commit_batch_size_sum"
    }
    assert STORES in commits.values(), commits
    assert node[("fame_mailbox_depth", frozenset({("address", STORAGE)}))] == 0
    # The node's own link to the sentinel: up, its queue drained between calls.
    assert node[("fame_links", frozenset({("state", "attached")}))] == 1
    assert ("fame_link_queue_bytes", frozenset({("link", "uplink")})) in node
    # The sentinel: the node's link stays attached (each client has left).
    assert sentinel[("fame_links", frozenset({("state", "attached")}))] >= 1
    # Every call of the workload went through it to the node, none was refused.
    requests = ("fame_sentinel_requests_total", frozenset())
    assert sentinel[requests] - sentinel_before[requests] == STORES + READS
    refused = [k for k in sentinel if k[0] == "fame_sentinel_request_errors_total"]
    assert all(sentinel[k] == sentinel_before.get(k, 0.0) for k in refused), refused
    assert ("fame_sentinel_violations_total", frozenset()) in sentinel


def test_metrics_are_off_by_default(tmp_path: Path, suite_secrets: Any) -> None:
    with services(tmp_path, suite_secrets) as project:
        sentinel_pid, node_pid = project.pid("sentinel"), project.pid("agent")
        # The sentinel listens on its websocket port only, the node on nothing.
        assert listening_ports(sentinel_pid) == {int(project.env["FAME_SENTINEL_PORT"])}
        assert listening_ports(node_pid) == set()
        assert "metrics on" not in (project.root / "run" / "agent.log").read_text()


def test_a_taken_metrics_port_is_one_line_naming_the_setting(
    tmp_path: Path, suite_secrets: Any
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project = Project(tmp_path, FAME_NODE_METRICS_PORT=str(port))
        project.ok("init")
        suite_secrets.add_env_file(tmp_path / "conf" / "secrets.env")
        try:
            done = run_fame(tmp_path, "up", env=project.env)
        finally:
            run_fame(tmp_path, "stop", env=project.env)
    assert done.returncode != 0
    log = (tmp_path / "run" / "agent.log").read_text()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in log
    assert "FAME_NODE_METRICS_PORT" in log


def test_the_settings_say_off_on_or_which_variable_is_wrong() -> None:
    assert metrics_endpoint({}, "node") is None
    assert metrics_endpoint({"FAME_NODE_METRICS_PORT": "0"}, "node") is None
    assert metrics_endpoint({"FAME_SENTINEL_METRICS_PORT": "9100"}, "node") is None
    assert metrics_endpoint({"FAME_SENTINEL_METRICS_PORT": "9100"}, "sentinel") == (
        "127.0.0.1",
        9100,
    )
    wide = {"FAME_NODE_METRICS_PORT": "9101", "FAME_METRICS_HOST": "0.0.0.0"}
    assert metrics_endpoint(wide, "node") == ("0.0.0.0", 9101)
    for bad in ("99999", "nine", "-1"):
        with pytest.raises(SettingError) as caught:
            metrics_endpoint({"FAME_NODE_METRICS_PORT": bad}, "node")
        assert "FAME_NODE_METRICS_PORT" in str(caught.value)
