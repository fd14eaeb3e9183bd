"""``fame.connect``: a client is a small ephemeral node attached to a sentinel.

It hosts no agents and binds nothing: the sentinel routes its reply
address (``_reply@<node id>``) by the path it assigned. Calls go through
the same :class:`fame.Proxy` as in-process ones::

    async with fame.connect("ws://127.0.0.1:8000/", token=t) as node:
        echo = node.proxy("echo@fame.fabric", Echo)
        print(await echo.say(text="hi"))
        async for n in echo.count(up_to=10):
            ...
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs

from .._agents._delivery_policy import DeliveryConfig
from .._agents._node import DEFAULT_TIMEOUT, Node, open_node
from .._core._errors import FameError
from .._core._storage_protocol import KeyValueStoreLike
from ._transport import DEFAULT_HEARTBEAT, HANDSHAKE_TIMEOUT
from ._uplink import attach

__all__ = ["connect"]

M = TypeVar("M")


class _NoStorage:
    """A client node hosts no agents, so it opens no storage."""

    async def get_kv_store(self, model: type[M], namespace: str) -> KeyValueStoreLike[M]:
        raise FameError("a client node (fame.connect) has no storage; agents run on nodes")

    async def get_internal_kv_store(self, model: type[M], namespace: str) -> KeyValueStoreLike[M]:
        raise FameError("a client node (fame.connect) has no storage; agents run on nodes")


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    default_timeout: float = DEFAULT_TIMEOUT,
    heartbeat: float = DEFAULT_HEARTBEAT,
    connect_timeout: float = HANDSHAKE_TIMEOUT,
    sentinel_keys: Collection[bytes] | None = None,
    delivery: DeliveryConfig | None = None,
) -> AsyncIterator[Node]:
    """Attach an ephemeral node to the sentinel at ``url`` as a client and yield it.

    ``token`` is the client credential (the admission token) and
    ``sentinel_keys`` the sentinel keys to trust, as for :func:`attach`.
    A client binds no address and can call only what the sentinel's
    policy lets it. Raises :class:`fame.AdmissionRefused` for a wrong
    token, :class:`fame.errors.UntrustedSentinel` for a sentinel that
    does not prove one of ``sentinel_keys``, and ``SentinelUnreachable``
    when nothing answers at ``url``.

    A client has no storage: the outbox of its ``tell`` (bounded by
    ``delivery``) lives in memory, for as long as the client runs; what
    it has not delivered when it ends is lost (the first tell logs a
    warning saying so). Use a node with storage for durable messages.
    """
    delivery = attrs.evolve(delivery or DeliveryConfig(), durable=False)
    async with (
        open_node(
            path="client",
            storage_provider=_NoStorage(),
            default_timeout=default_timeout,
            delivery=delivery,
        ) as node,
        attach(
            node,
            url,
            token=token,
            ssl_context=ssl_context,
            heartbeat=heartbeat,
            ephemeral=True,
            connect_timeout=connect_timeout,
            sentinel_keys=sentinel_keys,
        ),
    ):
        yield node
