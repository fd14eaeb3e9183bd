"""Where a node keeps its identity: its own stores, through the storage provider.

The id lives in ``__node_meta`` and the private key in ``__keystore``;
both are created on first use and read back on every later start.
:class:`NodeStores` is the narrow view of the storage provider that the
fabric needs (bytes in internal ``__`` namespaces). Ephemeral nodes
(clients) make a fresh identity and persist nothing. The identity itself
(keys, signatures) is pure and lives in ``fame._protocol._identity``.
"""

from __future__ import annotations

from typing import Any

from .._core._storage_protocol import StorageProvider
from .._protocol._identity import Identity

__all__ = [
    "BINDING_STORE",
    "KEYSTORE",
    "NODE_META",
    "ROUTE_STORE",
    "NodeStores",
    "load_or_create_identity",
    "rotate_node_key",
]

NODE_META = "__node_meta"
KEYSTORE = "__keystore"
BINDING_STORE = "__binding_store"
ROUTE_STORE = "__route_store"


class NodeStores:
    """Bytes in the node's internal ``__`` namespaces, through its storage provider.

    The provider gives typed ``KeyValueStore`` s; the fabric stores raw
    ``bytes`` values (msgpack or key material) under string keys. Without a
    provider (an ephemeral client) the values live in this object only.
    """

    def __init__(self, provider: StorageProvider | None = None) -> None:
        self._stores: dict[str, Any] = {}
        self._memory: dict[str, dict[str, bytes]] = {}
        self.persistent = False
        self.provider = provider
        if provider is not None:
            self._accessor = provider.get_internal_kv_store
            self.persistent = True

    async def _store(self, namespace: str) -> Any:
        store = self._stores.get(namespace)
        if store is None:
            store = await self._accessor(bytes, namespace)
            self._stores[namespace] = store
        return store

    async def get(self, namespace: str, key: str) -> bytes | None:
        if not self.persistent:
            return self._memory.get(namespace, {}).get(key)
        value = await (await self._store(namespace)).get(key)
        return None if value is None else bytes(value)

    async def set(self, namespace: str, key: str, value: bytes) -> None:
        """Keep ``value`` under ``key``; a value already there is not written again.

        A restarting node sets what it set before (its bindings): skipping
        the unchanged ones keeps the start free of writes, so a node whose
        disk is full still starts and serves reads.
        """
        if not self.persistent:
            self._memory.setdefault(namespace, {})[key] = value
            return
        store = await self._store(namespace)
        current = await store.get(key)
        if current is not None and bytes(current) == value:
            return
        await store.set(key, value)

    async def delete(self, namespace: str, key: str) -> None:
        if not self.persistent:
            self._memory.get(namespace, {}).pop(key, None)
            return
        await (await self._store(namespace)).delete(key)

    async def items(self, namespace: str) -> dict[str, bytes]:
        if not self.persistent:
            return dict(self._memory.get(namespace, {}))
        found = await (await self._store(namespace)).list()
        return {k: bytes(v) for k, v in found.items()}


async def load_or_create_identity(stores: NodeStores) -> Identity:
    """The node's identity from ``__node_meta`` / ``__keystore``, made on first start."""
    node_id_raw = await stores.get(NODE_META, "node_id")
    key_raw = await stores.get(KEYSTORE, "ed25519")
    if node_id_raw is not None and key_raw is not None:
        return Identity.from_private_bytes(node_id_raw.decode(), key_raw)
    identity = Identity.generate(node_id_raw.decode() if node_id_raw else None)
    # Key first: a node id without its key could never attach again.
    await stores.set(KEYSTORE, "ed25519", identity.private_bytes())
    await stores.set(NODE_META, "node_id", identity.node_id.encode())
    return identity


async def rotate_node_key(stores: NodeStores) -> Identity:
    """Give the node a new key (same id) in its stores; the new identity.

    Enroll the new public key at the sentinel first (with a grace period
    for the old one), then restart the node: it attaches with the new key.
    """
    current = await load_or_create_identity(stores)
    fresh = Identity.generate(current.node_id)
    await stores.set(KEYSTORE, "ed25519", fresh.private_bytes())
    return fresh
