"""The node's view of its bindings, as a state machine (see the package docstring)."""

from __future__ import annotations

from .._wire._schema import Bind, BindRefused, Bound, Unbind

__all__ = ["BindingTracker"]


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
