"""Benchmark of the local runtime against a bare Trio baseline measured in the same run.

Prints, as medians over several rounds:

* the round trip of a raw trio memory-channel ping-pong (the baseline),
* a local ``ask`` to an agent operation through a proxy, and its ratio to
  the baseline (target: <= 3),
* a raw ``ActorRef.ask`` to a plain actor,
* messages per second of ``tell`` to one actor with a bounded mailbox.

Run with ``python bench/bench_runtime.py`` (``just bench``).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import trio

import fame

ROUNDS = 7
ROUND_TRIPS = 20_000
TELLS = 100_000
MAILBOX = 1024


class Echo(fame.BaseAgent):
    @fame.operation
    async def echo(self, x: int) -> int:
        return x


class EchoActor(fame.lowlevel.Actor):
    async def handle(self, message: Any) -> Any:
        return message


class Sink(fame.lowlevel.Actor):
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = trio.Event()

    async def handle(self, message: Any) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


async def channel_ping_pong(n: int) -> float:
    """Seconds per round trip over a pair of unbuffered memory channels."""
    to_server, server_in = trio.open_memory_channel[int](0)
    to_client, client_in = trio.open_memory_channel[int](0)

    async def server() -> None:
        async for value in server_in:
            await to_client.send(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        start = time.perf_counter()
        for i in range(n):
            await to_server.send(i)
            await client_in.receive()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


async def proxy_round_trip(proxy: fame.Proxy, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await proxy.echo(x=i)
    return (time.perf_counter() - start) / n


async def ref_round_trip(ref: fame.lowlevel.ActorRef, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await ref.ask(i)
    return (time.perf_counter() - start) / n


async def tell_throughput(node: fame.Node, round_no: int, n: int) -> float:
    sink = Sink()
    sink.target = n
    address = f"sink{round_no}@local"
    await node.spawn(sink, address, mailbox_size=MAILBOX)
    ref = node.ref(address)
    start = time.perf_counter()
    for i in range(n):
        await ref.tell(i)
    await sink.done.wait()
    elapsed = time.perf_counter() - start
    await node.stop_agent(address)
    return n / elapsed


async def main() -> None:
    baseline: list[float] = []
    agent: list[float] = []
    actor: list[float] = []
    tells: list[float] = []
    async with fame.open_node() as node:
        proxy = await node.spawn(Echo(), "echo@local")
        await node.spawn(EchoActor(), "echo-actor@local")
        ref = node.ref("echo-actor@local")
        # Warm up every path once.
        await channel_ping_pong(1000)
        await proxy_round_trip(proxy, 1000)
        await ref_round_trip(ref, 1000)
        for round_no in range(ROUNDS):
            # Interleaved, so drift in machine load affects all paths alike.
            baseline.append(await channel_ping_pong(ROUND_TRIPS))
            agent.append(await proxy_round_trip(proxy, ROUND_TRIPS))
            actor.append(await ref_round_trip(ref, ROUND_TRIPS))
            tells.append(await tell_throughput(node, round_no, TELLS))

    base = statistics.median(baseline) * 1e6
    ours = statistics.median(agent) * 1e6
    raw = statistics.median(actor) * 1e6
    ratio = ours / base
    print(f"fame runtime benchmark (Python {sys.version.split()[0]}, trio {trio.__version__})")
    print(f"medians of {ROUNDS} rounds of {ROUND_TRIPS} round trips / {TELLS} tells\n")
    print(f"  baseline: trio memory-channel ping-pong   {base:8.2f} us")
    print(f"  agent operation via proxy (local ask)     {ours:8.2f} us")
    print(f"  ratio agent / baseline                    {ratio:8.2f}   (target <= 3)")
    print(f"  raw ActorRef.ask to a plain actor         {raw:8.2f} us   ({raw / base:.2f}x)")
    label = f"tell to one actor (mailbox of {MAILBOX})"
    print(f"  {label:41} {statistics.median(tells):10,.0f} msg/s")
    if ratio > 3:
        print("\nWARNING: the agent round trip exceeds 3x the baseline")


if __name__ == "__main__":
    trio.run(main)
