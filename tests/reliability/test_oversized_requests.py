"""Oversized keys, values and results: they fail for their caller only, and at once.

Through the real storage agent (a ``fame node`` process behind a real
``fame sentinel``): a key far too long, a key or value over the message
limit, and the largest value that fits, while a bystander keeps writing.
And in process: a result too big for the wire fails the call at once,
without restarting the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

import fame
from agents.storage_agent import StorageAgent
from fame._fabric._client import connect
from fame._fabric.sentinel._server import open_sentinel

from .conftest import Report
from .fame_services import FameServices
from .hostile_frames import LIMIT
from .hostile_peers import GUARD, attacked_services


async def test_oversized_keys_and_values_fail_for_their_caller_only(
    fame_services: Callable[..., FameServices], reliability_report: Report
) -> None:
    services = attacked_services(fame_services, "oversized")
    sentinel, node, url = services.sentinel, services.node, services.url
    async with (
        connect(url, token=services.token) as attacker,
        connect(url, token=services.token) as bystander,
    ):
        bad = attacker.proxy("storage@fame.fabric", StorageAgent).with_timeout(GUARD)
        other = bystander.proxy("storage@fame.fabric", StorageAgent).with_timeout(GUARD)
        stored: list[str] = []
        done = trio.Event()

        async def keep_storing() -> None:
            while not done.is_set():
                key = f"k{len(stored)}"
                assert (await other.store_value(key=key, value="v")).value == "v"
                stored.append(key)

        errors: dict[str, str] = {}
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_storing)
                # A key far too long, but in a message that fits: the agent refuses it.
                key = "k" * (LIMIT - 300)
                for call in (
                    lambda: bad.store_value(key=key, value="v"),
                    lambda: bad.retrieve_value(key=key),
                ):
                    with pytest.raises(fame.OperationFailed) as failed:
                        await call()
                    assert failed.value.exc_type == "InvalidKey"
                    assert f"({len(key)} characters): expected 1 to 1024 characters" in str(
                        failed.value
                    )
                errors["long key"] = str(failed.value)[-80:]
                # A 1 MiB key and a value over the limit: refused before sending.
                for args in (
                    {"key": "k" * LIMIT, "value": "v"},
                    {"key": "k", "value": "v" * LIMIT},
                ):
                    with pytest.raises(fame.errors.WireError) as too_big:
                        await bad.store_value(**args)
                    assert str(too_big.value).endswith(f"exceeds the limit of {LIMIT} bytes")
                errors["over the limit"] = str(too_big.value)
                # The largest value that fits goes through and comes back whole.
                value = "v" * (LIMIT - 200)
                assert (await bad.store_value(key="big", value=value)).value == value
                assert (await bad.retrieve_value(key="big")).value == value  # type: ignore[union-attr]
                # The attacker's own link and the agent are fine.
                assert (await bad.store_value(key="after", value="ok")).value == "ok"
                done.set()
        assert len(stored) > 0
        for key in stored:
            assert (await other.retrieve_value(key=key)).value == "v"  # type: ignore[union-attr]
    reliability_report(
        refused_calls=4,
        bystander_writes_ok=len(stored),
        agent_restarts=len([line for line in node.log_lines() if "crashed" in line]),
        sentinel_crashes=0 if sentinel.running else 1,
    )
    # No restart: a bad argument is the caller's error, not the agent's.
    assert not [line for line in node.log_lines() if "crashed" in line], node.log_lines()[-10:]
    assert sentinel.running and node.running and not sentinel.tracebacks()


async def test_a_result_too_big_for_the_wire_fails_at_once_without_a_restart() -> None:
    # Regression: the node could not encode the reply, the agent "crashed" and
    # the caller waited out its whole deadline.
    class Big(fame.BaseAgent):
        @fame.operation
        async def big(self, n: int) -> str:
            return "x" * n

        @fame.operation(streaming=True)
        async def items(self, n: int) -> Any:
            yield "small"
            yield "x" * n

    async with open_sentinel(port=0, trust_on_first_use=True, token="t" * 16) as sentinel:
        url = f"ws://127.0.0.1:{sentinel.port}/"
        async with fame.open_node() as node, fame.attach(node, url, token="t" * 16):
            await node.spawn(Big, "big@fame.fabric")
            async with connect(url, token="t" * 16) as client:
                big = client.proxy("big@fame.fabric", Big).with_timeout(GUARD)
                with trio.fail_after(GUARD / 2):
                    with pytest.raises(fame.errors.ProtocolError) as info:
                        await big.big(n=2 * LIMIT)
                    assert str(info.value).startswith("big@fame.fabric: the result of big()")
                    assert str(info.value).endswith(f"exceeds the limit of {LIMIT} bytes")
                    got = []
                    with pytest.raises(fame.errors.ProtocolError, match="the result of items"):
                        async for item in big.items(n=2 * LIMIT):
                            got.append(item)
                    assert got == ["small"]
                    assert await big.big(n=3) == "xxx"
            assert node.supervisor.ref("big@fame.fabric") is not None
