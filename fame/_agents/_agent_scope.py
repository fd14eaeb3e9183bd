"""The scope of an agent's tasks: its streams and concurrent calls live and die with it.

An agent answers plain calls in its actor's own task, but serves each
stream, and each call of an agent with ``max_concurrency > 1``, in a task
of its own. Those tasks run in a nursery that belongs to the agent, not
to the node: stopping the agent, or restarting it after a crash, cancels
them, so no generator produces and no call completes for an agent that is
gone. A task cancelled this way answers its caller with the scope's
*reason* (a :class:`fame.RemoteError`) before it ends.

The nursery itself is hosted by a task in the node's nursery, because an
actor's task has no hook around its message loop; its lifetime is tied to
the actor's ``on_start`` / ``on_stop`` and to its crashes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._core._errors import RemoteError, RequestLost

__all__ = ["AgentScope"]


class AgentScope:
    """A nursery for one agent's tasks, opened at each start and cancelled at stop or crash."""

    def __init__(self, host: trio.Nursery, address: str) -> None:
        self._host = host
        self._address = address
        self._nursery: trio.Nursery | None = None
        self._closed = trio.Event()
        self.reason: RemoteError = _stopped(address)
        """Why the tasks were cancelled: what their callers are told."""

    async def open(self) -> None:
        """Open a fresh nursery, after the tasks of the previous one ended."""
        await self.close(self.reason)
        self.reason = _stopped(self._address)
        self._closed = trio.Event()
        self._nursery = await self._host.start(self._run)

    async def _run(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()
        finally:
            self._closed.set()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as one of the agent's tasks."""
        if self._nursery is None:
            raise RuntimeError(f"{self._address} has no open task scope")
        self._nursery.start_soon(fn, *args)

    def cancel(self, reason: RemoteError) -> None:
        """Cancel every task of the agent now; their callers are told ``reason``."""
        if self._nursery is not None:
            self.reason = reason
            self._nursery.cancel_scope.cancel()

    async def close(self, reason: RemoteError) -> None:
        """Cancel every task of the agent and wait until they have answered and ended."""
        nursery, self._nursery = self._nursery, None
        if nursery is None:
            return
        if not nursery.cancel_scope.cancel_called:
            self.reason = reason
            nursery.cancel_scope.cancel()
        await self._closed.wait()


def _stopped(address: str) -> RequestLost:
    """What the callers of a stopped agent's running calls are told: it may have run."""
    return RequestLost(f"{address} stopped while handling the call; it may have run", actor=address)
