"""The storage actors of one provider: one per namespace, spawned on first use.

The built-in and the postgres providers differ in what backend a
namespace's actor opens, not in how their actors live: spawned once under
the provider's supervisor (two agents asking for a new namespace at once
get the same actor), sent :class:`Purge` now and then, and stopped when
the provider closes, each draining its mailbox first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from .._core._actor import Actor, ActorRef
from .._core._errors import NodeClosed
from .._core._supervisor import Supervisor
from ._ops import Purge

__all__ = ["NamespaceActors"]


class NamespaceActors:
    """The actor of each namespace a provider opened; ``make(namespace)`` builds a new one."""

    def __init__(self, supervisor: Supervisor, make: Callable[[str], Actor]) -> None:
        self._supervisor = supervisor
        self._make = make
        self._refs: dict[str, ActorRef] = {}
        self._spawn_lock = trio.Lock()
        self._closed = False

    async def ref(self, namespace: str) -> ActorRef:
        """The actor of ``namespace``, spawned now if it has none yet.

        Raises :class:`NodeClosed` once the provider closed.
        """
        if self._closed:
            raise NodeClosed("the storage provider is closed")
        ref = self._refs.get(namespace)
        if ref is not None:
            return ref
        async with self._spawn_lock:
            ref = self._refs.get(namespace)
            if ref is None:
                ref = await self._supervisor.spawn(self._make(namespace), f"storage/{namespace}")
                self._refs[namespace] = ref
        return ref

    async def purge_expired(self) -> int:
        """Remove expired records from every open namespace now; return how many."""
        total = 0
        for ref in list(self._refs.values()):
            total += await ref.ask(Purge(), timeout=None)
        return total

    async def purge_loop(self, interval: float) -> None:
        """Ask every open namespace to purge expired records, every ``interval`` seconds."""
        while True:
            await trio.sleep(interval)
            for ref in list(self._refs.values()):
                with contextlib.suppress(NodeClosed):
                    await ref.tell(Purge())

    async def close(self) -> None:
        """Stop every actor: each drains its mailbox first (and closes its backend)."""
        self._closed = True
        refs, self._refs = self._refs, {}
        for ref in refs.values():
            await self._supervisor.stop(ref.address)
