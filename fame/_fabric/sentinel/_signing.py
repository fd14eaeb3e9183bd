"""The sentinel's signing keys: what proves to nodes and clients that it is the sentinel.

The sentinel signs every challenge with each of its keys that has not
ended; nodes and clients trust the public keys listed in their sentinel
keys file (``conf/sentinel.keys``, written by ``fame init``). A rotation
adds a new key and gives the old ones an end: until then the sentinel
signs with both, so nodes that know either key keep attaching, and the
operator has the grace period to hand out the new list.

The keys live in the sentinel's ``__keystore`` (key ``signing``), a
msgpack list of ``[private key, not_after]``, encrypted like every store.
"""

from __future__ import annotations

import msgspec

from ..._core._storage_protocol import StorageProvider
from ..._protocol._identity import Identity
from .._identity import KEYSTORE, NodeStores

__all__ = [
    "SIGNING_KEY",
    "SigningKey",
    "load_or_create_signing_keys",
    "rotate_sentinel_key",
    "rotate_signing_key",
    "sentinel_public_keys",
]

SIGNING_KEY = "signing"


class SigningKey(msgspec.Struct, array_like=True, frozen=True):
    """One Ed25519 private key of the sentinel, valid until ``not_after`` (None: no end)."""

    private_key: bytes
    not_after: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.not_after is None or now < self.not_after

    def signer(self, sentinel_id: str) -> Identity:
        return Identity.from_private_bytes(sentinel_id, self.private_key)

    @property
    def public_key(self) -> bytes:
        return self.signer("").public_key


_decoder = msgspec.msgpack.Decoder(list[SigningKey])
_encoder = msgspec.msgpack.Encoder()


async def _load(stores: NodeStores) -> list[SigningKey]:
    raw = await stores.get(KEYSTORE, SIGNING_KEY)
    return [] if raw is None else _decoder.decode(raw)


async def load_or_create_signing_keys(stores: NodeStores, now: float) -> list[SigningKey]:
    """The keys valid at ``now``; the first key is made (and stored) on first use.

    Keys that have ended are dropped from the store: they sign nothing any more.
    """
    keys = await _load(stores)
    valid = [k for k in keys if k.valid_at(now)]
    if not valid:
        valid = [SigningKey(Identity.generate().private_bytes())]
    if valid != keys:
        await stores.set(KEYSTORE, SIGNING_KEY, _encoder.encode(valid))
    return valid


async def rotate_signing_key(stores: NodeStores, *, grace: float, now: float) -> list[SigningKey]:
    """Add a new key; the current ones end ``grace`` seconds from ``now``. Returns all valid keys.

    The new key comes last: during the grace period the sentinel signs
    with every key, and after it with the new one only.
    """
    current = await load_or_create_signing_keys(stores, now)
    end = now + grace
    ending = [SigningKey(k.private_key, min(k.not_after or end, end)) for k in current]
    keys = [*ending, SigningKey(Identity.generate().private_bytes())]
    await stores.set(KEYSTORE, SIGNING_KEY, _encoder.encode(keys))
    return [k for k in keys if k.valid_at(now)]


async def sentinel_public_keys(storage_provider: StorageProvider, now: float) -> list[bytes]:
    """The public keys a sentinel with ``storage_provider`` signs with at ``now``.

    Made on first use, like the sentinel's own start does, so that
    ``fame init`` can publish them (``conf/sentinel.keys``) before the
    sentinel ever ran.
    """
    keys = await load_or_create_signing_keys(NodeStores(storage_provider), now)
    return [k.public_key for k in keys]


async def rotate_sentinel_key(
    storage_provider: StorageProvider, *, grace: float, now: float
) -> list[bytes]:
    """:func:`rotate_signing_key` on a stopped sentinel's stores; the valid public keys."""
    keys = await rotate_signing_key(NodeStores(storage_provider), grace=grace, now=now)
    return [k.public_key for k in keys]
