"""The sentinel's door: every connection from its accept until its websocket attaches.

trio-websocket serves whatever the listener hands it, for as long as the
peer takes; the door is that listener (:class:`DoorListener`) and the
stream it hands out (:class:`DoorStream`). It decides three things, each
sans-IO in its own module, and does the I/O:

- who may wait unattached (:class:`~._unattached.UnattachedLedger`): at
  most ``max_unattached`` connections, ``max_unattached_per_address`` from
  one address, each for ``attach_deadline`` seconds from its accept (TCP,
  TLS, upgrade and attach together). A newcomer is never turned away: the
  oldest unattached connection of its address (or of the address holding
  the most) is closed instead. Attached connections are counted apart,
  against ``max_connections`` (:class:`ConnectionHandler`);
- how much memory unfinished websocket messages hold
  (:class:`~._partial_budget.PartialBudget` fed by a
  :class:`~fame._fabric._frame_meter.FrameMeter` per connection): each may
  hold ``partial_allowance`` bytes; beyond it a connection borrows from
  ``partial_budget`` shared by all (those not attached yet from its first
  half only), and one that finds no room is closed, as is one whose
  message keeps borrowing past ``partial_deadline``. The bytes in partial
  messages are thus at most
  ``(attached + max_unattached) x partial_allowance + partial_budget``;
  add one receive buffer (64 KiB) per connection for what is in flight,
  and trio-websocket's queue of *finished* messages, which the
  connection's reader drains;
- what running out of file descriptors does: ``accept`` fails with
  EMFILE (or ENFILE, ENOBUFS, ENOMEM); the door closes the oldest
  unattached connection and accepts again, or pauses accepting for
  :data:`ACCEPT_PAUSE` when there is none, and logs one line at most every
  :data:`LOG_INTERVAL` seconds with the count, never a traceback (trio's
  ``serve_listeners`` would log one per attempt, ten a second).

Closing a connection here closes its socket at once (the descriptor is
free before any task runs) and, if it has not reached the websocket
handler yet, cancels its task; a connection already in the handler sees
its websocket closed and ends as any lost link does.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, cast

import attrs
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, WebSocketServer

from .._frame_meter import FrameMeter
from ._partial_budget import PartialBudget
from ._unattached import UnattachedLedger

__all__ = ["DEFAULT_DOOR_LIMITS", "Door", "DoorLimits", "DoorListener", "DoorStream", "serve_door"]

log = logging.getLogger("fame.sentinel")

ACCEPT_PAUSE = 0.1
"""Seconds the door stops accepting after running out of file descriptors."""
LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same repeated event (with a count)."""
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@attrs.frozen(kw_only=True)
class DoorLimits:
    """What a sentinel grants connections before they attach (see ``fame._fabric.sentinel._door``).

    ``max_unattached`` connections may wait to attach, at most
    ``max_unattached_per_address`` from one remote address, each for
    ``attach_deadline`` seconds from its accept; a newcomer past a limit
    sheds the oldest. Each connection may hold ``partial_allowance`` bytes
    of an unfinished websocket message, and borrow more from
    ``partial_budget`` (all together; connections not attached yet, half
    of it), for at most ``partial_deadline`` seconds per message.
    """

    max_unattached: int = 128
    max_unattached_per_address: int = 32
    attach_deadline: float = 10.0
    partial_allowance: int = 64 * 1024
    partial_budget: int = 32 * 1024 * 1024
    partial_deadline: float = 10.0

    def __attrs_post_init__(self) -> None:
        for name in ("max_unattached", "max_unattached_per_address"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("partial_allowance", "partial_budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative, got {getattr(self, name)}")
        for name in ("attach_deadline", "partial_deadline"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")


DEFAULT_DOOR_LIMITS = DoorLimits()


class _Throttled:
    """One log line per :data:`LOG_INTERVAL` for a repeated event, with the count since."""

    def __init__(self) -> None:
        self.count = 0
        self._next = -math.inf

    def hit(self, now: float) -> int:
        """One more occurrence; the count to log now, or 0 to stay quiet."""
        self.count += 1
        if now < self._next:
            return 0
        count, self.count = self.count, 0
        self._next = now + LOG_INTERVAL
        return count


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    """The TCP socket under ``stream`` (a SocketStream, or TLS over one)."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream), stream
    return stream.socket


def _address_of(stream: trio.abc.Stream) -> str:
    """The remote host of ``stream``'s socket ("?" if the peer is gone already)."""
    try:
        return str(_socket_of(stream).getpeername()[0])
    except OSError:
        return "?"


class DoorStream(trio.abc.Stream):
    """An accepted connection as trio-websocket sees it; the door meters what it receives.

    Its ``repr`` names it uniquely: trio-websocket reports it as the
    connection's ``remote``, which is how the door finds it again from a
    request or a websocket (:meth:`Door.attached`).
    """

    def __init__(self, door: Door, inner: trio.abc.Stream, number: int) -> None:
        self.door = door
        self.inner = inner
        self.socket = _socket_of(inner)
        try:
            host, port = self.socket.getpeername()[:2]
        except OSError:  # the peer is gone already
            host, port = "?", 0
        self.address = str(host)
        self.label = f"<connection #{number} from {host}:{port}>"
        self.meter = FrameMeter(http_head=True)
        self.scope: trio.CancelScope | None = None
        self.upgraded = False  # handed to the websocket handler
        self.attached = False
        self.dropped = False  # closed by the door
        self.closed = False

    def __repr__(self) -> str:
        return self.label

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data and not self.door._received(self, data):
            return b""  # closed by the door: nothing more is read (or held)
        return data

    async def aclose(self) -> None:
        self.door._closed(self)
        if self.dropped:
            await trio.aclose_forcefully(self.inner)
        else:
            await self.inner.aclose()


class DoorListener(trio.abc.Listener[DoorStream]):
    """Accepts like ``inner``; out of file descriptors, it sheds and pauses instead of failing."""

    def __init__(self, door: Door, inner: trio.abc.Listener[Any]) -> None:
        self.door = door
        self.inner = inner

    async def accept(self) -> DoorStream:
        while True:
            try:
                stream = await self.inner.accept()
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                if not self.door._out_of_resources(exc):
                    await trio.sleep(ACCEPT_PAUSE)  # nothing to shed: wait for a close
                continue
            if self.door._refused(stream):
                continue
            return self.door._admit(stream)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _DoorNursery:
    """Starts each connection's task in a cancel scope the door can use to end it early."""

    def __init__(self, door: Door, inner: Any) -> None:
        self._door = door
        self._inner = inner

    def start_soon(self, fn: Any, *args: Any, name: object = None) -> None:
        self._inner.start_soon(self._door._run_connection, fn, *args, name=name or fn)


class Door:
    """The door of one sentinel: its ledgers, counters and the task that enforces deadlines."""

    def __init__(self, limits: DoorLimits) -> None:
        self.limits = limits
        self.ledger: UnattachedLedger[DoorStream] = UnattachedLedger(
            limits.max_unattached, limits.max_unattached_per_address
        )
        self.budget: PartialBudget[DoorStream] = PartialBudget(
            limits.partial_allowance, limits.partial_budget
        )
        self._streams: dict[str, DoorStream] = {}
        self._wake = trio.Event()
        self._numbers = 0
        self.attached = 0  # connections attached now
        # Counters since start, for tests and the administration.
        self.accepted = 0
        self.shed = 0  # unattached connections closed to make room for a newcomer
        self.refused = 0  # closed at accept: their address held its share of a full ledger
        self.expired = 0  # closed for not attaching within attach_deadline
        self.over_budget = 0  # closed for holding more of a partial message than allowed
        self.overdue = 0  # closed for a partial message older than partial_deadline
        self.out_of_resources = 0  # accept failures for lack of descriptors or memory
        self._logs = {
            kind: _Throttled()
            for kind in ("shed", "refused", "expired", "budget", "overdue", "resources")
        }

    @property
    def unattached(self) -> int:
        """Connections accepted and not attached (nor closed) yet."""
        return len(self.ledger)

    @property
    def partial_bytes(self) -> int:
        """Bytes of unfinished messages borrowed from ``partial_budget`` now."""
        return self.budget.borrowed

    @property
    def peak_partial_bytes(self) -> int:
        """The most ever borrowed from ``partial_budget`` at once."""
        return self.budget.peak

    def upgraded(self, request: WebSocketRequest) -> None:
        """The websocket handler took ``request``'s connection: it ends on its own from now."""
        stream = self._streams.get(str(request.remote))
        if stream is not None:
            stream.upgraded = True

    def attached_link(self, ws: WebSocketConnection) -> None:
        """The peer on ``ws`` attached: it counts as attached, no longer against the door."""
        stream = self._streams.get(str(ws.remote))
        if stream is None or stream.attached or stream.closed:
            return
        stream.attached = True
        self.attached += 1
        self.ledger.forget(stream)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close connections past ``attach_deadline`` and partial messages past theirs; forever."""
        limits = self.limits
        task_status.started()
        while True:
            now = trio.current_time()
            for stream in self.ledger.expired(now - limits.attach_deadline):
                self.expired += 1
                self._drop(stream)
                if count := self._logs["expired"].hit(now):
                    log.info(
                        "closed %d connections (since the last such line) that did not attach"
                        " within %g s",
                        count,
                        limits.attach_deadline,
                    )
            for stream in self.budget.overdue(now - limits.partial_deadline):
                self.overdue += 1
                held = stream.meter.held
                self._drop(stream)
                if count := self._logs["overdue"].hit(now):
                    log.info(
                        "closing %r: its unfinished message of %d bytes took more than %g s"
                        " (%d such closes since the last such line)",
                        stream,
                        held,
                        limits.partial_deadline,
                        count,
                    )
            due = [
                t
                for t in (
                    self.ledger.next_expiry(limits.attach_deadline),
                    self.budget.next_due(limits.partial_deadline),
                )
                if t is not None
            ]
            self._wake = trio.Event()
            with trio.move_on_at(min(due, default=math.inf)):
                await self._wake.wait()

    async def _run_connection(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        with trio.CancelScope() as scope:
            stream = args[0] if args else None
            if isinstance(stream, DoorStream):
                stream.scope = scope
                if stream.dropped:
                    scope.cancel()
            await fn(*args)

    def _refused(self, inner: trio.abc.Stream) -> bool:
        """Close ``inner`` at once if its address holds its share of a full ledger (True)."""
        address = _address_of(inner)
        now = trio.current_time()
        if not self.ledger.refuses(address):
            return False
        self.refused += 1
        _socket_of(inner).close()  # no upgrade, no task: the cheap way out
        if count := self._logs["refused"].hit(now):
            log.warning(
                "refused %d connections (since the last such line) at accept: their addresses"
                " keep connecting without attaching while %d connections wait to attach",
                count,
                len(self.ledger),
            )
        return True

    def _admit(self, inner: trio.abc.Stream) -> DoorStream:
        self._numbers += 1
        self.accepted += 1
        stream = DoorStream(self, inner, self._numbers)
        now = trio.current_time()
        for old in self.ledger.admit(stream, stream.address, now):
            self.shed += 1
            self._drop(old)
            if count := self._logs["shed"].hit(now):
                log.warning(
                    "shed %d unattached connections (since the last such line) to make room for"
                    " new ones (at most %d wait to attach, %d per address): peers connect and"
                    " do not attach",
                    count,
                    self.limits.max_unattached,
                    self.limits.max_unattached_per_address,
                )
        self._streams[stream.label] = stream
        if len(self.ledger) == 1:
            self._wake.set()  # the first deadline to watch
        return stream

    def _received(self, stream: DoorStream, data: bytes | bytearray) -> bool:
        """Meter ``data`` from ``stream``; False if the door closed it for holding too much."""
        held = stream.meter.feed(data)
        idle = self.budget.borrowed == 0
        if idle and held <= self.budget.allowance:
            return True  # within the free allowance, and nobody has a loan to change
        # Strangers may borrow only the first half of the budget: the rest is for
        # attached peers (a large message of theirs must not fail for a flood's).
        ceiling = None if stream.attached else self.budget.budget // 2
        if self.budget.hold(stream, held, trio.current_time(), ceiling=ceiling):
            if idle and self.budget.borrowed:
                self._wake.set()  # the first loan's deadline to watch
            return True
        self.over_budget += 1
        self._drop(stream)
        if count := self._logs["budget"].hit(trio.current_time()):
            why = (
                f"the budget for partial messages ({self.budget.budget} bytes,"
                f" {self.budget.borrowed} lent) has no room"
            )
            if not stream.attached:
                why += " for connections not attached yet (half of it)"
            log.info(
                "closing %r: its unfinished message holds %d bytes and %s"
                " (%d such closes since the last such line)",
                stream,
                held,
                why,
                count,
            )
        return False

    def _out_of_resources(self, exc: OSError) -> bool:
        """``accept`` failed for lack of descriptors: shed the oldest unattached; True if any."""
        self.out_of_resources += 1
        oldest = self.ledger.oldest()
        if oldest is not None:
            self.shed += 1
            self._drop(oldest)  # its descriptor is free for the next accept
        if count := self._logs["resources"].hit(trio.current_time()):
            log.warning(
                "cannot accept connections: %s (%d times since the last such line); closing the"
                " oldest unattached connection each time, or pausing accepts for %g s when"
                " none is left (%d attached, %d unattached now): raise the file limit"
                " (ulimit -n) or lower max_connections",
                exc.strerror or errno.errorcode.get(exc.errno or 0, exc),
                count,
                ACCEPT_PAUSE,
                self.attached,
                len(self.ledger),
            )
        return oldest is not None

    def _drop(self, stream: DoorStream) -> None:
        """Close ``stream``'s socket now; end its task if the handler does not have it yet."""
        if stream.dropped:
            return
        stream.dropped = True
        self.ledger.forget(stream)
        self.budget.release(stream)
        with suppress(OSError):
            stream.socket.close()
        if not stream.upgraded and stream.scope is not None:
            stream.scope.cancel()

    def _closed(self, stream: DoorStream) -> None:
        if stream.closed:
            return
        stream.closed = True
        self.ledger.forget(stream)
        self.budget.release(stream)
        self._streams.pop(stream.label, None)
        if stream.attached:
            self.attached -= 1


async def serve_door(
    door: Door,
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    host: str,
    port: int,
    ssl_context: Any,
    *,
    handler_nursery: Any,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    **websocket: Any,
) -> None:
    """Serve websockets through ``door`` on ``host:port`` until cancelled; starts with the port.

    ``websocket`` are :class:`trio_websocket.WebSocketServer`'s settings
    (``max_message_size``, ``connect_timeout``...). Each connection's task
    runs in ``handler_nursery`` (anything with ``start_soon``).
    """
    listeners: Sequence[trio.abc.Listener[Any]]
    if ssl_context is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    else:
        listeners = await trio.open_ssl_over_tcp_listeners(
            port, ssl_context, host=host, https_compatible=True
        )
    first: Any = listeners[0]
    if isinstance(first, trio.SSLListener):
        first = first.transport_listener
    assert isinstance(first, trio.SocketListener)
    bound = int(first.socket.getsockname()[1])
    server = WebSocketServer(
        handler,
        cast(Any, [DoorListener(door, listener) for listener in listeners]),
        handler_nursery=cast(trio.Nursery, _DoorNursery(door, handler_nursery)),
        **websocket,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(door.run)
        await nursery.start(server.run)
        task_status.started(bound)
