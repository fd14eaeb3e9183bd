"""Crash loops: SIGKILL the storage agent or the sentinel under write load, then count.

A scenario starts a real sentinel and a real storage-agent node as separate
processes (:class:`~fame_services.FameServices`: ``fame sentinel`` and
``fame node --agent agents.storage_agent:StorageAgent@storage@fame.fabric``
with the ``encrypted-sqlite`` profile), in a temporary directory with a
free port on 127.0.0.1. Their logs go to ``run/*.log`` there.

In this process one client (``fame.connect``) runs concurrent writers.
Every write has a key of its own and a value that carries its own
checksum (``<payload>:<sha256 of payload>``); a key counts as
*acknowledged* only once ``store_value`` returned. Meanwhile, at moments
drawn from a seeded RNG, the ``agent`` scenario SIGKILLs the agent node and
starts it again, and the ``sentinel`` scenario does the same to the
sentinel (same port, same data directory); the client stays connected
throughout and must find its way back by itself. After every restart the
loop waits until a write is acknowledged again (traffic flows; routes came
back), with a bound.

At the end both services are stopped gracefully, ``fame check`` verifies
every page of the agent's files, both are started again and every record
is read back (the ``retrieve_all_values`` stream and ``retrieve_value``
per acknowledged key). Nothing acknowledged may be missing or differ, and
no stored value, acknowledged or not, may fail its checksum.

Every call is timed: it must return or raise within its deadline plus a
margin (a hang is counted, never waited out), and the worst overshoot is
reported. ``soak.py`` runs it from the command line (``just soak --cycles
50``); ``test_crash_loop.py`` runs short ones.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import string
import sys
import tempfile
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

import fame
from agents.storage_agent import STORAGE_AGENT_ADDRESS, StorageAgent

from .fame_services import STORAGE_AGENT, FameServices, Process, ServiceFailed

__all__ = [
    "CALL_DEADLINE",
    "SCENARIOS",
    "Figures",
    "ScenarioFailed",
    "checksum_value",
    "errors_text",
    "project_root",
    "run_scenario",
    "wait_progress",
]

T = TypeVar("T")
SCENARIOS = ("agent", "sentinel")

CALL_DEADLINE = 5.0
"""Seconds each ``store_value`` may take (the proxy's timeout)."""
HANG_MARGIN = 5.0
"""A call still running this long past its deadline is a hang: it is cut off and counted."""
RECOVERY_LIMIT = 30.0
"""Seconds after a restart within which a write must be acknowledged again."""
EARLY_KILL_CHANCE = 0.25
"""How often a restarted service is killed again before it is ready."""


class ScenarioFailed(ServiceFailed):
    """The scenario could not go on: a service died, traffic never resumed, a clean stop failed."""


@dataclass
class Figures:
    """What one scenario measured."""

    scenario: str
    cycles: int = 0
    kills: int = 0
    kills_mid_traffic: int = 0
    early_kills: int = 0
    freezes: int = 0
    in_flight_at_kills: int = 0
    attempted: int = 0
    acknowledged: int = 0
    verified: int = 0
    lost: int = 0
    corrupt: int = 0
    unknown_keys: int = 0
    stored: int = 0
    stored_unacknowledged: int = 0
    hangs: int = 0
    worst_overshoot_s: float = 0.0
    worst_recovery_s: float = 0.0
    client_reattaches: int = 0
    check_ok: bool = False
    peak_rss_sentinel_mib: float = 0.0
    peak_rss_agent_mib: float = 0.0
    duration_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        """The figures as a flat dict (errors as ``kind:count`` text), for reports."""
        figures = asdict(self)
        figures["errors"] = errors_text(self.errors)
        return figures

    def problems(self) -> list[str]:
        """What went wrong, in words; empty when the scenario passed."""
        found = []
        if self.lost:
            found.append(f"{self.lost} acknowledged writes lost")
        if self.corrupt:
            found.append(f"{self.corrupt} stored values fail their checksum or differ")
        if self.unknown_keys:
            found.append(f"{self.unknown_keys} stored keys were never written")
        if self.hangs:
            found.append(f"{self.hangs} calls hung past deadline + {HANG_MARGIN:g} s")
        if not self.check_ok:
            found.append("fame check found damage in the agent's files")
        if self.acknowledged == 0:
            found.append("no write was acknowledged")
        return found


def errors_text(errors: Counter[str]) -> str:
    return " ".join(f"{kind}:{count}" for kind, count in errors.most_common()) or "none"


def checksum_value(payload: str) -> str:
    """``payload:sha256(payload)``: a value that can tell whether it is whole."""
    return f"{payload}:{hashlib.sha256(payload.encode()).hexdigest()}"


def value_is_intact(value: str) -> bool:
    payload, sep, digest = value.rpartition(":")
    return bool(sep) and hashlib.sha256(payload.encode()).hexdigest() == digest


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@dataclass
class _Load:
    """The writers' shared state."""

    attempted: dict[str, str] = field(default_factory=dict)
    acked: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    hangs: int = 0
    worst_overshoot: float = 0.0
    stop: trio.Event = field(default_factory=trio.Event)


async def _writer(index: int, agent: Any, load: _Load, rng: random.Random) -> None:
    alphabet = string.ascii_letters + string.digits
    number = 0
    while not load.stop.is_set():
        key = f"w{index:02d}-{number:07d}"
        number += 1
        payload = "".join(rng.choices(alphabet, k=rng.randint(1, 2048)))
        value = checksum_value(payload)
        load.attempted[key] = value
        failed = False
        load.in_flight += 1
        started = trio.current_time()
        with trio.move_on_after(CALL_DEADLINE + HANG_MARGIN) as guard:
            try:
                await agent.store_value(key=key, value=value)
            except Exception as exc:
                failed = True
                load.errors[type(_leaf(exc)).__name__] += 1
            else:
                load.acked[key] = value
        load.in_flight -= 1
        elapsed = trio.current_time() - started
        load.worst_overshoot = max(load.worst_overshoot, elapsed - CALL_DEADLINE)
        if guard.cancelled_caught:
            load.hangs += 1
            load.errors["hang"] += 1
        if failed or guard.cancelled_caught:
            # The service is down: do not spin, but come back soon.
            await trio.sleep(rng.uniform(0.02, 0.1))


async def wait_progress(load: _Load, since: int, victim: Process, services: FameServices) -> float:
    """Wait until a write is acknowledged after ``since``; return how long it took."""
    started = trio.current_time()
    while len(load.acked) <= since:
        if trio.current_time() - started > RECOVERY_LIMIT:
            raise ScenarioFailed(
                f"no write acknowledged within {RECOVERY_LIMIT:g} s after restarting the"
                f" {victim.name}; errors so far: {errors_text(load.errors)}\n"
                f"sentinel log:\n{services.sentinel.log_tail()}\n"
                f"agent log:\n{services.node.log_tail()}"
            )
        for service in (services.sentinel, services.node):
            if not service.running:
                raise ScenarioFailed(f"the {service.name} died:\n{service.log_tail()}")
        await trio.sleep(0.01)
    return trio.current_time() - started


async def _sample_rss(services: FameServices) -> None:
    while True:
        services.sentinel.sample_rss()
        services.node.sample_rss()
        await trio.sleep(0.25)


async def _crash_loop(
    scenario: str,
    services: FameServices,
    figures: Figures,
    cycles: int,
    writers: int,
    seed: int,
    freeze_every: int,
) -> _Load:
    rng = random.Random(seed)
    load = _Load()
    victim = services.node if scenario == "agent" else services.sentinel
    async with fame.connect(services.url, token=services.token) as client:
        uplink = client._switchboard.uplink
        attaches_before = getattr(uplink, "attach_count", 0)
        agent = client.proxy(STORAGE_AGENT_ADDRESS, StorageAgent).with_timeout(CALL_DEADLINE)
        async with trio.open_nursery() as sampler:
            sampler.start_soon(_sample_rss, services)
            async with trio.open_nursery() as tasks:
                for index in range(writers):
                    tasks.start_soon(_writer, index, agent, load, random.Random(rng.random()))
                await _cycles(victim, services, figures, load, rng, cycles, freeze_every)
                # The writers finish their current call (each bounded) and return.
                load.stop.set()
            sampler.cancel_scope.cancel()
        figures.client_reattaches = getattr(uplink, "attach_count", 0) - attaches_before
    return load


async def _cycles(
    victim: Process,
    services: FameServices,
    figures: Figures,
    load: _Load,
    rng: random.Random,
    cycles: int,
    freeze_every: int,
) -> None:
    """Kill and restart ``victim`` ``cycles`` times while the writers write."""
    await wait_progress(load, 0, victim, services)
    for cycle in range(cycles):
        # Let traffic run for a random while, then pull the plug.
        await trio.sleep(rng.uniform(0.0, 0.4))
        if freeze_every and cycle % freeze_every == 0:
            # First frozen, not dead: its sockets stay open and nothing
            # answers, so no error comes back. Callers must give up at
            # their deadline (DeadlineExceeded), not hang.
            victim.freeze()
            figures.freezes += 1
            await trio.sleep(CALL_DEADLINE + 1.0)
        figures.in_flight_at_kills += load.in_flight
        figures.kills_mid_traffic += load.in_flight > 0
        await trio.to_thread.run_sync(victim.kill)
        figures.kills += 1
        await trio.sleep(rng.uniform(0.0, 0.2))  # callers see the service down
        victim.start()
        if rng.random() < EARLY_KILL_CHANCE:
            # Now and then a second kill while it starts: opening the files,
            # recovering the WAL, attaching. The next start must cope.
            await trio.sleep(rng.uniform(0.0, 0.3))
            if not victim.ready_file.exists():
                await trio.to_thread.run_sync(victim.kill)
                figures.early_kills += 1
                victim.start()
        await trio.to_thread.run_sync(victim.wait_ready)
        # Only acknowledgements from now on prove that traffic flows again.
        since = len(load.acked)
        recovery = await wait_progress(load, since, victim, services)
        figures.worst_recovery_s = round(max(figures.worst_recovery_s, recovery), 3)
        figures.cycles += 1


async def _verify(services: FameServices, load: _Load, figures: Figures) -> None:
    """Read every record back through a fresh client and compare."""
    async with fame.connect(services.url, token=services.token) as client:
        agent = client.proxy(STORAGE_AGENT_ADDRESS, StorageAgent).with_timeout(60)
        stored: dict[str, str] = {}
        async for key, record in agent.retrieve_all_values():
            stored[key] = record.value
        figures.stored = len(stored)
        # Committed, but the acknowledgement died with a process: allowed, and counted.
        figures.stored_unacknowledged = sum(1 for key in stored if key not in load.acked)
        corrupt = {key for key, value in stored.items() if not value_is_intact(value)}
        corrupt |= {key for key, value in stored.items() if load.attempted.get(key, value) != value}
        figures.unknown_keys = sum(1 for key in stored if key not in load.attempted)
        lost = {key for key in load.acked if key not in stored}
        corrupt |= {key for key, value in load.acked.items() if stored.get(key, value) != value}

        # Point reads too: the stream and retrieve_value must agree.
        keys = iter(sorted(load.acked))

        async def reader() -> None:
            for key in keys:
                record = await agent.retrieve_value(key=key)
                if record is None:
                    lost.add(key)
                elif record.value != load.acked[key]:
                    corrupt.add(key)

        async with trio.open_nursery() as readers:
            for _ in range(16):
                readers.start_soon(reader)
        figures.lost = len(lost)
        figures.corrupt = len(corrupt)
        figures.verified = len(load.acked) - len(lost | corrupt)


async def run_scenario(
    scenario: str,
    *,
    cycles: int,
    writers: int = 16,
    seed: int = 1,
    freeze_every: int = 10,
    root: Path | None = None,
) -> Figures:
    """Run one crash loop (``agent`` or ``sentinel``) and return its figures.

    Every ``freeze_every``-th cycle (the first included; 0 for never) the
    victim is first frozen with SIGSTOP for longer than a call's deadline,
    then killed. ``root`` is the temporary project root (a fresh temporary
    directory, removed afterwards, when not given). Raises
    :class:`~fame_services.ServiceFailed` if a service does not come back,
    :class:`ScenarioFailed` if traffic does not resume after a restart.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    with project_root(root) as where, _client_log(where / "run" / "client.log"):
        services = FameServices(where, STORAGE_AGENT)
        figures = Figures(scenario)
        started = trio.current_time()
        try:
            await trio.to_thread.run_sync(services.up)
            load = await _unwrapped(
                _crash_loop(scenario, services, figures, cycles, writers, seed, freeze_every)
            )
            figures.attempted = len(load.attempted)
            figures.acknowledged = len(load.acked)
            figures.errors = load.errors
            figures.hangs = load.hangs
            figures.worst_overshoot_s = round(max(0.0, load.worst_overshoot), 3)
            agent_code, sentinel_code = await trio.to_thread.run_sync(services.down)
            if agent_code != 0 or sentinel_code != 0:
                raise ScenarioFailed(
                    f"clean stop failed: agent exit {agent_code}, sentinel exit {sentinel_code}"
                    f"\n{services.node.log_tail()}\n{services.sentinel.log_tail()}"
                )
            figures.check_ok, report = await trio.to_thread.run_sync(services.check)
            if not figures.check_ok:
                print(f"fame check on {services.node_data}:\n{report}", file=sys.stderr)
            await trio.to_thread.run_sync(services.up)
            await _verify(services, load, figures)
            await trio.to_thread.run_sync(services.down)
        finally:
            services.abort()
            figures.peak_rss_sentinel_mib = round(services.sentinel.peak_rss_kib / 1024, 1)
            figures.peak_rss_agent_mib = round(services.node.peak_rss_kib / 1024, 1)
            figures.duration_s = round(trio.current_time() - started, 1)
    return figures


async def _unwrapped(running: Coroutine[Any, Any, T]) -> T:
    """Await ``running``; a :class:`ServiceFailed` inside nurseries' groups is raised bare."""
    try:
        return await running
    except BaseExceptionGroup as group:
        failure = _leaf(group)
        if isinstance(failure, ServiceFailed):
            raise failure from None
        raise


@contextmanager
def _client_log(path: Path) -> Iterator[None]:
    """Send this process's fame log lines (the client's link warnings) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("fame")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextmanager
def project_root(root: Path | None, prefix: str = "fame-soak-") -> Iterator[Path]:
    """``root`` (made if missing, kept), or a fresh temporary directory removed afterwards."""
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    where = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
