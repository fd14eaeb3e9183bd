"""The node's end of the attach handshake, as a state machine (see the package docstring)."""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn

from .._core._errors import AdmissionRefused, ProtocolError, ProtocolMismatch, UntrustedSentinel
from .._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Challenge,
    Refused,
    Welcome,
    attach_proof_payload,
    challenge_payload,
    peek_version,
)
from ._credentials import CLIENT, NODE, token_proof
from ._identity import Identity, verify_signature

__all__ = ["MAX_CHALLENGE_KEYS", "NodeHandshake", "node_version_mismatch"]

MAX_CHALLENGE_KEYS = 16
"""The most signed keys of a challenge a node looks at.

A sentinel signs with one key, two or three during a rotation. A server
that lists a trusted key thousands of times, each with a bad signature,
would otherwise make the node verify them all: each trusted key is tried
once, among the first 16 pairs only.
"""


def node_version_mismatch(theirs: int) -> ProtocolMismatch:
    """The node's error for a sentinel that speaks protocol ``theirs``."""
    return ProtocolMismatch(
        f"protocol version mismatch: the sentinel speaks fame protocol version {theirs},"
        f" this node speaks version {PROTOCOL_VERSION}",
        ours=PROTOCOL_VERSION,
        theirs=theirs,
    )


class NodeHandshake:
    """The node's end of the attach handshake.

    :meth:`receive` takes the sentinel's frames: a ``Challenge`` gives the
    ``Attach`` to send, a ``Welcome`` sets :attr:`path`, a ``Refused``
    raises :class:`fame.AdmissionRefused`; anything else before the
    welcome raises :class:`fame.ProtocolError`.

    ``role`` is ``"node"`` or ``"client"``. ``token`` (a client credential)
    never leaves the node: the attach carries an HMAC of the challenge made
    with it. ``sentinel_keys`` are the sentinel public keys this node
    trusts: unless one of them signed the challenge, the node raises
    :class:`fame.errors.UntrustedSentinel` and sends nothing. None trusts
    any sentinel (an explicit choice of the caller, who should say so).
    """

    def __init__(
        self,
        identity: Identity,
        token: str | None,
        *,
        role: str = NODE,
        sentinel_keys: Collection[bytes] | None = None,
    ) -> None:
        self.identity = identity
        self.token = token
        self.role = role
        self.ephemeral = role == CLIENT
        self.sentinel_keys = None if sentinel_keys is None else frozenset(sentinel_keys)
        self.state = "waiting"
        self.path: str | None = None
        self.heartbeat_ms = 5000
        self.sentinel_key: bytes | None = None  # the trusted key that signed, once checked

    @property
    def attached(self) -> bool:
        return self.state == "attached"

    def _check_sentinel(self, challenge: Challenge) -> None:
        trusted = self.sentinel_keys
        if trusted is None:
            return
        payload = challenge_payload(challenge.nonce, challenge.sentinel_id, challenge.version)
        tried: set[bytes] = set()
        pairs = zip(challenge.keys, challenge.signatures, strict=False)
        for key, signature in list(pairs)[:MAX_CHALLENGE_KEYS]:
            if key in trusted and key not in tried:
                tried.add(key)
                if verify_signature(key, signature, payload):
                    self.sentinel_key = key
                    return
        self.state = "refused"
        raise UntrustedSentinel(
            "the sentinel did not prove it holds a trusted key: none of its"
            f" {len(challenge.keys)} signed key(s) is among the {len(trusted)} this node trusts;"
            " nothing was sent (check the sentinel keys file, e.g. conf/sentinel.keys)",
            offered=tuple(challenge.keys[:8]),
        )

    def receive(self, frame: object) -> Attach | None:
        match frame:
            case Refused(reason=reason):
                self.state = "refused"
                raise AdmissionRefused(reason)
            case Challenge(nonce=nonce, sentinel_id=sentinel_id) if self.state == "waiting":
                if frame.version != PROTOCOL_VERSION:
                    # Refuse before sending anything: nothing goes to a sentinel
                    # that might read the attach another way.
                    self.state = "refused"
                    raise node_version_mismatch(frame.version)
                self._check_sentinel(frame)
                ident = self.identity
                payload = attach_proof_payload(
                    nonce, sentinel_id, ident.node_id, self.role, ident.public_key
                )
                proof = token_proof(self.token, payload) if self.token else b""
                self.state = "challenged"
                return Attach(
                    ident.node_id,
                    ident.public_key,
                    proof,
                    ident.sign(payload),
                    self.role,
                    PROTOCOL_VERSION,
                )
            case Welcome() if self.state == "challenged":
                if frame.node_id != self.identity.node_id:
                    raise ProtocolError("the sentinel welcomed another node id")
                self.state = "attached"
                self.path = frame.path
                self.heartbeat_ms = frame.heartbeat_ms
                return None
        raise ProtocolError(f"unexpected {type(frame).__name__} during the attach handshake")

    def undecodable(self, data: bytes, reason: str) -> NoReturn:
        """A message from the sentinel did not decode (``reason`` says why): raise.

        A challenge of another protocol version may have another shape; it
        raises :class:`fame.errors.ProtocolMismatch` naming both versions,
        anything else :class:`fame.ProtocolError`.
        """
        if self.state == "waiting":
            version = peek_version(data, "challenge")
            if version is not None and version != PROTOCOL_VERSION:
                self.state = "refused"
                raise node_version_mismatch(version)
        raise ProtocolError(f"bad frame from the sentinel: {reason}")
