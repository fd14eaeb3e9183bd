"""Hostile connections against a real sentinel: garbage from many peers, an over-long message.

The sentinel and the node (echo and the storage agent on SQLCipher) are
real ``fame`` processes on 127.0.0.1; attackers and a well-behaved client
run in the test over real websockets. Each scenario checks the same three
things: the attacker gets a clear error (a ``LinkError``, a close), the
sentinel process never dies, and the well-behaved peers see nothing.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable

import trio
from fabric.fabric_agents import Echo
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection
from wsproto.events import Request as WsRequest

from fame._fabric._client import connect

from .conftest import Report
from .fame_services import FameServices, sampling_rss
from .hostile_frames import LIMIT
from .hostile_peers import GUARD, Tally, WellBehaved, attack, attacked_services

ATTACK_CONNECTIONS = 800
ATTACKERS = 8


async def test_hostile_connections_leave_the_sentinel_and_a_client_unharmed(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    services = attacked_services(fame_services, "storm", FAME_SENTINEL_MAX_CONNECTIONS="256")
    sentinel, node, url = services.sentinel, services.node, services.url
    tally = Tally()
    baseline = sentinel.rss_kib() / 1024
    rng = random.Random(int.from_bytes(os.urandom(4)))
    seeds = [rng.randrange(2**32) for _ in range(ATTACK_CONNECTIONS)]
    async with connect(url, token=services.token) as client:
        good = WellBehaved(client)
        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(good.run)
                limiter = trio.CapacityLimiter(ATTACKERS)

                async def one(seed: int) -> None:
                    async with limiter:
                        await attack(url, services.token, random.Random(seed), tally)
                    assert sentinel.running, "\n".join(sentinel.log_lines()[-40:])

                async with (
                    sampling_rss({"sentinel": sentinel.pid}) as samples,
                    trio.open_nursery() as attackers,
                ):
                    for seed in seeds:
                        attackers.start_soon(one, seed)
                # A few more calls after the storm, then the stream check.
                for _ in range(20):
                    assert await good.echo.say(text="after") == "after"
                good.done.set()
            await good.still_fine()
    peak = sentinel.peak_rss_mib()
    reliability_report(
        inputs_tried=tally.inputs,
        connections_opened=tally.connections,
        connections_refused=tally.refused,
        sentinel_crashes=0 if sentinel.running else 1,
        peak_sentinel_rss_mib=round(peak, 1),
        baseline_sentinel_rss_mib=round(baseline, 1),
        well_behaved_calls_ok=good.ok,
        well_behaved_calls_failed=len(good.failed),
        answers=" ".join(f"{k}:{v}" for k, v in sorted(tally.answers.items())),
        seed=seeds[0],
    )
    assert sentinel.running and node.running
    assert good.failed == [], good.failed[:5]
    assert good.ok > 0
    assert tally.connections == ATTACK_CONNECTIONS and tally.refused == 0
    # Every class of hostile input was answered as such (not ignored, not fatal).
    assert tally.answers.get("LinkError", 0) > 0 and tally.answers.get("Challenge", 0) > 0
    assert not sentinel.tracebacks(), "\n".join(sentinel.log_lines()[-60:])
    # Bounded memory: at most a few over-long messages per attacker are buffered at once
    # (trio-websocket accepts up to ~2 MiB), nothing accumulates across connections.
    assert peak - baseline < ATTACKERS * 3 * 2 * (LIMIT >> 20) + 64, (peak, baseline, samples)


async def test_an_over_long_message_to_a_closing_link_does_not_stop_the_sentinel(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    # Regression (found by the test above): while the sentinel closed a link after
    # three violations, a message over the websocket limit made trio-websocket's
    # reader raise wsproto's LocalProtocolError in the server's nursery, and the
    # sentinel process exited. Raw frames, so the peer can ignore the close.
    services = attacked_services(fame_services, "closing")
    sentinel, url, port = services.sentinel, services.url, services.port
    size = 2 * LIMIT + 4096  # over trio-websocket's limit (WS_MAX_MESSAGE)
    # FIN + binary, masked with a zero key (so the payload goes as is), 64-bit length.
    too_long = b"\x82\xff" + size.to_bytes(8, "big") + b"\x00" * 4 + b"\x00" * size
    attempts = 3
    for _ in range(attempts):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(WsRequest(host="127.0.0.1", target="/")))
            accepted: list[object] = []
            with trio.fail_after(GUARD):
                while not any(isinstance(e, AcceptConnection) for e in accepted):
                    ws.receive_data(await stream.receive_some(1 << 16))
                    accepted.extend(ws.events())
            for _ in range(3):
                await stream.send_all(ws.send(BytesMessage(b"\xc1")))
            closing = False
            with trio.fail_after(GUARD):
                while not closing:
                    data = await stream.receive_some(1 << 16)
                    assert data, "closed without a close frame"
                    ws.receive_data(data)
                    closing = any(isinstance(e, CloseConnection) for e in ws.events())
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(too_long)
    for _ in range(int(GUARD / 0.05)):  # the sentinel reads 2 MiB, then logs the failure
        if len([line for line in sentinel.log_lines() if "websocket layer" in line]) >= attempts:
            break
        await trio.sleep(0.05)
    contained = [line for line in sentinel.log_lines() if "failed in the websocket layer" in line]
    async with connect(url, token=services.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        assert await echo.say(text="still serving") == "still serving"
    reliability_report(attempts=attempts, contained_failures=len(contained), sentinel_crashes=0)
    assert sentinel.running and not sentinel.tracebacks()
    assert contained and "LocalProtocolError" in contained[0], sentinel.log_lines()[-5:]
