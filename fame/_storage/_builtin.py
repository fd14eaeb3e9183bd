"""The built-in provider: the ``memory``, ``sqlite`` and ``encrypted-sqlite`` profiles.

One :class:`StorageActor` per namespace, spawned on first use. When the
provider opens, it creates the directory and probes every existing file of
its profile (see ``_probe``), so a wrong master key stops the node at start
instead of at the first read. Files keyed by the first, unsalted scheme are
re-encrypted under the salted one first (``_rekey``). A damaged file does not: it is reported with
:class:`DamagedDatabase` when its namespace is opened, and the node's other
namespaces keep working.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from .._core._metrics import NO_METRICS, Metrics
from .._core._supervisor import Supervisor, open_supervisor
from ._config import StorageConfig, prepare_directory
from ._errors import DamagedDatabase, StorageError, WrongMasterKey
from ._keys import file_key
from ._kv import KeyValueStore
from ._memory import MemoryBackend
from ._namespace import (
    ENCRYPTED_SUFFIX,
    PLAIN_SUFFIX,
    check_agent_namespace,
    check_internal_namespace,
    database_path,
    namespace_files,
)
from ._namespace_actors import NamespaceActors
from ._ops import Backend, Backup
from ._probe import KeyCheck, probe_encrypted, probe_plain
from ._rekey import migrate_legacy_files
from ._sqlcipher_backend import open_sqlite
from ._storage_actor import StorageActor

if TYPE_CHECKING:
    from ._backup_manifest import BackupManifest

__all__ = ["BuiltinStorageProvider", "open_builtin_storage"]

M = TypeVar("M")


@asynccontextmanager
async def open_builtin_storage(
    config: StorageConfig,
    *,
    clock: Callable[[], float] = time.time,
    purge_interval: float = 60.0,
    supervisor: Supervisor | None = None,
    metrics: Metrics = NO_METRICS,
) -> AsyncIterator[BuiltinStorageProvider]:
    """Run a :class:`BuiltinStorageProvider` for the duration of the block."""
    async with AsyncExitStack() as stack:
        if supervisor is None:
            supervisor = await stack.enter_async_context(open_supervisor())
            # Its storage actors' mailboxes; a supervisor given is its owner's to sample.
            metrics.add_source(supervisor.samples)
            stack.callback(metrics.remove_source, supervisor.samples)
        provider = BuiltinStorageProvider(config, supervisor, clock, metrics)
        await provider._check_directory()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(provider._actors.purge_loop, purge_interval)
                try:
                    yield provider
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            # Outside the cancelled purge nursery, so closing neither raises
            # Cancelled over the block's own exception nor stops half-way.
            with trio.CancelScope(shield=True):
                await provider._actors.close()


def _create_private(path: Path) -> None:
    """Create a new database file readable by its owner only (SQLite would use 0644).

    SQLite gives the ``-wal`` file the mode of the database file, so it is
    private too. ``fchmod`` makes the mode exactly 0600 whatever the umask.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class BuiltinStorageProvider:
    """The ``memory``, ``sqlite`` and ``encrypted-sqlite`` profiles.

    One :class:`StorageActor` per namespace, spawned on first use; the
    actor opens (or creates) the namespace's file and owns it until the
    provider closes.
    """

    def __init__(
        self,
        config: StorageConfig,
        supervisor: Supervisor,
        clock: Callable[[], float],
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.config = config
        self._clock = clock
        self._encrypted = config.profile == "encrypted-sqlite"
        self._directory: Path | None = None
        self._memory: dict[str, MemoryBackend] = {}
        self._key_confirmed = False
        self._actors = NamespaceActors(
            supervisor,
            lambda namespace: StorageActor(
                namespace,
                lambda: self._open_backend(namespace),
                self._clock,
                blocking=config.profile != "memory",
                metrics=metrics,
            ),
        )

    def __repr__(self) -> str:
        where = f" {self._directory}" if self._directory else ""
        return f"<BuiltinStorageProvider {self.config.profile}{where}>"

    async def get_kv_store(self, model: type[M], namespace: str) -> KeyValueStore[M]:
        """A store of ``model`` records in the agent namespace ``namespace``."""
        ref = await self._actors.ref(check_agent_namespace(namespace))
        return KeyValueStore(model, namespace, ref, self._clock)

    async def get_internal_kv_store(self, model: type[M], namespace: str) -> KeyValueStore[M]:
        """A store in one of the node's reserved ``__`` namespaces."""
        ref = await self._actors.ref(check_internal_namespace(namespace))
        return KeyValueStore(model, namespace, ref, self._clock)

    async def backup(self, destination: Path) -> BackupManifest:
        """Back up every database file of the directory into the new directory ``destination``.

        Each file is copied by the storage actor that owns it (opened now if
        no agent opened it yet), as committed when its turn comes; the
        manifest is written last (see ``_backup``). Raises
        :class:`BackupRefused` if ``destination`` exists and is not empty.
        """
        # Imported here: a backup is an operator's rare request, and the
        # manifest and integrity code it needs would cost every service memory.
        from ._backup import begin_backup, finish_backup
        from ._backup_manifest import BackupManifest

        directory = self._directory
        if directory is None:
            raise StorageError("the memory profile keeps no files to back up")
        partial = await trio.to_thread.run_sync(begin_backup, destination)
        found = await trio.to_thread.run_sync(
            functools.partial(namespace_files, directory, encrypted=self._encrypted)
        )
        copies = []
        for namespace, _path in found:
            ref = await self._actors.ref(namespace)
            copies.append(await ref.ask(Backup(str(partial)), timeout=None))
        manifest = BackupManifest(self._clock(), self.config.profile, tuple(copies))
        await trio.to_thread.run_sync(finish_backup, partial, destination, manifest)
        return manifest

    async def purge_expired(self) -> int:
        """Remove expired records from every open namespace now; return how many."""
        return await self._actors.purge_expired()

    # -- opening ----------------------------------------------------------

    async def _check_directory(self) -> None:
        """Create the directory, then check every existing file against the profile and key.

        This is where a wrong master key shows: no page of any file
        authenticates with it. A file that fails while another verifies
        is damaged instead.
        """
        if self.config.profile == "memory":
            return
        assert self.config.directory is not None
        self._directory = await trio.to_thread.run_sync(prepare_directory, self.config.directory)
        await trio.to_thread.run_sync(self._probe_all)

    def _probe_all(self) -> None:
        assert self._directory is not None
        directory = self._directory
        suffix = ENCRYPTED_SUFFIX if self._encrypted else PLAIN_SUFFIX
        files = sorted(p for p in directory.iterdir() if p.name.endswith(suffix))
        # A damaged file is skipped here and reported when its namespace is
        # opened (``_open_backend`` probes again): one damaged namespace must
        # not keep the node, and its other namespaces, from starting. A wrong
        # key or a file of the other profile is a configuration error and
        # stops the start.
        if not self._encrypted:
            for path in files:
                with contextlib.suppress(DamagedDatabase):
                    probe_plain(path)
            return
        # Files written before per-file salts get them now, before any is used
        # (crash-safe: see ``_rekey``); a leftover copy of a killed run goes.
        assert self.config.master_key is not None
        migrate_legacy_files(directory, self.config.master_key)
        # Probe every file before judging any: a later file that verifies shows
        # that an earlier failure is damage, not a wrong key.
        unverified = []
        for path in files:
            with contextlib.suppress(DamagedDatabase):
                if self._unverified(path, self._file_key(path.name)):
                    unverified.append(path)
        if unverified and not self._key_confirmed:
            raise WrongMasterKey(str(directory), unverified[0].name)

    def _unverified(self, path: Path, key: bytes) -> bool:
        """Probe an encrypted file; True if no page authenticates with ``key``."""
        check = probe_encrypted(path, key)
        if check is KeyCheck.VERIFIED:
            self._key_confirmed = True
        return check is KeyCheck.NO_PAGE_VERIFIES

    def _raise_unverified(self, path: Path) -> None:
        assert self._directory is not None
        if self._key_confirmed:
            raise DamagedDatabase(
                str(path),
                "no page authenticates with the master key, which does open other files"
                " in the directory",
            )
        raise WrongMasterKey(str(self._directory), path.name)

    def _file_key(self, file_name: str) -> bytes:
        assert self.config.master_key is not None and self._directory is not None
        return file_key(self.config.master_key, self._directory / file_name)

    def _open_backend(self, namespace: str) -> Backend:
        """Open the backend of ``namespace``; blocking for file profiles."""
        if self.config.profile == "memory":
            backend = self._memory.get(namespace)
            if backend is None:
                backend = self._memory[namespace] = MemoryBackend(namespace, self.config.dedupe)
            return backend
        assert self._directory is not None
        path = database_path(self._directory, namespace, encrypted=self._encrypted)
        key = None
        if self._encrypted:
            key = self._file_key(path.name)
            if self._unverified(path, key):
                self._raise_unverified(path)
        else:
            probe_plain(path)
        _create_private(path)
        return open_sqlite(
            path,
            namespace,
            key,
            durability=self.config.durability,
            max_file_bytes=self.config.max_file_bytes,
            dedupe=self.config.dedupe,
            wal_checkpoint_bytes=self.config.wal_checkpoint_bytes,
        )
