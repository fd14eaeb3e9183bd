"""The two ends of a fabric link as state machines (see the package docstring)."""

from __future__ import annotations

from collections.abc import MutableMapping
from hmac import compare_digest
from typing import Any, NoReturn

import attrs

from .._core._address import REPLY_NAME, Address, AddressError, is_valid_label
from .._core._errors import AdmissionRefused, ProtocolError, ProtocolMismatch
from .._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Bind,
    BindRefused,
    Bound,
    Challenge,
    LinkError,
    Ping,
    Pong,
    Refused,
    Unbind,
    Welcome,
    attach_proof_payload,
    peek_version,
)
from ._identity import Identity, looks_like_node_id, verify_signature
from ._route_table import RouteTable

__all__ = [
    "Admitted",
    "BindDenied",
    "BindingTracker",
    "NodeHandshake",
    "SentinelLink",
    "SentinelPolicy",
    "node_version_mismatch",
    "reserved",
    "sentinel_version_mismatch",
]

MAX_BIND_PER_FRAME = 1024

RESERVED_PATH_REASON = "its path belongs to another node or to the sentinel"
RESERVED_REPLY_REASON = f"{REPLY_NAME} addresses are routed by their node's path, never bound"


def sentinel_version_mismatch(theirs: int) -> str:
    """The sentinel's one-line refusal of a node that speaks protocol ``theirs``."""
    return (
        f"protocol version mismatch: this sentinel speaks fame protocol version"
        f" {PROTOCOL_VERSION}, the node speaks version {theirs}"
    )


def node_version_mismatch(theirs: int) -> ProtocolMismatch:
    """The node's error for a sentinel that speaks protocol ``theirs``."""
    return ProtocolMismatch(
        f"protocol version mismatch: the sentinel speaks fame protocol version {theirs},"
        f" this node speaks version {PROTOCOL_VERSION}",
        ours=PROTOCOL_VERSION,
        theirs=theirs,
    )


def reserved(address: Address, node_id: str | None, policy: SentinelPolicy) -> str | None:
    """Why node ``node_id`` may not bind ``address``, or None if it may ask for it.

    Reply addresses are routed by their node's path, never bound: a binding
    would beat the path and capture a node's answers. A path under another
    node's path (or the sentinel's) is that node's. So is a path under any
    label shaped like a generated node id: a node not attached now, or not
    yet, owns it too; and the answer is the same whether such a node is
    known or not, so that it reveals nothing.
    """
    if address.name == REPLY_NAME:
        return f"{address} is reserved: {RESERVED_REPLY_REASON}"
    # Node paths are node ids, single labels: a path lies under one when its
    # last label is that id.
    top = address.path.rpartition(".")[2]
    if top == node_id:
        return None
    if (
        top == policy.sentinel_id
        or top in policy.pins
        or policy.routes.path_owner(top) is not None
        or looks_like_node_id(top)
    ):
        return f"{address} is reserved: {RESERVED_PATH_REASON}"
    return None


@attrs.frozen
class Admitted:
    """Event: the sentinel admitted ``node_id`` at ``path``.

    ``new_pin`` is true the first time this id attached: the sentinel then
    persists the pin. Ephemeral nodes (clients) are never pinned.
    """

    node_id: str
    public_key: bytes
    path: str
    ephemeral: bool
    new_pin: bool


@attrs.frozen
class RoutesChanged:
    """Event: bindings of this link changed; persist ``bound`` and forget ``unbound``."""

    bound: tuple[str, ...]
    unbound: tuple[str, ...]


@attrs.frozen
class BindDenied:
    """Event: ``node_id`` asked for ``address`` and was refused, for the sentinel's log.

    The node got ``reason``, which names no other node; ``owner`` is the
    node holding the address (None if it is reserved or malformed).
    """

    node_id: str
    address: str
    reason: str
    owner: str | None = None


@attrs.define
class SentinelPolicy:
    """What the sentinel admits, shared by all its links.

    ``token`` None means open admission (only when configured explicitly).
    ``pins`` maps node id -> public key, updated on first admission.
    """

    sentinel_id: str
    token: str | None
    pins: MutableMapping[str, bytes]
    routes: RouteTable[Any]
    heartbeat_ms: int = 5000


class SentinelLink:
    """The sentinel's end of one link.

    Call :meth:`start` for the challenge, then :meth:`receive` with every
    link frame; each returns the frames to send back. Events (admission,
    route changes) accumulate in :attr:`events`. After too many violations
    :attr:`should_close` turns true: the caller closes the connection.
    """

    def __init__(self, policy: SentinelPolicy, nonce: bytes, *, max_strikes: int = 3) -> None:
        self.policy = policy
        self.nonce = nonce
        self.state = "new"
        self.node_id: str | None = None
        self.path: str | None = None
        self.ephemeral = False
        self.events: list[Admitted | RoutesChanged | BindDenied] = []
        self.strikes = 0
        self.max_strikes = max_strikes

    @property
    def attached(self) -> bool:
        return self.state == "attached"

    @property
    def should_close(self) -> bool:
        return self.state in ("refused", "closed") or self.strikes >= self.max_strikes

    def start(self) -> Challenge:
        if self.state != "new":
            raise RuntimeError("start() called twice")
        self.state = "challenged"
        return Challenge(self.nonce, self.policy.sentinel_id, PROTOCOL_VERSION)

    def violation(self, reason: str) -> LinkError:
        """Count a protocol violation (also for bad bytes the caller saw) and answer it."""
        self.strikes += 1
        return LinkError(reason)

    def undecodable(self, data: bytes, reason: str) -> list[Any]:
        """Answer a message that did not decode (``reason`` says why).

        While the link waits for the attach, an attach of another protocol
        version may have another shape: it is refused, naming both versions.
        Anything else is a violation.
        """
        if self.state == "challenged":
            version = peek_version(data, "attach")
            if version is not None and version != PROTOCOL_VERSION:
                return [self._refuse(sentinel_version_mismatch(version))]
        return [self.violation(reason)]

    def receive(self, frame: object) -> list[Any]:
        if self.state == "challenged":
            if isinstance(frame, Attach):
                return [self._admit(frame)]
            return [self.violation(f"expected attach, got {type(frame).__name__}")]
        if self.state != "attached":
            return [self.violation(f"link is {self.state}")]
        match frame:
            case Ping(nonce=nonce):
                return [Pong(nonce)]
            case Pong():
                return []
            case Bind():
                return self._bind(frame)
            case Unbind():
                return self._unbind(frame)
        return [self.violation(f"unexpected {type(frame).__name__} on an attached link")]

    def _refuse(self, reason: str) -> Refused:
        self.state = "refused"
        return Refused(reason)

    def _admit(self, attach: Attach) -> Welcome | Refused:
        policy = self.policy
        if attach.version != PROTOCOL_VERSION:
            return self._refuse(sentinel_version_mismatch(attach.version))
        # Constant time: how much of a guess matched must not show in the timing.
        if policy.token is not None and not compare_digest(
            attach.token.encode(), policy.token.encode()
        ):
            return self._refuse("wrong admission token")
        if not is_valid_label(attach.node_id):
            return self._refuse(f"invalid node id {attach.node_id[:80]!r}")
        if attach.node_id == policy.sentinel_id:
            return self._refuse("node id is reserved: it is the sentinel's own")
        payload = attach_proof_payload(self.nonce, policy.sentinel_id, attach.node_id)
        if not verify_signature(attach.public_key, attach.signature, payload):
            return self._refuse("bad signature: the attach proof does not verify")
        pinned = policy.pins.get(attach.node_id)
        if pinned is not None and pinned != attach.public_key:
            return self._refuse(
                f"node id {attach.node_id} is pinned to another key; refusing the takeover"
            )
        new_pin = pinned is None and not attach.ephemeral
        if new_pin:
            policy.pins[attach.node_id] = attach.public_key
        self.state = "attached"
        self.node_id = attach.node_id
        self.path = attach.node_id
        self.ephemeral = attach.ephemeral
        self.events.append(
            Admitted(attach.node_id, attach.public_key, self.path, attach.ephemeral, new_pin)
        )
        return Welcome(attach.node_id, self.path, policy.heartbeat_ms)

    def reserved(self, address: Address) -> str | None:
        """Why this link's node may not bind ``address`` (:func:`reserved`), or None."""
        return reserved(address, self.node_id, self.policy)

    def _bind(self, frame: Bind) -> list[Any]:
        assert self.node_id is not None
        if len(frame.addresses) > MAX_BIND_PER_FRAME:
            return [self.violation(f"more than {MAX_BIND_PER_FRAME} addresses in one bind")]
        out: list[Any] = []
        changed: list[str] = []
        for address in frame.addresses:
            try:
                parsed = Address.parse(address)
            except AddressError as exc:
                out.append(BindRefused(address[:300], str(exc)))
                continue
            if self.ephemeral:
                reason = "ephemeral nodes (clients) bind nothing: their replies follow their path"
                out.append(BindRefused(address, reason))
                continue
            reserved = self.reserved(parsed)
            if reserved is not None:
                out.append(BindRefused(address, reserved))
                self.events.append(BindDenied(self.node_id, address, reserved))
                continue
            result = self.policy.routes.bind(address, self.node_id, pool=frame.pool)
            if result.ok:
                out.append(Bound(address))
                if result.changed:
                    changed.append(address)
            else:
                out.append(BindRefused(address, result.reason))
                self.events.append(BindDenied(self.node_id, address, result.reason, result.owner))
        if changed:
            self.events.append(RoutesChanged(tuple(changed), ()))
        return out

    def _unbind(self, frame: Unbind) -> list[Any]:
        assert self.node_id is not None
        removed = tuple(a for a in frame.addresses if self.policy.routes.unbind(a, self.node_id))
        if removed:
            self.events.append(RoutesChanged((), removed))
        return []

    def close(self) -> None:
        self.state = "closed"


class NodeHandshake:
    """The node's end of the attach handshake.

    :meth:`receive` takes the sentinel's frames: a ``Challenge`` gives the
    ``Attach`` to send, a ``Welcome`` sets :attr:`path`, a ``Refused``
    raises :class:`fame.AdmissionRefused`; anything else before the
    welcome raises :class:`fame.ProtocolError`.
    """

    def __init__(self, identity: Identity, token: str, *, ephemeral: bool = False) -> None:
        self.identity = identity
        self.token = token
        self.ephemeral = ephemeral
        self.state = "waiting"
        self.path: str | None = None
        self.heartbeat_ms = 5000

    @property
    def attached(self) -> bool:
        return self.state == "attached"

    def receive(self, frame: object) -> Attach | None:
        match frame:
            case Refused(reason=reason):
                self.state = "refused"
                raise AdmissionRefused(reason)
            case Challenge(nonce=nonce, sentinel_id=sentinel_id) if self.state == "waiting":
                if frame.version != PROTOCOL_VERSION:
                    # Refuse before sending anything: the token goes to no sentinel
                    # that might read the attach another way.
                    self.state = "refused"
                    raise node_version_mismatch(frame.version)
                ident = self.identity
                payload = attach_proof_payload(nonce, sentinel_id, ident.node_id)
                self.state = "challenged"
                return Attach(
                    ident.node_id,
                    ident.public_key,
                    self.token,
                    ident.sign(payload),
                    self.ephemeral,
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


class BindingTracker:
    """The node's view of its bindings: wanted, confirmed, refused, pending.

    Addresses are wanted whether or not the link is up; on every (re)attach
    :meth:`on_attached` gives one ``Bind`` for all of them. ``pending``
    counts the ``Bind`` s per address still waiting for their answer: the
    sentinel answers each one, in order, so after a bind, unbind and bind
    again of one address the first ``Bound`` does not settle the second.
    """

    def __init__(self) -> None:
        self.wanted: set[str] = set()
        self.pools: set[str] = set()  # the wanted addresses bound as pool members
        self.bound: set[str] = set()
        self.refused: dict[str, str] = {}
        self.pending: dict[str, int] = {}
        self.attached = False

    def on_attached(self) -> list[Bind]:
        """The binds to send on a new link: one for exclusive addresses, one for pools."""
        self.attached = True
        self.bound.clear()
        self.refused.clear()
        self.pending = dict.fromkeys(self.wanted, 1)
        alone = sorted(self.wanted - self.pools)
        pooled = sorted(self.wanted & self.pools)
        return [Bind(alone)] * bool(alone) + [Bind(pooled, pool=True)] * bool(pooled)

    def on_detached(self) -> None:
        self.attached = False
        self.pending.clear()
        self.bound.clear()

    def want(self, address: str, *, pool: bool = False) -> Bind | None:
        self.wanted.add(address)
        if pool:
            self.pools.add(address)
        else:
            self.pools.discard(address)
        self.refused.pop(address, None)
        if not self.attached or address in self.bound:
            return None
        self.pending[address] = self.pending.get(address, 0) + 1
        return Bind([address], pool=pool)

    def drop(self, address: str) -> Unbind | None:
        # A Bind still in flight keeps its count: its answer comes all the same.
        self.wanted.discard(address)
        self.pools.discard(address)
        self.bound.discard(address)
        return Unbind([address]) if self.attached else None

    def receive(self, frame: Bound | BindRefused) -> None:
        address = frame.address
        left = self.pending.pop(address, 0) - 1
        if left > 0:
            self.pending[address] = left
        match frame:
            case Bound():
                if address in self.wanted:
                    self.bound.add(address)
            case BindRefused(reason=reason):
                self.refused[address] = reason

    @property
    def settled(self) -> bool:
        return not self.pending
