"""Fabric benchmark: client -> sentinel -> agent node, against a raw two-hop msgspec relay.

Run: ``python bench/bench_fabric.py [--quick]`` (``just bench``). Every
figure is measured in this run, each process on 127.0.0.1, raw and fame
rounds interleaved (raw, fame, raw, fame, ...; medians over the rounds).

The fame side is a real ``fame up`` project in a temporary root: the quick
start's configuration (encrypted-sqlite, durability ``full``, the shipped
policy, deduplicated ``store_value``, metrics and tracing off) and its
storage agent (``agents/storage_agent.py``). The floor is a raw relay of
the same shape: this process encodes a msgspec Struct request, sends it
over trio-websocket to a relay process that forwards the bytes to a server
process, which decodes it, does the work (nothing, a raw sqlcipher3 point
get, or a raw fsync'd sqlcipher3 commit with a raw 256-bit key, WAL,
``synchronous=FULL``, exclusive locking, as fame's files) and sends a
msgspec reply back the same way.

Figures (targets of issue 16):

(a) echo, sequential: p50 fame / raw relay (no work), information.
(b) ``retrieve_value`` p50 <= 1.3x raw relay with a raw point get.
(c) ``store_value`` p50, one caller, <= 1.2x raw relay with a raw fsync'd commit.
(d) 32 callers, ``store_value`` / ``retrieve_value``: CPU per call summed over
    client, sentinel and agent node <= 1.5x (raw relay CPU per call, summed
    over its three processes, + the raw storage op's CPU); ops/s beside it.
(e) ``retrieve_all_values`` from storage, 100k and 1M records (``--quick``:
    30k only) >= 100,000 records/s; the in-memory stream beside it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import sqlcipher3
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_project import client_credentials, fame_cli, free_port, new_project  # noqa: E402

import fame  # noqa: E402
from agents.storage_agent import (  # noqa: E402
    NAMESPACE,
    STORAGE_AGENT_ADDRESS,
    RecordModel,
    StorageAgent,
)

ROUNDS = 5
CALLERS = 32


class BenchEcho(fame.BaseAgent):
    @fame.operation
    async def echo(self, data: bytes) -> bytes:
        return data

    @fame.operation(streaming=True)
    async def records(self, n: int) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i, "v": i * 7}


# --- the raw relay: msgspec over trio-websocket, two hops ----------------------------


class RawRequest(msgspec.Struct, array_like=True):
    id: int
    op: str  # "echo" | "get" | "put"
    key: str = ""
    value: bytes = b""


class RawReply(msgspec.Struct, array_like=True):
    id: int
    value: bytes | None = None


_UPSERT = (
    "INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, ?, NULL)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version"
)
_GET = "SELECT value, version FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"


def raw_database(path: str, key: bytes, records: int) -> sqlcipher3.Connection:
    """A keyed WAL file with fame's settings and table, holding ``records`` rows."""
    conn = sqlcipher3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
        " version INTEGER NOT NULL, expires_at REAL) WITHOUT ROWID"
    )
    conn.execute("BEGIN")
    value = msgspec.msgpack.encode(RecordModel("value number 0"))
    conn.executemany(_UPSERT, ((f"bench_{i:07d}", value, i) for i in range(records)))
    conn.execute("COMMIT")
    return conn


async def raw_server(port: int, path: str, key_hex: str, records: int) -> None:
    conn = raw_database(path, bytes.fromhex(key_hex), records)
    decode = msgspec.msgpack.Decoder(RawRequest).decode
    encode = msgspec.msgpack.Encoder().encode
    version = records

    async def handler(request: WebSocketRequest) -> None:
        nonlocal version
        ws = await request.accept()
        try:
            while True:
                req = decode(await ws.get_message())  # type: ignore[arg-type]
                value: bytes | None = None
                if req.op == "get":
                    row = conn.execute(_GET, (req.key, time.time())).fetchone()
                    value = row[0] if row else None
                elif req.op == "put":
                    version += 1
                    conn.execute(_UPSERT, (req.key, req.value, version))  # autocommit: fsync
                await ws.send_message(encode(RawReply(req.id, value)))
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
        print("READY", os.getpid(), flush=True)


async def raw_relay(port: int, upstream: str) -> None:
    """Forward every message both ways between a client and the server, untouched."""

    async def handler(request: WebSocketRequest) -> None:
        client = await request.accept()
        async with open_websocket_url(upstream) as server:

            async def pump(src: Any, dst: Any) -> None:
                try:
                    while True:
                        await dst.send_message(await src.get_message())
                except ConnectionClosed:
                    nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
        print("READY", os.getpid(), flush=True)


class RawClient:
    """Requests with ids over one websocket; a reader task hands each reply to its caller."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._next = 0
        self._waiting: dict[int, list[Any]] = {}
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(RawReply).decode

    async def read_replies(self) -> None:
        while True:
            reply = self._decode(await self._ws.get_message())
            slot = self._waiting.pop(reply.id)
            slot.append(reply.value)
            slot[0].set()

    async def call(self, op: str, key: str = "", value: bytes = b"") -> bytes | None:
        self._next += 1
        slot: list[Any] = [trio.Event()]
        self._waiting[self._next] = slot
        await self._ws.send_message(self._encode(RawRequest(self._next, op, key, value)))
        await slot[0].wait()
        result: bytes | None = slot[1]
        return result


# --- the echo sentinel and node (the in-memory stream) -------------------------------

ECHO_POLICY = """
[[bind]]
who = ["node:bench"]
addresses = ["echo@bench.fabric"]

[[call]]
who = ["role:client"]
addresses = ["echo@bench.fabric"]
operations = ["echo", "records"]
"""


def node_identity() -> Any:
    from fame._protocol._identity import Identity

    return Identity.from_private_bytes(
        os.environ["FAME_BENCH_NODE_ID"], bytes.fromhex(os.environ["FAME_BENCH_NODE_KEY"])
    )


async def run_sentinel(port: int) -> None:
    from fame._fabric.sentinel._server import open_sentinel
    from fame.security import Policy

    async with open_sentinel(
        port=port, token=os.environ["FAME_ADMISSION_TOKEN"], policy=Policy.from_toml(ECHO_POLICY)
    ) as sentinel:
        node = node_identity()
        await sentinel.enroll(node.node_id, node.public_key, name="bench")
        print("READY", sentinel.public_keys[0].hex(), flush=True)
        await trio.sleep_forever()


async def run_node(url: str, sentinel_key: str) -> None:
    from fame._fabric._uplink import attach

    async with fame.open_node() as node:
        await node.spawn(BenchEcho, "echo@bench.fabric", mailbox_size=4096)
        keys = [bytes.fromhex(sentinel_key)]
        async with attach(node, url, identity=node_identity(), sentinel_keys=keys):
            print("READY", flush=True)
            await trio.sleep_forever()


# --- the measuring side -------------------------------------------------------------


def spawn(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a child; it and what it said after READY."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"child {args} failed to start")
    return proc, line.split()[1:]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU seconds used by this process and the given others between two readings."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def read(self) -> float:
        return time.process_time() + sum(cpu_seconds(pid) for pid in self.pids)


async def sequential(call: Callable[[int], Any], n: int) -> float:
    """p50 seconds of ``n`` calls one after another."""
    samples = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def concurrent(call: Callable[[int], Any], n: int, meter: CpuMeter) -> tuple[float, float]:
    """ops/s and CPU seconds per call of ``n`` calls by CALLERS tasks."""
    numbers = iter(range(n))

    async def caller() -> None:
        for i in numbers:
            await call(i)

    cpu = meter.read()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CALLERS):
            nursery.start_soon(caller)
    elapsed = time.perf_counter() - start
    return n / elapsed, (meter.read() - cpu) / n


def storage_op_cpu(
    path: str, key: bytes, records: int, gets: int, puts: int
) -> tuple[float, float]:
    """CPU seconds of one raw point get and of one raw fsync'd commit, in this process."""
    conn = raw_database(path, key, records)
    try:
        start = time.process_time()
        for i in range(gets):
            conn.execute(_GET, (f"bench_{i * 7919 % records:07d}", time.time())).fetchone()
        get_cpu = (time.process_time() - start) / gets
        value = msgspec.msgpack.encode(RecordModel("value number 0"))
        start = time.process_time()
        for i in range(puts):
            conn.execute(_UPSERT, (f"put_{i:07d}", value, records + i))
        put_cpu = (time.process_time() - start) / puts
    finally:
        conn.close()
    return get_cpu, put_cpu


async def populate(root: Path, env: dict[str, str], records: int) -> None:
    """Write ``records`` records into the agent's namespace before ``fame up`` (fast: set_many)."""
    secrets_env = dict(
        line.split("=", 1)
        for line in (root / "conf" / "secrets.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    storage_env = {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": str(root / "data" / "agent"),
        "FAME_STORAGE_MASTER_KEY": secrets_env["FAME_STORAGE_MASTER_KEY"],
    }
    async with fame.storage.open_storage_from_env(storage_env) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        batch = 20_000
        for start in range(0, records, batch):
            await store.set_many(
                {
                    f"bench_{i:07d}": RecordModel(f"value number {i}")
                    for i in range(start, min(records, start + batch))
                }
            )


def pid_of(root: Path, name: str) -> int:
    return int((root / "run" / f"{name}.pid").read_text())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def measure(quick: bool, only: str | None = None) -> None:
    records = 30_000 if quick else 1_000_000
    seq_gets = 200 if quick else 400
    seq_puts = 60 if quick else 150
    conc_calls = 1_000 if quick else 3_000
    rounds = 3 if quick else ROUNDS
    root, env, port = new_project("fame-bench-fabric-")
    fame_cli(root, env, "init")
    t = time.perf_counter()
    await populate(root, env, records)
    populate_s = time.perf_counter() - t
    token, keys = client_credentials(root)
    procs: list[subprocess.Popen[str]] = []
    raw_path = str(root / "raw.db")
    raw_key = secrets.token_bytes(32)
    echo_token = secrets.token_urlsafe(16)
    from fame._protocol._identity import Identity

    node = Identity.generate()
    child_env = dict(
        os.environ,
        FAME_ADMISSION_TOKEN=echo_token,
        FAME_STORAGE_PROFILE="memory",
        FAME_BENCH_NODE_ID=node.node_id,
        FAME_BENCH_NODE_KEY=node.private_bytes().hex(),
    )
    child_env.pop("FAME_SHOW_ENVELOPES", None)
    results: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    try:
        fame_cli(root, env, "up")
        sentinel_pid, agent_pid = pid_of(root, "sentinel"), pid_of(root, "agent")
        server_port, relay_port, echo_port = free_port(), free_port(), free_port()
        server, (server_pid,) = spawn(
            child_env, "raw-server", str(server_port), raw_path, raw_key.hex(), "100000"
        )
        procs.append(server)
        relay, (relay_pid,) = spawn(
            child_env, "raw-relay", str(relay_port), f"ws://127.0.0.1:{server_port}/"
        )
        procs.append(relay)
        sentinel, (sentinel_key,) = spawn(child_env, "sentinel", str(echo_port))
        procs.append(sentinel)
        echo_url = f"ws://127.0.0.1:{echo_port}/"
        procs.append(spawn(child_env, "node", echo_url, sentinel_key)[0])

        fame_meter = CpuMeter([sentinel_pid, agent_pid])
        raw_meter = CpuMeter([int(server_pid), int(relay_pid)])
        value = "value number x" * 1
        raw_value = msgspec.msgpack.encode(RecordModel(value))
        n_keys = min(records, 100_000)

        def key_of(i: int) -> str:
            return f"bench_{i * 7919 % n_keys:07d}"

        async with (
            open_websocket_url(f"ws://127.0.0.1:{relay_port}/") as ws,
            fame.connect(f"ws://127.0.0.1:{port}", token=token, sentinel_keys=keys) as client,
            fame.connect(
                echo_url, token=echo_token, sentinel_keys=[bytes.fromhex(sentinel_key)]
            ) as echo_client,
            trio.open_nursery() as nursery,
        ):
            raw = RawClient(ws)
            nursery.start_soon(raw.read_replies)
            agent = client.proxy(STORAGE_AGENT_ADDRESS, StorageAgent)
            echo = echo_client.proxy("echo@bench.fabric", BenchEcho)
            payload = b"x" * 32

            async def raw_echo(i: int) -> None:
                await raw.call("echo", value=payload)

            async def fame_echo(i: int) -> None:
                await echo.echo(data=payload)

            async def raw_get(i: int) -> None:
                await raw.call("get", key_of(i))

            async def fame_get(i: int) -> None:
                await agent.retrieve_value(key=key_of(i))

            async def raw_put(i: int) -> None:
                await raw.call("put", f"put_{i:07d}", raw_value)

            async def fame_put(i: int) -> None:
                await agent.store_value(key=f"put_{i:07d}", value=value)

            for warm in (raw_echo, fame_echo, raw_get, fame_get, raw_put, fame_put):
                for i in range(100):
                    await warm(i)

            for _ in range(0 if only == "streams" else rounds):
                keep("raw_echo", await sequential(raw_echo, seq_gets))
                keep("fame_echo", await sequential(fame_echo, seq_gets))
                keep("raw_get", await sequential(raw_get, seq_gets))
                keep("fame_get", await sequential(fame_get, seq_gets))
                keep("raw_put", await sequential(raw_put, seq_puts))
                keep("fame_put", await sequential(fame_put, seq_puts))
                ops, cpu = await concurrent(raw_echo, conc_calls, raw_meter)
                keep("raw_conc_ops", ops)
                keep("raw_conc_cpu", cpu)
                for name, call in (("get", fame_get), ("put", fame_put)):
                    ops, cpu = await concurrent(call, conc_calls, fame_meter)
                    keep(f"fame_conc_{name}_ops", ops)
                    keep(f"fame_conc_{name}_cpu", cpu)

            mem_n = 20_000 if quick else 100_000
            lengths = [min(100_000, records)] + ([records] if records > 100_000 else [])
            if only == "calls":
                mem_n, lengths = 0, []
            if mem_n:
                start = time.perf_counter()
                count = 0
                async for _ in echo.records(n=mem_n):
                    count += 1
                keep("mem_stream", count / (time.perf_counter() - start))

            # --only streams: the streams alone, measured over the rounds (medians).
            for length in lengths * (rounds if only == "streams" else 1):
                cpu = fame_meter.read()
                client_cpu = time.process_time()
                start = time.perf_counter()
                count = 0
                async with agent.retrieve_all_values() as stream:
                    async for _ in stream:
                        count += 1
                        if count == length:
                            break
                elapsed = time.perf_counter() - start
                keep(f"stream_{length}", count / elapsed)
                keep(f"stream_{length}_cpu", (fame_meter.read() - cpu) / count)
                keep(f"stream_{length}_client_cpu", (time.process_time() - client_cpu) / count)
            nursery.cancel_scope.cancel()
        load = os.getloadavg()
    finally:
        for proc in reversed(procs):  # nodes first, so none logs a lost sentinel
            proc.kill()
            proc.wait()
        fame_cli(root, env, "stop", check=False)
    try:
        if only != "streams":
            get_cpu, put_cpu = storage_op_cpu(
                str(root / "raw-alone.db"), raw_key, 100_000, 20_000, 200
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in results.items()}
    us = 1e6
    print(
        f"fabric benchmark: client -> sentinel -> agent node vs a raw two-hop msgspec relay"
        f" ({rounds} interleaved rounds, medians; {'quick' if quick else 'full'})"
    )
    print(f"  `fame up` project, encrypted-sqlite, durability full, {records:,} records")
    print(f"  (populated in {populate_s:.1f} s); load average {load[0]:.2f} {load[1]:.2f}")
    print(f"  {'figure':48} {'fame':>10} {'raw':>10} {'ratio':>7} {'target':>8}")

    def row(label: str, fame_v: float, raw_v: float, target: float | None, unit: str) -> None:
        ratio = fame_v / raw_v if raw_v else float("nan")
        tail = ""
        if target:
            tail = f"{'<= ' + format(target, '.1f') + 'x':>8} {verdict(ratio <= target)}"
        print(f"  {label:48} {fame_v:>8.0f}{unit} {raw_v:>8.0f}{unit} {ratio:>6.2f}x {tail}")

    if only == "streams":
        print_streams(med, lengths, mem_n)
        return
    row("(a) echo p50", med["fame_echo"] * us, med["raw_echo"] * us, None, "us")
    row("(b) retrieve_value p50 (raw: point get)", med["fame_get"] * us, med["raw_get"] * us, 1.3, "us")  # fmt: skip  # noqa: E501
    row("(c) store_value p50, full (raw: fsync'd commit)", med["fame_put"] * us, med["raw_put"] * us, 1.2, "us")  # fmt: skip  # noqa: E501
    raw_cpu = med["raw_conc_cpu"]
    row(
        f"(d) {CALLERS} callers retrieve_value, CPU/call",
        med["fame_conc_get_cpu"] * us,
        (raw_cpu + get_cpu) * us,
        1.5,
        "us",
    )
    row(
        f"(d) {CALLERS} callers store_value, CPU/call",
        med["fame_conc_put_cpu"] * us,
        (raw_cpu + put_cpu) * us,
        1.5,
        "us",
    )
    print(
        f"      raw relay CPU/call {raw_cpu * us:.0f} us, raw point get {get_cpu * us:.0f} us,"
        f" raw fsync'd commit {put_cpu * us:.0f} us (CPU)"
    )
    print(
        f"      ops/s: retrieve_value {med['fame_conc_get_ops']:,.0f},"
        f" store_value {med['fame_conc_put_ops']:,.0f}, raw relay (no work)"
        f" {med['raw_conc_ops']:,.0f}"
    )
    print_streams(med, lengths, mem_n)


def print_streams(med: dict[str, float], lengths: list[int], mem_n: int) -> None:
    """The stream figures (e): records/s, and CPU per record of the services and the client."""
    us = 1e6
    for length in lengths:
        rate = med[f"stream_{length}"]
        print(
            f"  (e) stream from storage, {length:>9,} records: {rate:>9,.0f} records/s"
            f" ({med[f'stream_{length}_cpu'] * us:.1f} us CPU/record in sentinel + agent,"
            f" {med[f'stream_{length}_client_cpu'] * us:.1f} in the client)"
            f" target >= 100,000/s {verdict(rate >= 100_000)}"
        )
    if mem_n:
        print(f"      in-memory stream, {mem_n:,} records: {med['mem_stream']:,.0f} records/s")


def main() -> None:
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        command, *args = sys.argv[1:]
        if command == "raw-server":
            trio.run(raw_server, int(args[0]), args[1], args[2], int(args[3]))
        elif command == "raw-relay":
            trio.run(raw_relay, int(args[0]), args[1])
        elif command == "sentinel":
            trio.run(run_sentinel, int(args[0]))
        elif command == "node":
            trio.run(run_node, args[0], args[1])
        else:
            raise SystemExit(f"unknown command {command}")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 30k records")
    parser.add_argument(
        "--only",
        choices=["calls", "streams"],
        help="only the calls (a) to (d), or only the streams (e), each length over the rounds",
    )
    options = parser.parse_args()
    trio.run(measure, options.quick, options.only)


if __name__ == "__main__":
    main()
