"""Delivery under faults: a retried write applies once, and an acknowledged one is never lost.

Issue 13's loop. A real sentinel and a real node (``fame sentinel``, ``fame
node`` with ``encrypted-sqlite`` storage, serving the storage agent and the
:class:`~ledger_agent.Ledger`) run as processes; meanwhile the ``agent``
scenario SIGKILLs the node and starts it again, the ``sentinel`` scenario
the sentinel, and every ``freeze_every``-th cycle freezes the victim with
SIGSTOP for longer than a call's deadline and then *thaws* it (SIGCONT):
the requests it held run after their callers gave up, the case where an
earlier build applied 16 of 32 writes its callers were told had failed.

In this process one client runs two kinds of traffic:

- **Writers** (``Ledger.record``, not idempotent: each application stores a
  new key). Every write carries a request id of its own, chosen here; on
  an error that says it did not run (:class:`fame.errors.NotApplied`) or
  that its outcome is unknown (:class:`fame.errors.OutcomeUnknown`) the
  writer sends it again with the *same* id until it is acknowledged. At
  the end every application is counted: an acknowledged write must have
  exactly one, and no write may have two.
- **A register** (``StorageAgent.store_value`` / ``retrieve_value`` on one
  key, each write a unique value): every invocation and completion is
  recorded (:class:`linearizability.Recorder`) and the history is checked
  for linearizability (Wing & Gong search).

``soak.py --scenario delivery-agent|delivery-sentinel`` runs it for long
(``just soak``); ``test_delivery_faults.py`` runs short ones.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

import fame
from agents.storage_agent import STORAGE_AGENT_ADDRESS, StorageAgent
from fame.errors import NotApplied, OutcomeUnknown

from .crash_loop import project_root, wait_progress
from .fame_services import STORAGE_AGENT, FameServices, Process
from .ledger_agent import LEDGER_ADDRESS, LEDGER_AGENT, Ledger
from .linearizability import Recorder, check_register

__all__ = ["DELIVERY_SCENARIOS", "DeliveryFigures", "run_delivery"]

DELIVERY_SCENARIOS = ("agent", "sentinel")
CALL_DEADLINE = 5.0
"""Seconds each call may take (the proxies' timeout)."""
FINISH_LIMIT = 60.0
"""Seconds the writers get, after the last fault, to resolve the writes they hold."""
REGISTER_KEY = "register"


@dataclass
class DeliveryFigures:
    """What one delivery scenario measured."""

    scenario: str
    cycles: int = 0
    kills: int = 0
    freezes: int = 0
    writes: int = 0
    acknowledged: int = 0
    unresolved: int = 0
    applied_once: int = 0
    applied_twice: int = 0
    lost: int = 0
    unresolved_applied: int = 0
    resent: int = 0
    answers_not_applied: int = 0
    answers_outcome_unknown: int = 0
    register_operations: int = 0
    register_writes_unknown: int = 0
    register_linearizable: bool = False
    register_check_s: float = 0.0
    worst_recovery_s: float = 0.0
    duration_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    explanation: str = ""

    def summary(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["errors"] = " ".join(f"{k}:{n}" for k, n in self.errors.most_common()) or "none"
        figures.pop("explanation")
        return figures

    def problems(self) -> list[str]:
        """What went wrong, in words; empty when the scenario passed."""
        found = []
        if self.lost:
            found.append(f"{self.lost} acknowledged writes have no application")
        if self.applied_twice:
            found.append(f"{self.applied_twice} writes were applied more than once")
        if not self.register_linearizable:
            found.append(f"the register's history is not linearizable: {self.explanation}")
        if self.acknowledged == 0:
            found.append("no write was acknowledged")
        if self.cycles == 0:
            found.append("no fault was injected")
        return found


@dataclass
class _Load:
    attempted: set[str] = field(default_factory=set)
    acked: dict[str, str] = field(default_factory=dict)
    unresolved: set[str] = field(default_factory=set)
    resent: int = 0
    not_applied: int = 0
    unknown: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stop_new: trio.Event = field(default_factory=trio.Event)
    give_up: trio.Event = field(default_factory=trio.Event)


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


async def _send_until_answered(
    call: Any, load: _Load, rng: random.Random
) -> tuple[bool, Any, BaseException | None]:
    """Send ``call()`` (one request id) until it answers; (answered, result, last error)."""
    last: BaseException | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            return True, await call(), None
        except NotApplied as exc:
            load.not_applied += 1
            last = exc
        except OutcomeUnknown as exc:
            load.unknown += 1
            last = exc
        except fame.FameError as exc:
            load.errors[_kind(exc)] += 1
            return False, None, exc
        load.errors[_kind(last)] += 1
        if load.give_up.is_set():
            return False, None, last
        load.resent += 1
        await trio.sleep(rng.uniform(0.02, 0.1))


async def _writer(index: int, ledger: Any, load: _Load, rng: random.Random) -> None:
    number = 0
    while not load.stop_new.is_set():
        entry = f"e{index:02d}-{number:07d}"
        number += 1
        load.attempted.add(entry)
        proxy = ledger.with_request_id(f"{entry}-{secrets.token_hex(4)}")
        answered, key, _ = await _send_until_answered(
            lambda proxy=proxy, entry=entry: proxy.record(entry=entry), load, rng
        )
        if answered:
            load.acked[entry] = key
        else:
            load.unresolved.add(entry)


async def _register_client(
    client_id: int, storage: Any, recorder: Recorder, load: _Load, rng: random.Random
) -> None:
    number = 0
    while not load.stop_new.is_set():
        if rng.random() < 0.5:
            value = f"v{client_id}-{number}"
            number += 1
            proxy = storage.with_request_id(f"reg-{value}-{secrets.token_hex(4)}")
            call = recorder.invoke(client_id, "write", value)
            answered, _, last = await _send_until_answered(
                lambda proxy=proxy, value=value: proxy.store_value(key=REGISTER_KEY, value=value),
                load,
                rng,
            )
            if answered:
                call.ok()
            elif isinstance(last, NotApplied):
                call.not_applied()
            else:
                call.unknown()
        else:
            call = recorder.invoke(client_id, "read")
            try:
                record = await storage.retrieve_value(key=REGISTER_KEY)
            except fame.FameError:
                call.unknown()  # a read has no effect: dropped from the history
                await trio.sleep(rng.uniform(0.02, 0.1))
            else:
                call.ok(None if record is None else record.value)
        await trio.sleep(rng.uniform(0.0, 0.01))


async def _faults(
    victim: Process,
    services: FameServices,
    figures: DeliveryFigures,
    load: _Load,
    rng: random.Random,
    cycles: int,
    freeze_every: int,
) -> None:
    await wait_progress(load, len(load.acked), victim, services)
    for cycle in range(cycles):
        await trio.sleep(rng.uniform(0.05, 0.5))
        if freeze_every and cycle % freeze_every == freeze_every - 1:
            # Frozen past every caller's deadline, then thawed: what it held runs late.
            victim.freeze()
            figures.freezes += 1
            await trio.sleep(CALL_DEADLINE + 1.0)
            victim.thaw()
        else:
            await trio.to_thread.run_sync(victim.kill)
            figures.kills += 1
            await trio.sleep(rng.uniform(0.0, 0.2))
            victim.start()
            await trio.to_thread.run_sync(victim.wait_ready)
        recovery = await wait_progress(load, len(load.acked), victim, services)
        figures.worst_recovery_s = round(max(figures.worst_recovery_s, recovery), 3)
        figures.cycles += 1


async def _count_applications(
    services: FameServices, load: _Load, figures: DeliveryFigures
) -> None:
    async with fame.connect(services.url, token=services.token) as client:
        ledger = client.proxy(LEDGER_ADDRESS, Ledger).with_timeout(120)
        applied: Counter[str] = Counter()
        async for entry in ledger.applications():
            applied[entry] += 1
    figures.writes = len(load.attempted)
    figures.acknowledged = len(load.acked)
    figures.unresolved = len(load.unresolved)
    figures.applied_once = sum(1 for n in applied.values() if n == 1)
    figures.applied_twice = sum(1 for n in applied.values() if n > 1)
    figures.lost = sum(1 for entry in load.acked if applied[entry] == 0)
    figures.unresolved_applied = sum(1 for entry in load.unresolved if applied[entry])
    unknown = set(applied) - load.attempted
    if unknown:
        figures.errors["entries never written"] += len(unknown)
        figures.applied_twice += len(unknown)  # counted as a failure: nothing explains them


async def _run(
    scenario: str,
    services: FameServices,
    figures: DeliveryFigures,
    cycles: int,
    writers: int,
    register_clients: int,
    seed: int,
    freeze_every: int,
) -> None:
    rng = random.Random(seed)
    load = _Load()
    recorder = Recorder(trio.current_time)
    victim = services.node if scenario == "agent" else services.sentinel
    async with fame.connect(services.url, token=services.token) as client:
        ledger = client.proxy(LEDGER_ADDRESS, Ledger).with_timeout(CALL_DEADLINE)
        storage = client.proxy(STORAGE_AGENT_ADDRESS, StorageAgent).with_timeout(CALL_DEADLINE)
        async with trio.open_nursery() as tasks:
            for index in range(writers):
                tasks.start_soon(_writer, index, ledger, load, random.Random(rng.random()))
            for index in range(register_clients):
                task_rng = random.Random(rng.random())
                tasks.start_soon(_register_client, index, storage, recorder, load, task_rng)
            await _faults(victim, services, figures, load, rng, cycles, freeze_every)
            load.stop_new.set()  # each task resolves the call it holds, then returns
            with trio.move_on_after(FINISH_LIMIT):
                await _all_done(tasks)
            load.give_up.set()
    figures.resent = load.resent
    figures.answers_not_applied = load.not_applied
    figures.answers_outcome_unknown = load.unknown
    figures.errors = load.errors
    await _count_applications(services, load, figures)
    history = recorder.history()
    figures.register_operations = len(history)
    figures.register_writes_unknown = sum(
        1 for op in history if op.kind == "write" and op.outcome == "unknown"
    )
    started = trio.current_time()
    result = await trio.to_thread.run_sync(check_register, history)
    figures.register_check_s = round(trio.current_time() - started, 3)
    figures.register_linearizable = result.linearizable
    figures.explanation = result.explanation


async def _all_done(tasks: trio.Nursery) -> None:
    while tasks.child_tasks:  # noqa: ASYNC110 (the writers end on their own)
        await trio.sleep(0.05)


async def run_delivery(
    scenario: str,
    *,
    cycles: int,
    writers: int = 8,
    register_clients: int = 4,
    seed: int = 1,
    freeze_every: int = 4,
    root: Path | None = None,
) -> DeliveryFigures:
    """Run one delivery loop (``agent`` or ``sentinel``) and return its figures.

    Every ``freeze_every``-th cycle freezes the victim past the deadline
    and thaws it; the others SIGKILL it and start it again.
    """
    if scenario not in DELIVERY_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(DELIVERY_SCENARIOS)}")
    with project_root(root, prefix="fame-delivery-") as where:
        services = FameServices(where, STORAGE_AGENT, LEDGER_AGENT)
        figures = DeliveryFigures(scenario)
        started = trio.current_time()
        try:
            await trio.to_thread.run_sync(services.up)
            await _run(
                scenario, services, figures, cycles, writers, register_clients, seed, freeze_every
            )
        finally:
            services.abort()
            figures.duration_s = round(trio.current_time() - started, 1)
    return figures
