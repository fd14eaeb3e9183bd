"""A hand-driven link to a sentinel, for tests of peers that misbehave on purpose.

:func:`open_raw_link` attaches (as a client, or as a node trusted on first
use) over a real websocket and then hands the test the socket: it may send
what it likes and read when it likes, or never (a peer that reads
nothing). Its websocket buffers at most one received message, so a link
that is not read pushes back onto the sentinel quickly. It pings the
sentinel every second whatever the test does, as a live peer that simply
reads nothing would: the sentinel's heartbeat watchdog must not be what
closes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from fame._protocol import NodeHandshake
from fame._protocol._credentials import CLIENT, NODE
from fame._protocol._identity import Identity
from fame._wire._schema import (
    Batch,
    Bind,
    BindRefused,
    Bound,
    Codec,
    Envelope,
    LinkMessage,
    Ping,
    Request,
)


@attrs.define
class RawLink:
    ws: WebSocketConnection
    path: str
    codec: Codec
    corr: int = 0

    @property
    def reply_to(self) -> str:
        return f"_reply@{self.path}"

    async def request(self, to: str, op: str, **args: object) -> int:
        """Send a request; return its corr."""
        self.corr += 1
        frame = Request(op, dict(args), timeout_ms=60_000)
        await self.send(Envelope(0, to, self.corr, frame, self.reply_to, self.corr))
        return self.corr

    async def send(self, message: LinkMessage) -> None:
        await self.ws.send_message(self.codec.encode(message))

    async def receive(self) -> list[LinkMessage]:
        """The next websocket message, a batch unpacked."""
        data = await self.ws.get_message()
        assert isinstance(data, bytes)
        message = self.codec.decode(data)
        if isinstance(message, Batch):
            return [self.codec.decode(item) for item in message.messages]
        return [message]

    async def envelopes(self) -> AsyncIterator[Envelope]:
        """Every envelope received from now on, in order (control frames skipped)."""
        while True:
            for message in await self.receive():
                if isinstance(message, Envelope):
                    yield message

    async def bind(self, *addresses: str) -> dict[str, str]:
        """Bind ``addresses``; once each is answered, return the refused ones with the reasons."""
        await self.send(Bind(list(addresses)))
        waiting = set(addresses)
        refused: dict[str, str] = {}
        while waiting:
            for message in await self.receive():
                if isinstance(message, Bound):
                    waiting.discard(message.address)
                elif isinstance(message, BindRefused):
                    waiting.discard(message.address)
                    refused[message.address] = message.reason
        return refused


@asynccontextmanager
async def open_raw_link(url: str, token: str, *, node: bool = False) -> AsyncIterator[RawLink]:
    """Attach to the sentinel at ``url``; a client unless ``node`` (then trusted on first use)."""
    codec = Codec()
    handshake = NodeHandshake(Identity.generate(), token, role=NODE if node else CLIENT)
    async with trio.open_nursery() as closing:
        async with open_websocket_url(
            url,
            message_queue_size=1,
            max_message_size=4 << 20,
            receive_buffer_size=1 << 14,
            disconnect_timeout=5,
        ) as ws:
            with trio.fail_after(30):
                while not handshake.attached:
                    data = await ws.get_message()
                    assert isinstance(data, bytes)
                    answer = handshake.receive(codec.decode(data))
                    if answer is not None:
                        await ws.send_message(codec.encode(answer))
            assert handshake.path is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_keep_alive, ws, codec)
                try:
                    yield RawLink(ws, handshake.path, codec)
                finally:
                    nursery.cancel_scope.cancel()
                    # trio-websocket's reader waits on its full queue of one message
                    # and would never see the close: drop everything while it closes.
                    closing.start_soon(_drain, ws)
        closing.cancel_scope.cancel()


async def _drain(ws: WebSocketConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.get_message()


async def _keep_alive(ws: WebSocketConnection, codec: Codec) -> None:
    """Ping every second until the link closes."""
    nonce = 0
    while True:
        await trio.sleep(1)
        nonce += 1
        try:
            await ws.send_message(codec.encode(Ping(nonce)))
        except (ConnectionClosed, trio.BrokenResourceError):
            return
