"""The sentinel: a node that also serves the fabric over websockets.

Nodes and clients attach to it (``fame._protocol`` decides who is
admitted and which bindings are accepted); it routes envelopes between
them by address. This module starts one (:func:`open_sentinel`) and
restores its state; the work is done by its parts, each in its module:

- ``fame._fabric.sentinel._door``: every connection until it attaches (the
  budget of unattached connections, their deadline, file descriptors
  running out, the memory held in unfinished messages);
- ``fame._fabric.sentinel._connection``: serving each websocket (the connection
  limit, the handshake deadline, reader, writer and watchdog), so that
  nothing a peer sends can hurt the sentinel or the other links;
- ``fame._fabric.sentinel._routing``: forwarding envelopes between links by their
  routing header, answering what cannot be forwarded, and cleaning up
  the requests of a lost link;
- ``fame._fabric.sentinel._local_uplink``: how the agents of the sentinel's own node
  reach the fabric.

Persistent state, in the sentinel node's own stores: its node id and key
(``__node_meta``, ``__keystore``), the pinned public key of every node id
it admitted (``__keystore``, key ``pin:<node id>``) and the route bindings
(``__route_store``, key = address, value = node id), and the addresses of its own
agents (``__binding_store``, like any node).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from ..._agents._node import Node, open_node
from ..._core._address import Address, AddressError, is_valid_label
from ..._core._errors import FameError
from ..._protocol import SentinelPolicy
from ..._protocol._attach import reserved
from ..._protocol._authz import Policy
from ..._protocol._credentials import (
    ENROLL_PREFIX,
    ClientCredential,
    Enrollment,
    decode_enrollment,
)
from ..._protocol._quotas import Quotas
from ..._protocol._route_table import POOL_PREFIX, record_owners
from ..._wire._schema import Codec
from .._identity import (
    BINDING_STORE,
    KEYSTORE,
    ROUTE_STORE,
    NodeStores,
    load_or_create_identity,
)
from .._link_queue import LinkLimits
from .._transport import (
    DEFAULT_HEARTBEAT,
    HANDSHAKE_TIMEOUT,
    WS_MESSAGE_MARGIN,
    WS_QUEUE,
    WS_RECEIVE_BUFFER,
    server_ssl_context,
)
from ._admin_agent import ADMIN_ADDRESS, SentinelAdmin
from ._connection import PIN_PREFIX, ConnectionHandler, ConnectionNursery
from ._door import DEFAULT_DOOR_LIMITS, Door, DoorLimits, serve_door
from ._local_uplink import SentinelUplink
from ._registry import NodeRegistry, RegistryError, Revoked
from ._routing import Router
from ._signing import SigningKey, load_or_create_signing_keys, rotate_signing_key
from ._status import SentinelStatus, sentinel_status

__all__ = ["Sentinel", "SentinelConfigError", "open_sentinel", "serve_sentinel"]

log = logging.getLogger("fame.sentinel")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_CONNECTIONS = 1024


class SentinelConfigError(FameError, ValueError):
    """The sentinel cannot start as configured (no token, port taken, bad TLS files)."""


class Sentinel:
    """A running sentinel. Get one from :func:`open_sentinel`.

    It puts together the sentinel's parts: the :class:`Router` (route table
    and requests in flight), the :class:`ConnectionHandler` that serves
    each websocket, and the admission policy with the pinned keys.
    """

    def __init__(
        self,
        node: Node,
        stores: NodeStores,
        *,
        sentinel_id: str,
        credentials: tuple[ClientCredential, ...],
        url_path: str,
        heartbeat: float,
        codec: Codec,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        door_limits: DoorLimits = DEFAULT_DOOR_LIMITS,
        open_admission: bool = False,
        trust_on_first_use: bool = False,
        clock: Callable[[], float] = time.time,
        limits: LinkLimits | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.node = node
        self.stores = stores
        self.codec = codec
        self.quotas = quotas if quotas is not None else Quotas()
        self.router = Router(node, codec, sentinel_id, limits=limits, quotas=self.quotas)
        self.routes = self.router.routes
        self.inflight = self.router.inflight
        self.pins: dict[str, bytes] = {}
        self.enrolled: dict[str, Enrollment] = {}
        self.policy = SentinelPolicy(
            sentinel_id,
            credentials,
            self.pins,
            self.routes,
            max(1, int(heartbeat * 1000)),
            enrolled=self.enrolled,
            trust_on_first_use=trust_on_first_use,
            open_admission=open_admission,
            clock=clock,
            quotas=self.quotas,
        )
        self.handler = ConnectionHandler(
            self.router,
            stores,
            self.policy,
            url_path=url_path,
            heartbeat=heartbeat,
            max_connections=max_connections,
            handshake_timeout=handshake_timeout,
        )
        self.door = Door(door_limits)
        self.handler.door = self.door
        self.port = 0
        self.host = ""

    @property
    def sentinel_id(self) -> str:
        return self.policy.sentinel_id

    @property
    def public_keys(self) -> list[bytes]:
        """The public keys the sentinel signs its challenges with now (for nodes to trust)."""
        return [signer.public_key for signer in self.policy.active_signers()]

    async def enroll(
        self,
        node_id: str,
        public_key: bytes,
        *,
        name: str | None = None,
        old_until: float | None = None,
    ) -> Enrollment:
        """Admit the node ``node_id`` with ``public_key`` from now on (and across restarts).

        ``name`` is what the authorization policy calls it (``node:<name>``;
        its id by default). Enrolling an enrolled node adds the key; with
        ``old_until`` (Unix time) its other keys end then: a key rotation
        with a grace period. Raises :class:`fame.errors.RegistryError` for
        an invalid id, name or key, or a name another node holds.
        """
        current = self.enrolled.get(node_id)
        chosen = name or (current.name if current is not None else node_id)
        enrollment = await NodeRegistry(self.stores).enroll(
            node_id, chosen, public_key, old_until=old_until, now=self.policy.clock()
        )
        self.enrolled[node_id] = enrollment
        return enrollment

    def reconfigure(
        self,
        *,
        credentials: Sequence[ClientCredential] | None = None,
        token: str | None = None,
        policy: Policy | None = None,
    ) -> None:
        """Take new client credentials and a new policy without stopping (``fame`` on SIGHUP).

        Links already admitted stay; every later attach, bind and call is
        decided by the new ones. Credentials are checked as at start
        (:class:`SentinelConfigError`); open admission stays as it was.
        """
        if credentials is not None or token is not None:
            found = _resolve_credentials(token, credentials or (), self.policy.open_admission)
            self.policy.credentials = found
        if policy is not None:
            self.policy.authz = policy
            log.info("authorization policy reloaded:\n%s", policy.describe())

    async def revoke(self, node_id: str) -> Revoked:
        """Forget node ``node_id`` now: its enrollment, pin and bindings; close its link.

        It cannot attach again until it is enrolled again; the addresses it
        held are free for others.
        """
        if node_id == self.sentinel_id:
            raise RegistryError(f"{node_id} is this sentinel's own id: it cannot be revoked")
        revoked = await NodeRegistry(self.stores).revoke(node_id)
        self.enrolled.pop(node_id, None)
        self.pins.pop(node_id, None)
        for address in revoked.addresses:
            self.routes.unbind(address, node_id)
        link = self.routes.link_of(node_id)
        if link is not None and link.tasks is not None:
            log.warning("node %s revoked: closing its link", node_id)
            link.tasks.cancel_scope.cancel()
        return revoked

    async def release(self, address: str) -> str | None:
        """Drop the binding of ``address`` (of a node that will not come back); its old record."""
        record = await NodeRegistry(self.stores).release(address)
        for owner in record_owners(record) if record is not None else ():
            self.routes.unbind(address, owner)
        return record

    async def rotate_signing_key(self, grace: float) -> list[bytes]:
        """Add a new signing key; the current ones end after ``grace`` seconds.

        Until then the sentinel signs every challenge with the old keys and
        the new one, so nodes that trust either keep attaching; hand out the
        new public key (the returned list) before the grace period ends.
        """
        self._sign_with(await rotate_signing_key(self.stores, grace=grace, now=self.policy.clock()))
        return self.public_keys

    def _sign_with(self, keys: Sequence[SigningKey]) -> None:
        self.policy.signers = tuple((k.signer(self.sentinel_id), k.not_after) for k in keys)

    @property
    def connections(self) -> int:
        """Websockets being served now, attaching or attached."""
        return self.handler.connections

    @property
    def attached_connections(self) -> int:
        """Websockets attached now: these count toward ``max_connections``."""
        return self.door.attached

    @property
    def unattached_connections(self) -> int:
        """Connections accepted and not attached yet (``door_limits.max_unattached`` at most)."""
        return self.door.unattached

    @property
    def refused_connections(self) -> int:
        """Websockets turned away so far because ``max_connections`` were open."""
        return self.handler.refused_connections

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the outgoing queues of all links now."""
        return self.router.queued_bytes

    def status(self, window: float) -> SentinelStatus:
        """A live snapshot of links, bindings and traffic (``fame status``)."""
        return sentinel_status(self.router, self.policy.clock(), window, self.connections)

    @property
    def violations(self) -> int:
        """Protocol violations (bad frames) seen so far, on all links."""
        return self.router.violations

    async def restore(self) -> None:
        """Load pins and route bindings from the sentinel's stores."""
        for key, value in (await self.stores.items(KEYSTORE)).items():
            if key.startswith(PIN_PREFIX):
                self.pins[key[len(PIN_PREFIX) :]] = value
            elif key.startswith(ENROLL_PREFIX):
                try:
                    self.enrolled[key[len(ENROLL_PREFIX) :]] = decode_enrollment(value)
                except msgspec.DecodeError:
                    log.error("ignoring the enrollment %s: it is not a valid record", key)
        records: dict[str, str] = {}
        for address, raw in (await self.stores.items(ROUTE_STORE)).items():
            record = raw.decode()
            why = self._reserved(address, record)
            if why is not None:
                # Bound before the sentinel reserved such addresses: it must not
                # come back, or it would route a reply address past its node.
                log.warning("dropping the stored route of %s (%s): %s", address, record, why)
                await self.stores.delete(ROUTE_STORE, address)
                continue
            records[address] = record
        self.routes.restore(records)
        # The sentinel's own agents' addresses: claimed again before anyone attaches.
        for address in await self.stores.items(BINDING_STORE):
            self.router.claim(address)
        if self.routes.bindings():
            log.info("restored %d routes from %s", len(self.routes.bindings()), ROUTE_STORE)

    def _reserved(self, address: str, record: str) -> str | None:
        """Why the stored binding ``address`` -> ``record`` may not be restored, or None."""
        try:
            parsed = Address.parse(address)
        except AddressError as exc:
            return str(exc)
        owners = record.removeprefix(POOL_PREFIX).split(",") if record else [""]
        for owner in owners:
            why = reserved(parsed, owner, self.policy)
            if why is not None:
                return why
        return None


def _resolve_credentials(
    token: str | None, credentials: Sequence[ClientCredential], open_admission: bool
) -> tuple[ClientCredential, ...]:
    found = tuple(credentials) + ((ClientCredential("default", token),) if token else ())
    if open_admission:
        if found:
            raise SentinelConfigError(
                "give either client credentials (token=...) or open_admission, not both"
            )
        return ()
    if not found:
        raise SentinelConfigError(
            "no admission token: pass token=... (the fame programs read FAME_ADMISSION_TOKEN,"
            " made by `just init`); open admission needs open_admission=True"
        )
    # A name may have one credential without an end, and others that end (a rotation).
    lasting = [c.name for c in found if c.not_after is None]
    for credential in found:
        if not is_valid_label(credential.name) or lasting.count(credential.name) > 1:
            raise SentinelConfigError(
                f"client credential name {credential.name[:80]!r} is invalid or used twice"
                " without an end (only a rotated-out credential may share a name)"
            )
        if len(credential.token) < 16:
            raise SentinelConfigError(
                f"client credential {credential.name!r} is too short to be a secret"
                " (at least 16 characters; `fame init` makes 43)"
            )
    return found


@asynccontextmanager
async def open_sentinel(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = "/",
    token: str | None = None,
    credentials: Sequence[ClientCredential] = (),
    open_admission: bool = False,
    trust_on_first_use: bool = False,
    policy: Policy | None = None,
    admin: bool = False,
    node: Node | None = None,
    storage_provider: Any = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    client_cafile: str | Path | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    max_message_size: int | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    door_limits: DoorLimits = DEFAULT_DOOR_LIMITS,
    clock: Callable[[], float] = time.time,
    limits: LinkLimits | None = None,
    quotas: Quotas | None = None,
) -> AsyncIterator[Sentinel]:
    """Run a sentinel for the duration of the block; yields the :class:`Sentinel`.

    Clients are admitted by ``token`` (the credential named ``default``)
    or one of ``credentials`` (named, maybe with an end: a rotation);
    without any the sentinel does not start unless ``open_admission``
    (then it logs a warning). Nodes are admitted by the keys enrolled in
    its ``__keystore`` (``fame enroll``, or :meth:`Sentinel.enroll`);
    ``trust_on_first_use`` enrolls any new node that proves a client
    credential instead, and says so loudly. The sentinel signs its
    challenges with its own keys (``sentinel.public_keys``), made on
    first start and kept in its ``__keystore``.

    ``policy`` says which admitted principal may bind which addresses and
    call which operations (:class:`fame._protocol._authz.Policy`, deny by
    default; ``fame sentinel`` reads ``conf/policy.toml``). Without one,
    every admitted principal may do everything, with a warning in the log.
    With ``admin`` the sentinel serves its live administration at
    ``admin@sentinel.fame`` to clients holding the credential named
    ``admin`` (and nobody else). ``port=0``
    picks a free port (see ``sentinel.port``). With ``certfile`` and
    ``keyfile`` it serves ``wss://``; with ``client_cafile`` too, only to
    peers whose certificate that CA verifies (mutual TLS). Without ``node`` the
    sentinel runs its own (``open_node(storage_provider=...)``); either
    way that node can host agents.

    At most ``max_connections`` websockets are attached at once; past that
    a new one is refused with HTTP 503 and a reason (the check is at the
    upgrade, so links upgraded before the limit was reached that attach
    together may pass it, by ``max_unattached`` at most). A connection
    must finish the websocket handshake, and then attach, within
    ``handshake_timeout`` seconds each, or it is closed. Connections not
    attached yet are bounded apart, by ``door_limits``
    (:class:`~fame.lowlevel.DoorLimits`: how many, how many per address,
    how long in all, and the memory their unfinished messages may hold):
    a flood of peers that never attach sheds its own oldest members and
    never locks out a newcomer.

    ``limits`` bounds each link's outgoing queue in bytes and says how long
    a link may stay behind before it is closed (:class:`LinkLimits`);
    ``quotas`` bounds what each principal may use at once (requests in
    flight, open streams, bytes queued, bindings per node, enrolled nodes:
    :class:`Quotas`). Both default to values that protect a two-core machine.
    """
    admission = _resolve_credentials(token, credentials, open_admission)
    if max_connections < 1:
        raise SentinelConfigError(f"max_connections must be at least 1, got {max_connections}")
    if not handshake_timeout > 0:
        raise SentinelConfigError(f"handshake_timeout must be positive, got {handshake_timeout}")
    if (certfile is None) != (keyfile is None):
        raise SentinelConfigError("TLS needs both certfile and keyfile")
    if client_cafile is not None and certfile is None:
        raise SentinelConfigError("mutual TLS (client_cafile) needs certfile and keyfile")
    ssl_context: ssl.SSLContext | None = None
    if certfile is not None and keyfile is not None:
        try:
            ssl_context = server_ssl_context(certfile, keyfile, client_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise SentinelConfigError(f"cannot load the TLS certificate/key: {exc}") from None
    if open_admission:
        log.warning(
            "WARNING: fame sentinel runs with OPEN ADMISSION: any process that can reach"
            " %s:%d may attach as a client",
            host,
            port,
        )
    if trust_on_first_use:
        log.warning(
            "WARNING: fame sentinel TRUSTS NODES ON FIRST USE: any process with an admission"
            " token that reaches %s:%d first with a new node id is enrolled as that node;"
            " enroll nodes with `fame enroll` instead",
            host,
            port,
        )
    async with AsyncExitStack() as stack:
        if node is None:
            node = await stack.enter_async_context(open_node(storage_provider=storage_provider))
        stores = NodeStores(node.storage_provider)
        identity = await load_or_create_identity(stores)
        node._set_path(identity.node_id)
        codec = Codec(max_message_size) if max_message_size else Codec()
        sentinel = Sentinel(
            node,
            stores,
            sentinel_id=identity.node_id,
            credentials=admission,
            url_path=path,
            heartbeat=heartbeat,
            codec=codec,
            max_connections=max_connections,
            handshake_timeout=handshake_timeout,
            door_limits=door_limits,
            open_admission=open_admission,
            trust_on_first_use=trust_on_first_use,
            clock=clock,
            limits=limits,
            quotas=quotas,
        )
        sentinel.policy.authz = policy if policy is not None else Policy.allow_all()
        if policy is None:
            log.warning(
                "no authorization policy: every admitted node and client may bind any free"
                " address and call every operation"
            )
        else:
            log.info("authorization policy:\n%s", policy.describe())
        sentinel._sign_with(await load_or_create_signing_keys(stores, clock()))
        await sentinel.restore()
        uplink = SentinelUplink(sentinel.router, stores)
        node._set_uplink(uplink)
        for address in node._local_addresses():
            uplink.bind(address)
        if admin:
            await node.spawn(lambda: SentinelAdmin(sentinel, node.storage_provider), ADMIN_ADDRESS)
        try:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(uplink.persist)
                try:
                    bound_port = await tasks.start(
                        lambda task_status: serve_door(
                            sentinel.door,
                            sentinel.handler.handle,
                            host,
                            port,
                            ssl_context,
                            message_queue_size=WS_QUEUE,
                            # Just over the codec's limit: a message a little too large
                            # gets the codec's readable error, a larger one a close.
                            max_message_size=codec.max_size + WS_MESSAGE_MARGIN,
                            receive_buffer_size=WS_RECEIVE_BUFFER,
                            connect_timeout=handshake_timeout,
                            disconnect_timeout=2,
                            handler_nursery=ConnectionNursery(tasks),
                            task_status=task_status,
                        )
                    )
                except OSError as exc:
                    raise SentinelConfigError(
                        f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from None
                sentinel.host = host
                sentinel.port = bound_port
                scheme = "wss" if ssl_context else "ws"
                log.info(
                    "sentinel %s listening on %s://%s:%d%s",
                    identity.node_id,
                    scheme,
                    host,
                    bound_port,
                    path,
                )
                try:
                    yield sentinel
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            node._set_uplink(None)


async def serve_sentinel(**kwargs: Any) -> None:
    """Run a sentinel until cancelled (the ``fame sentinel`` command); see :func:`open_sentinel`."""
    async with open_sentinel(**kwargs):
        await trio.sleep_forever()
