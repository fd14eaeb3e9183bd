"""``FAME_TRACING``: the programs' switch for OpenTelemetry spans on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fame._cli._settings import SettingError
from fame._cli._tracing import configure_tracing


@pytest.mark.parametrize("value", ["on", "otlp", "1", "console,otlp"])
def test_an_unknown_value_is_a_setting_error(value: str) -> None:
    with pytest.raises(SettingError) as info:
        configure_tracing({"FAME_TRACING": value})
    assert str(info.value).startswith("FAME_TRACING:")


def test_off_or_unset_sets_no_provider() -> None:
    script = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from fame._cli._tracing import configure_tracing
configure_tracing({})
configure_tracing({"FAME_TRACING": "off"})
print(isinstance(trace.get_tracer_provider(), TracerProvider))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


def test_console_writes_each_span_of_a_call_to_stderr() -> None:
    script = """
import trio, fame
from fame._cli._tracing import configure_tracing

class Echo(fame.BaseAgent):
    @fame.operation
    async def echo(self, text: str) -> str:
        return text

async def main():
    async with fame.open_node() as node:
        await node.spawn(Echo, "echo@fame.test")
        print(await node.proxy("echo@fame.test", Echo).echo(text="ok"))

configure_tracing({"FAME_TRACING": "console"})
trio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok"]
    # The console exporter writes one JSON object per span (indented over lines).
    decoder = json.JSONDecoder()
    text, spans = done.stderr.strip(), []
    while text:
        span, end = decoder.raw_decode(text)
        spans.append(span)
        text = text[end:].strip()
    # (The node's own storage reads at its start are spans of their own traces.)
    [call] = [span for span in spans if span["name"] == "fame.call echo"]
    trace_id = call["context"]["trace_id"]
    names = [span["name"] for span in spans if span["context"]["trace_id"] == trace_id]
    assert names == ["fame.operation echo", "fame.call echo"]  # in the order they ended


def test_console_without_opentelemetry_says_how_to_install_it() -> None:
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed
from fame._cli._settings import SettingError
from fame._cli._tracing import configure_tracing
try:
    configure_tracing({"FAME_TRACING": "console"})
except SettingError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'fame-actors[tracing]'" in done.stdout
