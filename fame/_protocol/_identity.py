"""A node's identity: a node id and the Ed25519 key pair that proves it.

Pure functions and values, no IO: the attach protocol signs and checks
with them (``_attach``), and the fabric keeps the key in the node's own
stores (``fame._fabric._identity``). The sentinel pins a node id to the
public key it first attached with, so the private key is what makes a node
*that* node: another process that knows the admission token still cannot
take over its id or its addresses.
"""

from __future__ import annotations

import re
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = ["Identity", "looks_like_node_id", "new_node_id", "verify_signature"]

_NODE_ID_RE = re.compile(r"n[0-9a-f]{20}")


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
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)

    def __repr__(self) -> str:
        return f"<Identity {self.node_id}>"


def new_node_id() -> str:
    """A fresh node id: ``n`` and 20 hex digits, a valid path label."""
    return "n" + secrets.token_hex(10)


def looks_like_node_id(label: str) -> bool:
    """Whether ``label`` has the shape of a generated node id (``n`` and 20 hex digits)."""
    return _NODE_ID_RE.fullmatch(label) is not None


def verify_signature(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``payload``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
