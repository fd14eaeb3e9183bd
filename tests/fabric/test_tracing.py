"""Tracing: one remote call is one trace, client -> sentinel -> agent -> storage.

A sentinel, a node with a storage agent on an encrypted SQLite file, and a
client run in this process over real websockets on 127.0.0.1, so one
in-memory exporter sees every span. The trace context crosses the two
links in ``Request.trace``; with no tracer provider set, requests carry
none.
"""

from __future__ import annotations

import itertools
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import fame
from fame._core._errors import WireError
from fame._fabric.sentinel._server import open_sentinel
from fame._wire import _schema
from fame._wire._schema import (
    Codec,
    Envelope,
    LinkError,
    Reply,
    Request,
    RoutingHeader,
    request_head,
)
from fame._wire._trace_context import request_trace, retrace
from fame.storage import StorageConfig, open_storage, parse_master_key

from .raw_link import open_raw_link

ADDRESS = "records@fame.fabric"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Record(msgspec.Struct):
    value: str


class Records(fame.BaseAgent):
    """Stores a value through its node's storage, as the starter's storage agent does."""

    _store: Any = None

    async def start(self) -> None:
        self._store = await self.storage_provider.get_kv_store(Record, "records")

    @fame.operation(deduplicated=True)
    async def store_value(self, key: str, value: str) -> str:
        stored = await self._store.set_versioned(
            key, Record(value), request_id=fame.security.request_key()
        )
        return str(stored.value.value)


def _reset_tracer_provider() -> None:
    # OpenTelemetry lets a process set its provider once; tests of tracing set theirs
    # and put the unset state back, so tracing stays off for every other test.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_tracer_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_tracer_provider()


@pytest.fixture
def sent_requests(monkeypatch: pytest.MonkeyPatch) -> list[Request]:
    """Every request of this test as it went on the wire: encoded by the client, then
    decoded by the node (the sentinel forwards the bytes without decoding them)."""
    seen: list[Request] = []
    encode, decode = Codec.encode, Codec.decode

    def keep(message: Any) -> None:
        if isinstance(message, Envelope) and isinstance(message.frame, Request):
            seen.append(message.frame)

    def spy_encode(self: Codec, message: Any) -> bytes:
        keep(message)
        return encode(self, message)

    def spy_decode(self: Codec, data: bytes) -> Any:
        message = decode(self, data)
        keep(message)
        return message

    monkeypatch.setattr(Codec, "encode", spy_encode)
    monkeypatch.setattr(Codec, "decode", spy_decode)
    return seen


async def _store_one_value_remotely(tmp_path: Path) -> str:
    """Sentinel, storage node and client in this process; one remote ``store_value``."""
    token = secrets.token_urlsafe(16)
    config = StorageConfig(
        profile="encrypted-sqlite",
        directory=tmp_path / "data",
        master_key=parse_master_key(secrets.token_urlsafe(32)),
    )
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            open_storage(config) as storage,
            fame.open_node(storage_provider=storage) as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            await node.spawn(Records, ADDRESS)
            async with (
                fame.attach(node, url, token=token) as uplink,
                fame.connect(url, token=token) as client,
            ):
                await uplink.wait_bound()
                return str(await client.proxy(ADDRESS, Records).store_value(key="k", value="v"))


def _traceparent(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _trace_of(spans: tuple[ReadableSpan, ...], root: ReadableSpan) -> list[ReadableSpan]:
    assert root.context is not None
    trace_id = root.context.trace_id
    ours = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    return sorted(ours, key=lambda s: s.start_time or 0)


async def test_a_remote_store_value_is_one_trace_from_client_to_storage(
    exporter: InMemorySpanExporter, sent_requests: list[Request], tmp_path: Path
) -> None:
    assert await _store_one_value_remotely(tmp_path) == "v"
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "fame.call store_value"]
    assert len(roots) == 1
    call = roots[0]
    assert call.parent is None and call.kind is trace.SpanKind.CLIENT
    chain = _trace_of(spans, call)
    names = [s.name for s in chain]
    assert names == [
        "fame.call store_value",
        "fame.route store_value",
        "fame.operation store_value",
        "fame.storage Put",
    ]
    # Each span is the child of the one before it, all in the call's trace.
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and parent.context is not None
        assert child.parent.span_id == parent.context.span_id, (parent.name, child.name)
    route, operation, storage = chain[1:]
    assert route.kind is operation.kind is trace.SpanKind.SERVER
    assert route.attributes is not None and route.attributes["fame.caller"] == "client:default"
    assert operation.attributes is not None and operation.attributes["fame.address"] == ADDRESS
    assert storage.attributes is not None and storage.attributes["fame.namespace"] == "records"
    # On the wire: the client's request carried the call span; the node got the route span.
    traced = [r.trace for r in sent_requests if r.op == "store_value"]
    assert traced == [_traceparent(call), _traceparent(route)]


async def test_with_tracing_off_requests_carry_no_trace(
    sent_requests: list[Request], tmp_path: Path
) -> None:
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert await _store_one_value_remotely(tmp_path) == "v"
    store = [r for r in sent_requests if r.op == "store_value"]
    assert len(store) == 2  # client -> sentinel, sentinel -> node
    assert all(r.trace is None for r in sent_requests)
    # ... and the absent field costs one nil byte, the last of the request but its
    # batch (0 for a call that is not a stream: one byte).
    encoded = msgspec.msgpack.encode(store[0])
    assert store[0].batch == 0
    assert encoded.endswith(b"\xc0\x00")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x" * 10_000,
        TRACEPARENT.upper(),
        TRACEPARENT.replace("00-", "ff-", 1),
        TRACEPARENT + "-extra",
        TRACEPARENT[:-1],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333\u00e9-01",
    ],
)
def test_a_malformed_trace_makes_the_request_malformed(bad: str) -> None:
    codec = Codec()
    data = codec.encode(Envelope(0, ADDRESS, 1, Request("op", {}, trace=bad), "r@x", 7))
    with pytest.raises(WireError):
        codec.decode(data)
    head = codec.decode_header(data)
    assert isinstance(head, RoutingHeader)
    # The sentinel's policy decode refuses it too, before it reaches the callee.
    with pytest.raises(WireError):
        request_head(head.frame)
    with pytest.raises(WireError):
        request_trace(head.frame)


async def test_the_sentinel_refuses_a_malformed_trace_before_the_callee_sees_it() -> None:
    token = secrets.token_urlsafe(16)
    bad = TRACEPARENT.replace("-01", "-zz")
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            await node.spawn(Records, ADDRESS)
            async with fame.attach(node, url, token=token) as uplink:
                await uplink.wait_bound()
                async with open_raw_link(url, token) as link:
                    args = {"key": "k", "value": "v"}
                    frame = Request("store_value", args, timeout_ms=60_000, trace=bad)
                    await link.send(Envelope(0, ADDRESS, 1, frame, link.reply_to, 1))
                    [answer] = await link.receive()
                    assert isinstance(answer, LinkError)
                    # The link still works: a well-formed traced request is answered.
                    frame = Request("store_value", args, timeout_ms=60_000, trace=TRACEPARENT)
                    await link.send(Envelope(0, ADDRESS, 2, frame, link.reply_to, 2))
                    async for envelope in link.envelopes():
                        assert envelope.corr == 2
                        assert envelope.frame == Reply("v")
                        break
            assert sentinel.router.violations == 1


@pytest.mark.parametrize("batch", [0, 5, 256, 70_000])
def test_retrace_rewrites_only_the_trace_in_place(batch: int) -> None:
    codec = Codec()
    request = Request(
        "op", {"a": [1, 2]}, batch > 0, 0, 500, None, "rid", False, TRACEPARENT, batch
    )
    envelope = Envelope(3, ADDRESS, 2**40, request, "client@x", 2**62)
    data = codec.encode(envelope)
    head = codec.decode_header(data)
    assert isinstance(head, RoutingHeader)
    assert request_trace(head.frame) == ("op", TRACEPARENT)
    ours = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    rewritten = retrace(data, head, ours)
    assert len(rewritten) == len(data)
    decoded = codec.decode(rewritten)
    assert decoded == msgspec.structs.replace(
        envelope, frame=msgspec.structs.replace(request, trace=ours)
    )
    # The sentinel still stamps the caller into the rewritten envelope.
    assert codec.decode(_schema.stamp_caller(rewritten, "client:default")).caller == (
        "client:default"
    )


def test_retrace_rewrites_the_trace_of_an_older_callers_request() -> None:
    """A request from before ``batch`` ends with its trace: rewritten in place too."""
    codec = Codec()
    request = Request("op", {}, False, 0, 500, None, "rid", False, TRACEPARENT)
    data = codec.encode(Envelope(3, ADDRESS, 7, request, "client@x", 9))
    # Drop the batch: the request array of an older caller (ten elements).
    frame = msgspec.msgpack.encode(request)
    assert frame[0] == 0x9B and frame.endswith(b"\x00")
    older = bytes((0x9A,)) + frame[1:-1]
    data = data.replace(frame, older)
    head = codec.decode_header(data)
    assert isinstance(head, RoutingHeader)
    ours = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    rewritten = retrace(data, head, ours)
    assert len(rewritten) == len(data)
    assert rewritten != data
    decoded = codec.decode(rewritten)
    assert isinstance(decoded.frame, Request)
    assert decoded.frame.trace == ours
    assert decoded.frame.batch == 0


def test_fame_runs_without_opentelemetry() -> None:
    """A program without the tracing extra imports fame and calls agents as usual."""
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed: importing it raises ImportError
import trio, fame
from fame._core import _tracing

class Echo(fame.BaseAgent):
    @fame.operation
    async def echo(self, text: str) -> str:
        return text

async def main():
    async with fame.open_node() as node:
        await node.spawn(Echo, "echo@fame.test")
        print(await node.proxy("echo@fame.test", Echo).echo(text="ok"), _tracing.tracing_on())

trio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "False"]
