"""Handshake abuse at a real sentinel: refused with a reason, harmful to no one.

No token, a wrong one, a replayed attach, a stolen node id, the sentinel's
own id, another protocol version, an address another node owns, absurd
field values, messages at and past the size limit: each attempt gets a
``Refused``, ``BindRefused`` or ``LinkError`` that says why, while a
well-behaved client keeps calling echo on the same (real, ``fame
sentinel``) process. ``tests/fabric/test_fabric_lifecycle.py`` covers a
stolen node id and a wrong token through a node process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import trio
from trio_websocket import open_websocket_url

from fame._fabric._client import connect
from fame._protocol import NodeHandshake
from fame._protocol._attach import sentinel_version_mismatch
from fame._protocol._identity import Identity
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Bind,
    BindRefused,
    Challenge,
    LinkError,
    Ping,
    Pong,
    Refused,
    Welcome,
)

from .conftest import Report
from .fame_services import FameServices
from .hostile_frames import AT_LIMIT, LIMIT, codec
from .hostile_peers import (
    GUARD,
    WellBehaved,
    attacked_services,
    closed_by_sentinel,
    next_frame,
)


async def test_handshake_abuse_is_refused_with_a_reason_and_harms_no_one(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    services = attacked_services(fame_services, "abuse")
    sentinel, url = services.sentinel, services.url
    refusals: dict[str, str] = {}
    async with connect(url, token=services.token) as client:
        good = WellBehaved(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good.run)

            async def attempt(name: str, attach: Callable[[Challenge], Any]) -> Any:
                async with open_websocket_url(url, connect_timeout=GUARD) as ws:
                    challenge = await next_frame(ws)
                    message = attach(challenge)
                    await ws.send_message(
                        message if isinstance(message, bytes) else codec.encode(message)
                    )
                    answer = await next_frame(ws)
                    refusals[name] = getattr(answer, "reason", type(answer).__name__)
                    if type(answer) is Refused:
                        assert await closed_by_sentinel(ws)
                    return answer

            def signed(identity: Identity, token: str, **fields: Any) -> Callable[[Any], Attach]:
                def make(challenge: Challenge) -> Attach:
                    attach = NodeHandshake(identity, token).receive(challenge)
                    assert attach is not None
                    return msgspec.structs.replace(attach, **fields)

                return make

            token = services.token
            # No token, and a wrong one.
            # (This sentinel trusts new nodes on first use, if they prove the token.)
            no_token = "trust on first use admits a new node only with a valid admission token"
            answer = await attempt("no token", signed(Identity.generate(), ""))
            assert type(answer) is Refused and no_token in answer.reason
            answer = await attempt("wrong token", signed(Identity.generate(), token + "x"))
            assert type(answer) is Refused and no_token in answer.reason

            # A replayed attach: recorded on one connection, sent on another.
            owner = Identity.generate()
            recorded: list[bytes] = []
            nonces: list[bytes] = []

            def record(challenge: Challenge) -> bytes:
                nonces.append(challenge.nonce)
                recorded.append(codec.encode(signed(owner, token)(challenge)))
                return recorded[0]

            async with open_websocket_url(url, connect_timeout=GUARD) as first:
                await first.send_message(record(await next_frame(first)))
                assert type(await next_frame(first)) is Welcome

                def replay(challenge: Challenge) -> bytes:
                    nonces.append(challenge.nonce)
                    return recorded[0]

                answer = await attempt("replayed attach", replay)
                assert type(answer) is Refused and "bad signature" in answer.reason
                assert nonces[0] != nonces[1]  # a nonce per connection

                # Binding an address another node owns; a megabyte-long one.
                await first.send_message(codec.encode(Bind(["echo@fame.fabric"])))
                refused = await next_frame(first)
                assert type(refused) is BindRefused
                # Refused without the owner's node id.
                assert refused.reason == "echo@fame.fabric is already bound to another node"
                refusals["bind taken"] = refused.reason
                await first.send_message(codec.encode(Bind(["x" * 1_000_000 + "@fame.fabric"])))
                refused = await next_frame(first)
                assert type(refused) is BindRefused and "(1000012 characters)" in refused.reason
                refusals["bind 1 MB address"] = refused.reason[-80:]
                await first.send_message(codec.encode(Ping(-5)))
                assert await next_frame(first) == Pong(-5)  # the link is still fine

                # A message of exactly the size limit is taken (an answer nobody
                # asked for: dropped); one byte more is a violation.
                await first.send_message(AT_LIMIT)
                await first.send_message(codec.encode(Ping(1)))
                assert await next_frame(first) == Pong(1)
                await first.send_message(AT_LIMIT + b"\x00")
                answer = await next_frame(first)
                assert type(answer) is LinkError
                assert (
                    answer.reason
                    == f"message of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes"
                )

                # Another key claiming the id that is attached right now.
                thief = Identity.generate(owner.node_id)
                answer = await attempt("stolen node id", signed(thief, token))
                assert type(answer) is Refused and "enrolled with another key" in answer.reason
                await first.send_message(codec.encode(Ping(2)))
                assert await next_frame(first) == Pong(2)  # the owner's link is untouched

            # Absurd field values.
            huge = "n" * (LIMIT - 1000)
            answer = await attempt("huge node id", signed(owner, token, node_id=huge))
            assert type(answer) is Refused and answer.reason.startswith("invalid node id 'nnn")
            assert len(answer.reason) < 200
            answer = await attempt("huge token", signed(Identity.generate(), huge))
            assert type(answer) is Refused and no_token in answer.reason
            answer = await attempt(
                "huge key", signed(owner, token, public_key=b"k" * 100_000, signature=b"")
            )
            assert type(answer) is Refused and "bad signature" in answer.reason
            negative = msgspec.msgpack.encode(["attach", -1, -(2**63), -7, -9])
            answer = await attempt("negative numbers", lambda _: negative)
            assert type(answer) is LinkError and answer.reason.startswith("malformed message")
            answer = await attempt("non-ascii id", signed(owner, token, node_id="n\u00e9\x00"))
            assert type(answer) is Refused and answer.reason.startswith("invalid node id")

            # Another protocol version: before versioning (0), and a later one.
            for version in (0, PROTOCOL_VERSION + 1):
                answer = await attempt(
                    f"protocol {version}", signed(Identity.generate(), token, version=version)
                )
                assert answer == Refused(sentinel_version_mismatch(version))
            # The sentinel's own id, which its challenge tells everyone.
            answer = await attempt(
                "the sentinel's id",
                lambda challenge: signed(Identity.generate(challenge.sentinel_id), token)(
                    challenge
                ),
            )
            assert answer == Refused("node id is reserved: it is the sentinel's own")
            good.done.set()
        # The owner of echo still serves it, to everyone.
        assert await good.echo.say(text="mine") == "mine"
    reliability_report(
        abuse_cases=len(refusals),
        well_behaved_calls_ok=good.ok,
        well_behaved_calls_failed=len(good.failed),
        sentinel_crashes=0 if sentinel.running else 1,
    )
    assert good.failed == [] and good.ok > 0
    assert sentinel.running and not sentinel.tracebacks()
