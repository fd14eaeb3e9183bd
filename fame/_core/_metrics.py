"""Where every layer records what it does, for an operator's metrics.

The layers below the fabric record into a :class:`Metrics`, knowing nothing
of Prometheus: the adapter (``fame._fabric._prometheus``) lives at the edge.
Two ways in, chosen by cost:

* **events** (a call answered, a commit, a stream stalled on credit): a
  method call at the point where it happens. The base class records
  nothing, so with metrics off (:data:`NO_METRICS`, the default) an event
  costs one call of an empty method;
* **samples** (mailbox depths, restarts so far, links, queued bytes): the
  owner of the state registers a *source*, a function read only when the
  metrics are scraped. Nothing at all happens on the hot path.

A source yields :data:`Sample` tuples ``(name, label values, value)``; the
names, kinds, help texts and label names are fixed in :data:`SAMPLED`, so
the adapter can declare every family up front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

__all__ = ["NO_METRICS", "SAMPLED", "Metrics", "Sample", "Source"]

Sample = tuple[str, tuple[str, ...], float]
"""One sampled value: the metric's name, its label values (in order), the value."""

Source = Callable[[], Iterable[Sample]]
"""What a state owner registers: read at scrape time only."""

SAMPLED: dict[str, tuple[Literal["gauge", "counter"], str, tuple[str, ...]]] = {
    "fame_mailbox_depth": (
        "gauge",
        "Messages waiting in an actor's mailbox (agents and storage actors).",
        ("address",),
    ),
    "fame_actor_restarts": (
        "counter",
        "Times an actor was restarted by its supervisor after a crash.",
        ("address",),
    ),
    "fame_links": (
        "gauge",
        "Websocket links: a sentinel's by state (attached, unattached); a node's uplink (0 or 1).",
        ("state",),
    ),
    "fame_link_queue_bytes": (
        "gauge",
        "Bytes waiting in the outgoing queues of a sentinel's links, or a node's uplink.",
        ("link",),
    ),
    "fame_link_queue_depth": (
        "gauge",
        "Envelopes waiting in the outgoing queue of a node's uplink.",
        ("link",),
    ),
    "fame_sentinel_refused_connections": (
        "counter",
        "Websockets a sentinel turned away because max_connections were open.",
        (),
    ),
    "fame_sentinel_stalled_links": (
        "counter",
        "Links a sentinel closed because their peer stopped reading.",
        (),
    ),
    "fame_sentinel_requests": (
        "counter",
        "Requests a sentinel forwarded to the node serving their address.",
        (),
    ),
    "fame_sentinel_request_errors": (
        "counter",
        "Requests a sentinel answered itself with an error, by kind (no_route, overloaded, ...).",
        ("kind",),
    ),
    "fame_sentinel_violations": (
        "counter",
        "Protocol violations (bad frames) a sentinel saw on its links.",
        (),
    ),
}
"""Every sampled metric: ``name -> (kind, help, label names)``."""


class Metrics:
    """The recording interface; this base class records nothing (metrics off).

    ``enabled`` lets a caller skip work it does only to record (reading a
    clock, for instance): ``if metrics.enabled: ...``.
    """

    enabled = False

    def call(self, address: str, operation: str, outcome: str, seconds: float) -> None:
        """An operation of the agent at ``address`` was answered.

        ``outcome`` is ``"ok"`` or the kind of the error its caller got
        (``"operation_failed"``, ``"actor_crashed"``, ...).
        """

    def commit(self, namespace: str, writes: int, seconds: float, ok: bool) -> None:
        """A storage actor committed (or failed to commit) ``writes`` writes in one transaction."""

    def credit_stall(self, address: str) -> None:
        """A stream served by ``address`` had to wait for its consumer's credit."""

    def add_source(self, source: Source) -> None:
        """Read ``source`` at every scrape until :meth:`remove_source`."""

    def remove_source(self, source: Source) -> None:
        """Stop reading ``source`` (its owner closed)."""


NO_METRICS = Metrics()
"""Metrics off: every event is an empty method, no source is ever read."""
