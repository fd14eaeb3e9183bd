"""``fame migrate DIR --namespace NS --model module:Class``: upgrade a namespace in bulk.

Opens the stopped node's directory with the master key (``conf/agent.env``
and ``conf/secrets.env``, or ``--config`` files), as ``fame inspect`` does,
and rewrites every record older than the model's ``__fame_version__`` in
that version, a batch per transaction (``fame.storage.migrate_namespace``).
It may be killed at any moment: every record is then either as it was or
upgraded, and running the command again finishes the work. It prints a
line when it starts, progress at most once a second, and the final count.
"""

from __future__ import annotations

import pkgutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from fame.errors import DatabaseInUse, RecordInvalid, RecordTooNew
from fame.lowlevel import leaves
from fame.storage import (
    DEFAULT_MIGRATION_BATCH,
    KeyValueStore,
    MigrationProgress,
    StorageConfig,
    migrate_namespace,
    open_storage,
)

from . import _inspect
from ._admin import AdminError
from ._errors import shown_path

__all__ = ["migrate"]

PROGRESS_EVERY = 1.0
"""Seconds between two progress lines."""


def _model(spec: str) -> type[Any]:
    try:
        model = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as exc:
        raise AdminError(
            f"cannot load model {spec!r} ({type(exc).__name__}: {exc}); expected"
            " module:Class, importable from the project directory; nothing was changed"
        ) from None
    if not isinstance(model, type):
        raise AdminError(f"{spec!r} is not a class; nothing was changed")
    if not isinstance(getattr(model, "__fame_version__", 1), int):
        raise AdminError(f"{spec}.__fame_version__ is not an int; nothing was changed")
    return model


class _Printer:
    """Progress lines, at most one per :data:`PROGRESS_EVERY` seconds, the last one always."""

    def __init__(self, spec: str) -> None:
        self._spec = spec
        self._last = 0.0

    def __call__(self, state: MigrationProgress) -> None:
        now = time.monotonic()
        if state.checked == 0:
            print(
                f"fame migrate: migrating {state.namespace} ({state.total} records) to version"
                f" {state.version} of {self._spec}",
                flush=True,
            )
            self._last = now
        elif now - self._last >= PROGRESS_EVERY:
            print(
                f"fame migrate: {state.namespace}: {state.checked} of {state.total} checked,"
                f" {state.upgraded} upgraded",
                flush=True,
            )
            self._last = now


async def _run(
    config: StorageConfig, namespace: str, model: type[Any], spec: str, prefix: str, batch: int
) -> MigrationProgress:
    async with open_storage(config, purge_interval=3600) as provider:
        if namespace.startswith("__"):
            store = await provider.get_internal_kv_store(model, namespace)
        else:
            store = await provider.get_kv_store(model, namespace)
        assert isinstance(store, KeyValueStore)
        return await migrate_namespace(store, batch=batch, prefix=prefix, progress=_Printer(spec))


def migrate(
    directory: Path,
    namespace: str,
    spec: str,
    settings: Mapping[str, str],
    *,
    prefix: str = "",
    batch: int = DEFAULT_MIGRATION_BATCH,
) -> int:
    """Run ``fame migrate``; print the final count."""
    if not 1 <= batch <= 10_000:
        raise AdminError(f"--batch must be from 1 to 10000 records, not {batch}")
    config = _inspect._config(directory, settings)
    if config.profile not in ("sqlite", "encrypted-sqlite"):
        raise AdminError(
            f"the storage profile is {config.profile!r}: fame migrate works on the files of"
            " the sqlite and encrypted-sqlite profiles; nothing was changed"
        )
    names = {name for name, _ in _inspect.namespaces(directory, settings)}
    if namespace not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise AdminError(
            f"no namespace {namespace!r} in {shown_path(directory)} (it has: {listed});"
            " nothing was changed"
        )
    model = _model(spec)
    try:
        done = trio.run(_run, config, namespace, model, spec, prefix, batch)
    except Exception as exc:
        found = leaves(exc)
        if any(isinstance(error, DatabaseInUse) for error in found):
            raise AdminError(
                f"the stores in {shown_path(directory)} are in use by a running process (the"
                " node?); nothing was changed: stop it first"
            ) from None
        for error in found:
            if isinstance(error, RecordTooNew | RecordInvalid):
                raise AdminError(
                    f"stopped: {error}. The batches before this record were upgraded and"
                    " committed, the rest is as it was; fix the model, then run the command"
                    " again"
                ) from None
        raise
    print(
        f"fame migrate: {namespace}: done: {done.checked} records checked, {done.upgraded}"
        f" upgraded to version {done.version}, {done.current} already current"
        + (
            f", {done.changed} changed by another writer meanwhile (left as is)"
            if done.changed
            else ""
        )
    )
    sys.stdout.flush()
    return 0
