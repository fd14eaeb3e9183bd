"""The Prometheus adapter of :class:`~fame._core._metrics.Metrics`.

One :class:`PrometheusMetrics` per node (or sentinel), each with its own
``CollectorRegistry``, never prometheus-client's global one: several nodes
in one process (tests, an embedding program) keep their figures apart.
Events go to counters and histograms; their labelled children are cached
by label values, so a call that repeats costs a dict lookup and an
increment. Sources are read by one collector at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .._core._metrics import SAMPLED, Metrics, Source

__all__ = ["CONTENT_TYPE", "PrometheusMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of :meth:`PrometheusMetrics.render` (Prometheus' text format)."""

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Writes per commit: a storage actor commits at most ``max_batch`` (512) at once."""


class PrometheusMetrics(Metrics):
    """Records into a registry of its own; :meth:`render` is what a scrape returns."""

    enabled = True

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._calls = Counter(
            "fame_calls",
            "Operations answered by this node's agents, by outcome (ok or the error's kind).",
            ("address", "operation", "outcome"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "fame_call_seconds",
            "Time an agent took to answer an operation, from dispatch to its answer.",
            ("address", "operation"),
            registry=self.registry,
        )
        self._commits = Counter(
            "fame_storage_commits",
            "Storage transactions committed (outcome ok) or rolled back (failed).",
            ("namespace", "outcome"),
            registry=self.registry,
        )
        self._batch = Histogram(
            "fame_storage_commit_batch_size",
            "Writes in one storage transaction.",
            ("namespace",),
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._commit_seconds = Histogram(
            "fame_storage_commit_seconds",
            "Time one storage transaction took, on the worker thread.",
            ("namespace",),
            registry=self.registry,
        )
        self._stalls = Counter(
            "fame_stream_credit_stalls",
            "Times a stream had to wait for its consumer's credit before its next item.",
            ("address",),
            registry=self.registry,
        )
        # Children by label values: .labels() takes a lock and builds a tuple each time.
        self._call_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._sources: list[Source] = []
        self.registry.register(_SourceCollector(self._sources))

    def call(self, address: str, operation: str, outcome: str, seconds: float) -> None:
        key = (address, operation, outcome)
        children = self._call_children.get(key)
        if children is None:
            children = (
                self._calls.labels(address, operation, outcome),
                self._latency.labels(address, operation),
            )
            self._call_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def commit(self, namespace: str, writes: int, seconds: float, ok: bool) -> None:
        self._commits.labels(namespace, "ok" if ok else "failed").inc()
        self._batch.labels(namespace).observe(writes)
        self._commit_seconds.labels(namespace).observe(seconds)

    def credit_stall(self, address: str) -> None:
        self._stalls.labels(address).inc()

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def remove_source(self, source: Source) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def render(self) -> bytes:
        """Every metric in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _SourceCollector:
    """Reads the registered sources into families declared by :data:`SAMPLED`."""

    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources

    def describe(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        return list(self._empty().values())

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = self._empty()
        for source in list(self._sources):
            for name, labels, value in source():
                families[name].add_metric(list(labels), value)
        yield from families.values()

    @staticmethod
    def _empty() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, (kind, text, labels) in SAMPLED.items():
            if kind == "counter":
                families[name] = CounterMetricFamily(name, text, labels=list(labels))
            else:
                families[name] = GaugeMetricFamily(name, text, labels=list(labels))
        return families
