"""A tiny HTTP server for ``/metrics`` and ``/healthz``, in the caller's nursery.

prometheus-client's own ``start_http_server`` runs a thread that outlives
whatever started it; this one is a Trio task: it stops with the node or
sentinel that serves it. It answers ``GET`` (and ``HEAD``) on two paths:

* ``/metrics``: the node's metrics in Prometheus' text format;
* ``/healthz``: ``200`` with a small JSON status while ``health()`` says the
  node is serving, ``503`` with the same JSON otherwise.

Everything else is ``404`` (``405`` for another method). One request per
connection (``Connection: close``), a request head of at most 8 KiB read
within :data:`REQUEST_TIMEOUT` seconds: a scraper needs no more, and a
peer that dawdles costs one task for that long at most.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ._prometheus import CONTENT_TYPE, PrometheusMetrics

__all__ = ["REQUEST_TIMEOUT", "Health", "serve_metrics"]

REQUEST_TIMEOUT = 5.0
"""Seconds a connection has to send its request head."""

_MAX_HEAD = 8192

Health = Callable[[], tuple[bool, Mapping[str, Any]]]
"""Whether the node serves now, and what ``/healthz`` shows about it."""

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


async def serve_metrics(
    metrics: PrometheusMetrics,
    health: Health,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` until cancelled.

    Start it with ``await nursery.start(serve_metrics, ...)``: that returns
    the bound port (``port=0`` picks a free one) once it listens, and
    raises ``OSError`` if it cannot.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await _answer(stream, metrics, health)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(bound)


async def _answer(stream: trio.SocketStream, metrics: PrometheusMetrics, health: Health) -> None:
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        if len(head) > _MAX_HEAD:
            await _send(stream, 400, "text/plain", b"request head too large\n", head=False)
            return
        try:
            chunk = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            return
        if not chunk:
            return
        head += chunk
    words = head.split(b"\r\n", 1)[0].split()
    if len(words) != 3 or not words[2].startswith(b"HTTP/"):
        await _send(stream, 400, "text/plain", b"bad request\n", head=False)
        return
    method, target = words[0], words[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        await _send(stream, 405, "text/plain", b"only GET\n", head=False)
        return
    only_head = method == b"HEAD"
    if target == b"/metrics":
        await _send(stream, 200, CONTENT_TYPE, metrics.render(), head=only_head)
    elif target == b"/healthz":
        serving, status = health()
        body = json.dumps({"status": "ok" if serving else "unavailable", **status}).encode()
        await _send(stream, 200 if serving else 503, "application/json", body, head=only_head)
    else:
        await _send(stream, 404, "text/plain", b"try /metrics or /healthz\n", head=only_head)


async def _send(
    stream: trio.SocketStream, code: int, content_type: str, body: bytes, *, head: bool
) -> None:
    lines = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(lines.encode("ascii") + (b"" if head else body))
