"""The sentinel's end of a fabric link, as a state machine (see the package docstring).

Admission (who may attach, as which principal), the reserved addresses, and
the binds a link asks for. The node's end is ``_node_handshake`` and
``_binding_tracker``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import Any

import attrs

from .._core._address import REPLY_NAME, Address, AddressError, is_valid_label
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
    challenge_payload,
    peek_version,
)
from ._authz import Policy, Principal
from ._credentials import (
    CLIENT,
    NODE,
    ClientCredential,
    EnrolledKey,
    Enrollment,
    matching_credential,
)
from ._identity import Identity, looks_like_node_id, verify_signature
from ._quotas import Quotas, exceeded
from ._route_table import RouteTable

__all__ = [
    "Admitted",
    "BindDenied",
    "RoutesChanged",
    "SentinelLink",
    "SentinelPolicy",
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
    """Event: the sentinel admitted ``node_id`` at ``path`` as ``principal``.

    ``principal`` is ``"node:<enrolled name>"`` or ``"client:<credential
    name>"``. ``new_pin`` is true the first time a node id attached: the
    sentinel then persists the pin. ``enrolled`` is set when trust on first
    use enrolled the node just now: the sentinel persists it and says so
    loudly. Clients are never pinned nor enrolled.
    """

    node_id: str
    public_key: bytes
    path: str
    ephemeral: bool
    new_pin: bool
    principal: str = ""
    enrolled: Enrollment | None = None


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

    Clients are admitted by one of ``credentials`` (none: no client may
    attach), unless ``open_admission`` (any client, configured explicitly).
    Nodes are admitted by their key in ``enrolled`` (node id ->
    :class:`Enrollment`); with ``trust_on_first_use`` an unknown node that
    proves a client credential is enrolled at first sight instead (only
    when configured explicitly: whoever attaches first owns the id).
    ``pins`` maps node id -> the public key it last attached with.
    ``signers`` sign each challenge (several during a key rotation).
    ``clock`` gives Unix time, for the ends of keys and credentials.
    ``quotas`` bound the addresses one node may bind and the node ids
    trust on first use may enroll.
    """

    sentinel_id: str
    credentials: tuple[ClientCredential, ...]
    pins: MutableMapping[str, bytes]
    routes: RouteTable[Any]
    heartbeat_ms: int = 5000
    enrolled: MutableMapping[str, Enrollment] = attrs.Factory(dict)
    trust_on_first_use: bool = False
    open_admission: bool = False
    signers: tuple[tuple[Identity, float | None], ...] = ()
    clock: Callable[[], float] = time.time
    authz: Policy = attrs.Factory(Policy.allow_all)
    quotas: Quotas = attrs.Factory(Quotas)

    def active_signers(self) -> list[Identity]:
        """The signing keys that have not ended: each signs every challenge."""
        now = self.clock()
        return [signer for signer, end in self.signers if end is None or now < end]


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
        self.principal: Principal | None = None
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
        policy = self.policy
        payload = challenge_payload(self.nonce, policy.sentinel_id, PROTOCOL_VERSION)
        signers = policy.active_signers()
        return Challenge(
            self.nonce,
            policy.sentinel_id,
            PROTOCOL_VERSION,
            [signer.public_key for signer in signers],
            [signer.sign(payload) for signer in signers],
        )

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
        if attach.role not in (NODE, CLIENT):
            return self._refuse(f"unknown role {attach.role[:20]!r}: a peer is a node or a client")
        node_id = attach.node_id
        if not is_valid_label(node_id):
            return self._refuse(f"invalid node id {node_id[:80]!r}")
        if node_id == policy.sentinel_id:
            return self._refuse("node id is reserved: it is the sentinel's own")
        payload = attach_proof_payload(
            self.nonce, policy.sentinel_id, node_id, attach.role, attach.public_key
        )
        if not verify_signature(attach.public_key, attach.signature, payload):
            return self._refuse("bad signature: the attach proof does not verify")
        now = policy.clock()
        credential = matching_credential(policy.credentials, attach.proof, payload, now)
        if attach.role == CLIENT:
            return self._admit_client(attach, credential)
        return self._admit_node(attach, credential, now)

    def _admit_client(
        self, attach: Attach, credential: ClientCredential | None
    ) -> Welcome | Refused:
        policy = self.policy
        if credential is None and not policy.open_admission:
            return self._refuse("wrong client credential: the admission token is not valid here")
        node_id = attach.node_id
        # A client's id is fresh per attach and pins nothing: an id in use, or
        # a node's, would be a takeover, whatever the credential.
        if node_id in policy.enrolled or node_id in policy.pins:
            return self._refuse("node id is reserved: clients attach with a fresh id")
        if policy.routes.linked(node_id):
            return self._refuse(
                "node id is in use by a live session: clients attach with a fresh id"
            )
        principal = Principal(CLIENT, credential.name if credential else "open", node_id)
        return self._welcome(attach, principal, new_pin=False, ephemeral=True)

    def _admit_node(
        self, attach: Attach, credential: ClientCredential | None, now: float
    ) -> Welcome | Refused:
        policy = self.policy
        node_id = attach.node_id
        enrollment = policy.enrolled.get(node_id)
        new_enrollment = None
        if enrollment is None:
            if not policy.trust_on_first_use:
                return self._refuse(
                    f"node {node_id} is not enrolled: the operator enrolls it with"
                    " `fame enroll <node id> <public key>`"
                    " (`fame identity` on the node prints both)"
                )
            if credential is None:
                return self._refuse(
                    "wrong credential: trust on first use admits a new node only with a valid"
                    " admission token"
                )
            if node_id in policy.pins or policy.routes.linked(node_id):
                return self._refuse(f"node id {node_id} is taken; refusing the takeover")
            cap = policy.quotas.enrolled_nodes
            if len(policy.enrolled) >= cap:
                return self._refuse(
                    f"trust on first use enrolls no new node: {len(policy.enrolled)} node ids"
                    f" are enrolled, the quota (enrolled_nodes = {cap}); the operator enrolls"
                    " it with `fame enroll`, removes unused ones, or raises"
                    " FAME_QUOTA_ENROLLED_NODES"
                )
            enrollment = new_enrollment = Enrollment(
                node_id, node_id, (EnrolledKey(attach.public_key),), now
            )
            policy.enrolled[node_id] = enrollment
        elif not enrollment.admits(attach.public_key, now):
            return self._refuse(
                f"node {node_id} is enrolled with another key, or this key has ended;"
                " refusing the takeover"
            )
        new_pin = policy.pins.get(node_id) != attach.public_key
        if new_pin:
            policy.pins[node_id] = attach.public_key
        principal = Principal(NODE, enrollment.name, node_id)
        return self._welcome(
            attach, principal, new_pin=new_pin, ephemeral=False, enrolled=new_enrollment
        )

    def _welcome(
        self,
        attach: Attach,
        principal: Principal,
        *,
        new_pin: bool,
        ephemeral: bool,
        enrolled: Enrollment | None = None,
    ) -> Welcome:
        self.state = "attached"
        self.node_id = attach.node_id
        self.path = attach.node_id
        self.ephemeral = ephemeral
        self.principal = principal
        self.events.append(
            Admitted(
                attach.node_id,
                attach.public_key,
                self.path,
                ephemeral,
                new_pin,
                str(principal),
                enrolled,
            )
        )
        return Welcome(attach.node_id, self.path, self.policy.heartbeat_ms)

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
            assert self.principal is not None
            if not self.policy.authz.may_bind(self.principal, address):
                reason = (
                    f"{self.principal} may not bind {address}: the sentinel's policy does not"
                    f" allow it (add it to a [[bind]] rule of {self.policy.authz.source})"
                )
                out.append(BindRefused(address, reason))
                self.events.append(BindDenied(self.node_id, address, reason))
                continue
            routes = self.policy.routes
            quota = self.policy.quotas.bindings
            if routes.held(self.node_id) >= quota and not routes.holds(address, self.node_id):
                reason = exceeded(
                    str(self.principal),
                    "bindings",
                    quota,
                    f"{routes.held(self.node_id)} addresses bound by node {self.node_id}",
                    "unbind addresses it no longer serves",
                )
                out.append(BindRefused(address, reason))
                self.events.append(BindDenied(self.node_id, address, reason))
                continue
            result = routes.bind(address, self.node_id, pool=frame.pool)
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
