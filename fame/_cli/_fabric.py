"""The one place where the command-line programs touch the fabric.

The client, the node runner and ``fame up`` reach the sentinel through the
three functions here, so the rest of the CLI does not depend on how the
fabric modules spell things.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import fame

__all__ = ["attach_node", "connect", "serve_sentinel"]


def connect(url: str, token: str | None) -> AbstractAsyncContextManager[fame.Node]:
    """An ephemeral client node attached to the sentinel at ``url``."""
    from .._client import connect as fabric_connect

    return fabric_connect(url, token=token)


@asynccontextmanager
async def serve_sentinel(
    node: fame.Node, *, host: str, port: int, token: str | None, open_admission: bool
) -> AsyncIterator[Any]:
    """Serve ``node`` as the sentinel on ``host:port`` until the block exits."""
    from .._sentinel import open_sentinel

    async with open_sentinel(
        node=node, host=host, port=port, token=token, open_admission=open_admission
    ) as server:
        yield server


@asynccontextmanager
async def attach_node(node: fame.Node, url: str, token: str | None) -> AsyncIterator[Any]:
    """Attach ``node`` to the sentinel at ``url`` (reconnecting) until the block exits."""
    from .._uplink import attach

    async with attach(node, url, token=token) as uplink:
        yield uplink
