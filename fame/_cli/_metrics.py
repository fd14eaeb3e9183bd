"""The metrics and health endpoint of ``fame sentinel`` and ``fame node``.

Off unless ``FAME_SENTINEL_METRICS_PORT`` / ``FAME_NODE_METRICS_PORT`` set a
port (see :func:`fame._cli._settings.metrics_endpoint`). On, the service
records into a :class:`~fame.lowlevel.PrometheusMetrics` of its own and
serves ``/metrics`` and ``/healthz`` from a task of its own nursery, from
before its storage opens (``/healthz`` says ``503`` until it serves) to
after it stopped.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from fame.lowlevel import Metrics

from ._processes import NOT_SERVING

__all__ = ["MetricsPortError", "metrics_server"]


class MetricsPortError(Exception):
    """The metrics port cannot be listened on; phrased for the user."""


@asynccontextmanager
async def metrics_server(
    endpoint: tuple[str, int] | None, service: str, serving: Callable[[], str | None]
) -> AsyncIterator[Metrics]:
    """The metrics to record into, served on ``endpoint`` for the block (``None``: off).

    ``serving()`` is the service's ready line once it serves, else ``None``:
    what ``/healthz`` reports (``503`` also while the line says
    :data:`NOT_SERVING`: an address of the node's agents is refused).
    """
    if endpoint is None:
        yield Metrics()  # records nothing, costs nothing
        return
    from fame.lowlevel import PrometheusMetrics, serve_metrics  # prometheus_client: only when on

    host, port = endpoint
    metrics = PrometheusMetrics()

    def health() -> tuple[bool, Mapping[str, Any]]:
        line = serving()
        # A node whose agent's address the sentinel refuses runs but does not serve it.
        healthy = line is not None and not line.startswith(NOT_SERVING)
        return healthy, {"service": service, "state": line or "starting"}

    async with trio.open_nursery() as nursery:
        try:
            bound = await nursery.start(
                functools.partial(serve_metrics, metrics, health, host=host, port=port)
            )
        except OSError as exc:
            variable = (
                "FAME_SENTINEL_METRICS_PORT" if service == "sentinel" else "FAME_NODE_METRICS_PORT"
            )
            raise MetricsPortError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc};"
                f" set {variable} to a free port, or to 0 to turn metrics off"
            ) from None
        print(
            f"fame {service}: metrics on http://{host}:{bound}/metrics, health on /healthz",
            flush=True,
        )
        try:
            yield metrics
        finally:
            nursery.cancel_scope.cancel()
