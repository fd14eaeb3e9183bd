"""Fabric benchmark: client -> sentinel -> agent, against raw trio-websocket over two hops.

Run: ``python bench/bench_fabric.py`` (``just bench``). Every figure is
measured in this run, each process on 127.0.0.1:

(a) sequential echo calls through the fabric (client process -> sentinel
    process -> node process) vs a raw trio-websocket ping-pong over the
    same shape (client -> relay process that forwards bytes -> server
    process): p50 / p99 round trip and ops/s; target p50 <= 1.5x raw.
(b) 32 concurrent callers on one client: total ops/s.
(c) one stream of 10,000 small records: records/s; target >= 50,000/s.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket

import fame
from fame._fabric._client import connect
from fame._fabric._uplink import attach
from fame._fabric.sentinel._server import open_sentinel
from fame._protocol._identity import Identity
from fame.security import Policy

SEQUENTIAL = 3000
WARMUP = 300
CONCURRENT_CALLERS = 32
CALLS_PER_CALLER = 150
STREAM_RECORDS = 10_000


class BenchEcho(fame.BaseAgent):
    @fame.operation
    async def echo(self, data: bytes) -> bytes:
        return data

    @fame.operation(streaming=True)
    async def records(self, n: int) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i, "v": i * 7}


# --- child processes ----------------------------------------------------------------


async def raw_server(port: int) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
        print("READY", flush=True)


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
        print("READY", flush=True)


# As a user runs it: the node enrolled, a deny-by-default policy checked on
# every call, the sentinel's signature checked by node and client.
POLICY = """
[[bind]]
who = ["node:bench"]
addresses = ["echo@bench.fabric"]

[[call]]
who = ["role:client"]
addresses = ["echo@bench.fabric"]
operations = ["echo", "records"]
"""


def node_identity() -> Identity:
    return Identity.from_private_bytes(
        os.environ["FAME_BENCH_NODE_ID"], bytes.fromhex(os.environ["FAME_BENCH_NODE_KEY"])
    )


async def run_sentinel(port: int) -> None:
    async with open_sentinel(
        port=port,
        token=os.environ["FAME_ADMISSION_TOKEN"],
        policy=Policy.from_toml(POLICY),
    ) as sentinel:
        node = node_identity()
        await sentinel.enroll(node.node_id, node.public_key, name="bench")
        print("READY", sentinel.public_keys[0].hex(), flush=True)
        await trio.sleep_forever()


async def run_node(url: str, sentinel_key: str) -> None:
    async with fame.open_node() as node:
        await node.spawn(BenchEcho, "echo@bench.fabric", mailbox_size=4096)
        keys = [bytes.fromhex(sentinel_key)]
        async with attach(node, url, identity=node_identity(), sentinel_keys=keys):
            print("READY", flush=True)
            await trio.sleep_forever()


# --- the measuring side -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def bench_raw(url: str) -> tuple[float, float, float]:
    payload = b"x" * 32
    async with open_websocket_url(url) as ws:
        for _ in range(WARMUP):
            await ws.send_message(payload)
            await ws.get_message()
        samples = []
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            t = time.perf_counter()
            await ws.send_message(payload)
            await ws.get_message()
            samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    p50, p99 = summary(samples)
    return p50, p99, SEQUENTIAL / elapsed


async def bench_fabric(url: str, token: str, sentinel_key: bytes) -> dict[str, float]:
    payload = b"x" * 32
    out: dict[str, float] = {}
    async with connect(url, token=token, sentinel_keys=[sentinel_key]) as client:
        echo = client.proxy("echo@bench.fabric", BenchEcho)
        for _ in range(WARMUP):
            await echo.echo(data=payload)
        samples = []
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            t = time.perf_counter()
            await echo.echo(data=payload)
            samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        out["p50"], out["p99"] = summary(samples)
        out["seq_ops"] = SEQUENTIAL / elapsed

        async def caller() -> None:
            for _ in range(CALLS_PER_CALLER):
                await echo.echo(data=payload)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENT_CALLERS):
                nursery.start_soon(caller)
        out["concurrent_ops"] = (
            CONCURRENT_CALLERS * CALLS_PER_CALLER / (time.perf_counter() - start)
        )

        count = 0
        start = time.perf_counter()
        async for _ in echo.records(n=STREAM_RECORDS):
            count += 1
        out["records"] = count / (time.perf_counter() - start)
        assert count == STREAM_RECORDS
    return out


async def measure() -> None:
    token = secrets.token_urlsafe(16)
    node = Identity.generate()
    env = dict(
        os.environ,
        FAME_ADMISSION_TOKEN=token,
        FAME_STORAGE_PROFILE="memory",
        FAME_BENCH_NODE_ID=node.node_id,
        FAME_BENCH_NODE_KEY=node.private_bytes().hex(),
    )
    env.pop("FAME_SHOW_ENVELOPES", None)
    procs: list[subprocess.Popen[str]] = []
    try:
        server_port, relay_port, sentinel_port = free_port(), free_port(), free_port()
        procs.append(spawn(env, "raw-server", str(server_port))[0])
        relay = spawn(env, "raw-relay", str(relay_port), f"ws://127.0.0.1:{server_port}/")
        procs.append(relay[0])
        sentinel, (sentinel_key,) = spawn(env, "sentinel", str(sentinel_port))
        procs.append(sentinel)
        url = f"ws://127.0.0.1:{sentinel_port}/"
        procs.append(spawn(env, "node", url, sentinel_key)[0])

        raw_p50, raw_p99, raw_ops = await bench_raw(f"ws://127.0.0.1:{relay_port}/")
        fab = await bench_fabric(url, token, bytes.fromhex(sentinel_key))
    finally:
        for proc in reversed(procs):  # nodes first, so none logs a lost sentinel
            proc.kill()
            proc.wait()

    us = 1e6
    print("fabric benchmark (3 processes each side, 127.0.0.1)")
    print(f"(a) echo, {SEQUENTIAL} sequential calls, 32-byte payload")
    rows = [
        ("raw trio-websocket, 2 hops", raw_p50, raw_p99, raw_ops),
        ("fame client->sentinel->agent", fab["p50"], fab["p99"], fab["seq_ops"]),
    ]
    for label, p50, p99, ops in rows:
        print(f"    {label:29}: p50 {p50 * us:6.0f} us  p99 {p99 * us:6.0f} us  {ops:7.0f} ops/s")
    ratio = fab["p50"] / raw_p50
    verdict = "OK" if ratio <= 1.5 else "MISSED"
    print(f"    p50 ratio fame/raw: {ratio:.2f}x (target <= 1.5x) {verdict}")
    print(f"    p99 ratio fame/raw: {fab['p99'] / raw_p99:.2f}x")
    print(
        f"(b) {CONCURRENT_CALLERS} concurrent callers: {fab['concurrent_ops']:8.0f} ops/s "
        f"({fab['concurrent_ops'] / fab['seq_ops']:.1f}x sequential)"
    )
    rec = fab["records"]
    print(
        f"(c) stream of {STREAM_RECORDS} records: {rec:8.0f} records/s "
        f"(target >= 50,000/s) {'OK' if rec >= 50_000 else 'MISSED'}"
    )


def main() -> None:
    if len(sys.argv) > 1:
        command, *args = sys.argv[1:]
        if command == "raw-server":
            trio.run(raw_server, int(args[0]))
        elif command == "raw-relay":
            trio.run(raw_relay, int(args[0]), args[1])
        elif command == "sentinel":
            trio.run(run_sentinel, int(args[0]))
        elif command == "node":
            trio.run(run_node, args[0], args[1])
        else:
            raise SystemExit(f"unknown command {command}")
        return
    trio.run(measure)


if __name__ == "__main__":
    main()
