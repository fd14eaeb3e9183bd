"""Per-principal quotas of a sentinel, and the usage they are checked against, sans IO.

A principal (``client:default``, ``node:storage``...) may have at most so
many requests in flight across all its links, so many open streams, so
many bytes waiting in the sentinel's queues to its links; a node id may
bind at most so many addresses; trust on first use enrolls at most so many
node ids. Past one of them that principal alone is refused, with an error
that names it, the quota and its value: nothing ran, and what to do.

:class:`Quotas` holds the limits (``fame sentinel`` maps ``FAME_QUOTA_*``
settings to it); :class:`PrincipalUsage` counts what each principal uses
now. The in-flight table (``fame._protocol._inflight``) counts and
uncounts requests and streams as they are forwarded, answered, cancelled
or lost with a link; the sentinel's link queues report their bytes. No
clock, no I/O.
"""

from __future__ import annotations

import attrs

__all__ = ["QUOTA_SETTINGS", "PrincipalUsage", "Quotas", "link_share_refusal"]

MIB = 1 << 20

QUOTA_SETTINGS = {
    "requests_in_flight": "FAME_QUOTA_REQUESTS_IN_FLIGHT",
    "streams": "FAME_QUOTA_STREAMS",
    "bindings": "FAME_QUOTA_BINDINGS",
    "enrolled_nodes": "FAME_QUOTA_ENROLLED_NODES",
    "bytes_queued": "FAME_QUOTA_BYTES_QUEUED",
    "requests_in_flight_per_link": "FAME_QUOTA_REQUESTS_IN_FLIGHT_PER_LINK",
    "streams_per_link": "FAME_QUOTA_STREAMS_PER_LINK",
}
"""The setting of ``fame sentinel`` that raises each quota, named in refusals."""


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"quota {attribute.name} must be at least 1, got {value}")


@attrs.frozen
class Quotas:
    """What one principal may use of a sentinel at once.

    The defaults protect a two-core machine and leave room for a legitimate
    heavy load: 4 client processes x 512 concurrent callers sharing one
    client credential keep 2,048 requests in flight.

    Many processes often share one credential (every ``fame-client`` holds
    ``client:default``), so one link may use only its share of its
    principal's quotas (``*_per_link``): past it, its requests are answered
    ``overloaded`` (retried by the caller until its deadline), and one
    greedy process cannot spend the quota the others of its principal need.
    """

    requests_in_flight: int = attrs.field(default=4096, validator=_at_least_one)
    """Requests forwarded for a principal and not answered yet, across its links."""
    streams: int = attrs.field(default=256, validator=_at_least_one)
    """Streaming requests of a principal open at once."""
    bindings: int = attrs.field(default=256, validator=_at_least_one)
    """Addresses one node id may bind."""
    enrolled_nodes: int = attrs.field(default=1024, validator=_at_least_one)
    """Node ids enrolled in all; past it trust on first use enrolls no new one."""
    bytes_queued: int = attrs.field(default=16 * MIB, validator=_at_least_one)
    """Bytes waiting in the sentinel's queues to a principal's links, in all."""
    requests_in_flight_per_link: int = attrs.field(default=1024, validator=_at_least_one)
    """Of those requests in flight, how many one link may have (its share)."""
    streams_per_link: int = attrs.field(default=64, validator=_at_least_one)
    """Of those open streams, how many one link may have (its share)."""


def exceeded(principal: str, quota: str, value: int, what: str, remedy: str) -> str:
    """The one-line refusal of ``principal`` past ``quota`` (worth ``value``)."""
    return (
        f"{principal} has {what}, its quota ({quota} = {value}); nothing ran: {remedy}"
        f" or ask the operator to raise {QUOTA_SETTINGS[quota]}"
    )


class PrincipalUsage:
    """What each principal uses now: requests and streams in flight, bytes queued."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.streams: dict[str, int] = {}
        self.queued: dict[str, int] = {}

    def count(self, principal: str, *, stream: bool) -> None:
        """A request of ``principal`` (a stream if ``stream``) was forwarded."""
        self.requests[principal] = self.requests.get(principal, 0) + 1
        if stream:
            self.streams[principal] = self.streams.get(principal, 0) + 1

    def uncount(self, principal: str, *, stream: bool) -> None:
        """That request was answered, cancelled, or lost with a link."""
        _decrement(self.requests, principal, 1)
        if stream:
            _decrement(self.streams, principal, 1)

    def add_queued(self, principal: str, delta: int) -> None:
        """The bytes queued to ``principal``'s links changed by ``delta``."""
        if delta > 0:
            self.queued[principal] = self.queued.get(principal, 0) + delta
        elif delta < 0:
            _decrement(self.queued, principal, -delta)

    def refusal(self, principal: str, quotas: Quotas, *, stream: bool) -> str | None:
        """Why a new request of ``principal`` is refused, or None if it is within its quotas."""
        requests = self.requests.get(principal, 0)
        if requests >= quotas.requests_in_flight:
            return exceeded(
                principal,
                "requests_in_flight",
                quotas.requests_in_flight,
                f"{requests} requests in flight",
                "wait for answers",
            )
        if stream:
            streams = self.streams.get(principal, 0)
            if streams >= quotas.streams:
                return exceeded(
                    principal,
                    "streams",
                    quotas.streams,
                    f"{streams} streams open",
                    "finish or cancel a stream",
                )
        queued = self.queued.get(principal, 0)
        if queued >= quotas.bytes_queued:
            return exceeded(
                principal,
                "bytes_queued",
                quotas.bytes_queued,
                f"{queued} bytes queued to its links, unread",
                "read the answers already sent",
            )
        return None


def link_share_refusal(
    principal: str, quotas: Quotas, requests: int, streams: int, *, stream: bool
) -> str | None:
    """Why a link with ``requests`` (``streams``) in flight may not send one more now, or None.

    Backpressure, not an error of the principal: the caller retries.
    """
    limit = min(quotas.requests_in_flight_per_link, quotas.requests_in_flight)
    if requests >= limit:
        return (
            f"this link of {principal} has {requests} requests in flight, its share"
            f" (requests_in_flight_per_link = {limit}); nothing ran"
        )
    limit = min(quotas.streams_per_link, quotas.streams)
    if stream and streams >= limit:
        return (
            f"this link of {principal} has {streams} streams open, its share"
            f" (streams_per_link = {limit}); nothing ran"
        )
    return None


def _decrement(counts: dict[str, int], key: str, by: int) -> None:
    left = counts.get(key, 0) - by
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
