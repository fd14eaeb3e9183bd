"""A node re-attaching while callers already call it: the first frames are served.

Found by the agent crash loop (``crash_loop.py``): a restarted storage agent
could not attach while the client kept writing. The sentinel keeps the
node's routes in ``__route_store``, so the moment it admits the node,
requests for it are routed to the new link; its writer batched them with
the ``Welcome`` into one message, and the node's handshake refused the
``Batch`` ("unexpected Batch during the attach handshake") and exited.

The first test has a scripted sentinel send exactly that batch. The second
checks the sentinel's side: it queues the ``Welcome`` before the new link
becomes routable. It used to link first and then close the node's previous
link, awaiting the close handshake: requests routed meanwhile went out
ahead of the ``Welcome``. The third wedges the old link on a full socket
and checks that closing it no longer holds up the new link's ``Bind``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

import fame
from fame._fabric._transport import open_link
from fame._fabric.sentinel._server import open_sentinel
from fame._protocol._credentials import token_proof
from fame._protocol._identity import Identity
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Batch,
    Bind,
    Bound,
    Challenge,
    Codec,
    Envelope,
    LinkMessage,
    Reply,
    Request,
    Welcome,
    attach_proof_payload,
)


class Echo(fame.BaseAgent):
    @fame.operation
    async def say(self, text: str) -> str:
        return f"echo: {text}"


async def test_node_serves_envelopes_batched_with_its_welcome() -> None:
    codec = Codec()
    token = secrets.token_urlsafe(16)
    answers: list[LinkMessage] = []
    done = trio.Event()

    async def fake_sentinel(request: WebSocketRequest) -> None:
        ws = await request.accept()
        challenge = Challenge(secrets.token_bytes(32), "fake-sentinel", PROTOCOL_VERSION)
        await ws.send_message(codec.encode(challenge))
        data = await ws.get_message()
        assert isinstance(data, bytes)
        attach = codec.decode(data)
        assert type(attach) is Attach
        call = Envelope(0, "echo@fame.fabric", 1, Request("say", {"text": "hi"}), "_reply@x", 7)
        welcome = Welcome(attach.node_id, attach.node_id)
        # What the real sentinel's writer does when requests queue up behind the Welcome.
        first = Batch([codec.encode(welcome), codec.encode(call)])
        await ws.send_message(codec.encode(first))
        while not done.is_set():
            data = await ws.get_message()
            assert isinstance(data, bytes)
            message = codec.decode(data)
            frames = (
                [codec.decode(m) for m in message.messages] if type(message) is Batch else [message]
            )
            for frame in frames:
                if type(frame) is Bind:
                    for address in frame.addresses:
                        await ws.send_message(codec.encode(Bound(address)))
                elif type(frame) is Envelope:
                    answers.append(frame)
                    done.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as tasks:
        server = await tasks.start(serve_websocket, fake_sentinel, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        with trio.fail_after(20):
            async with fame.open_node() as node:
                await node.spawn(Echo, "echo@fame.fabric")
                async with fame.attach(node, url, token=token) as uplink:
                    await done.wait()
                    assert uplink.attach_count == 1
        tasks.cancel_scope.cancel()
    [answer] = answers
    assert type(answer) is Envelope
    assert answer.to == "_reply@x" and answer.corr == 7
    assert answer.frame == Reply("echo: hi")


def frames_of(codec: Codec, data: Any) -> list[LinkMessage]:
    assert isinstance(data, bytes)
    message = codec.decode(data)
    if type(message) is Batch:
        return [codec.decode(item) for item in message.messages]
    return [message]


async def attach_raw(ws: Any, codec: Codec, identity: Identity, token: str) -> list[LinkMessage]:
    """Attach over ``ws`` as ``identity``; the frames of the first message after the attach."""
    [challenge] = frames_of(codec, await ws.get_message())
    assert type(challenge) is Challenge
    payload = attach_proof_payload(
        challenge.nonce, challenge.sentinel_id, identity.node_id, "node", identity.public_key
    )
    attach = Attach(
        identity.node_id,
        identity.public_key,
        token_proof(token, payload),
        identity.sign(payload),
        "node",
        PROTOCOL_VERSION,
    )
    await ws.send_message(codec.encode(attach))
    return frames_of(codec, await ws.get_message())


CODEC = Codec()


@dataclass
class SilentNode:
    """A sentinel, a hand-attached node serving ``echo@fame.fabric`` and a client.

    The node's first link holds one message in its queue and reads no more,
    so it stops answering: the sentinel's close handshake with it stalls.
    """

    url: str
    token: str
    identity: Identity
    client: fame.Node

    @asynccontextmanager
    async def reattach(self) -> AsyncIterator[tuple[WebSocketConnection, list[LinkMessage]]]:
        """The node's new link, attached, and the frames of its first message.

        Opened as a node opens its link (the same websocket buffers), since
        this test plays the node.
        """
        async with open_link(self.url) as new:
            yield new, await attach_raw(new, CODEC, self.identity, self.token)


@asynccontextmanager
async def silent_node(heartbeat: float = 5.0) -> AsyncIterator[SilentNode]:
    token = secrets.token_urlsafe(16)
    identity = Identity.generate()
    async with (
        fame.open_node() as sentinel_node,
        open_sentinel(
            port=0, trust_on_first_use=True, token=token, node=sentinel_node, heartbeat=heartbeat
        ) as sentinel,
    ):
        url = f"ws://127.0.0.1:{sentinel.port}/"
        async with open_websocket_url(url, message_queue_size=1) as old:
            [welcome] = await attach_raw(old, CODEC, identity, token)
            assert type(welcome) is Welcome
            await old.send_message(CODEC.encode(Bind(["echo@fame.fabric"])))
            assert frames_of(CODEC, await old.get_message()) == [Bound("echo@fame.fabric")]
            async with fame.connect(url, token=token) as client:
                yield SilentNode(url, token, identity, client)


async def test_sentinel_queues_the_welcome_before_routing_to_the_new_link() -> None:
    async with silent_node() as node, trio.open_nursery() as callers:
        echo = node.client.proxy("echo@fame.fabric").with_timeout(0.05)

        async def keep_calling() -> None:
            while True:
                with suppress(fame.FameError):
                    await echo.say(text="hi")
                await trio.sleep(0.005)

        for _ in range(4):
            callers.start_soon(keep_calling)
        # Calls time out and come again: messages pile up at the old link,
        # which reads nothing.
        await trio.sleep(0.5)
        # The node comes back on a new link while callers keep calling.
        with trio.fail_after(15):
            async with node.reattach() as (_, first):
                pass
        callers.cancel_scope.cancel()
    assert type(first[0]) is Welcome, f"{type(first[0]).__name__} came before the Welcome"


async def test_a_node_reattaches_while_its_old_link_is_wedged_on_a_full_socket() -> None:
    # The old link reads nothing while callers push large requests at it, until
    # the sentinel's writer for it is stuck on a full TCP window. Closing that
    # link must not hold the new link's reader: the new link's Bind is answered.
    # A long heartbeat: the old link must not be closed as silent meanwhile.
    async with silent_node(heartbeat=30.0) as node, trio.open_nursery() as callers:
        echo = node.client.proxy("echo@fame.fabric").with_timeout(0.1)
        payload = "x" * 500_000
        sent = 0
        wedged = trio.Event()

        async def keep_calling() -> None:
            nonlocal sent
            while True:
                sent += 1
                if sent >= 200:  # well past any loopback socket buffer
                    wedged.set()
                with suppress(fame.FameError):
                    await echo.say(text=payload)

        for _ in range(32):
            callers.start_soon(keep_calling)
        await wedged.wait()
        with trio.fail_after(10) as bound_in_time:
            async with node.reattach() as (new, first):
                assert type(first[0]) is Welcome
                await new.send_message(CODEC.encode(Bind(["late@fame.fabric"])))
                answers: list[LinkMessage] = []
                while Bound("late@fame.fabric") not in answers:
                    answers += frames_of(CODEC, await new.get_message())
                # The claim holds. What is left is teardown: closing this websocket
                # drains the requests queued behind the Bound, at the pace of a
                # machine the callers keep busy. Bounded on its own.
                callers.cancel_scope.cancel()
                bound_in_time.deadline = trio.current_time() + 10
    assert sent >= 200
