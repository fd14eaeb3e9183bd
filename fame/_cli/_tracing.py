"""``FAME_TRACING``: the programs' switch for OpenTelemetry spans.

The library opens spans only when the program set a tracer provider (see
docs/architecture.md, "Tracing"). A program embedding fame sets its own; the
``fame`` programs set one for ``FAME_TRACING=console``, which writes every
finished span as JSON to stderr (beside the log), for a look without a
collector. Unset or ``off``: no provider, no spans. Anything richer (an
OTLP exporter, sampling) belongs in a program of one's own.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping

from ._settings import SettingError

__all__ = ["configure_tracing"]

_VALUES = ("off", "console")


def configure_tracing(settings: Mapping[str, str]) -> None:
    """Set a console tracer provider for ``FAME_TRACING=console``; else do nothing.

    Raises :class:`~fame._cli._settings.SettingError` for another value, or
    when the OpenTelemetry SDK (the ``tracing`` extra) is not installed.
    """
    value = settings.get("FAME_TRACING", "").strip().lower()
    if value in ("", "off"):
        return
    if value not in _VALUES:
        raise SettingError(f"FAME_TRACING: expected off or console, got {value[:40]!r}")
    try:
        api = importlib.import_module("opentelemetry.trace")
        sdk = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
    except ImportError:
        raise SettingError(
            "FAME_TRACING=console needs OpenTelemetry, which is not installed: install it"
            " with: pip install 'fame-actors[tracing]' (or unset FAME_TRACING)"
        ) from None
    provider = sdk.TracerProvider()
    # Simple, not batched: each span is written as it ends, so none is lost at exit.
    provider.add_span_processor(
        export.SimpleSpanProcessor(export.ConsoleSpanExporter(out=sys.stderr))
    )
    api.set_tracer_provider(provider)
