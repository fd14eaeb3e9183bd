"""Storage providers: the protocol, the built-in one, and lookup by name.

A provider hands out key-value stores by namespace. The node opens exactly
one, from its configuration, with :func:`open_storage`::

    async with open_storage(storage_config_from_env(os.environ)) as provider:
        store = await provider.get_kv_store(RecordModel, "storage_agent_namespace")

``FAME_STORAGE_PROFILE`` picks the provider:

* ``memory``, ``sqlite``, ``encrypted-sqlite``: the built-in provider;
* ``postgres``: the PostgreSQL provider (``_postgres_provider``), imported
  only when chosen, as it needs ``psycopg``;
* a name registered in the ``fame.storage_providers`` entry point group;
* ``package.module:Class``.

A custom provider is a callable taking the :class:`StorageConfig` and
returning an async context manager that yields a :class:`StorageProvider`
(a class with ``__init__(self, config)``, ``__aenter__`` and ``__aexit__``
is the usual shape).
"""

from __future__ import annotations

import functools
import importlib.metadata
import pkgutil
import time
import types
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import cast

from .._core._metrics import NO_METRICS, Metrics
from .._core._storage_protocol import StorageProvider
from .._core._supervisor import Supervisor
from ._builtin import open_builtin_storage
from ._config import BUILTIN_PROFILES, StorageConfig, storage_config_from_env
from ._errors import StorageConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "StorageProvider",
    "StorageProviderFactory",
    "open_storage",
    "open_storage_from_env",
    "resolve_provider",
]

ENTRY_POINT_GROUP = "fame.storage_providers"


StorageProviderFactory = Callable[[StorageConfig], AbstractAsyncContextManager[StorageProvider]]


def resolve_provider(profile: str) -> StorageProviderFactory | None:
    """The factory of a custom provider, or ``None`` for a built-in profile.

    Raises :class:`StorageConfigError` naming ``FAME_STORAGE_PROFILE`` for a
    name that is neither built in, registered, nor an importable
    ``module:Class``.
    """
    variable = "FAME_STORAGE_PROFILE"
    if profile in BUILTIN_PROFILES:
        return None
    if ":" in profile:
        try:
            obj = pkgutil.resolve_name(profile)
        except (ImportError, AttributeError, ValueError) as exc:
            raise StorageConfigError(
                variable, f"cannot load storage provider {profile!r}: {exc}"
            ) from None
        if isinstance(obj, types.ModuleType) or not callable(obj):
            raise StorageConfigError(
                variable, f"cannot load storage provider {profile!r}: not a class or factory"
            )
        return cast(StorageProviderFactory, obj)
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=profile)
    for entry_point in found:
        try:
            return cast(StorageProviderFactory, entry_point.load())
        except Exception as exc:
            raise StorageConfigError(
                variable, f"storage provider {profile!r} failed to load: {exc}"
            ) from None
    registered = sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    raise StorageConfigError(
        variable,
        f"unknown storage profile {profile!r}; expected one of {', '.join(BUILTIN_PROFILES)},"
        f" a provider registered in the {ENTRY_POINT_GROUP!r} entry point group"
        f" ({', '.join(registered) or 'none installed'}), or module:Class",
    )


@asynccontextmanager
async def open_storage(
    config: StorageConfig,
    *,
    clock: Callable[[], float] = time.time,
    purge_interval: float = 60.0,
    supervisor: Supervisor | None = None,
    metrics: Metrics = NO_METRICS,
) -> AsyncIterator[StorageProvider]:
    """Open the provider ``config`` names for the duration of the block.

    ``clock`` (wall-clock seconds) decides TTL expiry; tests pass their own.
    Expired keys are purged every ``purge_interval`` seconds. Storage actors
    run under ``supervisor`` if given, else under one of their own. On exit
    every handle is closed cleanly (WAL checkpointed). Configuration errors,
    a wrong master key and damaged files are raised here, before the block.
    ``metrics`` records commits, their batch sizes and the storage actors'
    mailboxes (the default records nothing). These four settings apply to
    the built-in profiles; a custom provider gets only ``config``.
    """
    factory = resolve_provider(config.profile)
    if factory is None and config.profile == "postgres":
        try:
            from ._postgres_provider import open_postgres_storage
        except ImportError as exc:
            raise StorageConfigError(
                "FAME_STORAGE_PROFILE",
                f"the postgres profile needs psycopg 3 and psycopg-pool ({exc}):"
                " pip install 'fame-actors[postgres]'",
            ) from None

        factory = functools.partial(
            open_postgres_storage,
            clock=clock,
            purge_interval=purge_interval,
            supervisor=supervisor,
            metrics=metrics,
        )
    if factory is None:
        factory = functools.partial(
            open_builtin_storage,
            clock=clock,
            purge_interval=purge_interval,
            supervisor=supervisor,
            metrics=metrics,
        )
    async with factory(config) as provider:
        yield provider


def open_storage_from_env(
    env: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.time,
    purge_interval: float = 60.0,
    supervisor: Supervisor | None = None,
) -> AbstractAsyncContextManager[StorageProvider]:
    """:func:`open_storage` with the configuration read from ``env`` (e.g. ``os.environ``).

    A bad variable raises :class:`StorageConfigError` at once, naming it.
    """
    config = storage_config_from_env(env)
    return open_storage(config, clock=clock, purge_interval=purge_interval, supervisor=supervisor)
