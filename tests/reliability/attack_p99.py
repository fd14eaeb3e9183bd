"""``just attack``: issue 12's attacks at full size, and what they cost a legitimate client.

usage: python tests/reliability/attack_p99.py [--only NAME] [--rounds N] [--keep DIR]

For each row of issue 12's table, on a fresh sentinel and node (real
processes on 127.0.0.1, as in ``test_resource_attacks.py``): a
legitimate client calls echo and storage (echo, store, read back) for
``--rounds`` rounds while nothing happens, then as many rounds while the
attack is in place (fresh connections too, for the front-door rows).
Prints one table: the legitimate client's p50 and p99 idle and attacked
(per call, connections excluded), the ratio of the p99s (the aim is 3x
at most), the peak RSS of the sentinel and of the node, and the
legitimate successes and failures. Exits 1 if a legitimate call (or a
store of the load row) failed.
Not part of CI: it takes minutes and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

if __name__ == "__main__":  # run by path: make the repository and the tests importable
    ROOT = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.reliability.attack_process import in_own_process
from tests.reliability.attack_scenario import Outcome, percentile, run_scenario
from tests.reliability.fame_services import ECHO_AGENT, STORAGE_AGENT, FameServices
from tests.reliability.resource_attackers import (
    MIB,
    binding_flood,
    creditless_streams,
    never_attached,
    slowloris,
    unfinished_frames,
    unread_links,
    unread_replies,
)

__all__ = ["ROWS", "main"]

# name: (attack, services options, scenario options): the table's sizes.
ROWS: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
    "400 x 900 KB replies never read": (
        unread_replies,
        {},
        {"requests": 400, "record_kib": 900},
    ),
    "4 links that never read, 1 MB messages": (unread_links, {}, {"links": 4, "per_link": 300}),
    "30,000 streams without credit": (
        creditless_streams,
        {},
        {"requests": 30_000, "streams": 5},
    ),
    "1,100 websockets that never attach": (
        in_own_process(never_attached),
        {},
        {"sockets": 1100, "fresh": 72},
    ),
    "3,000 slowloris sockets, 1,024 files": (
        in_own_process(slowloris),
        {"sentinel_max_files": 1024},
        {"sockets": 3000, "fresh": 10},
    ),
    "400 unfinished 2 MB frames": (unfinished_frames, {}, {"connections": 400}),
    "10 identities x 1,024 bindings": (
        binding_flood,
        {"sentinel_storage": "encrypted-sqlite", "FAME_TRUST_ON_FIRST_USE": "1"},
        {"identities": 10, "per_identity": 1024},
    ),
    "4 processes x 512 callers (load)": (
        None,
        {},
        {"load": {"processes": 4, "callers": 512, "calls": 50}},
    ),
}


def run_row(root: Path, name: str, rounds: int) -> tuple[Outcome, float]:
    attack, options, scenario = ROWS[name]
    options = {"sentinel_storage": "memory"} | options
    services = FameServices(root, ECHO_AGENT, STORAGE_AGENT, **options)
    start = time.monotonic()
    try:
        services.up()
        outcome = trio.run(
            functools.partial(
                run_scenario, services, attack, rounds=rounds, idle_rounds=rounds, **scenario
            )
        )
    finally:
        services.abort()  # whatever still runs after the scenario's own SIGTERM
    return outcome, time.monotonic() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the rows whose name contains this text")
    parser.add_argument("--rounds", type=int, default=100, help="legitimate rounds per phase")
    parser.add_argument("--keep", type=Path, help="keep the services' directories here")
    args = parser.parse_args(argv)
    names = [name for name in ROWS if args.only is None or args.only in name]
    base = args.keep or Path(tempfile.mkdtemp(prefix="fame-attack-"))
    header = (
        f"{'attack':40} {'idle p50':>8} {'idle p99':>8} {'att. p50':>8} {'att. p99':>8}"
        f" {'ratio':>6} {'sentinel':>8} {'node':>8} {'ok':>5} {'failed':>6} {'time':>6}"
    )
    lines = []
    failed = 0
    for n, name in enumerate(names):
        outcome, took = run_row(base / f"row{n}", name, args.rounds)
        idle = outcome.idle_legit.latencies if outcome.idle_legit else []
        hit = outcome.legit.latencies
        ratio = percentile(hit, 0.99) / percentile(idle, 0.99) if idle and hit else float("nan")
        failed += len(outcome.legit.failed) + (
            sum(outcome.load.errors.values()) if outcome.load else 0
        )
        line = (
            f"{name:40} {ms(percentile(idle, 0.5)):>8} {ms(percentile(idle, 0.99)):>8}"
            f" {ms(percentile(hit, 0.5)):>8} {ms(percentile(hit, 0.99)):>8} {ratio:>5.1f}x"
            f" {outcome.peak_kib['sentinel'] / MIB:>7.0f}M {outcome.peak_kib['node'] / MIB:>7.0f}M"
            f" {outcome.legit.ok:>5} {len(outcome.legit.failed):>6} {took:>5.0f}s"
        )
        lines.append(line)
        print(line, flush=True)
        print(f"    {outcome.figures()}", flush=True)
        if outcome.load is not None:
            load = outcome.load
            print(
                f"    load: {load.ok} stores in {load.seconds:.1f} s"
                f" ({load.stores_per_s:.0f}/s), errors {dict(load.errors)}",
                flush=True,
            )
        for failure in outcome.legit.failed[:3]:
            print(f"    legitimate call failed: {failure}", flush=True)
    print()
    print("latencies in ms (echo, store, read back); peak RSS (VmHWM); ratio = attacked/idle p99")
    print(header)
    print("\n".join(lines))
    if args.keep:
        print(f"directories (logs, stores): {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)  # its conf/ holds secrets
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
