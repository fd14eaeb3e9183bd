"""The sentinel's routing table: which attached node serves which address.

Two layers, on purpose. *Bindings* (address -> node id) are what nodes
asked for; they are persisted in the sentinel's ``__route_store`` and
survive both a node's disconnection and a sentinel restart. *Links*
(node id -> live connection) exist only while a node is attached. An
address is routable when its node is linked; when it is not, a caller gets
a no-route error that says the node is offline, and the route comes back by
itself when the node re-attaches.

An address belongs either to one node, or to a *pool*: several nodes that
each bound it with ``pool=True``. A pool's requests go round-robin to its
attached members. Exclusive and pooled binding of one address exclude each
other, so a node can never silently join (or take over) another's address.

A refusal's ``reason`` goes back to the node that asked, so it never names
the owner: that is another node's id. ``owner`` says it, for the
sentinel's log.

Pure data structure: no I/O, no clock. The sentinel persists the changes
:meth:`bind` and :meth:`unbind` report, as :meth:`record` gives them.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["POOL_PREFIX", "BindResult", "RouteTable", "record_owners", "record_without"]

L = TypeVar("L")

POOL_PREFIX = "pool:"
"""How :meth:`RouteTable.record` marks a pool: ``pool:<id>,<id>,...``."""


def record_owners(record: str) -> list[str]:
    """The node ids a stored record names: its owner, or a pool's members."""
    if record.startswith(POOL_PREFIX):
        return [m for m in record[len(POOL_PREFIX) :].split(",") if m]
    return [record] if record else []


def record_without(record: str, node_id: str) -> str | None:
    """``record`` once ``node_id`` no longer holds it; None when nobody is left.

    A pool loses just that member, so the other members keep the address.
    """
    if not record.startswith(POOL_PREFIX):
        return None if record == node_id else record
    members = [m for m in record_owners(record) if m != node_id]
    return POOL_PREFIX + ",".join(members) if members else None


class BindResult:
    """What :meth:`RouteTable.bind` did: ``ok``, ``changed`` (persist it) and ``reason``.

    ``reason`` (for the node that asked) names no other node; ``owner``, the
    node that holds the address alone, is for the sentinel's log only.
    """

    __slots__ = ("changed", "ok", "owner", "reason")

    def __init__(
        self, ok: bool, changed: bool = False, reason: str = "", owner: str | None = None
    ) -> None:
        self.ok = ok
        self.changed = changed
        self.reason = reason
        self.owner = owner


class RouteTable(Generic[L]):
    """Address -> node id bindings plus node id -> link for attached nodes."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}
        self._pools: dict[str, list[str]] = {}  # address -> member node ids, in join order
        self._cursor: dict[str, int] = {}  # address -> index of the next member to try
        self._links: dict[str, L] = {}
        self._paths: dict[str, str] = {}  # node path -> node id (reply addresses)
        self._held: dict[str, int] = {}  # node id -> addresses it binds (alone or in a pool)

    # --- bindings ---------------------------------------------------------------

    def restore(self, records: dict[str, str]) -> None:
        """Load persisted bindings, as :meth:`record` wrote them (at sentinel start)."""
        for address, value in records.items():
            if value.startswith(POOL_PREFIX):
                members = [m for m in value[len(POOL_PREFIX) :].split(",") if m]
                if members:
                    self._pools[address] = members
                    for member in members:
                        self._hold(member, 1)
            else:
                self._owner[address] = value
                self._hold(value, 1)

    def record(self, address: str) -> str | None:
        """What to persist for ``address``: its owner, ``pool:<ids>``, or None (unbound)."""
        members = self._pools.get(address)
        if members:
            return POOL_PREFIX + ",".join(members)
        return self._owner.get(address)

    def bindings(self) -> dict[str, str]:
        """Every binding as :meth:`record` gives it."""
        records = dict(self._owner)
        records.update((address, POOL_PREFIX + ",".join(m)) for address, m in self._pools.items())
        return records

    def bind(self, address: str, node_id: str, *, pool: bool = False) -> BindResult:
        owner = self._owner.get(address)
        members = self._pools.get(address)
        if pool:
            if owner is not None:
                return BindResult(
                    False,
                    reason=f"{address} is bound to another node alone, not as a pool",
                    owner=owner,
                )
            if members is None:
                self._pools[address] = [node_id]
                self._hold(node_id, 1)
                return BindResult(True, changed=True)
            if node_id in members:
                return BindResult(True)
            members.append(node_id)
            self._hold(node_id, 1)
            return BindResult(True, changed=True)
        if members is not None:
            return BindResult(
                False, reason=f"{address} is a pool of {len(members)} nodes: bind it with pool=True"
            )
        if owner is None:
            self._owner[address] = node_id
            self._hold(node_id, 1)
            return BindResult(True, changed=True)
        if owner == node_id:
            return BindResult(True)
        return BindResult(False, reason=f"{address} is already bound to another node", owner=owner)

    def unbind(self, address: str, node_id: str) -> bool:
        """Remove ``node_id``'s binding of ``address``; True if something changed."""
        if self._owner.get(address) == node_id:
            del self._owner[address]
            self._hold(node_id, -1)
            return True
        members = self._pools.get(address)
        if members is not None and node_id in members:
            members.remove(node_id)
            self._hold(node_id, -1)
            if not members:
                del self._pools[address]
                self._cursor.pop(address, None)
            return True
        return False

    def _hold(self, node_id: str, delta: int) -> None:
        held = self._held.get(node_id, 0) + delta
        if held > 0:
            self._held[node_id] = held
        else:
            self._held.pop(node_id, None)

    def held(self, node_id: str) -> int:
        """How many addresses ``node_id`` binds, alone or as a pool member (its quota's use)."""
        return self._held.get(node_id, 0)

    def holds(self, address: str, node_id: str) -> bool:
        """Whether ``node_id`` binds ``address`` already (alone or in its pool)."""
        return self._owner.get(address) == node_id or node_id in self._pools.get(address, ())

    def owner(self, address: str) -> str | None:
        """The node that bound ``address`` alone (None for pools and unbound addresses)."""
        return self._owner.get(address)

    def pool(self, address: str) -> list[str] | None:
        """The member node ids of the pool at ``address``, or None if it is no pool."""
        members = self._pools.get(address)
        return list(members) if members is not None else None

    # --- links ------------------------------------------------------------------

    def link(self, node_id: str, path: str, link: L) -> L | None:
        """Mark ``node_id`` attached through ``link``; return the link it replaces."""
        previous = self._links.get(node_id)
        self._links[node_id] = link
        self._paths[path] = node_id
        return previous

    def unlink(self, node_id: str, link: L) -> bool:
        """Forget ``link`` if it is still ``node_id``'s current one."""
        if self._links.get(node_id) is not link:
            return False
        del self._links[node_id]
        for path, owner in list(self._paths.items()):
            if owner == node_id:
                del self._paths[path]
        return True

    def __len__(self) -> int:
        return len(self._links)

    def links(self) -> dict[str, L]:
        """Every attached node id and its link, now (a copy)."""
        return dict(self._links)

    def link_of(self, node_id: str) -> L | None:
        """The link ``node_id`` is attached through now, if any."""
        return self._links.get(node_id)

    def linked(self, node_id: str) -> bool:
        """Whether ``node_id`` is attached now."""
        return node_id in self._links

    def path_owner(self, path: str) -> str | None:
        """The attached node whose own path is ``path``, if any."""
        return self._paths.get(path)

    # --- lookup -----------------------------------------------------------------

    def lookup(self, address: str) -> tuple[L | None, str | None]:
        """``(link, node_id)`` for ``address``.

        ``(None, None)``: nobody bound it. ``(None, node_id)``: bound to a
        node that is not attached now. For a pool, the next attached member
        in round-robin order (each call moves on), or ``(None, first
        member)`` when none is attached.
        """
        members = self._pools.get(address)
        if members is not None:
            return self._next_member(address, members)
        node_id = self._owner.get(address)
        if node_id is None:
            _, _, path = address.partition("@")
            node_id = self._paths.get(path)
            if node_id is None:
                return None, None
        return self._links.get(node_id), node_id

    def _next_member(self, address: str, members: list[str]) -> tuple[L | None, str | None]:
        count = len(members)
        start = self._cursor.get(address, 0) % count
        for step in range(count):
            node_id = members[(start + step) % count]
            link = self._links.get(node_id)
            if link is not None:
                self._cursor[address] = (start + step + 1) % count
                return link, node_id
        return None, members[0]
