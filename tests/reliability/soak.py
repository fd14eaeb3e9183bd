"""Crash loops: SIGKILL the storage agent or the sentinel under write load, then count.

A scenario starts a real sentinel and a real storage-agent node as separate
processes, the way ``just up`` does (``python -m fame._cli.fame sentinel``
and ``... node --agent agents.storage_agent:StorageAgent@storage@fame.fabric``
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
reported. Run it as a script (``just soak --cycles 50``) or import
:func:`run_scenario` (``tests/reliability/test_crash_loop.py``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

if __name__ == "__main__":  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fame
from agents.storage_agent import STORAGE_AGENT_ADDRESS, StorageAgent

__all__ = ["SCENARIOS", "Figures", "ScenarioFailed", "Services", "main", "run_scenario"]

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
SCENARIOS = ("agent", "sentinel")
AGENT_SPEC = f"agents.storage_agent:StorageAgent@{STORAGE_AGENT_ADDRESS}"

CALL_DEADLINE = 5.0
"""Seconds each ``store_value`` may take (the proxy's timeout)."""
HANG_MARGIN = 5.0
"""A call still running this long past its deadline is a hang: it is cut off and counted."""
START_LIMIT = 30.0
"""Seconds a service may take to write its ready file."""
RECOVERY_LIMIT = 30.0
"""Seconds after a restart within which a write must be acknowledged again."""
STOP_LIMIT = 20.0
"""Seconds a service may take to stop after SIGTERM."""
EARLY_KILL_CHANCE = 0.25
"""How often a restarted service is killed again before it is ready."""


class ScenarioFailed(AssertionError):
    """The scenario could not go on: a service did not start, or traffic never came back."""


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
        figures["errors"] = _errors_text(self.errors)
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


def _errors_text(errors: Counter[str]) -> str:
    return " ".join(f"{kind}:{count}" for kind, count in errors.most_common()) or "none"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _vm_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Service:
    """One ``fame`` process: started, SIGKILLed, restarted, stopped; logs appended."""

    def __init__(self, name: str, args: list[str], root: Path, env: dict[str, str]) -> None:
        self.name = name
        self.root = root
        self.env = env
        self.ready_file = root / "run" / f"{name}.ready"
        self.log_file = root / "run" / f"{name}.log"
        self.args = [*args, "--ready-file", str(self.ready_file)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib = 0
        self.starts = 0

    def start(self) -> None:
        # A SIGKILLed process leaves its ready file behind: never mistake it for the new one.
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"--- start {self.starts + 1} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fame._cli.fame", *self.args],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample_rss(self) -> None:
        """Fold this incarnation's peak RSS (VmHWM) into the service's peak."""
        if self.running:
            assert self.proc is not None
            self.peak_rss_kib = max(self.peak_rss_kib, _vm_kib(self.proc.pid, "VmHWM"))

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])

    async def wait_ready(self, limit: float = START_LIMIT) -> None:
        deadline = trio.current_time() + limit
        while not self.ready_file.exists():
            if not self.running:
                raise ScenarioFailed(f"the {self.name} exited while starting:\n{self.log_tail()}")
            if trio.current_time() > deadline:
                raise ScenarioFailed(f"the {self.name} was not ready in {limit:g} s")
            await trio.sleep(0.02)

    def _signal(self, signum: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    async def _wait_exit(self, limit: float) -> int | None:
        assert self.proc is not None
        try:
            return await trio.to_thread.run_sync(self.proc.wait, limit)
        except subprocess.TimeoutExpired:
            return None

    def freeze(self) -> None:
        """SIGSTOP: the process stops answering, its sockets stay open."""
        self.sample_rss()
        self._signal(signal.SIGSTOP)

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        self.sample_rss()
        self._signal(signal.SIGKILL)
        if await self._wait_exit(STOP_LIMIT) is None:
            raise ScenarioFailed(f"the {self.name} survived SIGKILL for {STOP_LIMIT:g} s")

    async def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (0 for a clean stop)."""
        if self.proc is None:
            return None
        self.sample_rss()
        self._signal(signal.SIGTERM)
        code = await self._wait_exit(STOP_LIMIT)
        if code is None:
            self.force_kill()
        return code

    def force_kill(self) -> None:
        """Last resort at teardown: SIGKILL this service's own process and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Services:
    """A sentinel and a storage agent in a temporary project root, as ``just up`` runs them."""

    def __init__(self, root: Path, *, durability: str | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.token = secrets.token_urlsafe(32)
        self.master_key = secrets.token_urlsafe(32)
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(exist_ok=True)
        extra = f"FAME_STORAGE_DURABILITY={durability}\n" if durability else ""
        (conf / "sentinel.env").write_text(
            "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/sentinel\n"
            f"FAME_SENTINEL_HOST=127.0.0.1\nFAME_SENTINEL_PORT={self.port}\n{extra}"
        )
        (conf / "agent.env").write_text(
            "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/agent\n"
            f"FAME_SENTINEL_HOST=127.0.0.1\nFAME_SENTINEL_PORT={self.port}\n{extra}"
        )
        secrets_file = conf / "secrets.env"
        secrets_file.write_text(
            f"FAME_STORAGE_MASTER_KEY={self.master_key}\nFAME_ADMISSION_TOKEN={self.token}\n"
        )
        secrets_file.chmod(0o600)
        # The environment overrides config files: keep the caller's FAME_* out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.env = env
        secret_args = ["--config", "conf/secrets.env"]
        self.sentinel = Service(
            "sentinel", ["sentinel", "--config", "conf/sentinel.env", *secret_args], root, env
        )
        self.agent = Service(
            "agent",
            ["node", "--config", "conf/agent.env", *secret_args, "--agent", AGENT_SPEC],
            root,
            env,
        )
        self.agent_data = root / "data" / "agent"

    async def up(self) -> None:
        self.sentinel.start()
        await self.sentinel.wait_ready()
        self.agent.start()
        await self.agent.wait_ready()

    async def down(self) -> tuple[int | None, int | None]:
        """Stop the agent, then the sentinel, gracefully; their exit statuses."""
        return await self.agent.stop(), await self.sentinel.stop()

    def close(self) -> None:
        for service in (self.agent, self.sentinel):
            service.force_kill()

    def check(self) -> tuple[bool, str]:
        """``fame check`` on the agent's stopped data directory: every page and record."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fame._cli.fame",
                "check",
                str(self.agent_data),
                "--config",
                "conf/agent.env",
                "--config",
                "conf/secrets.env",
            ],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.returncode == 0, (done.stdout + done.stderr).strip()


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


async def _wait_progress(load: _Load, since: int, victim: Service, services: Services) -> float:
    """Wait until a write is acknowledged after ``since``; return how long it took."""
    started = trio.current_time()
    while len(load.acked) <= since:
        if trio.current_time() - started > RECOVERY_LIMIT:
            raise ScenarioFailed(
                f"no write acknowledged within {RECOVERY_LIMIT:g} s after restarting the"
                f" {victim.name}; errors so far: {_errors_text(load.errors)}\n"
                f"sentinel log:\n{services.sentinel.log_tail()}\n"
                f"agent log:\n{services.agent.log_tail()}"
            )
        for service in (services.sentinel, services.agent):
            if not service.running:
                raise ScenarioFailed(f"the {service.name} died:\n{service.log_tail()}")
        await trio.sleep(0.01)
    return trio.current_time() - started


async def _sample_rss(services: Services) -> None:
    while True:
        services.sentinel.sample_rss()
        services.agent.sample_rss()
        await trio.sleep(0.25)


async def _crash_loop(
    scenario: str,
    services: Services,
    figures: Figures,
    cycles: int,
    writers: int,
    seed: int,
    freeze_every: int,
) -> _Load:
    rng = random.Random(seed)
    load = _Load()
    victim = services.agent if scenario == "agent" else services.sentinel
    async with fame.connect(services.url, token=services.token) as client:
        uplink = client.uplink
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
    victim: Service,
    services: Services,
    figures: Figures,
    load: _Load,
    rng: random.Random,
    cycles: int,
    freeze_every: int,
) -> None:
    """Kill and restart ``victim`` ``cycles`` times while the writers write."""
    await _wait_progress(load, 0, victim, services)
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
        await victim.kill()
        figures.kills += 1
        await trio.sleep(rng.uniform(0.0, 0.2))  # callers see the service down
        victim.start()
        if rng.random() < EARLY_KILL_CHANCE:
            # Now and then a second kill while it starts: opening the files,
            # recovering the WAL, attaching. The next start must cope.
            await trio.sleep(rng.uniform(0.0, 0.3))
            if not victim.ready_file.exists():
                await victim.kill()
                figures.early_kills += 1
                victim.start()
        await victim.wait_ready()
        # Only acknowledgements from now on prove that traffic flows again.
        since = len(load.acked)
        recovery = await _wait_progress(load, since, victim, services)
        figures.worst_recovery_s = round(max(figures.worst_recovery_s, recovery), 3)
        figures.cycles += 1


async def _verify(services: Services, load: _Load, figures: Figures) -> None:
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
    :class:`ScenarioFailed` if a service does not come back or traffic does
    not resume after a restart.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    with _project_root(root) as where, _client_log(where / "run" / "client.log"):
        services = Services(where)
        figures = Figures(scenario)
        started = trio.current_time()
        try:
            await services.up()
            load = await _unwrapped(
                _crash_loop(scenario, services, figures, cycles, writers, seed, freeze_every)
            )
            figures.attempted = len(load.attempted)
            figures.acknowledged = len(load.acked)
            figures.errors = load.errors
            figures.hangs = load.hangs
            figures.worst_overshoot_s = round(max(0.0, load.worst_overshoot), 3)
            agent_code, sentinel_code = await services.down()
            if agent_code != 0 or sentinel_code != 0:
                raise ScenarioFailed(
                    f"clean stop failed: agent exit {agent_code}, sentinel exit {sentinel_code}"
                    f"\n{services.agent.log_tail()}\n{services.sentinel.log_tail()}"
                )
            figures.check_ok, report = await trio.to_thread.run_sync(services.check)
            if not figures.check_ok:
                print(f"fame check on {services.agent_data}:\n{report}", file=sys.stderr)
            await services.up()
            await _verify(services, load, figures)
            await services.down()
        finally:
            services.close()
            figures.peak_rss_sentinel_mib = round(services.sentinel.peak_rss_kib / 1024, 1)
            figures.peak_rss_agent_mib = round(services.agent.peak_rss_kib / 1024, 1)
            figures.duration_s = round(trio.current_time() - started, 1)
    return figures


async def _unwrapped(running: Coroutine[Any, Any, T]) -> T:
    """Await ``running``; a :class:`ScenarioFailed` inside nurseries' groups is raised bare."""
    try:
        return await running
    except BaseExceptionGroup as group:
        failure = _leaf(group)
        if isinstance(failure, ScenarioFailed):
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
def _project_root(root: Path | None) -> Iterator[Path]:
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    where = Path(tempfile.mkdtemp(prefix="fame-soak-"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


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
    print(f"  errors by kind     {_errors_text(f.errors)}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="SIGKILL the storage agent and/or the sentinel under write load, then"
        " verify that no acknowledged write was lost and no stored value is damaged."
    )
    parser.add_argument("--cycles", type=int, default=200, help="kills per scenario (200)")
    parser.add_argument("--writers", type=int, default=16, help="concurrent writers (16)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (random by default)")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
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
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    failed = False
    for scenario in scenarios:
        root = args.keep / scenario if args.keep else None
        begun = time.monotonic()
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
        except ScenarioFailed as exc:
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


if __name__ == "__main__":
    sys.exit(main())
