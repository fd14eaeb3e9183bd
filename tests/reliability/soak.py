"""``just soak``: the long crash loops, from the command line, with their figures.

usage: python tests/reliability/soak.py [--cycles N] [--writers N] [--seed N]
[--scenario agent|sentinel|delivery-agent|delivery-sentinel|all] [--freeze-every N]
[--keep DIR]

Runs the scenarios of :mod:`crash_loop` (SIGKILL the storage agent, then
the sentinel, under concurrent writers; then verify every acknowledged
write) and of :mod:`delivery_loop` (the same faults plus freezes that are
thawed, every write sent again with its own request id until
acknowledged; then count each write's applications and check a
register's history for linearizability), and prints what each measured.
Exits 1 if any scenario lost, damaged or doubled a write, hung, or could
not go on.
"""

from __future__ import annotations

import argparse
import functools
import secrets
import sys
import time
from pathlib import Path

import trio

if __name__ == "__main__":  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.reliability.crash_loop import (
    CALL_DEADLINE,
    SCENARIOS,
    Figures,
    errors_text,
    run_scenario,
)
from tests.reliability.delivery_loop import DELIVERY_SCENARIOS, DeliveryFigures, run_delivery
from tests.reliability.fame_services import ServiceFailed

__all__ = ["main"]


def _print(figures: Figures) -> None:
    f = figures
    print(f"scenario {f.scenario}: SIGKILL the {f.scenario} under load ({f.duration_s} s)")
    print(f"  cycles             {f.cycles} ({f.kills_mid_traffic} kills with writes in flight,")
    print(f"                     {f.in_flight_at_kills} writes in flight at the kills)")
    print(f"  kills while starting {f.early_kills}")
    print(f"  freezes (SIGSTOP)  {f.freezes} (each longer than the {CALL_DEADLINE:g} s deadline)")
    print(f"  writes attempted   {f.attempted}")
    print(f"  writes acknowledged {f.acknowledged}")
    print(f"  writes verified    {f.verified}")
    print(f"  lost               {f.lost}")
    print(f"  corrupt            {f.corrupt}")
    print(f"  unknown keys       {f.unknown_keys}")
    print(f"  stored values      {f.stored} (all pass their checksum: {f.corrupt == 0})")
    print(
        f"  stored, not acked  {f.stored_unacknowledged} (committed; the ack died with a process)"
    )
    print(f"  errors by kind     {errors_text(f.errors)}")
    print(
        f"  hangs              {f.hangs} (worst overshoot of a deadline: {f.worst_overshoot_s} s)"
    )
    print(f"  worst recovery     {f.worst_recovery_s:.2f} s from restart to the next ack")
    print(f"  client re-attaches {f.client_reattaches}")
    print(f"  fame check         {'ok' if f.check_ok else 'DAMAGED'}")
    print(
        f"  peak RSS           sentinel {f.peak_rss_sentinel_mib} MiB,"
        f" agent {f.peak_rss_agent_mib} MiB"
    )


def _print_delivery(figures: DeliveryFigures) -> None:
    f = figures
    print(f"scenario delivery-{f.scenario}: every write applied once ({f.duration_s} s)")
    print(f"  cycles             {f.cycles} ({f.kills} SIGKILLs, {f.freezes} freezes then thaws)")
    print(f"  writes             {f.writes} ({f.acknowledged} acknowledged, {f.unresolved} not)")
    print(f"  applied once       {f.applied_once}")
    print(f"  applied twice      {f.applied_twice}")
    print(f"  acknowledged, lost {f.lost}")
    print(f"  sent again         {f.resent} (same request id)")
    print(
        f"  answers            {f.answers_outcome_unknown} outcome unknown,"
        f" {f.answers_not_applied} not applied"
    )
    print(
        f"  register           {f.register_operations} operations,"
        f" linearizable: {f.register_linearizable} (checked in {f.register_check_s} s)"
    )
    print(f"  worst recovery     {f.worst_recovery_s:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="SIGKILL the storage agent and/or the sentinel under write load, then"
        " verify that no acknowledged write was lost and no stored value is damaged."
    )
    parser.add_argument("--cycles", type=int, default=200, help="kills per scenario (200)")
    parser.add_argument("--writers", type=int, default=16, help="concurrent writers (16)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (random by default)")
    delivery = [f"delivery-{name}" for name in DELIVERY_SCENARIOS]
    parser.add_argument("--scenario", choices=[*SCENARIOS, *delivery, "all"], default="all")
    parser.add_argument(
        "--freeze-every", type=int, default=10,
        help="SIGSTOP the victim past the call deadline before every Nth kill (10; 0: never)",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (logs)")
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.writers < 1:
        parser.error("--cycles and --writers must be at least 1")
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    print(f"soak: seed {seed}, {args.cycles} cycles, {args.writers} writers", flush=True)
    scenarios = (*SCENARIOS, *delivery) if args.scenario == "all" else (args.scenario,)
    failed = False
    for scenario in scenarios:
        root = args.keep / scenario if args.keep else None
        begun = time.monotonic()
        if scenario.startswith("delivery-"):
            failed |= _run_delivery(scenario, args, seed, root, begun)
            continue
        try:
            scenario_run = functools.partial(
                run_scenario,
                scenario,
                cycles=args.cycles,
                writers=args.writers,
                seed=seed,
                freeze_every=args.freeze_every,
                root=root,
            )
            figures = trio.run(scenario_run)
        except ServiceFailed as exc:
            print(f"scenario {scenario}: FAILED after {time.monotonic() - begun:.0f} s: {exc}")
            failed = True
            continue
        _print(figures)
        problems = figures.problems()
        if problems:
            print(f"scenario {scenario}: FAILED: {'; '.join(problems)}")
            failed = True
        sys.stdout.flush()
    return 1 if failed else 0


def _run_delivery(
    scenario: str, args: argparse.Namespace, seed: int, root: Path | None, begun: float
) -> bool:
    """Run one delivery scenario and print it; True if it failed."""
    name = scenario.removeprefix("delivery-")
    try:
        figures = trio.run(
            functools.partial(
                run_delivery,
                name,
                cycles=args.cycles,
                writers=args.writers,
                seed=seed,
                freeze_every=args.freeze_every,
                root=root,
            )
        )
    except ServiceFailed as exc:
        print(f"scenario {scenario}: FAILED after {time.monotonic() - begun:.0f} s: {exc}")
        return True
    _print_delivery(figures)
    problems = figures.problems()
    if problems:
        print(f"scenario {scenario}: FAILED: {'; '.join(problems)}")
    sys.stdout.flush()
    return bool(problems)


if __name__ == "__main__":
    sys.exit(main())
