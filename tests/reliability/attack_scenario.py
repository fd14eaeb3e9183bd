"""The course of an attack scenario: idle figures, the attack, a legitimate client, SIGTERM.

:func:`run_scenario` is shared by ``test_resource_attacks.py`` and the
reliability recipe (``attack_p99.py``): a warmed-up idle figure, one of the
attacks of :mod:`resource_attackers` (or the load of :func:`run_load`), a
legitimate client (:class:`Legit`: echo and storage calls with a generous
deadline, stream reads, fresh connections) meanwhile, then SIGTERM while
the attack still holds. :class:`MemoryWatch` stops the attackers when a
process grows far past the bound. Deadlines here are guards against
hanging, never speed assertions.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from fabric.fabric_agents import Echo

import fame
from agents.storage_agent import StorageAgent

from .fame_services import FameServices, fame_env, rss_kib, status_kib
from .resource_attackers import ECHO, GUARD, MIB, STORAGE, Tally

LEGIT_DEADLINE = 30.0  # the legitimate client's deadline per call: generous
LEGIT_PHASE_LIMIT = 90.0  # a guard on all its calls together, so a regression fails, not hangs
ABORT_GROWTH_MIB = 400
"""Attackers stop feeding once a process grew this much (the bound is far below)."""
HERE = Path(__file__).parent


# --- the legitimate client ---------------------------------------------------------------


class Legit:
    """A client that calls echo and storage (store, then read back) and times every call."""

    def __init__(self, client: fame.Node, deadline: float = LEGIT_DEADLINE, name: str = "legit"):
        self.echo = client.proxy(ECHO, Echo).with_timeout(deadline)
        self.storage = client.proxy(STORAGE, StorageAgent).with_timeout(deadline)
        self.name = name
        self.ok = 0
        self.failed: list[str] = []
        self.latencies: list[float] = []  # of calls
        self.connects: list[float] = []  # of fresh connections (attach and one call)

    async def _timed(
        self, call: Callable[..., Any], args: dict[str, str], expected: str, field: str = ""
    ) -> None:
        start = time.perf_counter()
        try:
            got = await call(**args)
        except fame.FameError as exc:
            took = time.perf_counter() - start
            failure = f"{type(exc).__name__}({getattr(exc, 'kind', '')}) after {took:.1f} s: {exc}"
            self.failed.append(failure[:200])
            print(f"{self.name}: {failure[:200]}")
            return
        took = time.perf_counter() - start
        self.latencies.append(took)
        if took > 5:
            print(f"{self.name}: a call took {took:.1f} s")
        if (getattr(got, field, None) if field else got) == expected:
            self.ok += 1
        else:
            self.failed.append(f"wrong answer {got!r}"[:200])

    async def run(self, rounds: int, *, max_failures: int = 3) -> None:
        """``rounds`` x (echo, store, read back), one after another; stops after a few failures."""
        for i in range(rounds):
            text = f"{self.name} {i}"
            key = f"{self.name}-{i % 50}"
            await self._timed(self.echo.say, {"text": text}, text)
            await self._timed(self.storage.store_value, {"key": key, "value": text}, text, "value")
            await self._timed(self.storage.retrieve_value, {"key": key}, text, "value")
            if len(self.failed) >= max_failures:
                return  # enough to show what broke; the scenario fails on any

    async def read_stream(self, items: int) -> None:
        """Read the first ``items`` records of the storage agent's stream (one call)."""
        start = time.perf_counter()
        read = 0
        try:
            async with self.storage.retrieve_all_values() as values:
                async for _ in values:
                    read += 1
                    if read == items:
                        break
        except fame.FameError as exc:
            took = time.perf_counter() - start
            failure = f"stream: {type(exc).__name__}({getattr(exc, 'kind', '')}) after {took:.1f} s"
            self.failed.append(f"{failure}: {exc}"[:200])
            print(f"{self.name}: {failure}: {exc}"[:200])
            return
        self.latencies.append(time.perf_counter() - start)
        if read == items:
            self.ok += 1
        else:
            self.failed.append(f"stream: {read} items of {items}")

    @property
    def calls(self) -> int:
        return self.ok + len(self.failed)


async def fresh_connects(services: FameServices, count: int, legit: Legit) -> None:
    """``count`` new clients, one after another, each attaching and calling echo once."""
    for i in range(count):
        start = time.perf_counter()
        try:
            async with fame.connect(
                services.url,
                token=services.token,
                default_timeout=LEGIT_DEADLINE,
                connect_timeout=LEGIT_DEADLINE,
            ) as client:
                text = f"fresh {i}"
                got = await client.proxy(ECHO, Echo).say(text=text)
        except (fame.FameError, OSError) as exc:
            legit.failed.append(f"connect {i}: {type(exc).__name__}: {exc}"[:200])
            if len(legit.failed) >= 3:
                return  # enough to show what broke, without waiting out more deadlines
            continue
        legit.connects.append(time.perf_counter() - start)
        if got == text:
            legit.ok += 1
        else:
            legit.failed.append(f"connect {i}: wrong answer {got!r}")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


# --- memory ------------------------------------------------------------------------------


class MemoryWatch:
    """Samples the RSS of the sentinel and the node; sets ``stop`` past the abort growth."""

    def __init__(self, services: FameServices, stop: trio.Event, tally: Tally) -> None:
        self.pids = {"sentinel": services.sentinel.pid, "node": services.node.pid}
        self.base = {name: rss_kib(pid) for name, pid in self.pids.items()}
        self.stop = stop
        self.tally = tally

    async def run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                if rss_kib(pid) - self.base[name] > ABORT_GROWTH_MIB * MIB:
                    self.tally.aborted = True
                    self.stop.set()
            await trio.sleep(0.05)


def peak_kib(services: FameServices) -> dict[str, int]:
    """The peak resident memory (VmHWM) of the sentinel and the node so far."""
    return {
        "sentinel": status_kib(services.sentinel.pid, "VmHWM"),
        "node": status_kib(services.node.pid, "VmHWM"),
    }


# --- load (no attack) --------------------------------------------------------------------


@dataclass
class Load:
    """What the load processes reported: stores acknowledged, errors by type, throughput."""

    processes: int
    callers: int
    calls: int
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    @property
    def stores_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def run_load(
    services: FameServices, *, processes: int = 4, callers: int = 512, calls: int = 20
) -> Load:
    """``processes`` client processes, each with ``callers`` concurrent callers storing
    ``calls`` values each (``load_client.py``); they start together on a go line."""
    load = Load(processes, callers, calls)
    env = fame_env(FAME_ADMISSION_TOKEN=services.token)
    ready = [trio.Event() for _ in range(processes)]
    go = trio.Event()
    started = 0.0

    async def one(n: int) -> None:
        args = [sys.executable, str(HERE / "load_client.py"), services.url]
        args += [str(callers), str(calls), f"p{n}", str(LEGIT_DEADLINE)]
        process = await trio.lowlevel.open_process(
            args,
            env=env,
            stdin=-1,
            stdout=-1,
            stderr=-2,  # PIPE, PIPE, STDOUT
        )
        assert process.stdin is not None and process.stdout is not None
        output = b""
        try:
            while b"READY\n" not in output:
                chunk = await process.stdout.receive_some(65536)
                assert chunk, output.decode(errors="replace")
                output += chunk
            ready[n].set()
            await go.wait()
            await process.stdin.send_all(b"go\n")
            while chunk := await process.stdout.receive_some(65536):
                output += chunk
            await process.wait()
        finally:
            if process.returncode is None:  # only this load process, started here
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        text = output.decode(errors="replace")
        load.outputs.append(text)
        lines = [line for line in text.splitlines() if line.startswith("{")]
        assert lines, text[-2000:]
        result = json.loads(lines[-1])
        load.ok += result["ok"]
        load.errors.update(result["errors"])

    with trio.fail_after(GUARD * 5):
        async with trio.open_nursery() as nursery:
            for n in range(processes):
                nursery.start_soon(one, n)
            for event in ready:
                await event.wait()
            started = trio.current_time()
            go.set()
    load.seconds = trio.current_time() - started
    return load


# --- the course of a scenario ------------------------------------------------------------


@dataclass
class Outcome:
    """What a scenario measured."""

    tally: Tally
    idle_kib: dict[str, int]
    peak_kib: dict[str, int]
    legit: Legit
    idle_legit: Legit | None
    exit_codes: tuple[int | None, int | None]
    load: Load | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def growth_mib(self, name: str) -> float:
        return (self.peak_kib[name] - self.idle_kib[name]) / MIB

    def figures(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "legit_ok": self.legit.ok,
            "legit_failed": len(self.legit.failed),
            "peak_rss_sentinel_mib": round(self.peak_kib["sentinel"] / MIB, 1),
            "peak_rss_node_mib": round(self.peak_kib["node"] / MIB, 1),
            "growth_sentinel_mib": round(self.growth_mib("sentinel"), 1),
            "growth_node_mib": round(self.growth_mib("node"), 1),
            "exit_codes": self.exit_codes,
        }
        timing = {f"{phase}_s": round(value, 1) for phase, value in self.seconds.items()}
        return shown | self.tally.figures() | timing


async def run_scenario(
    services: FameServices,
    attack: Callable[..., AbstractAsyncContextManager[Tally]] | None,
    *,
    rounds: int = 20,
    fresh: int = 0,
    streams: int = 0,
    idle_rounds: int = 0,
    load: dict[str, int] | None = None,
    **size: Any,
) -> Outcome:
    """Warm up, take the idle figures, attack, call meanwhile, SIGTERM under the attack.

    ``rounds`` of legitimate calls (echo, store, read back), ``streams``
    reads of 100 records and ``fresh`` new client connections run while
    the attack is in place;
    ``idle_rounds`` run before it (the recipe's idle latency). ``load``:
    run :func:`run_load` with these sizes as well (or instead of an attack).
    Stops the services (node, then sentinel) while the attack still
    holds; their exit statuses are in the outcome (None: SIGTERM was not
    enough within ``STOP_LIMIT``).
    """
    tally = Tally()
    stop = trio.Event()
    idle_legit = None
    async with fame.connect(services.url, token=services.token) as warm:
        warmup = Legit(warm, name="warmup")
        await warmup.run(5)
        assert warmup.ok == 15, warmup.failed
        if idle_rounds:
            idle_legit = Legit(warm, name="idle")
            await idle_legit.run(idle_rounds)
    idle = peak_kib(services)
    outcome: Outcome | None = None
    load_result = None
    with trio.fail_after(GUARD * 10):
        async with trio.open_nursery() as watching:
            # Attached before the attack, calling all along it, closed before the SIGTERM.
            release, gone = trio.Event(), trio.Event()
            client = await watching.start(_hold_client, services, release, gone)
            legit = Legit(client)
            watching.start_soon(MemoryWatch(services, stop, tally).run)
            clock = trio.current_time()
            seconds: dict[str, float] = {}
            async with (
                attack(services, tally, stop, **size) if attack else _nothing(tally)
            ) as tally:
                seconds["attack_setup"] = trio.current_time() - clock
                print(f"attack in place after {seconds['attack_setup']:.1f} s: {tally.figures()}")
                async with trio.open_nursery() as calling:
                    if load is not None:

                        async def loaded() -> None:
                            nonlocal load_result
                            load_result = await run_load(services, **load)

                        calling.start_soon(loaded)
                    with trio.move_on_after(LEGIT_PHASE_LIMIT) as cut:
                        await legit.run(rounds)
                        for _ in range(streams):
                            await legit.read_stream(100)
                        await fresh_connects(services, fresh, legit)
                    if cut.cancelled_caught:
                        legit.failed.append(
                            f"the legitimate calls were not done in {LEGIT_PHASE_LIMIT:g} s"
                            f" ({legit.ok} succeeded)"
                        )
                seconds["legit_calls"] = trio.current_time() - clock - seconds["attack_setup"]
                print(f"legit calls done after {seconds['legit_calls']:.1f} s: {legit.failed}")
                release.set()
                await gone.wait()
                peaks = peak_kib(services)
                clock = trio.current_time()
                codes = await trio.to_thread.run_sync(services.down)
                seconds["sigterm"] = trio.current_time() - clock
                outcome = Outcome(
                    tally, idle, peaks, legit, idle_legit, codes, load_result, seconds
                )
            watching.cancel_scope.cancel()
    assert outcome is not None
    return outcome


async def _hold_client(
    services: FameServices,
    release: trio.Event,
    gone: trio.Event,
    task_status: trio.TaskStatus[fame.Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A client attached in its own task: handed over, closed when ``release`` is set."""
    try:
        async with fame.connect(services.url, token=services.token) as client:
            task_status.started(client)
            await release.wait()
    finally:
        gone.set()


@asynccontextmanager
async def _nothing(tally: Tally) -> AsyncIterator[Tally]:
    yield tally
