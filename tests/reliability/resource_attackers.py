"""The attacks of issue 12 on a running sentinel and storage agent, as wire-level attackers.

Each attack is an async context manager ``attack(services, tally, stop,
**size)``: it sets the attack up against a :class:`FameServices` (real
``fame sentinel`` and ``fame node`` processes on 127.0.0.1), returns once
the attack is *in place* (every request sent, every socket opened, every
frame started), keeps it up while the block runs (sockets held open,
attackers reconnecting when closed) and tears it down at exit. ``tally``
counts what was delivered (requests, bytes, sockets, answers), so a
scenario can assert the attack really happened. ``stop`` is set when a
process grew far past the bound (``attack_scenario.MemoryWatch``): the
attackers then stop feeding, so an unprotected build fails the test
without eating the machine. :mod:`attack_scenario` runs them beside a
legitimate client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio
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

from .fame_services import FameServices
from .hostile_frames import LIMIT, codec
from .hostile_peers import LINK_DOWN
from .raw_websocket import PeerClosed, RawWebsocket

MIB = 1024  # KiB
GUARD = 60.0  # a "does not hang" guard, never a speed assertion
STALL = 3.0  # an attacker gives up writing to a socket nobody read from for this long
ECHO = "echo@fame.fabric"
STORAGE = "storage@fame.fabric"
ATTACKER_HOSTS = [f"127.0.0.{i}" for i in range(2, 14)]
"""Source addresses attackers spread over (all loopback): a cap per address alone is not enough."""


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
        try:
            yield tally  # never reads: trio-websocket stops reading the socket after one message
        finally:
            # Read what is queued now, so that trio-websocket's reader, blocked on
            # its full message queue, sees the close: else leaving the link waits
            # for it for ever (a teardown hang seen once in a loaded run).
            with trio.move_on_after(GUARD):
                await drain(ws, Tally())


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
    each reconnects a second after the sentinel closes or refuses it.

    That is up to 1,100 new connections a second against a door of 128: a
    churn the sentinel must survive. (Reconnecting at once would measure
    mostly this process: the legitimate client shares its event loop with
    the 1,100 attacking tasks.)"""
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
            await trio.sleep(1.0)  # and again

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
    every ``interval`` seconds, forever; each reconnects a second after it is closed."""
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
            await trio.sleep(1.0)  # as never_attached: a churn, not a busy loop of this process

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
