"""OpenTelemetry spans, optional: a no-op unless the program configured a tracer provider.

fame never configures OpenTelemetry itself. A program that wants traces
installs ``opentelemetry-sdk`` (the ``tracing`` extra) and sets a
``TracerProvider``; from then on fame opens spans on the ``fame`` tracer
(``opentelemetry.trace.get_tracer``). Without the package, or while no
provider is set, :func:`span` yields ``None`` and costs one check, and
:func:`current_traceparent` is ``None``, so requests carry no trace.

Across processes the context travels in the request (``Request.trace``)
as a W3C ``traceparent`` string (:data:`TRACEPARENT_PATTERN`); within one
process it is the ambient OpenTelemetry context, a ``contextvars`` value,
which trio copies into every task a nursery starts. The string is made and
parsed here by hand, not by a propagator: it is a fixed 55-character
format, and a peer's malformed one is refused by the wire schema before it
gets here.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

__all__ = [
    "OTEL_TRACE",
    "TRACEPARENT_LENGTH",
    "TRACEPARENT_PATTERN",
    "current_traceparent",
    "span",
    "tracing_on",
]

TRACEPARENT_PATTERN: Final = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C ``traceparent`` of version 00: version, trace id, parent span id, flags."""

TRACEPARENT_LENGTH: Final = 55

_TRACER_NAME: Final = "fame"

OTEL_TRACE: Final = "opentelemetry.trace"
"""The module a program imports to trace: until it is in ``sys.modules`` tracing is off.

A hot path asks ``OTEL_TRACE in sys.modules and tracing_on()``: a dict
lookup instead of a function call when the program traces nothing.
"""

_otel: Any = None
"""``opentelemetry.trace`` once the program imported it."""


def _trace_api() -> Any:
    """``opentelemetry.trace`` if the program imported it, else ``None`` (tracing is off).

    A tracer provider can only be set through that module, so until the
    program imports it no span could be recorded: fame never imports
    OpenTelemetry itself, which keeps it out of the processes that trace
    nothing (the services by default: no import on their first call).
    """
    global _otel
    if _otel is None:
        _otel = sys.modules.get(OTEL_TRACE)
    return _otel


_UNKNOWN: Final = object()


def tracing_on() -> bool:
    """Whether the program set a tracer provider (the API's default one records nothing).

    Asked on every call, so it reads the API's global first: ``get_tracer_provider()``
    looks at the environment each time no provider is set (2 us, most of a call's
    tracing-off cost). A provider the API would build from ``OTEL_PYTHON_TRACER_PROVIDER``
    counts from the first ``get_tracer_provider()`` call on.
    """
    global _otel
    api = _otel
    if api is None:
        # _trace_api(), written out: asked on every call, mostly to answer no.
        api = _otel = sys.modules.get(OTEL_TRACE)
        if api is None:
            return False
    provider = getattr(api, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return False
    if provider is _UNKNOWN:  # another API version: ask it the public way
        provider = api.get_tracer_provider()
    return not isinstance(provider, api.ProxyTracerProvider)


def _parse(traceparent: str) -> Any:
    """The remote span context a ``traceparent`` names, or ``None`` if it names none."""
    api = _trace_api()
    _, trace_id, span_id, flags = traceparent.split("-")
    context = api.SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=api.TraceFlags(int(flags, 16)),
    )
    return context if context.is_valid else None


def current_traceparent() -> str | None:
    """The ambient span as a ``traceparent``, or ``None`` (tracing off, or no span)."""
    if not tracing_on():
        return None
    context = _trace_api().get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


_OFF: Final = nullcontext()
"""What :func:`span` returns while tracing is off: reusable, and it yields ``None``."""


def span(
    name: str,
    *,
    kind: str = "INTERNAL",
    parent: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    """Open span ``name`` as the ambient one for the block; yields it, or ``None`` when off.

    ``parent`` is a ``traceparent`` from a request (the span continues the
    caller's trace); ``None`` continues the ambient context. ``kind`` names a
    ``SpanKind`` member (``CLIENT``, ``SERVER``, ``INTERNAL``, ...). An
    exception escaping the block is recorded on the span by OpenTelemetry.
    Off, it costs one check and no generator.
    """
    if not tracing_on():
        return _OFF
    api = _trace_api()
    context = None
    if parent is not None:
        remote = _parse(parent)
        if remote is not None:
            context = api.set_span_in_context(api.NonRecordingSpan(remote))
    tracer = api.get_tracer(_TRACER_NAME)
    started: AbstractContextManager[Any] = tracer.start_as_current_span(
        name, context=context, kind=api.SpanKind[kind], attributes=attributes
    )
    return started
