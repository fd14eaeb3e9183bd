"""Who may attach: enrolled nodes and client credentials, as plain values.

A *node* is admitted by its public key: the operator enrolls it
(``fame enroll``), and the sentinel keeps an :class:`Enrollment` per node
id in its ``__keystore`` (key ``enroll:<node id>``). A *client* is
admitted by a :class:`ClientCredential`, a named secret it proves it knows
without sending it (:func:`token_proof`). Both may hold several keys or
secrets at once, each with an optional end (``not_after``, Unix time):
that is how a rotation keeps the old one working for a grace period, then
refuses it.

Pure values and functions, no IO: the sentinel's state machine
(``_attach``) decides with them, the fabric stores them
(``fame._fabric.sentinel._registry``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

__all__ = [
    "CLIENT",
    "ENROLL_PREFIX",
    "NODE",
    "ClientCredential",
    "EnrolledKey",
    "Enrollment",
    "decode_enrollment",
    "encode_enrollment",
    "format_public_key",
    "matching_credential",
    "parse_public_key",
    "token_proof",
]

_KEY_PREFIX = "ed25519:"


def format_public_key(raw: bytes) -> str:
    """A public key as text for conf/ files and the CLI: ``ed25519:`` and base64url."""
    return _KEY_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_public_key(text: str) -> bytes:
    """The raw key of :func:`format_public_key`'s text; ValueError saying why if it is not one."""
    text = text.strip()
    if not text.startswith(_KEY_PREFIX):
        raise ValueError(f"a public key starts with {_KEY_PREFIX!r} (got {text[:20]!r})")
    body = text[len(_KEY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("a public key is base64url text after 'ed25519:'") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return raw


NODE = "node"
"""The role of a peer admitted by its enrolled key."""

CLIENT = "client"
"""The role of a peer admitted by a client credential: ephemeral, it binds nothing."""

ENROLL_PREFIX = "enroll:"
"""Key prefix of enrollments in the sentinel's ``__keystore``."""


class EnrolledKey(msgspec.Struct, array_like=True, frozen=True):
    """One public key a node may attach with, until ``not_after`` (None: no end)."""

    public_key: bytes
    not_after: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.not_after is None or now < self.not_after


class Enrollment(msgspec.Struct, array_like=True, frozen=True):
    """A node the operator admitted: its id, a name for policies and logs, its keys.

    ``name`` is what the authorization policy calls it (``node:<name>``).
    """

    node_id: str
    name: str
    keys: tuple[EnrolledKey, ...]
    enrolled_at: float = 0.0

    def admits(self, public_key: bytes, now: float) -> bool:
        """Whether ``public_key`` is one of this node's keys still valid at ``now``."""
        return any(
            hmac.compare_digest(k.public_key, public_key) and k.valid_at(now) for k in self.keys
        )

    def with_key(self, public_key: bytes, *, old_until: float | None = None) -> Enrollment:
        """This enrollment with ``public_key`` added; the other keys end at ``old_until``.

        ``old_until`` None keeps them as they are (no rotation, just one more key).
        A key that already ends earlier keeps its end: a rotation never revives one.
        """
        kept = tuple(
            EnrolledKey(k.public_key, _earlier(k.not_after, old_until))
            for k in self.keys
            if k.public_key != public_key
        )
        return msgspec.structs.replace(self, keys=(*kept, EnrolledKey(public_key)))


def _earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two ends, None meaning no end."""
    if a is None:
        return b
    return a if b is None else min(a, b)


_enrollment_encoder = msgspec.msgpack.Encoder()
_enrollment_decoder = msgspec.msgpack.Decoder(Enrollment)


def encode_enrollment(enrollment: Enrollment) -> bytes:
    return _enrollment_encoder.encode(enrollment)


def decode_enrollment(data: bytes) -> Enrollment:
    """An enrollment as stored; raises ``msgspec.DecodeError`` if it is not one."""
    return _enrollment_decoder.decode(data)


class ClientCredential(msgspec.Struct, frozen=True):
    """A named client secret, valid until ``not_after`` (None: no end).

    ``name`` is what the authorization policy calls its holders
    (``client:<name>``). The secret never travels: a client proves it
    knows it with :func:`token_proof`.
    """

    name: str
    token: str
    not_after: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.not_after is None or now < self.not_after

    def __repr__(self) -> str:
        # Never the secret: credentials end up in logs and tracebacks.
        return f"ClientCredential(name={self.name!r}, not_after={self.not_after!r})"


def token_proof(token: str, payload: bytes) -> bytes:
    """HMAC-SHA256 of ``payload`` keyed by ``token``: proves the token, reveals nothing of it."""
    return hmac.new(token.encode(), payload, hashlib.sha256).digest()


def matching_credential(
    credentials: tuple[ClientCredential, ...], proof: bytes, payload: bytes, now: float
) -> ClientCredential | None:
    """The credential valid at ``now`` whose token made ``proof`` over ``payload``, or None.

    Every credential is checked, in constant time each, so the timing
    says nothing about which one (if any) matched.
    """
    found = None
    for credential in credentials:
        expected = token_proof(credential.token, payload)
        if hmac.compare_digest(expected, proof) and credential.valid_at(now) and found is None:
            found = credential
    return found
