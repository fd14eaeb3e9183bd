"""SIGKILL a storage tool at random points of its work, then check what it left.

Used by the crash tests of ``fame rekey``, ``backup``, ``salvage`` and
``migrate``. Each point copies a prepared directory, runs the tool on the
copy as a real process, and kills it with SIGKILL after a random delay
counted from the moment the tool says it has started its work (its
``ready`` line on stdout or stderr), so the points fall inside the work,
not inside the interpreter's start-up. The delays are spread over the time
the work took in reference runs made just before, under the same load, so
a busy machine stretches both alike; a point that finds the tool finished
gives the time its work took, and the next delays follow the last few of
those, so a machine that got quieter since the reference runs does not
make the points miss the work. After each kill the caller's
``check`` looks at the directory (every file readable, nothing lost) and
usually runs the tool again to see that it finishes.

The random delay is the point under test, not a wait for something to
happen: every wait for the child is bounded.
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

__all__ = ["KillReport", "kill_at_random_points"]

START_LIMIT = 60.0
"""Seconds a tool may take to print its ready line (start-up on a busy machine)."""
RUN_LIMIT = 300.0
"""Seconds a reference run may take in all."""


@attrs.frozen
class KillReport:
    """What the points hit: how many killed the tool mid-work, how many found it done."""

    points: int
    killed_mid_work: int
    finished_first: int
    work_seconds: float


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    assert hasattr(stream, "readline")
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def _start(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path
) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def _wait_ready(
    proc: subprocess.Popen[str], lines: queue.Queue[str | None], ready: str, seen: list[str]
) -> bool:
    """Wait for the ready line; False if the tool ended first (its output is in ``seen``)."""
    deadline = time.monotonic() + START_LIMIT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"no {ready!r} line within {START_LIMIT} s: {''.join(seen)}")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            return False
        seen.append(line)
        if ready in line:
            return True


def kill_at_random_points(
    *,
    template: Path,
    work: Path,
    argv: Callable[[Path], Sequence[str]],
    ready: str,
    check: Callable[[Path, bool], None],
    env: Mapping[str, str] | None = None,
    points: int = 50,
    seed: int = 0,
    reference_runs: int = 2,
) -> KillReport:
    """Kill ``argv(directory)`` at ``points`` random moments of its work.

    ``template`` is copied to a fresh directory under ``work`` for every run
    (``shutil.copytree``, so it may hold ``conf/`` and ``data/``);
    ``argv`` gets that copy and returns the command, which runs with the
    copy as its working directory. ``ready`` is a piece of the line the
    tool prints when its work starts. ``check(copy, killed)`` is called
    after each point, with ``killed`` False when the tool had already
    finished; it asserts what must hold (and may run the tool again).
    Reference runs must succeed (exit 0) and pass ``check``.
    """
    environment = dict(os.environ if env is None else env)
    rng = random.Random(seed)
    durations = []
    for n in range(reference_runs):
        copy = work / f"reference-{n}"
        shutil.copytree(template, copy)
        proc, lines = _start(argv(copy), environment, copy)
        seen: list[str] = []
        if not _wait_ready(proc, lines, ready, seen):
            proc.wait(timeout=RUN_LIMIT)
            raise AssertionError(f"the tool ended before {ready!r}: {''.join(seen)}")
        began = time.monotonic()
        rc = proc.wait(timeout=RUN_LIMIT)
        durations.append(time.monotonic() - began)
        while (line := lines.get(timeout=30)) is not None:
            seen.append(line)
        assert rc == 0, f"reference run failed with {rc}: {''.join(seen)}"
        check(copy, False)
        shutil.rmtree(copy)
    span = max(statistics.median(durations), 0.01) * 1.2
    killed = finished = 0
    for n in range(points):
        copy = work / f"point-{n}"
        shutil.copytree(template, copy)
        proc, lines = _start(argv(copy), environment, copy)
        seen = []
        began = time.monotonic()
        if _wait_ready(proc, lines, ready, seen):
            began = time.monotonic()
            try:
                proc.wait(timeout=rng.uniform(0, span))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=RUN_LIMIT)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        else:
            finished += 1
            # The load changed since the reference runs (a shared machine): the
            # work now takes this long, so the next delays follow it and still
            # fall inside the work.
            durations.append(time.monotonic() - began)
            span = max(statistics.median(durations[-5:]), 0.01) * 1.2
            while (line := lines.get(timeout=30)) is not None:
                seen.append(line)
            output = "".join(seen)
            assert proc.returncode == 0, f"point {n}: failed with {proc.returncode}: {output}"
        check(copy, proc.returncode == -signal.SIGKILL)
        shutil.rmtree(copy)
    return KillReport(points, killed, finished, statistics.median(durations))
