"""The metrics a node, its storage and its agents record, scraped over HTTP.

One node in this process with a :class:`~fame.lowlevel.PrometheusMetrics`,
served by :func:`~fame.lowlevel.serve_metrics` on a free port of
127.0.0.1; every figure is read back the way Prometheus reads it (an HTTP
GET, parsed by prometheus-client's own parser) and checked against the
calls made. The same with real ``fame`` processes is in
``tests/cli/test_metrics_endpoint.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import fame
from fame.lowlevel import Metrics, PrometheusMetrics, serve_metrics
from fame.storage import StorageConfig, open_storage

AGENT = "metered@fame.fabric"


class Failing(Exception):
    """What ``Metered.refuse`` raises: a declared error, answered as operation_failed."""


class Metered(fame.BaseAgent):
    def __init__(self) -> None:
        self.crashes = 0

    async def start(self) -> None:
        self.store = await self.storage_provider.get_kv_store(dict, "metered")

    @fame.operation
    async def put(self, key: str) -> None:
        await self.store.set(key, {"key": key})

    @fame.operation(errors=(Failing,))
    async def refuse(self) -> None:
        raise Failing("no")

    @fame.operation
    async def crash(self) -> None:
        raise RuntimeError("crash on purpose")

    @fame.operation(streaming=True)
    async def numbers(self, up_to: int) -> AsyncIterator[int]:
        for n in range(up_to):
            yield n


class Stalls(PrometheusMetrics):
    """Records as usual, and says when a stream first waited for credit."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = trio.Event()

    def credit_stall(self, address: str) -> None:
        super().credit_stall(address)
        self.stalled.set()


async def get(port: int, path: str) -> tuple[int, bytes]:
    """One HTTP GET on 127.0.0.1: the status code and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape by (name, labels), parsed by prometheus-client."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Mapping[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_calls_commits_stalls_and_restarts_are_counted() -> None:
    metrics = Stalls()
    serving = False

    def health() -> tuple[bool, Mapping[str, Any]]:
        return serving, {"node": "test"}

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_metrics(metrics, health, task_status=task_status)
        )
        code, body = await get(port, "/healthz")
        assert code == 503 and json.loads(body)["status"] == "unavailable"
        async with (
            open_storage(StorageConfig(), metrics=metrics) as provider,
            fame.open_node(storage_provider=provider, metrics=metrics) as node,
        ):
            agent = await node.spawn(
                Metered, AGENT, restart_policy=fame.RestartPolicy(max_restarts=10, within=60)
            )
            serving = True
            for n in range(7):
                await agent.put(key=f"k{n}")
            for _ in range(3):
                with pytest.raises(fame.errors.OperationFailed):
                    await agent.refuse()
            with pytest.raises(fame.errors.ActorCrashed):
                await agent.crash()
            async with agent.numbers(up_to=500) as stream:
                async for first in stream:
                    assert first == 0
                    break
                # The consumer reads no more: its producer runs out of credit.
                with trio.fail_after(30):
                    await metrics.stalled.wait()
            async with agent.numbers(up_to=5) as stream:
                assert [n async for n in stream] == [0, 1, 2, 3, 4]
            code, body = await get(port, "/healthz")
            assert code == 200 and json.loads(body) == {"status": "ok", "node": "test"}
            code, text = await get(port, "/metrics")
            assert code == 200
            found = samples(text)
        # The node closed: every stream task has ended and recorded its outcome.
        streams = samples(metrics.render())
        assert await get(port, "/nothing") == (404, b"try /metrics or /healthz\n")
        nursery.cancel_scope.cancel()

    ok = {"address": AGENT, "operation": "put"}
    assert value(found, "fame_calls_total", **ok, outcome="ok") == 7
    assert value(found, "fame_call_seconds_count", **ok) == 7
    refused = {"address": AGENT, "operation": "refuse", "outcome": "operation_failed"}
    assert value(found, "fame_calls_total", **refused) == 3
    crashed = {"address": AGENT, "operation": "crash", "outcome": "actor_crashed"}
    assert value(found, "fame_calls_total", **crashed) == 1
    # The crash restarted the agent once; the supervisor's count is read at the scrape.
    assert value(found, "fame_actor_restarts_total", address=AGENT) == 1
    assert value(found, "fame_stream_credit_stalls_total", address=AGENT) >= 1
    # Each put is its own transaction of one write (the calls were one at a time).
    assert value(found, "fame_storage_commits_total", namespace="metered", outcome="ok") == 7
    assert value(found, "fame_storage_commit_batch_size_sum", namespace="metered") == 7
    assert value(found, "fame_storage_commit_seconds_count", namespace="metered") == 7
    assert value(found, "fame_mailbox_depth", address=AGENT) == 0
    # A stream is one call: the one read to its end is ok, the one left unread cancelled.
    numbers = {"address": AGENT, "operation": "numbers"}
    assert value(streams, "fame_calls_total", **numbers, outcome="ok") == 1
    assert value(streams, "fame_calls_total", **numbers, outcome="cancelled") == 1
    assert value(streams, "fame_call_seconds_count", **numbers) == 2
    assert ("fame_mailbox_depth", frozenset({("address", "storage/metered")})) in found


async def test_two_nodes_in_one_process_keep_their_figures_apart() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    async with (
        fame.open_node(metrics=first) as one,
        fame.open_node(metrics=second) as two,
    ):
        a = await one.spawn(Metered, AGENT)
        b = await two.spawn(Metered, AGENT)
        await a.put(key="x")
        for _ in range(2):
            await b.put(key="y")
    labels = {"address": AGENT, "operation": "put", "outcome": "ok"}
    assert value(samples(first.render()), "fame_calls_total", **labels) == 1
    assert value(samples(second.render()), "fame_calls_total", **labels) == 2


async def test_metrics_off_record_nothing() -> None:
    """The default: a node without metrics records into the base class, which keeps nothing."""
    assert Metrics.enabled is False
    async with fame.open_node() as node:
        agent = await node.spawn(Metered, AGENT)
        await agent.put(key="x")
        assert node._switchboard.metrics.enabled is False
