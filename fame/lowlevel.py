"""The building blocks under :mod:`fame`'s agents, for those who need them.

Bare actors and their references (:class:`Actor`, :class:`ActorRef`,
:class:`Delivery`), addresses, supervisors, the sentinel's server object
and TLS contexts, what a sentinel grants connections before they attach
(:class:`DoorLimits`), its link limits and per-principal quotas
(:class:`LinkLimits`, :class:`Quotas`); the limits of ``node.tell``'s outbox
and inbox (:class:`DeliveryConfig`) and a stopped node's dead letters
(:class:`DeadLetters` of :class:`OutboxEntry`, what ``fame dlq`` changes);
a node's stores and identity and the sentinel's
register of enrolled nodes (what ``fame enroll`` and ``fame admin``
change offline); the defaults a program (the command line included)
builds its settings from; the name of the envelope trace logger; the
metrics a node, its storage and a sentinel record into
(:class:`Metrics`, :class:`PrometheusMetrics`) and the server of their
``/metrics`` and ``/healthz`` (:func:`serve_metrics`); and the
exception-group helpers fame itself uses (:func:`collapse` removes groups
of one error only, :func:`leaves` lists what a group holds). Most programs
need only :mod:`fame`.
"""

from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:
    from ._agents._dead_letters import DeadLetters
    from ._agents._delivery_policy import DeliveryConfig, OutboxEntry
    from ._agents._stream import DEFAULT_IDLE_TIMEOUT, DEFAULT_WINDOW
    from ._core._actor import Actor, ActorRef, Delivery
    from ._core._address import Address
    from ._core._groups import collapse, leaves
    from ._core._metrics import Metrics
    from ._core._supervisor import Supervisor, open_supervisor
    from ._fabric._identity import NodeStores, load_or_create_identity, rotate_node_key
    from ._fabric._link_queue import DEFAULT_LINK_BUFFER, DEFAULT_STALL_GRACE, LinkLimits
    from ._fabric._metrics_http import serve_metrics
    from ._fabric._node_admin import NodeAdmin
    from ._fabric._prometheus import PrometheusMetrics
    from ._fabric._trace import TRACE_LOGGER
    from ._fabric._transport import HANDSHAKE_TIMEOUT, client_ssl_context, server_ssl_context
    from ._fabric.sentinel._admin_agent import ADMIN_ADDRESS as SENTINEL_ADMIN_ADDRESS
    from ._fabric.sentinel._door import DoorLimits
    from ._fabric.sentinel._registry import NodeRegistry
    from ._fabric.sentinel._server import (
        DEFAULT_HOST,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_PORT,
        Sentinel,
        serve_sentinel,
    )
    from ._fabric.sentinel._signing import rotate_sentinel_key, sentinel_public_keys
    from ._fabric.sentinel._status import SentinelStatus
    from ._protocol._quotas import QUOTA_SETTINGS, Quotas

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LINK_BUFFER",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "DEFAULT_STALL_GRACE",
    "DEFAULT_WINDOW",
    "HANDSHAKE_TIMEOUT",
    "QUOTA_SETTINGS",
    "SENTINEL_ADMIN_ADDRESS",
    "TRACE_LOGGER",
    "Actor",
    "ActorRef",
    "Address",
    "DeadLetters",
    "Delivery",
    "DeliveryConfig",
    "DoorLimits",
    "LinkLimits",
    "Metrics",
    "NodeAdmin",
    "NodeRegistry",
    "NodeStores",
    "OutboxEntry",
    "PrometheusMetrics",
    "Quotas",
    "Sentinel",
    "SentinelStatus",
    "Supervisor",
    "client_ssl_context",
    "collapse",
    "leaves",
    "load_or_create_identity",
    "open_supervisor",
    "rotate_node_key",
    "rotate_sentinel_key",
    "sentinel_public_keys",
    "serve_metrics",
    "serve_sentinel",
    "server_ssl_context",
]

_NAMES = {
    "DeadLetters": "fame._agents._dead_letters",
    "DeliveryConfig": "fame._agents._delivery_policy",
    "OutboxEntry": "fame._agents._delivery_policy",
    "DEFAULT_IDLE_TIMEOUT": "fame._agents._stream",
    "DEFAULT_WINDOW": "fame._agents._stream",
    "Actor": "fame._core._actor",
    "ActorRef": "fame._core._actor",
    "Delivery": "fame._core._actor",
    "Address": "fame._core._address",
    "collapse": "fame._core._groups",
    "leaves": "fame._core._groups",
    "Metrics": "fame._core._metrics",
    "Supervisor": "fame._core._supervisor",
    "open_supervisor": "fame._core._supervisor",
    "NodeStores": "fame._fabric._identity",
    "load_or_create_identity": "fame._fabric._identity",
    "rotate_node_key": "fame._fabric._identity",
    "DEFAULT_LINK_BUFFER": "fame._fabric._link_queue",
    "DEFAULT_STALL_GRACE": "fame._fabric._link_queue",
    "LinkLimits": "fame._fabric._link_queue",
    "NodeAdmin": "fame._fabric._node_admin",
    "TRACE_LOGGER": "fame._fabric._trace",
    "HANDSHAKE_TIMEOUT": "fame._fabric._transport",
    "client_ssl_context": "fame._fabric._transport",
    "server_ssl_context": "fame._fabric._transport",
    "SENTINEL_ADMIN_ADDRESS": "fame._fabric.sentinel._admin_agent:ADMIN_ADDRESS",
    "DoorLimits": "fame._fabric.sentinel._door",
    "NodeRegistry": "fame._fabric.sentinel._registry",
    "DEFAULT_HOST": "fame._fabric.sentinel._server",
    "DEFAULT_MAX_CONNECTIONS": "fame._fabric.sentinel._server",
    "DEFAULT_PORT": "fame._fabric.sentinel._server",
    "Sentinel": "fame._fabric.sentinel._server",
    "serve_sentinel": "fame._fabric.sentinel._server",
    "rotate_sentinel_key": "fame._fabric.sentinel._signing",
    "sentinel_public_keys": "fame._fabric.sentinel._signing",
    "SentinelStatus": "fame._fabric.sentinel._status",
    "QUOTA_SETTINGS": "fame._protocol._quotas",
    "Quotas": "fame._protocol._quotas",
    "PrometheusMetrics": "fame._fabric._prometheus",
    "serve_metrics": "fame._fabric._metrics_http",
}
"""Where each name lives: imported on first use (see :mod:`fame._lazy`). Not only a
process that never serves metrics does without prometheus_client (2 MiB, 20 ms):
the command line's defaults do without the sentinel's server, a node without it."""

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, _NAMES)
