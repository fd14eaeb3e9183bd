"""Per-principal quotas at a running sentinel: past one, that principal alone is refused."""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack

import pytest
import trio

import fame
import fame.errors
from fame._fabric._identity import ROUTE_STORE
from fame._fabric.sentinel._server import open_sentinel
from fame._protocol._credentials import ClientCredential
from fame._protocol._quotas import Quotas

from .fabric_agents import Echo
from .raw_link import open_raw_link


class Gate(fame.BaseAgent):
    """Holds every call until the test opens it; says when ``expected`` calls are inside."""

    max_concurrency = 64
    expected = 0
    inside = 0
    all_inside: trio.Event
    opened: trio.Event

    @classmethod
    def reset(cls, expected: int) -> None:
        cls.expected, cls.inside = expected, 0
        cls.all_inside, cls.opened = trio.Event(), trio.Event()

    @fame.operation
    async def wait(self) -> str:
        Gate.inside += 1
        if Gate.inside == Gate.expected:
            Gate.all_inside.set()
        await Gate.opened.wait()
        return "through"


async def test_a_principal_past_its_in_flight_quota_is_refused_and_others_are_served() -> None:
    bulk, other = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    credentials = [ClientCredential("bulk", bulk), ClientCredential("other", other)]
    Gate.reset(expected=4)
    with trio.fail_after(60):
        async with (
            open_sentinel(
                port=0,
                credentials=credentials,
                trust_on_first_use=True,
                quotas=Quotas(requests_in_flight=4),
            ) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            await node.spawn(Gate, "gate@fame.fabric")
            await node.spawn(Echo, "echo@fame.fabric")
            async with (
                fame.attach(node, url, token=bulk),
                fame.connect(url, token=bulk) as bulk_client,
                fame.connect(url, token=other) as other_client,
            ):
                gate = bulk_client.proxy("gate@fame.fabric")
                results: list[str] = []
                async with trio.open_nursery() as nursery:

                    async def call() -> None:
                        results.append(await gate.wait())

                    for _ in range(4):
                        nursery.start_soon(call)
                    await Gate.all_inside.wait()
                    assert sentinel.router.usage.requests["client:bulk"] == 4
                    with pytest.raises(fame.errors.QuotaExceeded) as refused:
                        await bulk_client.proxy("echo@fame.fabric").say(text="one more")
                    assert refused.value.kind == "quota_exceeded"
                    assert "client:bulk" in str(refused.value)
                    assert "requests_in_flight" in str(refused.value)
                    # Another principal is not affected.
                    echo = other_client.proxy("echo@fame.fabric")
                    assert await echo.say(text="fine") == "fine"
                    Gate.opened.set()
                assert results == ["through"] * 4
                assert "client:bulk" not in sentinel.router.usage.requests
                # Its answers came back: it may call again.
                assert await bulk_client.proxy("echo@fame.fabric").say(text="again") == "again"


async def test_binds_past_the_bindings_quota_are_refused_with_the_reason() -> None:
    token = secrets.token_urlsafe(16)
    with trio.fail_after(60):
        async with (
            open_sentinel(
                port=0, trust_on_first_use=True, token=token, quotas=Quotas(bindings=2)
            ) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            async with fame.attach(node, url, token=token) as uplink:
                for i in range(3):
                    await node.spawn(Echo, f"echo{i}@fame.fabric")
                await uplink.wait_bound()
                assert len(uplink.bindings.bound) == 2
                [(address, reason)] = uplink.bindings.refused.items()
                assert address not in uplink.bindings.bound
                assert "bindings = 2" in reason and "FAME_QUOTA_BINDINGS" in reason
                assert sentinel.routes.held(uplink.identity.node_id) == 2


async def test_trust_on_first_use_enrolls_no_node_past_the_cap() -> None:
    token = secrets.token_urlsafe(16)
    with trio.fail_after(60):
        async with (
            open_sentinel(
                port=0, trust_on_first_use=True, token=token, quotas=Quotas(enrolled_nodes=1)
            ) as sentinel,
            fame.open_node() as first,
            fame.open_node() as second,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            async with fame.attach(first, url, token=token):
                pass
            with pytest.raises(fame.AdmissionRefused, match="enrolled_nodes"):
                async with fame.attach(second, url, token=token):
                    pass
            assert len(sentinel.enrolled) == 1
            # The node enrolled already comes back; clients need no enrollment.
            async with fame.attach(first, url, token=token), fame.connect(url, token=token):
                pass


async def test_many_identities_binding_many_addresses_hold_at_most_their_quota() -> None:
    # 10 node identities (trusted on first use) ask for 1,024 addresses each.
    token = secrets.token_urlsafe(16)
    with trio.fail_after(60):
        async with open_sentinel(
            port=0, trust_on_first_use=True, token=token, quotas=Quotas(bindings=256)
        ) as sentinel:
            url = f"ws://127.0.0.1:{sentinel.port}/"
            before = len(await sentinel.stores.items(ROUTE_STORE))
            async with AsyncExitStack() as stack:
                for n in range(10):
                    node = await stack.enter_async_context(open_raw_link(url, token, node=True))
                    refused = await node.bind(*(f"a{i}.n{n}@fame.fabric" for i in range(1024)))
                    assert len(refused) == 1024 - 256
                    assert all("FAME_QUOTA_BINDINGS" in reason for reason in refused.values())
                    assert sentinel.routes.held(node.path) == 256
            # What reaches the disk is bounded by the quota too.
            stored = await sentinel.stores.items(ROUTE_STORE)
            assert len(stored) - before == 10 * 256
