"""A node is reachable once its uplink says its addresses are bound.

``fame node`` writes its ready file after spawning its agents and
``wait_bound()``: a client that connects on that signal must find every
agent. The binds of agents spawned after the attach are queued for the
uplink's control task, so ``wait_bound`` must also wait for the ones that
task has not sent yet (it used to return at once, and the first call then
got ``NoRoute: no node bound it``).
"""

from __future__ import annotations

import secrets

import trio

import fame
from fame._fabric.sentinel._server import open_sentinel

from .fabric_agents import Echo


async def test_agents_spawned_after_attach_are_routable_once_wait_bound_returns() -> None:
    token = secrets.token_urlsafe(16)
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            async with (
                fame.connect(url, token=token) as client,
                fame.attach(node, url, token=token) as uplink,
            ):
                addresses = [f"echo{i}@fame.fabric" for i in range(5)]
                for address in addresses:
                    await node.spawn(Echo, address)
                await uplink.wait_bound()
                assert uplink.bindings.bound == set(addresses)
                for address in addresses:
                    assert await client.proxy(address).say(text="hi") == "hi"


async def test_wait_bound_follows_an_unbind_and_a_rebind() -> None:
    token = secrets.token_urlsafe(16)
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            async with fame.attach(node, url, token=token) as uplink:
                uplink.bind("late@fame.fabric")
                uplink.unbind("late@fame.fabric")
                uplink.bind("late@fame.fabric")
                await uplink.wait_bound()
                assert "late@fame.fabric" in uplink.bindings.bound
                link, _ = sentinel.routes.lookup("late@fame.fabric")
                assert link is not None
