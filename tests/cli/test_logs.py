"""The programs' log output: the library logs, the program decides where it goes.

``FAME_SHOW_ENVELOPES=1`` turns on the ``fame.trace`` logger, whose records
the programs write as the same one-line-per-envelope text as before the
library stopped printing. Each check runs in a fresh interpreter, because
logging configuration is process-wide.
"""

from __future__ import annotations

import os
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
    assert done.stderr.splitlines() == [
        "fame send id=7 corr=3 from=- to=echo@fame.fabric Request say 61B",
        "a warning line",
    ]


@pytest.mark.parametrize("settings", [(), ("FAME_SHOW_ENVELOPES=0",)])
def test_without_it_only_warnings_reach_stderr(settings: tuple[str, ...]) -> None:
    done = run_child(*settings)
    assert done.stdout == "enabled False\n"
    assert done.stderr.splitlines() == ["a warning line"]


def test_the_client_verbose_option_turns_the_trace_on() -> None:
    done = run_child("VERBOSE=1")
    assert done.stdout == "enabled True\n"
    assert done.stderr.splitlines()[0].startswith("fame send id=7 corr=3 ")
