"""The thin websocket layer under the fabric: connect, serve, back off, TLS.

Only bytes move here; the protocol is in ``fame._protocol``. One websocket
message carries one encoded :data:`fame._wire._schema.LinkMessage`.

trio-websocket stops answering websocket pings when its receive queue is
full, so every link keeps one task that does nothing but drain
``get_message`` (see ``_uplink`` and ``_sentinel``); heavy work never runs
in that task.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from .._core._backoff import Backoff
from .._core._errors import FameError
from .._wire._schema import DEFAULT_MAX_MESSAGE_SIZE, Batch, Codec
from ._link_queue import LinkQueue

__all__ = [
    "DEFAULT_HEARTBEAT",
    "HANDSHAKE_TIMEOUT",
    "RECONNECT_BACKOFF",
    "SENTINEL_HEADER",
    "SentinelUnreachable",
    "client_ssl_context",
    "open_link",
    "server_ssl_context",
]

# Let trio-websocket accept a little more than the codec does, so that a
# message slightly too large gets the codec's readable error instead of a bare
# close; not much more: trio-websocket holds a message whole before the codec
# sees it (and the sentinel's door bounds what all connections hold together).
WS_MESSAGE_MARGIN = 64 * 1024
WS_MAX_MESSAGE = DEFAULT_MAX_MESSAGE_SIZE + WS_MESSAGE_MARGIN
WS_QUEUE = 64
WS_RECEIVE_BUFFER = 1 << 16
# Seconds for a websocket upgrade and then for the attach handshake, each;
# both ends of a link default to the same bound.
HANDSHAKE_TIMEOUT = 10.0
# Seconds between pings on a link, the same default at both ends. (Its
# outgoing queue is bounded in bytes: ``fame._fabric._link_queue``.)
DEFAULT_HEARTBEAT = 5.0

LINK_ERRORS = (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError)


def is_link_failure(exc: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    """True if ``exc`` is a lost or broken link, or a group of nothing else.

    A link's reader and writer usually fail together when the peer goes
    away, so the nursery around them raises a group of two link errors:
    that is still just a lost link, not a bug.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(is_link_failure(inner, also) for inner in exc.exceptions)
    return isinstance(exc, (*LINK_ERRORS, *also))


class SentinelUnreachable(FameError, ConnectionError):
    """The sentinel could not be reached (refused, unresolvable, timed out, bad TLS)."""


RECONNECT_BACKOFF: Final = Backoff(initial=0.1, maximum=10.0, jitter=True)
"""Waits between reconnects: 0.1 s doubling to 10 s, jittered so that the nodes
that lost the same sentinel do not all come back at the same instant."""


def server_ssl_context(
    certfile: str | Path, keyfile: str | Path, client_cafile: str | Path | None = None
) -> ssl.SSLContext:
    """Serve TLS with ``certfile`` and ``keyfile``.

    With ``client_cafile`` it is mutual TLS: every peer must present a
    certificate that ``client_cafile`` verifies, or its handshake fails.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certfile), str(keyfile))
    if client_cafile is not None:
        context.load_verify_locations(cafile=str(client_cafile))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    cafile: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
) -> ssl.SSLContext:
    """Verify the sentinel against ``cafile`` (or the system roots).

    With ``certfile`` (and ``keyfile``, unless the key is in the same file)
    the context also presents that certificate, for a sentinel that asks
    for one (mutual TLS).
    """
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if certfile is not None:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile is not None else None)
    return context


async def _check_tls(url: str, ssl_context: ssl.SSLContext, timeout: float) -> None:
    """Do one TLS handshake first, so a certificate problem is reported as such.

    trio-websocket reports a failed TLS handshake only as a connect timeout;
    the extra handshake costs one round trip per (re)connect, not per message.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 443
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl_context, https_compatible=True
            )
            try:
                await stream.do_handshake()
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError:
        raise SentinelUnreachable(f"cannot reach the sentinel at {url}: timed out") from None
    except (ssl.SSLError, trio.BrokenResourceError) as exc:
        # trio reports TLS failures as BrokenResourceError caused by the SSLError.
        reason = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
        raise SentinelUnreachable(f"TLS with the sentinel at {url} failed: {reason!r}") from None
    except OSError as exc:
        raise SentinelUnreachable(f"cannot reach the sentinel at {url}: {exc!r}") from None


SENTINEL_HEADER: Final = (b"fame-sentinel", b"1")
"""The header a sentinel's HTTP refusals carry: a refusal without it came from another server."""


def _unreachable_reason(exc: BaseException) -> str:
    """Why opening a link failed, in words: trio-websocket's errors often have none."""
    if type(exc) is HandshakeError:
        # trio-websocket wraps the socket's error (connection refused...) in it.
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        return "no websocket handshake"
    if isinstance(exc, ConnectionRejected):
        if SENTINEL_HEADER not in (exc.headers or []):
            # A web server or a proxy: its page says nothing about fame; not shown.
            return f"not a fame sentinel (HTTP status {exc.status_code})"
        # The sentinel's reason (too many connections, wrong path) is in the body.
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        reason = " ".join(body.split())[:200] or "no reason given"
        return f"it refused the connection (HTTP {exc.status_code}): {reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ValueError):  # a URL trio-websocket cannot use
        return f"not a usable websocket URL ({exc})"
    return repr(exc)


def _queued(out: trio.MemoryReceiveChannel[bytes] | LinkQueue) -> int:
    """How many messages wait in ``out``."""
    if isinstance(out, LinkQueue):
        return len(out)
    return out.statistics().current_buffer_used


BATCH_LIMIT = 512
"""Most messages a writer puts in one :class:`fame._wire._schema.Batch`."""


async def write_batched(
    ws: WebSocketConnection,
    out: trio.MemoryReceiveChannel[bytes] | LinkQueue,
    codec: Codec,
    on_marker: Callable[[], None] | None = None,
) -> None:
    """Send everything from ``out`` to ``ws``, batching what queued up meanwhile.

    A lone message goes as is (no added latency or bytes); when more are
    waiting they go as one ``Batch`` of at most :data:`BATCH_LIMIT` messages
    and half the size limit. An empty message is a flush marker: it is not
    sent, and ``on_marker`` is called once everything before it was written.
    From a :class:`LinkQueue`, each message taken frees its bytes at once:
    what a batch holds while it is written is bounded by the batch limit.
    """
    budget = codec.max_size // 2
    held: bytes | None = None
    while True:
        idle = 0
        if held is not None:
            data, held = held, None
        elif _queued(out):
            data = out.receive_nowait()
        else:
            try:
                data = await out.receive()
            except trio.EndOfChannel:
                return
            if not _queued(out):
                # The link was idle and this message came alone: nobody is
                # producing a run of them, so it goes at once (a call's
                # latency pays no batching rounds).
                idle = 2
        batch = [data]
        size = len(data)
        # Scheduling rounds let the tasks that are producing right now (a
        # stream, many callers) queue more, so they share this websocket frame:
        # rounds go on while they bring more (a producer sends about one
        # message per round), up to the batch's limits, and end after two
        # rounds that brought nothing (trio shuffles each round's order: in one
        # round in two this writer runs before the producer). A message that
        # was already waiting when the writer came back (the link is busy)
        # waits two rounds; a websocket message costs far more than a round.
        while held is None and len(batch) < BATCH_LIMIT and idle < 2:
            await trio.lowlevel.checkpoint()
            before = len(batch)
            while len(batch) < BATCH_LIMIT:
                try:
                    more = out.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if size + len(more) > budget:
                    held = more
                    break
                batch.append(more)
                size += len(more)
            idle = idle + 1 if len(batch) == before else 0
        markers = batch.count(b"")
        if markers:
            batch = [m for m in batch if m]
        if len(batch) == 1:
            await ws.send_message(batch[0])
        elif batch:
            await ws.send_message(codec.encode(Batch(batch)))
        if markers and on_marker is not None:
            on_marker()


@asynccontextmanager
async def open_link(
    url: str, *, ssl_context: ssl.SSLContext | None = None, connect_timeout: float = 10.0
) -> AsyncIterator[WebSocketConnection]:
    """Open a websocket to ``url``; failure to connect is :class:`SentinelUnreachable`."""
    if url.startswith("wss://"):
        if ssl_context is None:
            ssl_context = client_ssl_context()
        await _check_tls(url, ssl_context, connect_timeout)
    opened = False
    # trio-websocket's own connect timeout does not cover every stall (a TLS port
    # answered in plain text), so a deadline covers the whole opening; it is lifted
    # once the link is up.
    with trio.CancelScope(deadline=trio.current_time() + connect_timeout) as opening:
        try:
            async with open_websocket_url(
                url,
                ssl_context,
                message_queue_size=WS_QUEUE,
                max_message_size=WS_MAX_MESSAGE,
                connect_timeout=connect_timeout,
                disconnect_timeout=2,
                receive_buffer_size=WS_RECEIVE_BUFFER,
            ) as ws:
                opening.deadline = math.inf
                opened = True
                yield ws
        except (*LINK_ERRORS, trio.TooSlowError, ssl.SSLError, ValueError) as exc:
            if opened:
                raise
            reason = _timed_out(url) if isinstance(exc, trio.TooSlowError) else None
            raise SentinelUnreachable(
                f"cannot reach the sentinel at {url}: {reason or _unreachable_reason(exc)}"
            ) from None
    if opening.cancelled_caught and not opened:
        raise SentinelUnreachable(f"cannot reach the sentinel at {url}: {_timed_out(url)}")


def _timed_out(url: str) -> str:
    """A timeout's reason; over TLS the handshake already passed, so say what else it can be.

    With TLS 1.3 a client finishes its handshake before the server checks the
    client's certificate, and a sentinel that requires one silently drops a
    connection without it: the client sees only the websocket open time out.
    """
    if url.startswith("wss://"):
        return (
            "timed out after the TLS handshake (a sentinel that requires a client certificate"
            " drops a connection that presents none, or none it trusts)"
        )
    return "timed out"
