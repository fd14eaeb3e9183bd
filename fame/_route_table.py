"""The sentinel's routing table: which attached node serves which address.

Two layers, on purpose. *Bindings* (address -> node id) are what nodes
asked for; they are persisted in the sentinel's ``__route_store`` and
survive both a node's disconnection and a sentinel restart. *Links*
(node id -> live connection) exist only while a node is attached. An
address is routable when its node is linked; when it is not, a caller gets
a no-route error that says the node is offline, and the route comes back by
itself when the node re-attaches.

Pure data structure: no I/O, no clock. The sentinel persists the changes
:meth:`bind` and :meth:`unbind` report.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["BindResult", "RouteTable"]

L = TypeVar("L")


class BindResult:
    """What :meth:`RouteTable.bind` did: ``ok``, ``changed`` (persist it) and ``reason``."""

    __slots__ = ("changed", "ok", "reason")

    def __init__(self, ok: bool, changed: bool = False, reason: str = "") -> None:
        self.ok = ok
        self.changed = changed
        self.reason = reason


class RouteTable(Generic[L]):
    """Address -> node id bindings plus node id -> link for attached nodes."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}
        self._links: dict[str, L] = {}
        self._paths: dict[str, str] = {}  # node path -> node id (reply addresses)

    # --- bindings ---------------------------------------------------------------

    def restore(self, bindings: dict[str, str]) -> None:
        """Load persisted address -> node id bindings (at sentinel start)."""
        self._owner.update(bindings)

    def bindings(self) -> dict[str, str]:
        return dict(self._owner)

    def bind(self, address: str, node_id: str) -> BindResult:
        owner = self._owner.get(address)
        if owner is None:
            self._owner[address] = node_id
            return BindResult(True, changed=True)
        if owner == node_id:
            return BindResult(True)
        return BindResult(False, reason=f"{address} is already bound to node {owner}")

    def unbind(self, address: str, node_id: str) -> bool:
        """Remove ``address`` if ``node_id`` owns it; True if something changed."""
        if self._owner.get(address) == node_id:
            del self._owner[address]
            return True
        return False

    def owner(self, address: str) -> str | None:
        return self._owner.get(address)

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

    def linked(self, node_id: str) -> L | None:
        return self._links.get(node_id)

    def __len__(self) -> int:
        return len(self._links)

    # --- lookup -----------------------------------------------------------------

    def lookup(self, address: str) -> tuple[L | None, str | None]:
        """``(link, node_id)`` for ``address``.

        ``(None, None)``: nobody bound it. ``(None, node_id)``: bound to a
        node that is not attached now.
        """
        node_id = self._owner.get(address)
        if node_id is None:
            _, _, path = address.partition("@")
            node_id = self._paths.get(path)
            if node_id is None:
                return None, None
        return self._links.get(node_id), node_id
