"""Trust at a real sentinel: who may attach, what proves the sentinel, who may do what.

Each test runs a sentinel on 127.0.0.1 that admits nodes by enrollment only
(no trust on first use), a node serving :class:`Vault` and a well-behaved
client calling it all through the attack, then shows the attack refused
with fame's own types and reasons, and the client's calls all answered.
``docs/security.md`` names which test shows which claim.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

import fame
from fame._protocol._identity import Identity
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Bind,
    BindRefused,
    Challenge,
    Envelope,
    LinkError,
    Refused,
    Request,
    challenge_payload,
)
from fame.errors import PermissionDenied, UntrustedSentinel
from fame.security import Policy, current_caller

from .conftest import Report
from .hostile_frames import codec
from .hostile_peers import GUARD, closed_by_sentinel
from .test_routing_integrity import attach_as, next_frame, raw_link, watching

POLICY = """
[[bind]]
who = ["node:vault"]
addresses = ["vault@fame.fabric"]

[[call]]
who = ["role:client"]
addresses = ["vault@fame.fabric"]
operations = ["read", "whoami", "count", "nosuch"]
"""


class Vault(fame.BaseAgent):
    """A secret, a counter of writes, and who is calling."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    @fame.operation
    async def read(self) -> str:
        return "the secret"

    @fame.operation
    async def write(self, value: str) -> int:
        self.writes += 1
        return self.writes

    @fame.operation
    async def count(self) -> int:
        return self.writes

    @fame.operation
    async def whoami(self) -> list[str | None]:
        caller = current_caller()
        return [None, None] if caller is None else [caller.principal, caller.node_id]


class Client:
    """A well-behaved client: reads the vault until told to stop."""

    def __init__(self, node: fame.Node) -> None:
        self.node = node
        self.vault = node.proxy("vault@fame.fabric").with_timeout(GUARD)
        self.ok = 0
        self.failed: list[str] = []
        self.done = trio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            try:
                answer = await self.vault.read()
            except Exception as exc:
                self.failed.append(repr(exc))
                return
            if answer != "the secret":
                self.failed.append(f"wrong answer {answer!r}")
                return
            self.ok += 1
            await trio.sleep(0.002)

    async def check(self) -> None:
        assert self.failed == [], self.failed
        assert self.ok > 0
        assert await self.vault.read() == "the secret"


class Trusted:
    """A running fabric: its sentinel, URL, token, keys, the vault node and the client."""

    def __init__(self, sentinel: Any, token: str, vault: Identity) -> None:
        self.sentinel = sentinel
        self.url = f"ws://127.0.0.1:{sentinel.port}/"
        self.token = token
        self.keys = sentinel.public_keys
        self.vault = vault
        self.client: Client | None = None


@asynccontextmanager
async def trusted_fabric(suite_secrets: Any, **sentinel: Any) -> AsyncIterator[Trusted]:
    token = secrets.token_urlsafe(24)
    suite_secrets.add("token", token)
    policy = Policy.from_toml(POLICY, source="test policy")
    async with (
        fame.open_sentinel(port=0, token=token, policy=policy, **sentinel) as server,
        fame.open_node() as vault_node,
    ):
        vault = Identity.generate()
        await server.enroll(vault.node_id, vault.public_key, name="vault")
        fabric = Trusted(server, token, vault)
        await vault_node.spawn(Vault, "vault@fame.fabric")
        async with (
            fame.attach(vault_node, fabric.url, identity=vault, sentinel_keys=fabric.keys),
            fame.connect(fabric.url, token=token, sentinel_keys=fabric.keys) as node,
            trio.open_nursery() as tasks,
        ):
            fabric.client = Client(node)
            tasks.start_soon(fabric.client.run)
            yield fabric
            await fabric.client.check()
            fabric.client.done.set()


# --- a sentinel that proves who it is; no secret in clear ---------------------------------


class Recorded(list[bytes]):
    """What a fake sentinel received; ``first`` is set on the first message."""

    def __init__(self) -> None:
        super().__init__()
        self.first = trio.Event()


@asynccontextmanager
async def fake_sentinel(challenge: Challenge) -> AsyncIterator[tuple[str, Recorded]]:
    """A server that sends ``challenge`` and records every message it gets."""
    received = Recorded()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.send_message(codec.encode(challenge))
            while True:
                message = await ws.get_message()
                received.append(message if isinstance(message, bytes) else message.encode())
                received.first.set()
        except ConnectionClosed:
            return  # the client hung up: what it sent is recorded

    async with trio.open_nursery() as tasks:
        server = await tasks.start(serve_websocket, handler, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{server.port}/", received
        tasks.cancel_scope.cancel()


async def test_a_fake_sentinel_is_refused_and_learns_nothing(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with trusted_fabric(suite_secrets) as fabric:
        impostor = Identity.generate()
        nonce = secrets.token_bytes(32)
        payload = challenge_payload(nonce, "nfake", PROTOCOL_VERSION)
        fakes = [
            Challenge(nonce, "nfake", PROTOCOL_VERSION),  # signs nothing
            Challenge(  # signs with its own key
                nonce, "nfake", PROTOCOL_VERSION, [impostor.public_key], [impostor.sign(payload)]
            ),
            Challenge(  # names the real key, cannot sign with it
                nonce, "nfake", PROTOCOL_VERSION, fabric.keys, [impostor.sign(payload)]
            ),
        ]
        for challenge in fakes:
            async with fake_sentinel(challenge) as (url, received):
                with trio.fail_after(GUARD), pytest.raises(UntrustedSentinel) as refused:
                    async with fame.connect(url, token=fabric.token, sentinel_keys=fabric.keys):
                        pass
                assert "nothing was sent" in refused.value.reason
                assert received == []  # not an attach, not a byte of the token
    reliability_report(fake_sentinels_refused=len(fakes), client_calls_ok=_ok(fabric))


async def test_a_replayed_challenge_gets_an_attach_that_is_worth_nothing(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with trusted_fabric(suite_secrets) as fabric:
        # The fake copies a genuine challenge (signed by the real key) ...
        async with raw_link(fabric.url) as spy:
            genuine = await next_frame(spy)
        assert type(genuine) is Challenge
        async with fake_sentinel(genuine) as (url, received):
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as tasks:
                    # ... the client believes it and attaches (it never gets a Welcome).
                    tasks.start_soon(_connect_quietly, url, fabric)
                    await received.first.wait()
                    tasks.cancel_scope.cancel()
        [stolen] = [codec.decode(message) for message in received]
        assert type(stolen) is Attach
        assert fabric.token.encode() not in received[0]  # only an HMAC of the nonce
        # Played to the real sentinel on a new connection, it fails: another nonce.
        async with raw_link(fabric.url) as thief:
            assert type(await next_frame(thief)) is Challenge
            await thief.send_message(codec.encode(stolen))
            answer = await next_frame(thief)
            assert answer == Refused("bad signature: the attach proof does not verify")
            assert await closed_by_sentinel(thief)
    reliability_report(replayed_attach_refused=1, client_calls_ok=_ok(fabric))


async def _connect_quietly(url: str, fabric: Trusted) -> None:
    with pytest.raises(Exception):  # noqa: B017 - cancelled or refused, either way
        async with fame.connect(url, token=fabric.token, sentinel_keys=fabric.keys):
            pass


async def test_the_token_never_travels(suite_secrets: Any, reliability_report: Report) -> None:
    async with trusted_fabric(suite_secrets) as fabric:
        seen = bytearray()
        async with recording_proxy(fabric.sentinel.port, seen) as port:
            url = f"ws://127.0.0.1:{port}/"
            async with fame.connect(url, token=fabric.token, sentinel_keys=fabric.keys) as node:
                assert await node.proxy("vault@fame.fabric").read() == "the secret"
        assert len(seen) > 100  # the proxy saw the whole conversation ...
        for form in _encodings(fabric.token):
            assert form not in seen  # ... and the token in none of its forms
    reliability_report(bytes_scanned=len(seen), token_found=0)


def _encodings(token: str) -> list[bytes]:
    import base64

    raw = token.encode()
    return [raw, raw.hex().encode(), base64.b64encode(raw), msgspec.msgpack.encode(token)]


@asynccontextmanager
async def recording_proxy(target: int, seen: bytearray) -> AsyncIterator[int]:
    """A TCP proxy to 127.0.0.1:``target`` that keeps every byte both ways."""

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while data := await source.receive_some(65536):
            seen.extend(data)
            await sink.send_all(data)

    async def serve(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", target)
        async with upstream, trio.open_nursery() as both:
            both.start_soon(pump, client, upstream)
            both.start_soon(pump, upstream, client)

    async with trio.open_nursery() as tasks:
        [listener] = await tasks.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        yield listener.socket.getsockname()[1]
        tasks.cancel_scope.cancel()


# --- roles: enrolled nodes, ephemeral clients, ids that cannot be taken over --------------


async def test_nodes_need_their_enrollment_and_clients_take_no_id(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with trusted_fabric(suite_secrets) as fabric:
        assert fabric.client is not None
        refusals = {}
        cases = {
            "token holder as a new node": (Identity.generate(), False),
            "token holder as the vault node": (Identity.generate(fabric.vault.node_id), False),
            "client with the vault node's id": (Identity.generate(fabric.vault.node_id), True),
            "client with a live client's id": (
                Identity.generate(fabric.client.node.reply_address.partition("@")[2]),
                True,
            ),
        }
        for case, (identity, ephemeral) in cases.items():
            async with raw_link(fabric.url) as attacker:
                answer = await attach_as(attacker, identity, fabric.token, ephemeral=ephemeral)
                assert type(answer) is Refused, case
                refusals[case] = answer.reason
                assert await closed_by_sentinel(attacker)
        assert "is not enrolled" in refusals["token holder as a new node"]
        assert "enrolled with another key" in refusals["token holder as the vault node"]
        assert "reserved" in refusals["client with the vault node's id"]
        assert "in use by a live session" in refusals["client with a live client's id"]
        # An admitted client binds nothing, not even a free address.
        async with raw_link(fabric.url) as client:
            await attach_as(client, Identity.generate(), fabric.token, ephemeral=True)
            await client.send_message(codec.encode(Bind(["free@fame.fabric"])))
            answer = await next_frame(client)
            assert type(answer) is BindRefused and "bind nothing" in answer.reason
        assert fabric.vault.node_id in fabric.sentinel.enrolled
        assert len(fabric.sentinel.enrolled) == 1  # nobody else got in
    reliability_report(takeovers_refused=len(cases), client_calls_ok=_ok(fabric))


async def test_trust_on_first_use_is_only_explicit_and_said_loudly(
    suite_secrets: Any, reliability_report: Report
) -> None:
    with watching("fame") as log:
        async with trusted_fabric(suite_secrets, trust_on_first_use=True) as fabric:
            await log.wait_for("TRUSTS NODES ON FIRST USE")
            newcomer = Identity.generate()
            async with (
                fame.open_node() as node,
                fame.attach(
                    node,
                    fabric.url,
                    token=fabric.token,
                    identity=newcomer,
                    sentinel_keys=fabric.keys,
                ),
            ):
                line = await log.wait_for(f"enrolled new node {newcomer.node_id}")
                assert "TRUST ON FIRST USE" in line
            assert fabric.sentinel.enrolled[newcomer.node_id].admits(newcomer.public_key, 0)
            # Once enrolled, its id is its key's: a second comer with the id is refused.
            async with raw_link(fabric.url) as thief:
                refused = await attach_as(thief, Identity.generate(newcomer.node_id), fabric.token)
                assert "enrolled with another key" in refused.reason
    reliability_report(tofu_warnings=1, client_calls_ok=_ok(fabric))


# --- authorization -------------------------------------------------------------------------


async def test_the_policy_denies_what_it_does_not_allow_and_nothing_runs(
    suite_secrets: Any, reliability_report: Report
) -> None:
    async with trusted_fabric(suite_secrets) as fabric:
        async with fame.connect(fabric.url, token=fabric.token, sentinel_keys=fabric.keys) as me:
            vault = me.proxy("vault@fame.fabric").with_timeout(GUARD)
            for _ in range(3):
                with pytest.raises(PermissionDenied) as denied:
                    await vault.write(value="overwritten")
                assert "client:default may not call 'write' of vault@fame.fabric" in str(
                    denied.value
                )
            assert await vault.count() == 0  # nothing ran
            # An operation it lacks: named alone, the agent's other operations unsaid.
            with pytest.raises(fame.UnknownOperation) as unknown:
                await vault.nosuch()
            assert "has no operation 'nosuch'" in str(unknown.value)
            assert "read" not in str(unknown.value) and "whoami" not in str(unknown.value)
            # The operation sees who called, as the sentinel verified it.
            principal, node_id = await vault.whoami()
            assert principal == "client:default"
            assert node_id == me.reply_address.partition("@")[2]
        # An enrolled node the policy does not name binds nothing.
        rogue = Identity.generate()
        await fabric.sentinel.enroll(rogue.node_id, rogue.public_key, name="rogue")
        async with raw_link(fabric.url) as link:
            await attach_as(link, rogue, fabric.token)
            await link.send_message(codec.encode(Bind(["free@fame.fabric"])))
            answer = await next_frame(link)
            assert type(answer) is BindRefused
            assert "node:rogue may not bind free@fame.fabric" in answer.reason
    reliability_report(denied_calls=3, denied_binds=1, client_calls_ok=_ok(fabric))


async def test_a_forged_caller_is_refused(suite_secrets: Any, reliability_report: Report) -> None:
    async with trusted_fabric(suite_secrets) as fabric, raw_link(fabric.url) as attacker:
        identity = Identity.generate()
        await attach_as(attacker, identity, fabric.token, ephemeral=True)
        forged = Envelope(
            0,
            "vault@fame.fabric",
            1,
            Request("whoami", {}),
            f"_reply@{identity.node_id}",
            7,
            "node:vault",  # claims to be the vault's node
        )
        await attacker.send_message(codec.encode(forged))
        answer = await next_frame(attacker)
        assert answer == LinkError(
            "an envelope's caller is written by the sentinel, never by a peer"
        )
    reliability_report(forged_callers_refused=1, client_calls_ok=_ok(fabric))


# --- rotation ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_credentials_and_keys_rotate_with_a_grace_period(
    suite_secrets: Any, reliability_report: Report
) -> None:
    from fame.security import ClientCredential

    clock = Clock()
    old_token = secrets.token_urlsafe(24)
    suite_secrets.add("token", old_token)
    ending = [ClientCredential("default", old_token, clock.now + 60)]
    async with trusted_fabric(suite_secrets, clock=clock, credentials=ending) as fabric:
        old_keys = fabric.keys
        new_keys = await fabric.sentinel.rotate_signing_key(grace=60)
        assert set(old_keys) < set(new_keys)
        fresh = [k for k in new_keys if k not in old_keys]
        # A node's key rotates too: the new one from now, the old one for 60 s.
        old_worker = Identity.generate()
        await fabric.sentinel.enroll(old_worker.node_id, old_worker.public_key, name="worker")
        new_worker = Identity.from_private_bytes(old_worker.node_id, secrets.token_bytes(32))
        await fabric.sentinel.enroll(
            new_worker.node_id, new_worker.public_key, old_until=clock.now + 60
        )
        # During the grace period, old and new are all accepted.
        for token in (old_token, fabric.token):
            for trusted in (old_keys, fresh):
                async with fame.connect(fabric.url, token=token, sentinel_keys=trusted) as c:
                    assert await c.proxy("vault@fame.fabric").read() == "the secret"
        for worker in (old_worker, new_worker):
            async with raw_link(fabric.url) as link:
                assert type(await attach_as(link, worker, fabric.token)).__name__ == "Welcome"
        # After it, the old ones are refused, the new ones work.
        clock.now += 61
        with pytest.raises(fame.AdmissionRefused):
            async with fame.connect(fabric.url, token=old_token, sentinel_keys=fresh):
                pass
        with pytest.raises(UntrustedSentinel):
            async with fame.connect(fabric.url, token=fabric.token, sentinel_keys=old_keys):
                pass
        async with raw_link(fabric.url) as link:
            refused = await attach_as(link, old_worker, fabric.token)
            assert type(refused) is Refused and "has ended" in refused.reason
        async with raw_link(fabric.url) as link:
            assert type(await attach_as(link, new_worker, fabric.token)).__name__ == "Welcome"
        async with fame.connect(fabric.url, token=fabric.token, sentinel_keys=fresh) as c:
            assert await c.proxy("vault@fame.fabric").read() == "the secret"
    reliability_report(rotations=3, client_calls_ok=_ok(fabric))


def _ok(fabric: Trusted) -> int:
    return fabric.client.ok if fabric.client is not None else 0


async def test_library_defaults_are_said_and_short_tokens_refused(
    suite_secrets: Any, reliability_report: Report
) -> None:
    with pytest.raises(fame.errors.SentinelConfigError, match="too short to be a secret"):
        async with fame.open_sentinel(port=0, token="short"):
            pass
    with watching("fame") as log:
        async with trusted_fabric(suite_secrets) as fabric:
            await log.wait_for("authorization policy:")
            # A client that passes no sentinel keys is told, in the log, that it checks none.
            async with fame.connect(fabric.url, token=fabric.token) as unchecked:
                assert await unchecked.proxy("vault@fame.fabric").read() == "the secret"
            line = await log.wait_for("not verifying the sentinel")
            assert "no sentinel keys were given" in line
        async with fame.open_sentinel(port=0, token=secrets.token_urlsafe(24)):
            line = await log.wait_for("no authorization policy")
            assert "every admitted node and client may" in line
    reliability_report(warnings_seen=2, client_calls_ok=_ok(fabric))
