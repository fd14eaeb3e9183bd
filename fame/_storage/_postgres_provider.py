"""The ``postgres`` profile: every namespace in one PostgreSQL database, sealed by fame.

One :class:`PostgresStorageActor` per namespace, spawned on first use, as in
the built-in provider; its backend runs statements on the actor's worker
thread with connections from the provider's pool. Opening the provider
connects, creates the tables if the database has none, and checks the
master key against the database's key check, so a wrong key or an
unreachable server stops the node at start. See ``docs/storage.md``,
"PostgreSQL profile".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from .._core._metrics import NO_METRICS, Metrics
from .._core._supervisor import Supervisor, open_supervisor
from ._backup_manifest import BackupManifest
from ._config import StorageConfig
from ._errors import StorageError
from ._kv import KeyValueStore
from ._namespace import check_agent_namespace, check_internal_namespace
from ._namespace_actors import NamespaceActors
from ._postgres_actor import PostgresStorageActor
from ._postgres_backend import PostgresDatabase

__all__ = ["PostgresStorageProvider", "open_postgres_storage"]

M = TypeVar("M")


@asynccontextmanager
async def open_postgres_storage(
    config: StorageConfig,
    *,
    clock: Callable[[], float] = time.time,
    purge_interval: float = 60.0,
    supervisor: Supervisor | None = None,
    metrics: Metrics = NO_METRICS,
) -> AsyncIterator[PostgresStorageProvider]:
    """Run a :class:`PostgresStorageProvider` for the duration of the block."""
    assert config.postgres_dsn is not None and config.master_key is not None
    database = PostgresDatabase(config.postgres_dsn, config.master_key, config.dedupe)
    await trio.to_thread.run_sync(database.open)
    try:
        async with AsyncExitStack() as stack:
            if supervisor is None:
                supervisor = await stack.enter_async_context(open_supervisor())
                metrics.add_source(supervisor.samples)
                stack.callback(metrics.remove_source, supervisor.samples)
            provider = PostgresStorageProvider(config, database, supervisor, clock, metrics)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(provider._actors.purge_loop, purge_interval)
                    try:
                        yield provider
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await provider._actors.close()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(database.close)


class PostgresStorageProvider:
    """The ``postgres`` profile; see the module docstring."""

    def __init__(
        self,
        config: StorageConfig,
        database: PostgresDatabase,
        supervisor: Supervisor,
        clock: Callable[[], float],
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.config = config
        self._database = database
        self._clock = clock
        self._actors = NamespaceActors(
            supervisor,
            lambda namespace: PostgresStorageActor(
                namespace,
                lambda: database.backend(namespace),
                clock,
                blocking=True,
                metrics=metrics,
            ),
        )

    def __repr__(self) -> str:
        return f"<PostgresStorageProvider {self._database.where}>"

    async def get_kv_store(self, model: type[M], namespace: str) -> KeyValueStore[M]:
        """A store of ``model`` records in the agent namespace ``namespace``."""
        ref = await self._actors.ref(check_agent_namespace(namespace))
        return KeyValueStore(model, namespace, ref, self._clock)

    async def get_internal_kv_store(self, model: type[M], namespace: str) -> KeyValueStore[M]:
        """A store in one of the node's reserved ``__`` namespaces."""
        ref = await self._actors.ref(check_internal_namespace(namespace))
        return KeyValueStore(model, namespace, ref, self._clock)

    async def backup(self, destination: Path) -> BackupManifest:
        """Not offered: the database is the server's to back up (``pg_dump``, base backups)."""
        raise StorageError(
            f"the postgres profile keeps no files of its own to back up: back up"
            f" {self._database.where} with PostgreSQL's tools (pg_dump, pg_basebackup);"
            " its records stay sealed with the master key"
        )

    async def purge_expired(self) -> int:
        """Remove expired records from every open namespace now; return how many."""
        return await self._actors.purge_expired()
