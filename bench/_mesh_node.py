"""One process of the sentinel-mesh study (``study_sentinel_mesh.py``): a sentinel or a service.

A *mesh sentinel* is a minimal stand-in for fame's sentinel, only as much
as the engine decision needs: it serves trio-websocket links, keeps
``address -> sentinel URL`` in a local dict fed by the shared engine, and
forwards msgspec envelopes. The shared state lives in the engine:

- ``pg``: a ``routes`` table in PostgreSQL; a bind is one ``INSERT ... ON
  CONFLICT`` that also runs ``pg_notify``; every sentinel ``LISTEN``\\ s and
  applies the notifications. Envelopes cross sentinels over direct
  sentinel-to-sentinel websockets.
  With ``--pg-async-commit`` the route writes do not wait for the WAL flush.
- ``nats-ws``: routes in a JetStream KV bucket, applied from a KV watch;
  envelopes over the same direct websockets (so the route engine is the only
  difference from ``pg``).
- ``nats``: routes as in ``nats-ws``; envelopes cross sentinels as NATS
  core messages on the subject ``mesh.<port>`` of the owning sentinel.

The engine clients (psycopg's ``AsyncConnection``, nats-py) are asyncio
libraries; each sentinel runs them on an asyncio loop in one thread of its
own, beside the trio loop that serves the websockets, for every candidate
alike. Calls from trio into that loop go through
``asyncio.run_coroutine_threadsafe``/``call_soon_threadsafe``; calls back
through the trio token's ``run_sync_soon``: neither side blocks the other.

Run: ``python bench/_mesh_node.py sentinel --port P --engine pg --dsn ...``
or ``python bench/_mesh_node.py service --attach URL[,URL...] --address A``.
Each prints ``READY`` once it serves (a service: once its bind was acked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

MAX_HOPS = 4


class Hello(msgspec.Struct, tag="h", frozen=True):
    """The sentinel's first message on every link: the link's reply address."""

    reply_to: str


class Bind(msgspec.Struct, tag="b", frozen=True):
    address: str


class Bound(msgspec.Struct, tag="B", frozen=True):
    address: str


class Watch(msgspec.Struct, tag="w", frozen=True):
    """Answer :class:`Routed` once this sentinel can route ``address``."""

    address: str


class Routed(msgspec.Struct, tag="W", frozen=True):
    address: str
    known_before: bool


class Env(msgspec.Struct, tag="e", frozen=True):
    """A routed envelope; ``kind`` is ``q`` (request), ``a`` (answer) or ``x`` (no route)."""

    to: str
    kind: str
    corr: int
    body: bytes
    reply_to: str | None = None
    hops: int = 0


Msg = Hello | Bind | Bound | Watch | Routed | Env
ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(Msg)
TASKS: set[asyncio.Task[None]] = set()  # the engine clients' background tasks, kept alive


def decode(raw: str | bytes) -> Msg:
    """One message (the links carry binary websocket messages only)."""
    assert isinstance(raw, bytes)
    return DECODER.decode(raw)


def background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    TASKS.add(task)


class AsyncioThread:
    """An asyncio loop in a daemon thread: where the engine clients live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def run(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` on the asyncio loop, from trio."""

        async def wrapped() -> Any:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        future.add_done_callback(lambda _f: token.run_sync_soon(done.set))
        await done.wait()
        return future.result()


# --------------------------------------------------------------------- engines


class PgEngine:
    """Routes in a PostgreSQL table; changes pushed with LISTEN/NOTIFY."""

    def __init__(self, dsn: str, aio: AsyncioThread, async_commit: bool) -> None:
        self.dsn = dsn
        self.async_commit = async_commit
        self.aio = aio
        self._write: Any = None

    async def start(self, on_route: Callable[[str, str], None]) -> None:
        import psycopg

        token = trio.lowlevel.current_trio_token()
        listening = asyncio.Event()

        async def listen() -> None:
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await conn.execute("LISTEN routes")
            listening.set()
            async for note in conn.notifies():
                address, _, url = note.payload.partition(" ")
                token.run_sync_soon(on_route, address, url)

        async def open_and_load() -> list[tuple[str, str]]:
            background(listen())
            await listening.wait()  # before the load: no change falls in between
            self._write = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            if self.async_commit:  # the commit does not wait for the WAL flush
                await self._write.execute("SET synchronous_commit = off")
            cursor = await self._write.execute("SELECT address, sentinel FROM routes")
            return [(str(a), str(s)) for a, s in await cursor.fetchall()]

        for address, url in await self.aio.run(open_and_load()):
            on_route(address, url)

    async def bind(self, address: str, url: str) -> None:
        await self.aio.run(
            self._write.execute(
                "WITH u AS (INSERT INTO routes (address, sentinel) VALUES (%s, %s)"
                " ON CONFLICT (address) DO UPDATE SET sentinel = EXCLUDED.sentinel"
                " RETURNING address, sentinel)"
                " SELECT pg_notify('routes', address || ' ' || sentinel) FROM u",
                (address, url),
            )
        )


class NatsEngine:
    """Routes in a JetStream KV bucket, applied from a watch; optionally the envelopes too."""

    def __init__(self, server: str, aio: AsyncioThread) -> None:
        self.server = server
        self.aio = aio
        self.nc: Any = None
        self.kv: Any = None

    async def start(self, on_route: Callable[[str, str], None]) -> None:
        import nats

        token = trio.lowlevel.current_trio_token()
        loaded = asyncio.Event()

        async def watch() -> None:
            watcher = await self.kv.watchall()
            while True:
                entry = await watcher.updates(timeout=3600)
                if entry is None:  # the initial values are all in
                    loaded.set()
                    continue
                if entry.value is not None and entry.operation is None:
                    token.run_sync_soon(on_route, entry.key, entry.value.decode())

        async def open_and_watch() -> None:
            self.nc = await nats.connect(self.server, max_reconnect_attempts=-1)
            js = self.nc.jetstream()
            self.kv = await js.key_value("routes")
            background(watch())
            await loaded.wait()

        await self.aio.run(open_and_watch())

    async def bind(self, address: str, url: str) -> None:
        await self.aio.run(self.kv.put(address, url.encode()))

    async def subscribe(self, subject: str, deliver: Callable[[bytes], None]) -> None:
        token = trio.lowlevel.current_trio_token()

        async def handler(msg: Any) -> None:
            token.run_sync_soon(deliver, msg.data)

        async def sub() -> None:
            await self.nc.subscribe(subject, cb=handler)
            await self.nc.flush()

        await self.aio.run(sub())

    def publish(self, subject: str, data: bytes) -> None:
        """Fire and forget, from trio: nats-py buffers it and flushes it soon."""
        self.aio.loop.call_soon_threadsafe(asyncio.ensure_future, self.nc.publish(subject, data))


# -------------------------------------------------------------------- sentinel


def subject_of(url: str) -> str:
    return "mesh." + url.rsplit(":", 1)[1]


class Sentinel:
    def __init__(
        self, port: int, engine: PgEngine | NatsEngine, data: str, peers: list[str]
    ) -> None:
        self.configured_peers = peers
        self.url = f"ws://127.0.0.1:{port}"
        self.port = port
        self.engine = engine
        self.data = data  # "ws" or "nats"
        self.routes: dict[str, str] = {}  # address -> sentinel URL, from the engine
        self.local: dict[str, trio.MemorySendChannel[bytes]] = {}  # address -> link
        self.links: dict[str, trio.MemorySendChannel[bytes]] = {}  # link id -> link
        self.peers: dict[str, trio.MemorySendChannel[Env]] = {}  # sentinel URL -> link
        self.watches: dict[str, list[trio.MemorySendChannel[bytes]]] = {}
        self.ids = itertools.count(1)
        self.nursery: trio.Nursery | None = None

    def on_route(self, address: str, url: str) -> None:
        self.routes[address] = url
        for link in self.watches.pop(address, []):
            self._send(link, ENCODER.encode(Routed(address, False)))

    @staticmethod
    def _send(link: trio.MemorySendChannel[bytes], data: bytes) -> None:
        # A study: a full or gone link drops it; the caller's deadline answers.
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            link.send_nowait(data)

    def no_route(self, env: Env) -> None:
        if env.kind == "q" and env.reply_to is not None:
            self.route(Env(env.reply_to, "x", env.corr, b""), None)

    def route(self, env: Env, raw: bytes | None) -> None:
        """Forward ``env`` (``raw``: its bytes as received, if unchanged)."""
        if env.hops > MAX_HOPS:
            return
        if "#" in env.to:  # a reply address: <sentinel URL>#<link id>
            url, _, link_id = env.to.partition("#")
            if url == self.url:
                link = self.links.get(link_id)
                if link is not None:
                    self._send(link, raw or ENCODER.encode(env))
                return
            self.forward(url, env)
            return
        link = self.local.get(env.to)
        if link is not None:
            self._send(link, raw or ENCODER.encode(env))
            return
        owner = self.routes.get(env.to)
        if owner is None or owner == self.url:
            self.no_route(env)
            return
        self.forward(owner, env)

    def forward(self, url: str, env: Env) -> None:
        env = msgspec.structs.replace(env, hops=env.hops + 1)
        if self.data == "nats":
            assert isinstance(self.engine, NatsEngine)
            self.engine.publish(subject_of(url), ENCODER.encode(env))
            return
        try:
            self.peer(url).send_nowait(env)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.no_route(env)

    def peer(self, url: str, dial_until_up: bool = False) -> trio.MemorySendChannel[Env]:
        """The outbound link to the sentinel at ``url``, opened if there is none."""
        peer = self.peers.get(url)
        if peer is None:
            send, receive = trio.open_memory_channel[Env](10_000)
            self.peers[url] = peer = send
            assert self.nursery is not None
            self.nursery.start_soon(self.peer_link, url, send, receive, dial_until_up)
        return peer

    async def peer_link(
        self,
        url: str,
        send: trio.MemorySendChannel[Env],
        receive: trio.MemoryReceiveChannel[Env],
        dial_until_up: bool,
    ) -> None:
        """The outbound link to another sentinel; answers ``x`` for what it cannot send.

        The links to the configured peers are dialled at start (until the peer
        is up), as a full mesh would keep them: a failover then pays for no
        handshake. A link that drops is dialled again on its next use.
        """
        env: Env | None = None
        while True:
            try:
                async with open_websocket_url(url) as ws:
                    async for env in receive:
                        await ws.send_message(ENCODER.encode(env))
                        env = None
            except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError):
                if dial_until_up and env is None:
                    await trio.sleep(0.05)
                    continue
            break
        if self.peers.get(url) is send:
            del self.peers[url]
        send.close()
        if env is not None:
            self.no_route(env)
        while True:
            try:
                self.no_route(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break

    async def serve_link(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        link_id = str(next(self.ids))
        send, receive = trio.open_memory_channel[bytes](10_000)
        self.links[link_id] = send
        bound: list[str] = []

        async def writer() -> None:
            async for data in receive:
                await ws.send_message(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await ws.send_message(ENCODER.encode(Hello(f"{self.url}#{link_id}")))
                while True:
                    raw = await ws.get_message()
                    msg = decode(raw)
                    assert isinstance(raw, bytes)
                    if isinstance(msg, Env):
                        self.route(msg, raw)
                    elif isinstance(msg, Bind):
                        self.local[msg.address] = send
                        bound.append(msg.address)
                        await self.engine.bind(msg.address, self.url)
                        self._send(send, ENCODER.encode(Bound(msg.address)))
                    elif isinstance(msg, Watch):
                        known = msg.address in self.routes or msg.address in self.local
                        if known:
                            self._send(send, ENCODER.encode(Routed(msg.address, True)))
                        else:
                            self.watches.setdefault(msg.address, []).append(send)
                            self._send(send, ENCODER.encode(Bound(msg.address)))  # pending
        except* ConnectionClosed:
            pass  # the link dropped: what it bound goes with it
        finally:
            del self.links[link_id]
            for address in bound:
                if self.local.get(address) is send:
                    del self.local[address]
            send.close()

    def deliver(self, data: bytes) -> None:
        env = DECODER.decode(data)
        if isinstance(env, Env):
            self.route(env, data)

    async def run(self) -> None:
        await self.engine.start(self.on_route)
        if self.data == "nats":
            assert isinstance(self.engine, NatsEngine)
            await self.engine.subscribe(subject_of(self.url), self.deliver)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(
                lambda task_status=trio.TASK_STATUS_IGNORED: serve_websocket(
                    self.serve_link,
                    "127.0.0.1",
                    self.port,
                    ssl_context=None,
                    max_message_size=1 << 20,
                    task_status=task_status,
                )
            )
            if self.data == "ws":
                for url in self.configured_peers:
                    self.peer(url, dial_until_up=True)
            print("READY", flush=True)


# --------------------------------------------------------------------- service


async def service(urls: list[str], address: str) -> None:
    """Echo every request to ``address``; re-attach to the next URL when the link drops."""
    ready = False
    for attempt in itertools.count():
        url = urls[attempt % len(urls)]
        try:
            async with open_websocket_url(url) as ws:
                await ws.send_message(ENCODER.encode(Bind(address)))
                while True:
                    msg = decode(await ws.get_message())
                    if isinstance(msg, Bound) and not ready:
                        ready = True
                        print("READY", flush=True)
                    elif isinstance(msg, Env) and msg.kind == "q" and msg.reply_to:
                        answer = Env(msg.reply_to, "a", msg.corr, msg.body)
                        await ws.send_message(ENCODER.encode(answer))
        except (OSError, HandshakeError, ConnectionClosed):
            if attempt >= len(urls):
                await trio.sleep(0.01)  # a full turn failed: back off a little


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["sentinel", "service"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--engine", choices=["pg", "nats"])
    parser.add_argument("--data", choices=["ws", "nats"], default="ws")
    parser.add_argument("--dsn")
    parser.add_argument("--pg-async-commit", action="store_true")
    parser.add_argument("--nats")
    parser.add_argument("--peers", default="", help="the other sentinels' URLs")
    parser.add_argument("--attach")
    parser.add_argument("--address")
    args = parser.parse_args()
    if args.role == "service":
        trio.run(service, args.attach.split(","), args.address)
        return
    aio = AsyncioThread()
    engine: PgEngine | NatsEngine = (
        PgEngine(args.dsn, aio, args.pg_async_commit)
        if args.engine == "pg"
        else NatsEngine(args.nats, aio)
    )
    peers = [url for url in args.peers.split(",") if url]
    trio.run(Sentinel(args.port, engine, args.data, peers).run)


if __name__ == "__main__":
    main()
