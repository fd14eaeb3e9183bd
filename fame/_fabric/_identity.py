"""A node's identity: a stable node id and an Ed25519 key pair, kept in its own stores.

The sentinel pins a node id to the public key it first attached with, so
the private key is what makes a node *that* node: another process that
knows the admission token still cannot take over its id or its addresses.
The id lives in ``__node_meta`` and the private key in ``__keystore``;
both are created on first use and read back on every later start.

:class:`NodeStores` is the narrow view of the storage provider that the
fabric needs (bytes in internal ``__`` namespaces). Ephemeral nodes
(clients) make a fresh identity and persist nothing.
"""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["Identity", "NodeStores", "load_or_create_identity", "verify_signature"]

NODE_META = "__node_meta"
KEYSTORE = "__keystore"
BINDING_STORE = "__binding_store"
ROUTE_STORE = "__route_store"


class Identity:
    """A node id and its Ed25519 private key."""

    __slots__ = ("_key", "node_id", "public_key")

    def __init__(self, node_id: str, key: Ed25519PrivateKey) -> None:
        self.node_id = node_id
        self._key = key
        self.public_key = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls, node_id: str | None = None) -> Identity:
        """A fresh identity; the id is ``n`` + 20 hex digits (a valid path label)."""
        return cls(node_id or new_node_id(), Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, node_id: str, raw: bytes) -> Identity:
        return cls(node_id, Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)

    def __repr__(self) -> str:
        return f"<Identity {self.node_id}>"


def new_node_id() -> str:
    return "n" + secrets.token_hex(10)


def verify_signature(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``payload``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class NodeStores:
    """Bytes in the node's internal ``__`` namespaces, through its storage provider.

    The provider gives typed ``KeyValueStore`` s; the fabric stores raw
    ``bytes`` values (msgpack or key material) under string keys. Without a
    provider (an ephemeral client) the values live in this object only.
    """

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider
        self._stores: dict[str, Any] = {}
        self._memory: dict[str, dict[str, bytes]] = {}
        self.persistent = False
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
        if not self.persistent:
            self._memory.setdefault(namespace, {})[key] = value
            return
        await (await self._store(namespace)).set(key, value)

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
