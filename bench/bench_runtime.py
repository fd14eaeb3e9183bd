"""Benchmark of the local runtime against hand-written Trio mailboxes, in one run.

The baseline is what a skilled engineer writes by hand for one actor: a
*buffered* mailbox and a direct reschedule of the parked caller. Several
such variants are measured and the fastest is the baseline:

* ``deque + reschedule``: a ``collections.deque`` mailbox, the actor task
  parked with ``wait_task_rescheduled`` and woken by the sender, the
  caller parked the same way and woken by the actor with the answer;
* ``buffered channel + reschedule``: a buffered trio memory channel as the
  mailbox, the answer by rescheduling the parked caller;
* ``buffered channels``: a buffered memory channel each way.

The old baseline, an *unbuffered* memory-channel ping-pong, is printed as
information only (every message waits for a rendezvous, so it is slower).

Against the baseline it measures a local agent call (a proxy to an
``@operation`` with validated arguments and result, as agents use it;
target: at most 1.5x), ``ActorRef.ask`` to a plain actor, and messages per
second of ``tell`` to one actor with a bounded mailbox.

Every round measures every path one after the other (interleaved), so a
change of machine load affects them alike; the figures are medians over
the rounds, the ratios medians of each round's ratio. Times are CPU time
of this (single-threaded) process per round trip, which a busy shared
machine disturbs less than wall-clock time; wall-clock medians are
printed beside them.

Other benchmarks import :func:`buffered_mailbox_round_trip` as the cost
of one round trip through an actor's mailbox (bench/ is on ``sys.path``
when they run as scripts).

Run with ``python bench/bench_runtime.py`` (``just bench``); ``--quick``
for a shorter run.
"""

from __future__ import annotations

import collections
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio
import trio.testing
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

TARGET = 1.5
MAILBOX = 1024

Clock = Callable[[], float]


# --- hand-written baselines (trio only: other benchmarks import them) ------------------


def _abort(_: Any) -> Abort:
    return Abort.SUCCEEDED


async def deque_reschedule(n: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per round trip: deque mailbox, parked actor and caller woken by reschedule."""
    queue: collections.deque[tuple[int, Task]] = collections.deque()
    parked: list[Task | None] = [None]

    def abort(_: Any) -> Abort:
        parked[0] = None
        return Abort.SUCCEEDED

    async def actor() -> None:
        while True:
            while not queue:
                parked[0] = current_task()
                await wait_task_rescheduled(abort)
            value, caller = queue.popleft()
            reschedule(caller, outcome.Value(value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        await trio.testing.wait_all_tasks_blocked()
        me = current_task()
        start = clock()
        for i in range(n):
            queue.append((i, me))
            task = parked[0]
            if task is not None:
                parked[0] = None
                reschedule(task)
            await wait_task_rescheduled(_abort)
        elapsed = clock() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


async def buffered_mailbox_round_trip(n: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per round trip through a hand-written buffered mailbox (the fastest variant).

    The baseline other benchmarks compare an actor's mailbox with (the
    storage actor's point get, say). Wall-clock by default; pass
    ``clock=time.process_time`` for CPU time. Runs inside ``trio.run``.
    """
    return await deque_reschedule(n, clock)


async def channel_reschedule(n: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per round trip: buffered memory-channel mailbox, answer by reschedule."""
    send, receive = trio.open_memory_channel[tuple[int, Task]](MAILBOX)

    async def actor() -> None:
        async for value, caller in receive:
            reschedule(caller, outcome.Value(value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        await trio.testing.wait_all_tasks_blocked()
        me = current_task()
        start = clock()
        for i in range(n):
            send.send_nowait((i, me))
            await wait_task_rescheduled(_abort)
        elapsed = clock() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


async def buffered_channels(n: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per round trip: a buffered memory channel each way."""
    to_actor, actor_in = trio.open_memory_channel[int](MAILBOX)
    to_caller, caller_in = trio.open_memory_channel[int](MAILBOX)

    async def actor() -> None:
        async for value in actor_in:
            to_caller.send_nowait(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        await trio.testing.wait_all_tasks_blocked()
        start = clock()
        for i in range(n):
            to_actor.send_nowait(i)
            await caller_in.receive()
        elapsed = clock() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


async def channel_ping_pong(n: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per round trip over a pair of unbuffered memory channels (the old baseline)."""
    to_server, server_in = trio.open_memory_channel[int](0)
    to_client, client_in = trio.open_memory_channel[int](0)

    async def server() -> None:
        async for value in server_in:
            await to_client.send(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        start = clock()
        for i in range(n):
            await to_server.send(i)
            await client_in.receive()
        elapsed = clock() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


BASELINES: dict[str, Callable[[int, Clock], Awaitable[float]]] = {
    "deque + reschedule": deque_reschedule,
    "buffered channel + reschedule": channel_reschedule,
    "buffered channels": buffered_channels,
}


# --- fame -----------------------------------------------------------------------------


def _fame_paths() -> tuple[Any, Any, Any, Any]:
    import fame  # imported here: the baselines above need trio only

    class Echo(fame.BaseAgent):
        @fame.operation
        async def echo(self, x: int) -> int:
            return x

    class EchoActor(fame.lowlevel.Actor):
        async def handle(self, message: Any) -> Any:
            return message

    class Sink(fame.lowlevel.Actor):
        def __init__(self, target: int) -> None:
            self.count = 0
            self.target = target
            self.done = trio.Event()

        async def handle(self, message: Any) -> None:
            self.count += 1
            if self.count == self.target:
                self.done.set()

    return fame, Echo, EchoActor, Sink


async def timed(clock: Clock, n: int, call: Callable[[int], Awaitable[Any]]) -> float:
    start = clock()
    for i in range(n):
        await call(i)
    return (clock() - start) / n


async def main(quick: bool) -> None:
    rounds, trips, tells = (5, 2_000, 10_000) if quick else (9, 10_000, 50_000)
    fame, echo_type, actor_type, sink_type = _fame_paths()
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    wall: dict[str, list[float]] = collections.defaultdict(list)
    ratios: dict[str, list[float]] = collections.defaultdict(list)
    rates: list[float] = []
    async with fame.open_node() as node:
        proxy = await node.spawn(echo_type(), "echo@local")
        await node.spawn(actor_type(), "echo-actor@local")
        ref = node.ref("echo-actor@local")
        echo = echo_type.echo

        async def agent_call(i: int) -> Any:
            return await proxy.echo(x=i)

        async def typed_call(i: int) -> Any:
            return await proxy.call(echo, x=i)

        fame_paths: dict[str, Callable[[int], Awaitable[Any]]] = {
            "agent call, proxy.echo(x=i)": agent_call,
            "agent call, proxy.call(Echo.echo, x=i)": typed_call,
            "ActorRef.ask to a plain actor": ref.ask,
        }
        for _ in range(2):  # warm up every path
            for fn in BASELINES.values():
                await fn(1000, time.process_time)
            await channel_ping_pong(1000)
            for call in fame_paths.values():
                await timed(time.process_time, 1000, call)
        for round_no in range(rounds):
            this: dict[str, float] = {}
            for name, fn in BASELINES.items():
                t0 = time.perf_counter()
                this[name] = await fn(trips, time.process_time)
                wall[name].append((time.perf_counter() - t0) / trips)
            base_name = min(BASELINES, key=lambda name: this[name])
            for name, call in fame_paths.items():
                t0 = time.perf_counter()
                this[name] = await timed(time.process_time, trips, call)
                wall[name].append((time.perf_counter() - t0) / trips)
                ratios[name].append(this[name] / this[base_name])
            t0 = time.perf_counter()
            this["ping-pong"] = await channel_ping_pong(trips, time.process_time)
            wall["ping-pong"].append((time.perf_counter() - t0) / trips)
            ratios["ping-pong"].append(this["ping-pong"] / this[base_name])
            for name, value in this.items():
                cpu[name].append(value)
            rates.append(await tell_rate(node, sink_type, round_no, tells))

    def us(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e6:7.2f} µs"

    base_name = min(BASELINES, key=lambda name: statistics.median(cpu[name]))
    base = statistics.median(cpu[base_name])
    load = os.getloadavg()
    print(f"fame runtime benchmark (Python {sys.version.split()[0]}, trio {trio.__version__})")
    print(
        f"{rounds} interleaved rounds of {trips} round trips / {tells} tells; CPU time per"
        f" round trip (wall-clock in brackets); load average {load[0]:.2f} {load[1]:.2f}"
        f" {load[2]:.2f}\n"
    )
    print("  baselines (hand-written buffered mailboxes):")
    for name in BASELINES:
        mark = "  <- baseline (fastest)" if name == base_name else ""
        ratio = statistics.median(cpu[name]) / base
        print(f"    {name:38} {us(cpu[name])}  ({us(wall[name])})  {ratio:5.2f}x{mark}")
    ratio = statistics.median(ratios["ping-pong"])
    print(
        f"    {'unbuffered channel ping-pong (info)':38} {us(cpu['ping-pong'])}"
        f"  ({us(wall['ping-pong'])})  {ratio:5.2f}x"
    )
    print("  fame:")
    for name in fame_paths:
        ratio = statistics.median(ratios[name])
        target = ""
        if name.startswith("agent call"):
            verdict = "PASS" if ratio <= TARGET else "MISS"
            target = f"  target <= {TARGET}x  {verdict}"
        print(f"    {name:38} {us(cpu[name])}  ({us(wall[name])})  {ratio:5.2f}x{target}")
    label = f"tell to one actor (mailbox of {MAILBOX})"
    print(f"    {label:38} {statistics.median(rates):10,.0f} msg/s (wall-clock)")


async def tell_rate(node: Any, sink_type: Any, round_no: int, n: int) -> float:
    sink = sink_type(n)
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


if __name__ == "__main__":
    trio.run(main, "--quick" in sys.argv[1:])
