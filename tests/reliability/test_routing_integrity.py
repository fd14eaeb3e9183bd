"""Routing integrity at a real sentinel: each attack of issue 11 fails, and nobody else notices.

A sentinel on 127.0.0.1 routes for a node serving ``echo@fame.fabric``
(:class:`~fabric.fabric_agents.Echo`) and for a victim client
(``fame.connect``) that keeps calling echo (:class:`WellBehaved`) all
through each attack. The attacker holds the admission token and speaks the
protocol by hand over its own websockets. Each test shows the attack
refused, with fame's own frames and reasons, and the victim's calls all
answered, correctly.

The sans-IO rules behind each are tested in ``tests/fabric/test_protocol.py``,
``test_routing.py`` and ``test_link_fuzz.py``; ``docs/security.md`` lists
which test shows which guarantee.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fabric.fabric_agents import Echo
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

import fame
from fame._agents._switchboard import CORR_LIMIT
from fame._core._address import REPLY_NAME
from fame._fabric._identity import ROUTE_STORE
from fame._fabric.sentinel._server import Sentinel, open_sentinel
from fame._protocol import NodeHandshake
from fame._protocol._attach import (
    RESERVED_PATH_REASON,
    RESERVED_REPLY_REASON,
    sentinel_version_mismatch,
)
from fame._protocol._identity import Identity
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Batch,
    Bind,
    BindRefused,
    Bound,
    Challenge,
    Envelope,
    Error,
    LinkError,
    Ping,
    Pong,
    Refused,
    Reply,
    Request,
    StreamEnd,
    StreamItem,
    Welcome,
)
from fame.errors import ProtocolMismatch
from fame.storage import StorageConfig, open_storage

from .conftest import Report
from .hostile_frames import codec
from .hostile_peers import GUARD, WellBehaved, closed_by_sentinel
from .hostile_peers import next_frame as next_message


class Fabric:
    """A sentinel, the node serving echo, and the victim client calling it meanwhile."""

    def __init__(self, sentinel: Sentinel, url: str, token: str, node_id: str) -> None:
        self.sentinel = sentinel
        self.url = url
        self.token = token
        self.node_id = node_id  # the node serving echo: an id no refusal may reveal
        self.victim: fame.Node | None = None
        self.good: WellBehaved | None = None

    @property
    def sentinel_id(self) -> str:
        return self.sentinel.sentinel_id

    async def check_victim(self) -> None:
        """The victim was never disturbed, and still calls and streams."""
        good = self.good
        assert good is not None
        assert good.failed == [], good.failed
        assert good.ok > 0
        await good.still_fine()
        assert await good.echo.say(text="after the attack") == "after the attack"


@asynccontextmanager
async def running_fabric(suite_secrets: Any) -> AsyncIterator[Fabric]:
    token = secrets.token_urlsafe(16)
    suite_secrets.add("token", token)
    async with (
        open_sentinel(port=0, token=token) as sentinel,
        fame.open_node() as agent_node,
    ):
        url = f"ws://127.0.0.1:{sentinel.port}/"
        keys = sentinel.public_keys
        await agent_node.spawn(Echo, "echo@fame.fabric")
        # Enrolled, as an operator does: no trust on first use anywhere here.
        agent = Identity.generate()
        await sentinel.enroll(agent.node_id, agent.public_key, name="agent")
        async with fame.attach(agent_node, url, identity=agent, sentinel_keys=keys) as uplink:
            fabric = Fabric(sentinel, url, token, uplink.identity.node_id)
            async with (
                fame.connect(url, token=token, sentinel_keys=keys) as victim,
                trio.open_nursery() as tasks,
            ):
                fabric.victim = victim
                fabric.good = WellBehaved(victim)
                tasks.start_soon(fabric.good.run)
                yield fabric
                fabric.good.done.set()


@asynccontextmanager
async def raw_link(url: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url, connect_timeout=GUARD) as ws:
        try:
            yield ws
        finally:
            _unread.pop(id(ws), None)


async def attach_as(
    ws: WebSocketConnection,
    identity: Identity,
    token: str,
    *,
    ephemeral: bool = False,
    **fields: Any,
) -> Any:
    """Answer the challenge on ``ws`` as ``identity`` (``fields`` override the attach)."""
    challenge = await next_frame(ws)
    assert type(challenge) is Challenge
    attach = NodeHandshake(identity, token, role="client" if ephemeral else "node").receive(
        challenge
    )
    assert attach is not None
    await ws.send_message(codec.encode(msgspec.structs.replace(attach, **fields)))
    return await next_frame(ws)


class LogWatch(logging.Handler):
    """The records of a logger, and a way to wait for one: events, not sleeps."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._changed.set()  # the sentinel logs from its own trio tasks, in this thread
        self._changed = trio.Event()

    async def wait_for(self, text: str) -> str:
        with trio.fail_after(GUARD):
            while True:
                found = [line for line in self.lines if text in line]
                if found:
                    return found[0]
                await self._changed.wait()


@contextmanager
def watching(name: str) -> Iterator[LogWatch]:
    logger = logging.getLogger(name)
    watch = LogWatch()
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


_unread: dict[int, list[Any]] = {}


async def next_frame(ws: WebSocketConnection) -> Any:
    """The next frame the sentinel sent on ``ws``, a batch's frames one by one."""
    unread = _unread.setdefault(id(ws), [])
    if not unread:
        message = await next_message(ws)
        unread.extend(
            [codec.decode(m) for m in message.messages] if type(message) is Batch else [message]
        )
    return unread.pop(0)


async def frames_until_pong(ws: WebSocketConnection, nonce: int) -> list[Any]:
    """Every frame before the ``Pong(nonce)``: a ping after the attack fences its answers."""
    await ws.send_message(codec.encode(Ping(nonce)))
    got: list[Any] = []
    while (frame := await next_frame(ws)) != Pong(nonce):
        got.append(frame)
    return got


# --- 1 and 2: reserved names, the sentinel's id, refusals that reveal no node ---------------


async def test_reserved_addresses_cannot_be_bound_and_refusals_name_no_node(
    suite_secrets: Any, reliability_report: Report
) -> None:
    with watching("fame.sentinel") as log:
        async with running_fabric(suite_secrets) as fabric:
            good = await _reserved_names_attack(fabric, log)
    reliability_report(
        reserved_binds_refused=7,
        sentinel_id_attach_refused=1,
        victim_calls_ok=good.ok,
        victim_calls_failed=len(good.failed),
    )


async def _reserved_names_attack(fabric: Fabric, log: LogWatch) -> WellBehaved:
    """Bind what is reserved, attach as the sentinel, call an absent node's address."""
    assert fabric.victim is not None
    victim_path = fabric.victim.reply_address.partition("@")[2]
    reserved = [
        fabric.victim.reply_address,  # the stolen-answers attack
        f"{REPLY_NAME}@{fabric.node_id}",
        f"{REPLY_NAME}@{fabric.sentinel_id}",
        f"evil@{fabric.node_id}",
        f"evil@deep.{victim_path}",
        f"admin@{fabric.sentinel_id}",
        f"evil@{Identity.generate().node_id}",  # no such node (yet): the same answer
    ]
    async with raw_link(fabric.url) as attacker:
        # A node, to bind: an enrolled one gone rogue (a token alone admits no node).
        rogue = Identity.generate()
        await fabric.sentinel.enroll(rogue.node_id, rogue.public_key, name="rogue")
        welcome = await attach_as(attacker, rogue, fabric.token)
        assert type(welcome) is Welcome
        await attacker.send_message(codec.encode(Bind([*reserved, "echo@fame.fabric"])))
        answers = [await next_frame(attacker) for _ in range(len(reserved) + 1)]
        # An ordinary address is still the attacker's to take.
        await attacker.send_message(codec.encode(Bind(["evil@fame.fabric"])))
        assert await next_frame(attacker) == Bound("evil@fame.fabric")

    for address, answer in zip(reserved, answers[:-1], strict=True):
        why = RESERVED_REPLY_REASON if address.startswith(REPLY_NAME) else RESERVED_PATH_REASON
        assert answer == BindRefused(address, f"{address} is reserved: {why}")
    taken = answers[-1]
    assert taken == BindRefused(
        "echo@fame.fabric", "echo@fame.fabric is already bound to another node"
    )
    assert fabric.node_id not in taken.reason  # the owner stays in the sentinel's log:
    line = await log.wait_for(f"held by node {fabric.node_id}")
    assert "may not bind echo@fame.fabric" in line
    routes = fabric.sentinel.routes
    assert not [a for a in routes.bindings() if a in reserved]

    # The sentinel's own id is refused at the door.
    async with raw_link(fabric.url) as impostor:
        refused = await attach_as(impostor, Identity.generate(fabric.sentinel_id), fabric.token)
        assert refused == Refused("node id is reserved: it is the sentinel's own")
        assert await closed_by_sentinel(impostor)
    assert fabric.sentinel_id not in fabric.sentinel.pins

    # A caller of an address whose node is away learns that, not the node's id.
    async with fame.open_node() as away:
        await away.spawn(Echo, "away@fame.fabric")
        away_identity = Identity.generate()
        await fabric.sentinel.enroll(away_identity.node_id, away_identity.public_key)
        async with fame.attach(away, fabric.url, identity=away_identity) as uplink:
            away_id = uplink.identity.node_id
    await log.wait_for(f"node {away_id} detached")  # its link is gone from the table
    assert fabric.victim is not None
    with trio.fail_after(GUARD), pytest.raises(fame.NoRoute) as info:
        # Sent again until its deadline (the node may come back), then NoRoute.
        await fabric.victim.proxy("away@fame.fabric", Echo).with_timeout(2).say(text="x")
    assert "no route to away@fame.fabric: its node is not attached" in str(info.value)
    assert away_id not in str(info.value)
    await log.wait_for(f"(bound to node {away_id})")  # the operator still sees which node
    await fabric.check_victim()
    assert fabric.good is not None
    return fabric.good


# --- 3: reply_to only on requests, credit and cancel; answers from and to their links -----


async def test_answers_pass_only_from_the_serving_link_back_to_the_caller(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with running_fabric(suite_secrets) as fabric:
        victim = fabric.victim
        assert victim is not None
        me = victim.reply_address
        refusals: list[str] = []
        forged_answers = [Reply("forged"), StreamItem("forged"), StreamEnd(), Error("x", "y")]
        dropped_before = fabric.sentinel.router.routing.dropped_answers
        # The victim reads a stream and waits on a call while the attacker aims at both.
        stream = victim.proxy("echo@fame.fabric", Echo).count(up_to=10**6).__aiter__()
        assert (await stream.__anext__())["i"] == 0
        corrs = list(victim._switchboard.consumers)
        for frame in forged_answers:
            async with raw_link(fabric.url) as attacker:
                challenge_answer = await attach_as(
                    attacker, Identity.generate(), fabric.token, ephemeral=True
                )
                assert type(challenge_answer) is Welcome
                own = f"{REPLY_NAME}@{challenge_answer.path}"
                # With a reply_to (its own): the forwarding trick of issue 11, refused.
                for corr in corrs:
                    forged = Envelope(0, me, 0, frame, own, corr)
                    await attacker.send_message(codec.encode(forged))
                # Without one: not from the link serving the victim's request, dropped.
                for corr in [*corrs, *range(64)]:
                    await attacker.send_message(codec.encode(Envelope(0, me, 0, frame, None, corr)))
                # A request to the victim's reply address: not an agent's address.
                tell = Envelope(0, me, 0, Request("answer", {}), None, None)
                await attacker.send_message(codec.encode(tell))
                got = await frames_until_pong(attacker, 1)
                refusals.extend(f.reason for f in got if type(f) is LinkError)
                assert [type(f) for f in got] == [LinkError] * (len(corrs) + 1)
        dropped = fabric.sentinel.router.routing.dropped_answers - dropped_before
        # The victim's stream went on undisturbed, in order.
        assert [(await stream.__anext__())["i"] for _ in range(200)] == list(range(1, 201))
        await stream.aclose()
        assert victim._switchboard.dropped_answers == 0  # nothing forged even reached it
        await fabric.check_victim()
        good = fabric.good
    assert good is not None
    expected = [
        f"reply_to is allowed on requests, credits and cancels only, not {tag}"
        for tag in ("rep", "item", "end", "err")
    ]
    for reason in expected:
        assert reason in refusals
    assert "a req goes to an agent, not to a reply address" in refusals
    assert dropped == len(forged_answers) * (len(corrs) + 64)
    reliability_report(
        forged_answers_with_reply_to_refused=len(refusals) - len(forged_answers),
        forged_answers_dropped=dropped,
        victim_calls_ok=good.ok,
        victim_calls_failed=len(good.failed),
    )


# --- 4: unguessable correlation ids ---------------------------------------------------------


async def test_correlation_ids_cannot_be_guessed(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with running_fabric(suite_secrets) as fabric:
        victim = fabric.victim
        assert victim is not None
        switchboard = victim._switchboard
        drawn: list[int] = []
        draw = switchboard.new_corr

        def recorded() -> int:
            drawn.append(draw())
            return drawn[-1]

        switchboard.new_corr = recorded  # type: ignore[method-assign]
        echo = victim.proxy("echo@fame.fabric", Echo)
        for i in range(100):
            assert await echo.say(text=str(i)) == str(i)
        switchboard.new_corr = draw  # type: ignore[method-assign]
        calls = [corr for corr in drawn if corr]
        await fabric.check_victim()
        good = fabric.good
    assert good is not None
    assert len(calls) >= 100 and len(set(calls)) == len(calls)
    assert all(0 < corr < CORR_LIMIT for corr in calls)  # msgpack int64 on the wire
    # Not a counter: the forged replies of issue 11 tried 1..64 and hit 7 of 18.
    assert not [corr for corr in calls if corr < 1 << 32]
    reliability_report(corrs_seen=len(calls), victim_calls_ok=good.ok)


# --- 5: the token --------------------------------------------------------------------------


async def test_wrong_tokens_of_any_kind_are_refused_without_harm(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with running_fabric(suite_secrets) as fabric:
        token = fabric.token
        wrong = [
            token[:-1] + ("A" if token[-1] != "A" else "B"),
            token + "\u00e9",
            "\u2603" * 64,
            "",
        ]
        for guess in wrong:
            async with raw_link(fabric.url) as attacker:
                refused = await attach_as(attacker, Identity.generate(), guess, ephemeral=True)
                assert refused == Refused(
                    "wrong client credential: the admission token is not valid here"
                )
                assert await closed_by_sentinel(attacker)
        await fabric.check_victim()
        good = fabric.good
    assert good is not None
    reliability_report(wrong_tokens_refused=len(wrong), victim_calls_ok=good.ok)


# --- 6: the protocol version ---------------------------------------------------------------


async def test_a_peer_of_another_protocol_version_is_refused_naming_both(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with running_fabric(suite_secrets) as fabric:
        refusals: list[str] = []
        for version in (0, PROTOCOL_VERSION + 1):
            async with raw_link(fabric.url) as peer:
                refused = await attach_as(peer, Identity.generate(), fabric.token, version=version)
                assert refused == Refused(sentinel_version_mismatch(version))
                assert await closed_by_sentinel(peer)
                refusals.append(refused.reason)
        # A later version's attach, of a shape this sentinel cannot decode.
        async with raw_link(fabric.url) as peer:
            assert type(await next_frame(peer)) is Challenge
            future = msgspec.msgpack.encode(["attach", {"proof": b"p"}, [], 0, None, 1.5, 7])
            await peer.send_message(future)
            assert await next_frame(peer) == Refused(sentinel_version_mismatch(7))
            assert await closed_by_sentinel(peer)
        await fabric.check_victim()
        good = fabric.good
    assert good is not None
    assert refusals[1] == (
        f"protocol version mismatch: this sentinel speaks fame protocol version"
        f" {PROTOCOL_VERSION}, the node speaks version {PROTOCOL_VERSION + 1}"
    )
    reliability_report(version_mismatches_refused=3, victim_calls_ok=good.ok)


async def test_a_client_refuses_a_sentinel_of_another_version_and_sends_it_nothing() -> None:
    received: list[object] = []
    done = trio.Event()

    async def other_sentinel(request: WebSocketRequest) -> None:
        ws = await request.accept()
        challenge = Challenge(secrets.token_bytes(32), "nother", PROTOCOL_VERSION + 1)
        await ws.send_message(codec.encode(challenge))
        try:
            while True:
                received.append(await ws.get_message())
        except ConnectionClosed:
            pass
        finally:
            done.set()

    async with trio.open_nursery() as tasks:
        server = await tasks.start(serve_websocket, other_sentinel, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        with trio.fail_after(GUARD), pytest.raises(ProtocolMismatch) as info:
            async with fame.connect(url, token="never-sent"):
                pass
        with trio.fail_after(GUARD):
            await done.wait()
        tasks.cancel_scope.cancel()
    assert (info.value.ours, info.value.theirs) == (PROTOCOL_VERSION, PROTOCOL_VERSION + 1)
    assert info.value.reason == (
        f"protocol version mismatch: the sentinel speaks fame protocol version"
        f" {PROTOCOL_VERSION + 1}, this node speaks version {PROTOCOL_VERSION}"
    )
    assert received == []  # no attach, so no token, ever left the client


def test_fame_client_says_a_version_mismatch_is_not_a_token_problem() -> None:
    from fame._cli.client import _explain, _Target
    from fame._protocol._node_handshake import node_version_mismatch

    target = _Target(url="ws://h:1/", token="t", tls=None, keys=[], secrets=Path("conf"))
    line = _explain(node_version_mismatch(PROTOCOL_VERSION + 1), target, "x@y")
    assert line == (
        f"the sentinel at ws://h:1/ cannot be used: protocol version mismatch: the sentinel"
        f" speaks fame protocol version {PROTOCOL_VERSION + 1}, this node speaks version"
        f" {PROTOCOL_VERSION} (upgrade the older side)"
    )


async def test_reserved_routes_stored_by_an_older_sentinel_are_dropped_at_restore(
    suite_secrets: Any,
) -> None:
    token = secrets.token_urlsafe(16)
    suite_secrets.add("token", token)
    victim = Identity.generate().node_id  # whose reply address an attacker once captured
    async with open_storage(StorageConfig()) as storage:
        async with open_sentinel(
            port=0, trust_on_first_use=True, token=token, storage_provider=storage
        ) as before:
            sentinel_id = before.sentinel_id
            stored = {
                f"{REPLY_NAME}@{victim}": b"nattacker0000000000000",
                f"admin@{sentinel_id}": b"nattacker0000000000000",
                f"evil@{victim}": b"pool:nattacker0000000000000",
                "storage@fame.fabric": victim.encode(),  # an ordinary binding: kept
            }
            for address, record in stored.items():
                await before.stores.set(ROUTE_STORE, address, record)
        with watching("fame.sentinel") as log:
            async with (
                open_sentinel(
                    port=0, trust_on_first_use=True, token=token, storage_provider=storage
                ) as after,
                fame.connect(f"ws://127.0.0.1:{after.port}/", token=token) as client,
            ):
                assert after.sentinel_id == sentinel_id
                assert after.routes.bindings() == {"storage@fame.fabric": victim}
                assert set(await after.stores.items(ROUTE_STORE)) == {"storage@fame.fabric"}
                await after.node.spawn(Echo, "echo@fame.fabric")
                assert await client.proxy("echo@fame.fabric", Echo).say(text="hi") == "hi"
                line = await log.wait_for(f"dropping the stored route of {REPLY_NAME}@{victim}")
                assert line.endswith(RESERVED_REPLY_REASON)
