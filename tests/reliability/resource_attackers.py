"""The attacks of issue 12 on a running sentinel and storage agent, and the client they must spare.

Each attack is an async context manager ``attack(services, tally, stop,
**size)``: it sets the attack up against a :class:`FameServices` (real
``fame sentinel`` and ``fame node`` processes on 127.0.0.1), returns once
the attack is *in place* (every request sent, every socket opened, every
frame started), keeps it up while the block runs (sockets held open,
attackers reconnecting when closed) and tears it down at exit. ``tally``
counts what was delivered (requests, bytes, sockets, answers), so a
scenario can assert the attack really happened. ``stop`` is set by the
:class:`MemoryWatch` when a process grew far past the bound: the attackers
then stop feeding, so an unprotected build fails the test without eating
the machine.

:func:`run_scenario` is the common course of the tests and of the
reliability recipe (``attack_p99.py``): a warmed-up idle figure, the
attack, a legitimate client (:class:`Legit`, echo and storage calls with a
generous deadline, and fresh connections) meanwhile, then SIGTERM while
the attack still holds. Deadlines here are guards against hanging or the
attacker's own patience, never speed assertions.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from fabric.fabric_agents import Echo
from trio_websocket import WebSocketConnection, open_websocket_url

import fame
from agents.storage_agent import StorageAgent
from fame._protocol import NodeHandshake
from fame._protocol._identity import Identity
from fame._wire._schema import (
    Batch,
    Bind,
    Envelope,
    Error,
    Ping,
    Request,
    Welcome,
)

from .fame_services import FameServices, fame_env, rss_kib, status_kib
from .hostile_frames import LIMIT, codec
from .hostile_peers import LINK_DOWN
from .raw_websocket import PeerClosed, RawWebsocket

MIB = 1024  # KiB
GUARD = 60.0  # a "does not hang" guard, never a speed assertion
LEGIT_DEADLINE = 30.0  # the legitimate client's deadline per call: generous
LEGIT_PHASE_LIMIT = 90.0  # a guard on all its calls together, so a regression fails, not hangs
ABORT_GROWTH_MIB = 400
"""Attackers stop feeding once a process grew this much (the bound is far below)."""
STALL = 3.0  # an attacker gives up writing to a socket nobody read from for this long
ECHO = "echo@fame.fabric"
STORAGE = "storage@fame.fabric"
ATTACKER_HOSTS = [f"127.0.0.{i}" for i in range(2, 14)]
"""Source addresses attackers spread over (all loopback): a cap per address alone is not enough."""
HERE = Path(__file__).parent


@dataclass
class Tally:
    """What an attack delivered and what came back to it."""

    requests: int = 0
    bytes_sent: int = 0
    sockets: int = 0
    upgrades: int = 0
    refused: int = 0
    closed_by_sentinel: int = 0
    links: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    aborted: bool = False

    def figures(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "requests": self.requests,
            "mib_sent": round(self.bytes_sent / MIB / MIB, 1),
            "sockets": self.sockets,
            "upgrades": self.upgrades,
            "refused": self.refused,
            "closed_by_sentinel": self.closed_by_sentinel,
        }
        shown = {key: value for key, value in shown.items() if value}
        if self.answers:
            shown["answers"] = dict(self.answers)
        return shown | self.extra | ({"aborted_at_memory_cap": True} if self.aborted else {})


def answer_names(data: bytes | str) -> list[str]:
    """The answers in one message: ``["Reply"]``, ``["Error:overloaded", ...]`` (batches opened)."""
    try:  # a text message is refused with WireError
        message = codec.decode(data)  # type: ignore[arg-type]
    except fame.errors.WireError:
        return ["undecodable"]
    if isinstance(message, Batch):
        return [name for inner in message.messages for name in answer_names(inner)]
    if isinstance(message, Envelope):
        frame = message.frame
        return [f"Error:{frame.kind}" if isinstance(frame, Error) else type(frame).__name__]
    return [type(message).__name__]


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


# --- raw links through trio-websocket ----------------------------------------------------


async def attach_link(
    ws: WebSocketConnection, token: str, *, role: str = "client", identity: Identity | None = None
) -> Welcome:
    """Attach over ``ws`` by hand (a fresh identity unless given); the welcome."""
    challenge: Any = codec.decode(await ws.get_message())  # type: ignore[arg-type]
    handshake = NodeHandshake(identity or Identity.generate(), token, role=role)
    await ws.send_message(codec.encode(handshake.receive(challenge)))  # type: ignore[arg-type]
    welcome = codec.decode(await ws.get_message())  # type: ignore[arg-type]
    assert type(welcome) is Welcome, welcome
    return welcome


def open_link(url: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(url, connect_timeout=GUARD, disconnect_timeout=2)


async def drain(ws: WebSocketConnection, tally: Tally) -> None:
    """Read ``ws`` until it closes, counting the answers by type."""
    try:
        while True:
            tally.answers.update(answer_names(await ws.get_message()))
    except LINK_DOWN:
        tally.closed_by_sentinel += 1


async def keep_alive(ws: WebSocketConnection) -> None:
    """Ping every second, as a node does, so the heartbeat never closes the link."""
    with suppress(*LINK_DOWN):
        for nonce in range(1, 1_000_000):
            await ws.send_message(codec.encode(Ping(nonce)))
            await trio.sleep(1)


def request(to: str, corr: int, reply_to: str, op: str, args: dict[str, Any], **kw: Any) -> bytes:
    return codec.encode(Envelope(0, to, corr, Request(op, args, **kw), reply_to, corr))


# --- the attacks -------------------------------------------------------------------------

BIG_KEY = "big-record"


@asynccontextmanager
async def unread_replies(
    services: FameServices,
    tally: Tally,
    stop: trio.Event,
    *,
    requests: int = 400,
    record_kib: int = 900,
) -> AsyncIterator[Tally]:
    """One admitted client asks ``requests`` times for a 900 KB record and never reads a reply."""
    async with fame.connect(services.url, token=services.token, default_timeout=GUARD) as setup:
        value = "x" * (record_kib * 1024)
        await setup.proxy(STORAGE, StorageAgent).store_value(key=BIG_KEY, value=value)
    async with open_link(services.url) as ws:
        welcome = await attach_link(ws, services.token)
        tally.links = 1
        reply_to = f"_reply@{welcome.path}"
        for corr in range(1, requests + 1):
            if stop.is_set():
                break
            data = request(STORAGE, corr, reply_to, "retrieve_value", {"key": BIG_KEY})
            try:
                await ws.send_message(data)
            except LINK_DOWN:
                tally.closed_by_sentinel += 1  # the sentinel closed this link: fair
                break
            tally.requests += 1
            tally.bytes_sent += len(data)
        tally.extra["replies_asked_mib"] = round(requests * record_kib / 1024)
        yield tally  # never reads: trio-websocket stops reading the socket after one message


@asynccontextmanager
async def unread_links(
    services: FameServices,
    tally: Tally,
    stop: trio.Event,
    *,
    links: int = 4,
    per_link: int = 300,
) -> AsyncIterator[Tally]:
    """``links`` admitted nodes bind an address each and never read; a client per link
    feeds each one ~1 MB requests, ``per_link`` of them (past any queue of 256)."""
    blob = b"\x00" * (LIMIT - 4096)
    progress: list[float] = []
    done: list[bool] = []

    async def feed(feeder: WebSocketConnection, reply_to: str, sink: str, i: int) -> None:
        for corr in range(1, per_link + 1):
            if stop.is_set():
                break
            data = request(sink, corr, reply_to, "swallow", {"blob": blob})
            try:
                await feeder.send_message(data)
            except LINK_DOWN:
                break
            tally.requests += 1
            tally.bytes_sent += len(data)
            progress[i] = trio.current_time()
        done[i] = True

    async with trio.open_nursery() as nursery:
        sockets = []
        for i in range(links):
            sink_ws = await nursery.start(_held, open_link(services.url))
            welcome = await attach_link(sink_ws, services.token, role="node")
            sink = f"sink-{welcome.node_id[:12]}-{i}@fame.fabric"
            await sink_ws.send_message(codec.encode(Bind([sink])))
            answer = answer_names(await sink_ws.get_message())
            assert answer == ["Bound"], answer
            nursery.start_soon(keep_alive, sink_ws)  # and never reads again
            feeder = await nursery.start(_held, open_link(services.url))
            fed = await attach_link(feeder, services.token)
            nursery.start_soon(drain, feeder, tally)
            progress.append(trio.current_time())
            done.append(False)
            nursery.start_soon(feed, feeder, f"_reply@{fed.path}", sink, i)
            sockets += [sink_ws, feeder]
        tally.links = 2 * links

        # In place when every feeder sent all, or could not write for STALL seconds.
        def in_place() -> bool:
            now = trio.current_time()
            return all(done[i] or now - progress[i] > STALL for i in range(links))

        while not in_place():  # noqa: ASYNC110 (an attacker's patience, polled)
            await trio.sleep(0.1)
        tally.extra["messages_per_link"] = round(tally.requests / links)
        yield tally
        nursery.cancel_scope.cancel()


async def _held(
    opener: AbstractAsyncContextManager[WebSocketConnection],
    task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open a websocket, hand it over, keep it open until cancelled."""
    with suppress(*LINK_DOWN):
        async with opener as ws:
            task_status.started(ws)
            await trio.sleep_forever()


@asynccontextmanager
async def creditless_streams(
    services: FameServices,
    tally: Tally,
    stop: trio.Event,
    *,
    requests: int = 30_000,
    records: int = 1000,
    record_bytes: int = 400,
) -> AsyncIterator[Tally]:
    """One admitted client opens ``requests`` streams of the whole store and grants no credit."""
    async with fame.connect(services.url, token=services.token, default_timeout=GUARD) as setup:
        storage = setup.proxy(STORAGE, StorageAgent)
        value = "r" * record_bytes

        async def fill(start: int) -> None:
            for n in range(start, records, 16):
                await storage.store_value(key=f"rec-{n:06d}", value=value)

        async with trio.open_nursery() as nursery:
            for start in range(16):
                nursery.start_soon(fill, start)
    async with open_link(services.url) as ws, trio.open_nursery() as nursery:
        welcome = await attach_link(ws, services.token)
        tally.links = 1
        nursery.start_soon(drain, ws, tally)  # reads its answers, never grants credit
        reply_to = f"_reply@{welcome.path}"
        for corr in range(1, requests + 1):
            if stop.is_set():
                break
            data = request(STORAGE, corr, reply_to, "retrieve_all_values", {}, stream=True)
            try:
                await ws.send_message(data)  # credit=0: Request's default
            except LINK_DOWN:
                break  # the sentinel closed this link (drain counts it)
            tally.requests += 1
            tally.bytes_sent += len(data)
        tally.extra["records_in_store"] = records
        yield tally
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def never_attached(
    services: FameServices, tally: Tally, stop: trio.Event, *, sockets: int = 1100
) -> AsyncIterator[Tally]:
    """``sockets`` websockets (from many source addresses) that upgrade and then stay silent;
    each reconnects as soon as the sentinel closes or refuses it."""
    first_round = trio.Event()
    tried = 0

    async def hold(host: str) -> None:
        nonlocal tried
        first = True
        while not stop.is_set():
            tally.sockets += 1
            try:
                ws, status = await RawWebsocket.open(services.port, host)
            except (OSError, PeerClosed):
                tally.refused += 1
                ws = None
            else:
                if status == 101:
                    tally.upgrades += 1
                else:
                    tally.refused += 1
            if first:
                first = False
                tried += 1
                if tried == sockets:
                    first_round.set()
            if ws is not None:
                try:
                    if status == 101:
                        while True:  # the challenge, then nothing until the sentinel closes it
                            await ws.receive_message()
                except PeerClosed:
                    tally.closed_by_sentinel += 1
                finally:
                    await ws.aclose()
            await trio.sleep(0.1)  # and again

    async with trio.open_nursery() as nursery:
        for i in range(sockets):
            nursery.start_soon(hold, ATTACKER_HOSTS[i % len(ATTACKER_HOSTS)])
        await first_round.wait()
        yield tally
        nursery.cancel_scope.cancel()


SLOW_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


@asynccontextmanager
async def slowloris(
    services: FameServices,
    tally: Tally,
    stop: trio.Event,
    *,
    sockets: int = 3000,
    interval: float = 2.0,
) -> AsyncIterator[Tally]:
    """``sockets`` TCP connections that send half an upgrade request and one header line
    every ``interval`` seconds, forever; each reconnects when closed."""
    started: list[float] = []
    first_done: list[bool] = []
    open_now = 0

    async def drip(n: int, host: str) -> None:
        nonlocal open_now
        started.append(trio.current_time())
        first_done.append(False)
        while not stop.is_set():
            tally.sockets += 1
            stream: trio.SocketStream | None = None
            try:
                with trio.move_on_after(10):  # a full backlog: the SYN goes unanswered
                    stream = await trio.open_tcp_stream(
                        "127.0.0.1", services.port, local_address=host
                    )
            except OSError:
                tally.refused += 1
            first_done[n] = True
            if stream is None:
                await trio.sleep(0.2)
                continue
            open_now += 1
            tally.extra["open_at_once"] = max(tally.extra.get("open_at_once", 0), open_now)
            try:
                async with stream:
                    await stream.send_all(SLOW_REQUEST)
                    tally.bytes_sent += len(SLOW_REQUEST)
                    n = 0
                    while True:
                        with trio.move_on_after(interval):
                            if not await stream.receive_some(4096):
                                break  # closed by the sentinel
                        line = f"X-Slow-{n}: {n}\r\n".encode()
                        await stream.send_all(line)
                        tally.bytes_sent += len(line)
                        n += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                open_now -= 1
            tally.closed_by_sentinel += 1
            await trio.sleep(0.2)

    def in_place() -> bool:
        # Every socket tried once, or waited STALL seconds for the sentinel to take it.
        now = trio.current_time()
        return len(started) == sockets and all(
            done or now - start > STALL for done, start in zip(first_done, started, strict=True)
        )

    async with trio.open_nursery() as nursery:
        for i in range(sockets):
            nursery.start_soon(drip, i, ATTACKER_HOSTS[i % len(ATTACKER_HOSTS)])
        while not in_place():  # noqa: ASYNC110 (an attacker's patience, polled)
            await trio.sleep(0.1)
        yield tally
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def unfinished_frames(
    services: FameServices,
    tally: Tally,
    stop: trio.Event,
    *,
    connections: int = 400,
    frame_bytes: int = 2_000_000,
) -> AsyncIterator[Tally]:
    """``connections`` websockets each start a binary frame and send all of it but the last KiB.

    Every other one attaches first (an admitted client); half announce
    ``frame_bytes`` (2 MB, over the message limit), half a frame just under
    the limit (which no size check refuses).
    """
    held: list[RawWebsocket] = []
    limiter = trio.Semaphore(50)

    async def one(i: int) -> None:
        async with limiter:
            if stop.is_set():
                return
            tally.sockets += 1
            try:
                ws, status = await RawWebsocket.open(
                    services.port, ATTACKER_HOSTS[i % len(ATTACKER_HOSTS)]
                )
            except (OSError, PeerClosed):
                tally.refused += 1
                return
            held.append(ws)
            if status != 101:
                tally.refused += 1
                return
            tally.upgrades += 1
            try:
                if i % 2:
                    await ws.attach(services.token)
                    tally.links += 1
            except PeerClosed:
                tally.closed_by_sentinel += 1
                return
            length = frame_bytes if i % 4 < 2 else LIMIT - 64
            written = await ws.send_unfinished(length, length - 1024, STALL)
            tally.bytes_sent += written
            tally.requests += 1

    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(one, i)
    try:
        yield tally
    finally:
        for ws in held:
            await ws.aclose()


@asynccontextmanager
async def binding_flood(
    services: FameServices,
    tally: Tally,
    stop: trio.Event,
    *,
    identities: int = 10,
    per_identity: int = 1024,
    chunk: int = 64,
) -> AsyncIterator[Tally]:
    """``identities`` new node identities (trust on first use) each ask to bind
    ``per_identity`` addresses, ``chunk`` per Bind; every answer is counted."""
    per_node: list[Counter[str]] = []

    async def flood(ws: WebSocketConnection, k: int) -> None:
        await attach_link(ws, services.token, role="node")
        tally.links += 1
        answers: Counter[str] = Counter()
        per_node.append(answers)
        addresses = [f"flood-{k}-{j:04d}@fame.fabric" for j in range(per_identity)]
        try:
            for start in range(0, per_identity, chunk):
                await ws.send_message(codec.encode(Bind(addresses[start : start + chunk])))
                tally.requests += 1
        except LINK_DOWN:
            tally.closed_by_sentinel += 1
        answered = 0
        with trio.move_on_after(GUARD), suppress(*LINK_DOWN):
            while answered < per_identity:
                names = answer_names(await ws.get_message())
                answered += names.count("Bound") + names.count("BindRefused")
                answers.update(names)

    async with trio.open_nursery() as nursery:
        links = [await nursery.start(_held, open_link(services.url)) for _ in range(identities)]
        async with trio.open_nursery() as flooding:
            for k, ws in enumerate(links):
                flooding.start_soon(flood, ws, k)
        for ws in links:
            nursery.start_soon(keep_alive, ws)
            nursery.start_soon(drain, ws, Tally())  # pongs, discarded
        for answers in per_node:
            tally.answers.update(answers)
        tally.extra["bound_per_identity"] = [answers["Bound"] for answers in per_node]
        yield tally
        nursery.cancel_scope.cancel()


ATTACKS: dict[str, Callable[..., AbstractAsyncContextManager[Tally]]] = {
    "unread replies": unread_replies,
    "links that never read": unread_links,
    "streams without credit": creditless_streams,
    "websockets that never attach": never_attached,
    "slowloris": slowloris,
    "unfinished frames": unfinished_frames,
    "binding flood": binding_flood,
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
