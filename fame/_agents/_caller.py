"""What a proxy needs from a node: to call an operation and to open a stream.

:class:`fame.Node` is one; a proxy depends on this protocol rather than on
the node, so that the arrows between the modules of ``fame._agents``
point one way (operations, credit and switchboard, streams, proxies,
agents, the node).
"""

from __future__ import annotations

from typing import Any, Protocol

from ._credit import DEFAULT_WINDOW
from ._stream import Stream

__all__ = ["Caller"]


class Caller(Protocol):
    """Something that calls operations of agents by address: a node."""

    async def call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        retry_safe: bool = False,
    ) -> Any:
        """Call plain operation ``op`` of the agent at ``address``; return its result."""

    async def tell(
        self, address: str, op: str, args: dict[str, Any], *, request_id: str | None = None
    ) -> str:
        """Record a message to ``op`` of ``address`` in the outbox; return its id."""

    def open_stream(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
        window: int = DEFAULT_WINDOW,
        item_type: Any = Any,
    ) -> Stream[Any]:
        """Call streaming operation ``op``; iterate the returned :class:`fame.Stream`."""
