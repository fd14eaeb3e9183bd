"""Per-address traffic figures (``fame._protocol._address_stats``): plain values, no clock."""

from __future__ import annotations

import pytest
import trio

from fame._fabric.sentinel._admin_agent import AdminRefused, SentinelAdmin
from fame._protocol._address_stats import OTHER, AddressStats, percentile


def test_calls_errors_in_flight_and_percentiles_per_address() -> None:
    stats = AddressStats()
    for corr in range(100):
        stats.started(("reply@a", corr), "storage@x", now=float(corr))
    stats.started(None, "storage@x", now=0.0)  # a tell: counted, never waited for
    for corr in range(99):  # each took corr / 100 s; the last one is still out
        stats.finished(("reply@a", corr), now=corr + corr / 100, error=corr < 3)
    [figures] = stats.figures(now=200.0, window=1000.0)
    assert (figures.calls, figures.errors, figures.in_flight) == (101, 3, 1)
    assert figures.answered == 99
    assert figures.p50 == pytest.approx(0.49) and figures.p99 == pytest.approx(0.98)
    # Only the answers of the window count toward the percentiles.
    [recent] = stats.figures(now=99.0, window=2.0)
    assert recent.answered == 2 and recent.p50 == pytest.approx(0.97)
    # A cancelled request leaves the queue without a latency; unknown keys change nothing.
    stats.cancelled(("reply@a", 99))
    stats.finished(("reply@a", 12345), now=1.0)
    [after] = stats.figures(now=200.0, window=1000.0)
    assert after.in_flight == 0 and after.answered == 99


def test_memory_is_bounded_in_addresses_pending_requests_and_samples() -> None:
    stats = AddressStats(max_addresses=3, max_pending=10, reservoir=5)
    for i in range(20):
        stats.started(("r", i), f"a{i}@x", now=0.0)
    figures = {f.address: f for f in stats.figures(now=0.0, window=1.0)}
    assert set(figures) == {"a0@x", "a1@x", "a2@x", OTHER}
    assert figures[OTHER].calls == 17
    # The oldest requests were forgotten: only the latest 10 wait (all counted under OTHER).
    assert [figures[a].in_flight for a in ("a0@x", "a1@x", "a2@x", OTHER)] == [0, 0, 0, 10]
    for i in range(10, 20):
        stats.finished(("r", i), now=1.0)
    other = {f.address: f for f in stats.figures(now=2.0, window=5.0)}[OTHER]
    assert other.in_flight == 0 and other.answered == 5  # the reservoir keeps the latest 5


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([1.0, 2.0], 0.5) == 1.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_the_status_operation_refuses_everyone_but_the_admin() -> None:
    admin = SentinelAdmin(object())  # type: ignore[arg-type]  # refused before it is used

    async def ask() -> None:
        await admin.status()

    with pytest.raises(AdminRefused) as refused:
        trio.run(ask)
    assert "a local caller is not client:admin" in str(refused.value)
