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

import importlib
from typing import TYPE_CHECKING, Any

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
from ._fabric._node_admin import NodeAdmin
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

if TYPE_CHECKING:
    from ._fabric._metrics_http import serve_metrics
    from ._fabric._prometheus import PrometheusMetrics

_LAZY = {
    "PrometheusMetrics": "fame._fabric._prometheus",
    "serve_metrics": "fame._fabric._metrics_http",
}
"""Imported on first use: prometheus_client costs a process 2 MiB and 20 ms that
metrics off (the default) never need."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
