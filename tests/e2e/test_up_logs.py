"""``fame up`` puts the services' log records in ``run/*.log``.

The sentinel's ``attached`` line was logged at info and never reached its
log before the programs configured logging; here it does, readable by
default and as JSON lines with ``FAME_LOG_FORMAT=json``.
"""

from __future__ import annotations

import json
import re

import pytest

from .conftest import Project
from .fame_cli import client, fame


@pytest.mark.parametrize("form", ["text", "json"])
def test_up_logs_the_attach_in_the_sentinel_log(project: Project, form: str) -> None:
    env = {"FAME_LOG_FORMAT": form}
    assert fame(project, "init", **env).returncode == 0
    up = fame(project, "up", **env)
    assert up.returncode == 0, up.stderr
    stored = client(project, "store", "k", "v", **env)
    assert stored.returncode == 0, stored.stderr
    assert fame(project, "stop", **env).returncode == 0
    sentinel = (project.root / "run" / "sentinel.log").read_text(encoding="utf-8")
    agent = (project.root / "run" / "agent.log").read_text(encoding="utf-8")
    if form == "json":
        documents = [json.loads(line) for line in sentinel.splitlines()]
        messages = [d["message"] for d in documents if d["logger"] == "fame.sentinel"]
        assert all(json.loads(line)["ts"] for line in agent.splitlines())
    else:
        pattern = re.compile(r"^\S+Z INFO fame\.sentinel: (.*)$")
        messages = [m[1] for m in map(pattern.match, sentinel.splitlines()) if m]
    assert any(re.match(r"node \S+ attached as node:agent", m) for m in messages), sentinel
    assert any(re.match(r"node \S+ detached", m) for m in messages), sentinel
    assert "Traceback" not in sentinel + agent
