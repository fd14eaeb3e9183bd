"""Per-address traffic figures a sentinel keeps as it routes: cheap and bounded.

For ``fame status`` and its live view (``fame status --watch``): per address
the calls forwarded, how many ended in an error, how many wait for their
answer now (the address's queue depth), and the latencies of the latest
answers, from which percentiles over a recent window are read.

Each routed request costs a dict insert and each final answer a dict pop
and a ring append: nothing is sorted until someone asks. Memory is
bounded three ways: at most ``max_addresses`` addresses are tracked (the
rest are summed under one more, :data:`OTHER`: a node may be asked for any name on
its path), at most ``max_pending`` requests wait for an answer (past that
the oldest are forgotten, as ``InflightRequests`` forgets them), and each
address keeps its latest ``reservoir`` latencies.

Pure data structure: the caller passes the clock (``now``, seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import attrs

__all__ = ["OTHER", "AddressFigures", "AddressStats"]

OTHER = "(other)"
"""Where the addresses past ``max_addresses`` are counted."""


@attrs.frozen
class AddressFigures:
    """One address's figures: totals since the sentinel started, percentiles over a window.

    ``p50``/``p99`` are seconds (None: no answer in the window); ``answered``
    is how many answers the window held.
    """

    address: str
    calls: int
    errors: int
    in_flight: int
    answered: int
    p50: float | None
    p99: float | None


class _Counters:
    __slots__ = ("calls", "errors", "in_flight", "latencies")

    def __init__(self, reservoir: int) -> None:
        self.calls = 0
        self.errors = 0
        self.in_flight = 0
        self.latencies: deque[tuple[float, float]] = deque(maxlen=reservoir)  # (done at, took)


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil, without float surprises at 1.0
    return ordered[min(len(ordered), int(rank)) - 1]


class AddressStats:
    """Calls, errors, requests waiting and recent latencies, per address."""

    def __init__(
        self, *, max_addresses: int = 1024, max_pending: int = 65_536, reservoir: int = 512
    ) -> None:
        self.max_addresses = max_addresses
        self.max_pending = max_pending
        self.reservoir = reservoir
        self._by_address: dict[str, _Counters] = {}
        self._pending: dict[Hashable, tuple[_Counters, float]] = {}  # key -> (counters, start)

    def _counters(self, address: str) -> _Counters:
        counters = self._by_address.get(address)
        if counters is None:
            if len(self._by_address) >= self.max_addresses:
                address = OTHER
                counters = self._by_address.get(OTHER)
            if counters is None:
                counters = self._by_address[address] = _Counters(self.reservoir)
        return counters

    def started(self, key: Hashable | None, address: str, now: float) -> None:
        """A request ``key`` (its caller's ``(reply_to, corr)``) was forwarded to ``address``.

        ``key`` None: a request that wants no answer (``tell``), only counted.
        """
        counters = self._counters(address)
        counters.calls += 1
        if key is None:
            return
        if key in self._pending:  # a corr used twice: the first one is not waited for any more
            self._pending.pop(key)[0].in_flight -= 1
        counters.in_flight += 1
        self._pending[key] = (counters, now)
        if len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))  # dicts keep insertion order
            self._pending.pop(oldest)[0].in_flight -= 1

    def finished(self, key: Hashable, now: float, *, error: bool = False) -> None:
        """Request ``key`` got its final answer (``error``: an error) or was cancelled."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        counters, start = pending
        counters.in_flight -= 1
        counters.errors += error
        counters.latencies.append((now, now - start))

    def cancelled(self, key: Hashable) -> None:
        """Request ``key`` will not be answered to its caller: no latency to note."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending[0].in_flight -= 1

    def figures(self, now: float, window: float) -> list[AddressFigures]:
        """Every tracked address's figures, latencies over the last ``window`` seconds."""
        found = []
        for address, counters in sorted(self._by_address.items()):
            recent = sorted(took for done, took in counters.latencies if now - done <= window)
            found.append(
                AddressFigures(
                    address,
                    counters.calls,
                    counters.errors,
                    counters.in_flight,
                    len(recent),
                    percentile(recent, 0.50) if recent else None,
                    percentile(recent, 0.99) if recent else None,
                )
            )
        return found
