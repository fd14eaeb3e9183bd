"""Peers of a real sentinel under attack: the attackers, raw websockets, a well-behaved client.

The hostile-input scenarios run a ``fame sentinel`` and a ``fame node``
(``echo@fame.fabric`` and the storage agent) with
:func:`attacked_services`, then open websockets to the sentinel from the
test: :func:`attach_raw` attaches one by hand, :func:`attack` sends one
connection's worth of :func:`~hostile_frames.hostile` messages, and
:class:`WellBehaved` keeps calling echo meanwhile, to show that the
attackers harm no one else. Deadlines here are guards against hanging,
never speed assertions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
from fabric.fabric_agents import Echo
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

import fame
from fame._protocol import NodeHandshake
from fame._protocol._identity import Identity
from fame._wire._schema import Challenge, Welcome

from .fame_services import ECHO_AGENT, STORAGE_AGENT, FameServices
from .hostile_frames import codec, hostile

GUARD = 60.0  # a "does not hang" guard, never a speed assertion
LINK_DOWN = (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError)


def attacked_services(
    fame_services: Callable[..., FameServices], name: str, *, node: bool = True, **settings: str
) -> FameServices:
    """The sentinel under attack and (unless ``node`` is false) a node serving echo and storage.

    The sentinel keeps its routes in memory: the attack is on its links.
    Both are SIGKILLed at teardown: how they stop after an attack is not
    under test.
    """
    return fame_services(
        name,
        ECHO_AGENT,
        STORAGE_AGENT,
        node=node,
        kill_at_teardown=True,
        sentinel_storage="memory",
        **settings,
    )


class WellBehaved:
    """A client that keeps calling echo while attackers do their worst."""

    def __init__(self, node: fame.Node) -> None:
        self.echo = node.proxy("echo@fame.fabric", Echo).with_timeout(GUARD)
        self.ok = 0
        self.failed: list[str] = []
        self.done = trio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            text = f"call {self.ok}"
            try:
                answer = await self.echo.say(text=text)
            except Exception as exc:
                self.failed.append(repr(exc))
                if len(self.failed) >= 20:
                    return  # enough to show what broke; the test fails on any
                await trio.sleep(0.1)
                continue
            if answer == text:
                self.ok += 1
            else:
                self.failed.append(f"wrong answer {answer!r} to {text!r}")
            await trio.sleep(0.002)

    async def still_fine(self) -> None:
        assert [item["i"] async for item in self.echo.count(up_to=50)] == list(range(50))


async def attach_raw(ws: WebSocketConnection, token: str, *, ephemeral: bool = True) -> None:
    """Attach a fresh identity over ``ws`` by hand: challenge, signed attach, welcome."""
    challenge = codec.decode(await ws.get_message())
    assert type(challenge) is Challenge
    handshake = NodeHandshake(Identity.generate(), token, role="client" if ephemeral else "node")
    await ws.send_message(codec.encode(handshake.receive(challenge)))  # type: ignore[arg-type]
    assert type(codec.decode(await ws.get_message())) is Welcome


async def open_attached(url: str, token: str, count: int, stack: Any) -> list[WebSocketConnection]:
    """``count`` websockets attached by hand, closed when ``stack`` closes."""
    links = []
    for _ in range(count):
        ws = await stack.enter_async_context(open_websocket_url(url, connect_timeout=GUARD))
        await attach_raw(ws, token)
        links.append(ws)
    return links


async def refusal(url: str) -> ConnectionRejected:
    """The refusal of a websocket that the sentinel does not accept."""
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, connect_timeout=GUARD):
            pass
    return info.value


async def next_frame(ws: WebSocketConnection) -> Any:
    """The next message the sentinel sends on ``ws``, decoded."""
    with trio.fail_after(GUARD):
        return codec.decode(await ws.get_message())


async def closed_by_sentinel(ws: WebSocketConnection) -> bool:
    """Read ``ws`` until the sentinel closes it (True), within the guard."""
    try:
        with trio.fail_after(GUARD):
            while True:
                await ws.get_message()
    except ConnectionClosed:
        return True


class Tally:
    """What the attackers did and what came back."""

    def __init__(self) -> None:
        self.inputs = 0
        self.connections = 0
        self.refused = 0
        self.answers: dict[str, int] = {}


async def attack(url: str, token: str, rng: random.Random, tally: Tally) -> None:
    """One connection: maybe attach, send a few hostile messages, read what comes back."""
    messages = [hostile(rng) for _ in range(rng.randrange(1, 7))]
    tally.connections += 1
    try:
        async with open_websocket_url(url, connect_timeout=GUARD) as ws:
            if rng.random() < 0.5:
                await attach_raw(ws, token)
            for message in messages:
                tally.inputs += 1
                await ws.send_message(message)
            with trio.move_on_after(0.05):
                while True:
                    got = await ws.get_message()
                    name = type(codec.decode(got)).__name__ if isinstance(got, bytes) else "?"
                    tally.answers[name] = tally.answers.get(name, 0) + 1
    except ConnectionRejected:
        tally.refused += 1
    except LINK_DOWN:
        pass  # closed after repeated violations or an over-long message: expected
