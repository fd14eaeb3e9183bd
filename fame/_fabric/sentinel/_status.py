"""What a running sentinel reports about itself: ``fame status`` reads it live.

:func:`sentinel_status` takes a snapshot of the attached links, the route
bindings (and which of their nodes are attached), the latest bind
refusals, and the per-address traffic the router counts
(``fame._protocol._address_stats``). It is plain data (msgspec structs),
answered by the sentinel's admin agent (``status``) to ``client:admin`` only:
it names node ids and the addresses every node serves.
"""

from __future__ import annotations

import msgspec
import trio

from ..._protocol._route_table import record_owners
from ._routing import Router

__all__ = [
    "AddressTraffic",
    "AttachedLink",
    "BindRefusal",
    "Binding",
    "SentinelStatus",
    "sentinel_status",
]


class AttachedLink(msgspec.Struct, frozen=True):
    """An attached websocket: a node, or a client (``kind``), since ``since`` (Unix time)."""

    node_id: str
    kind: str
    name: str
    since: float
    in_flight: int  # requests forwarded to it and not answered yet
    queued_bytes: int  # bytes waiting in its outgoing queue


class Binding(msgspec.Struct, frozen=True):
    """An address, the node(s) that bound it (a pool's members) and those attached now."""

    address: str
    owners: list[str]
    pool: bool
    attached: list[str]


class BindRefusal(msgspec.Struct, frozen=True):
    """The latest refusal of ``address`` to ``node_id``; ``owner``: the node holding it."""

    address: str
    node_id: str
    reason: str
    owner: str | None = None


class AddressTraffic(msgspec.Struct, frozen=True):
    """Calls to an address since the sentinel started; latencies (s) over the window."""

    address: str
    calls: int
    errors: int
    in_flight: int
    answered: int  # answers within the window
    p50: float | None
    p99: float | None


class SentinelStatus(msgspec.Struct, frozen=True):
    """A sentinel's live view of itself (see the module docstring)."""

    sentinel_id: str
    now: float  # Unix time of the snapshot
    window: float  # seconds the latency percentiles cover
    links: list[AttachedLink]
    bindings: list[Binding]
    refusals: list[BindRefusal]
    traffic: list[AddressTraffic]
    in_flight: int
    queued_bytes: int
    connections: int


def sentinel_status(router: Router, now: float, window: float, connections: int) -> SentinelStatus:
    """A snapshot of the sentinel of ``router`` at ``now`` (Unix time).

    Traffic latencies cover the last ``window`` seconds; ``connections``
    counts websockets, attached or not.
    """
    routes = router.routes
    sentinel_id = router.sentinel_id
    links = []
    for node_id, conn in sorted(routes.links().items()):
        principal = conn.link.principal
        links.append(
            AttachedLink(
                node_id,
                principal.kind if principal is not None else "node",
                principal.name if principal is not None else "",
                conn.since,
                router.inflight.waiting(conn),
                conn.out.bytes,
            )
        )
    bindings = []
    for address, record in sorted(routes.bindings().items()):
        owners = record_owners(record)
        attached = [o for o in owners if routes.linked(o) or o == sentinel_id]
        bindings.append(Binding(address, owners, routes.pool(address) is not None, attached))
    refusals = [
        BindRefusal(address, node_id, reason, owner)
        for address, (node_id, reason, owner) in sorted(router.bind_refusals.items())
    ]
    traffic = [
        AddressTraffic(f.address, f.calls, f.errors, f.in_flight, f.answered, f.p50, f.p99)
        for f in router.stats.figures(trio.current_time(), window)
    ]
    return SentinelStatus(
        sentinel_id,
        now,
        window,
        links,
        bindings,
        refusals,
        traffic,
        sum(t.in_flight for t in traffic),
        router.queued_bytes,
        connections,
    )
