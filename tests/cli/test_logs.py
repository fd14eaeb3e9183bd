"""The programs' log output: the library logs, the program decides where it goes.

``FAME_SHOW_ENVELOPES=1`` turns on the ``fame.trace`` logger, whose records
the programs write with the same one-line-per-envelope text as before the
library stopped printing, after the time, level and logger of every
readable record. Each check runs in a fresh interpreter, because logging
configuration is process-wide.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

CHILD = """
import sys
from fame._cli._logs import configure_logging
from fame._fabric._trace import show_envelope, tracing_enabled
from fame._wire._schema import Envelope, Request
import logging

settings = dict(arg.split("=", 1) for arg in sys.argv[1:])
configure_logging(settings, show_envelopes=settings.pop("VERBOSE", "") == "1")
print("enabled", tracing_enabled(), flush=True)
request = Request(op="say", args={"text": "hi"})
show_envelope("send", Envelope(hops=1, id=7, corr=3, to="echo@fame.fabric", frame=request), 61)
logging.getLogger("fame.sentinel").info("an info line")
logging.getLogger("fame.sentinel").warning("a warning line")
"""


RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)$")


def records(text: str) -> list[tuple[str, ...]]:
    """``(level, logger, message)`` of each line, which must all be readable records."""
    found = [RECORD.match(line) for line in text.splitlines()]
    assert all(found), text
    return [m.groups() for m in found if m]


def run_child(*settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    return subprocess.run(
        [sys.executable, "-c", CHILD, *settings],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_show_envelopes_writes_one_plain_line_per_envelope_on_stderr() -> None:
    done = run_child("FAME_SHOW_ENVELOPES=1")
    assert done.stdout == "enabled True\n"
    assert records(done.stderr) == [
        ("DEBUG", "fame.trace", "fame send id=7 corr=3 from=- to=echo@fame.fabric Request say 61B"),
        ("INFO", "fame.sentinel", "an info line"),
        ("WARNING", "fame.sentinel", "a warning line"),
    ]


@pytest.mark.parametrize("settings", [(), ("FAME_SHOW_ENVELOPES=0",), ("FAME_LOG_LEVEL=debug",)])
def test_without_it_no_envelope_reaches_stderr(settings: tuple[str, ...]) -> None:
    done = run_child(*settings)
    assert done.stdout == "enabled False\n"
    assert [r[2] for r in records(done.stderr)] == ["an info line", "a warning line"]


def test_the_level_hides_info_lines() -> None:
    done = run_child("FAME_LOG_LEVEL=warning")
    assert records(done.stderr) == [("WARNING", "fame.sentinel", "a warning line")]


def test_the_client_verbose_option_turns_the_trace_on() -> None:
    done = run_child("VERBOSE=1")
    assert done.stdout == "enabled True\n"
    assert records(done.stderr)[0][2].startswith("fame send id=7 corr=3 ")
