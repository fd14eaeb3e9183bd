"""Records sealed by fame before a database server sees them (the ``postgres`` profile).

The server stores and indexes bytes it cannot read. For each namespace,
three 256-bit keys are derived from the master key with HKDF-SHA256, salted
with the database's own random salt (kept in clear in its ``fame_meta``
table, so two databases never share keys)::

    ns_id     = HMAC-SHA256(HKDF(master, salt, "fame/kv-pg/v1/namespace-id"), namespace)
    seal_key  = HKDF(master, salt, "fame/kv-pg/v1/seal/" + namespace)
    hash_key  = HKDF(master, salt, "fame/kv-pg/v1/hash/" + namespace)

* ``ns_id`` is the namespace as the server sees it: a keyed hash, never its name;
* a record key is looked up by ``HMAC-SHA256(hash_key, key)`` and stored
  beside ``seal(key)`` so that fame can list keys;
* a value is sealed with its namespace, key and version as associated data:
  the server cannot move a value to another key or namespace, nor give it
  another version, without the open failing;
* a dedupe record (request id and answer) is stored the same way as a key
  and its value.

A seal is ChaCha20-Poly1305 under ``seal_key`` with a random 96-bit nonce:
``nonce || ciphertext || tag``, 28 bytes more than the plaintext. A random
nonce is safe for about 2**32 seals per key (one namespace).

What the server still sees: how many records a namespace holds, their sizes,
versions and expiry times, when they are written, and which keys are read
(by hash). It can drop or roll back whole records (an older sealed row with
its own version still opens): sealing protects secrecy and binding, not
freshness.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._keys import MasterKey

__all__ = ["SALT_BYTES", "NamespaceSeal", "key_check", "opens_key_check"]

INFO_PREFIX = "fame/kv-pg/v1/"
SALT_BYTES = 16
NONCE_BYTES = 12
_CHECK = b"fame/kv-pg/v1 key check"


class _Unsealable(Exception):
    """A sealed blob that does not open: another key, or bytes changed on the server."""


def _derive(master: MasterKey, salt: bytes, info: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info.encode("utf-8"))
    return hkdf.derive(master._material)


_LENGTH = struct.Struct(">I").pack


def _bound(*parts: bytes) -> bytes:
    """Associated data: the parts, each length-prefixed so no two lists give the same bytes."""
    return b"".join(_LENGTH(len(part)) + part for part in parts)


class NamespaceSeal:
    """The keys of one namespace, and the sealing and hashing of its records."""

    __slots__ = ("_aead", "_hash_key", "_name", "_value_ad", "ns_id")

    def __init__(self, master: MasterKey, salt: bytes, namespace: str) -> None:
        name = namespace.encode("utf-8")
        self._name = name
        self._value_ad = _bound(b"value", name)  # the start of every value's associated data
        id_key = _derive(master, salt, INFO_PREFIX + "namespace-id")
        self.ns_id = hmac.new(id_key, name, hashlib.sha256).digest()
        self._aead = ChaCha20Poly1305(_derive(master, salt, INFO_PREFIX + "seal/" + namespace))
        self._hash_key = _derive(master, salt, INFO_PREFIX + "hash/" + namespace)

    def hash_key(self, key: str) -> bytes:
        """The lookup hash of a record key."""
        return hmac.new(self._hash_key, b"k" + key.encode("utf-8"), hashlib.sha256).digest()

    def hash_request(self, request_id: str) -> bytes:
        """The lookup hash of a write's request id (never equal to a key's)."""
        return hmac.new(self._hash_key, b"r" + request_id.encode("utf-8"), hashlib.sha256).digest()

    def _seal(self, plain: bytes, bound: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, bound)

    def _open(self, sealed: bytes, bound: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound)
        except (InvalidTag, ValueError):
            raise _Unsealable from None

    def seal_key(self, key: str, key_hash: bytes) -> bytes:
        return self._seal(key.encode("utf-8"), _bound(b"key", self._name, key_hash))

    def open_key(self, sealed: bytes, key_hash: bytes) -> str:
        """The key sealed in the row of ``key_hash``: bound to that hash, so moved it fails."""
        return self._open(sealed, _bound(b"key", self._name, key_hash)).decode("utf-8")

    def _value_bound(self, key: str, version: int) -> bytes:
        # _bound(b"value", name, key, version), its constant start computed once.
        encoded, number = key.encode("utf-8"), b"%d" % version
        return b"".join(
            (self._value_ad, _LENGTH(len(encoded)), encoded, _LENGTH(len(number)), number)
        )

    def seal_value(self, key: str, version: int, value: bytes) -> bytes:
        return self._seal(value, self._value_bound(key, version))

    def open_value(self, key: str, version: int, sealed: bytes) -> bytes:
        return self._open(sealed, self._value_bound(key, version))

    def seal_answer(self, request_id: str, answer: bytes) -> bytes:
        return self._seal(answer, _bound(b"answer", self._name, request_id.encode("utf-8")))

    def open_answer(self, request_id: str, sealed: bytes) -> bytes:
        return self._open(sealed, _bound(b"answer", self._name, request_id.encode("utf-8")))


def key_check(master: MasterKey, salt: bytes) -> bytes:
    """A sealed constant that opens with ``master`` only: how a wrong key is told at open."""
    aead = ChaCha20Poly1305(_derive(master, salt, INFO_PREFIX + "key-check"))
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, _CHECK, None)


def opens_key_check(master: MasterKey, salt: bytes, check: bytes) -> bool:
    aead = ChaCha20Poly1305(_derive(master, salt, INFO_PREFIX + "key-check"))
    try:
        return aead.decrypt(check[:NONCE_BYTES], check[NONCE_BYTES:], None) == _CHECK
    except (InvalidTag, ValueError):
        return False
