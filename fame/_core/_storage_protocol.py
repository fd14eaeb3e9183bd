"""What agents and nodes need from storage, as types only.

The node hands every agent a :class:`StorageProvider`; the agent opens
key-value stores by namespace through it. These protocols live in the
core so that the agents layer can name them without importing the storage
layer: ``fame._storage`` implements them (``KeyValueStore``,
``Versioned``, the built-in provider) and re-exports
:class:`StorageProvider`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["KeyValueStoreLike", "StorageProvider", "VersionedLike"]

M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class VersionedLike(Protocol[M_co]):
    """A value with its version, for ``set(..., if_version=version)``."""

    @property
    def value(self) -> M_co: ...

    @property
    def version(self) -> int: ...


class KeyValueStoreLike(Protocol[M]):
    """A namespace of records of one model (``fame.storage.KeyValueStore`` is one).

    Every write takes ``request_id``: a retry of a write with the same id is
    not applied again and returns the first write's answer (within the
    store's window; see docs/storage.md, "Deduplicated writes").
    """

    async def set(
        self,
        key: str,
        value: M,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        request_id: str | None = None,
    ) -> int: ...

    async def set_versioned(
        self,
        key: str,
        value: M,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        request_id: str | None = None,
    ) -> VersionedLike[M]: ...

    async def get(self, key: str) -> M | None: ...

    async def delete(self, key: str, *, request_id: str | None = None) -> bool: ...

    async def list(self) -> dict[str, M]: ...

    async def update(
        self, key: str, value: M, *, ttl: float | None = None, request_id: str | None = None
    ) -> int: ...

    async def get_versioned(self, key: str) -> VersionedLike[M] | None: ...

    async def set_many(
        self,
        items: Mapping[str, M] | Iterable[tuple[str, M]],
        *,
        ttl: float | None = None,
        request_id: str | None = None,
    ) -> None: ...

    async def get_many(self, keys: Iterable[str]) -> dict[str, M]: ...

    async def delete_many(self, keys: Iterable[str], *, request_id: str | None = None) -> int: ...

    async def count(self) -> int: ...

    def keys(self, prefix: str = "") -> AsyncIterator[str]: ...

    def scan(
        self, prefix: str = "", *, limit: int | None = None, after: str | None = None
    ) -> AsyncIterator[tuple[str, M]]: ...


@runtime_checkable
class StorageProvider(Protocol):
    """What the node and its agents need from a storage provider.

    ``get_kv_store`` serves agents and must refuse reserved (``__``) and
    malformed namespaces with ``InvalidNamespace``;
    ``get_internal_kv_store`` serves the node's own ``__`` namespaces. Both
    return an object with the methods of ``KeyValueStore``. The provider
    releases everything when its context manager exits.
    """

    async def get_kv_store(self, model: type[M], namespace: str) -> KeyValueStoreLike[M]: ...

    async def get_internal_kv_store(
        self, model: type[M], namespace: str
    ) -> KeyValueStoreLike[M]: ...
