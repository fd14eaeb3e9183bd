"""Agent state: one typed record per agent, read and written transactionally.

An agent class names its model (``state_model``, any model
``get_kv_store`` takes, with a constructor that needs no arguments) and
reads and changes its state in a block::

    async with self.state() as s:
        s.count += 1

The state is the record under the agent's address in the node's internal
namespace ``__agent_state``, opened on the first ``state()`` (a node whose
agents never use state has no such file). Each block reads the record
(default-constructed if there is none), hands it to the block, and when the
block exits normally writes it back with ``if_version`` set to the version
it read, so a change made meanwhile by another writer (a second instance of
the agent on a node sharing this storage) is never overwritten: the block
raises :class:`StateConflict` and writes nothing. A block that raises writes
nothing, and one that changed nothing (the value encodes to the same bytes)
writes nothing either. Nothing is cached between blocks: the next block
reads what is stored, so a discarded change is really gone.

Blocks of one agent instance run one at a time (a lock per instance), so
concurrent operations of an agent with ``max_concurrency > 1`` serialise
inside ``state()`` and no increment is lost. A block inside a block of the
same task would wait for itself: it is refused with ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from .._core._errors import FameError, quoted
from .._core._storage_protocol import KeyValueStoreLike, StorageProvider

__all__ = ["STATE_STORE", "StateConflict", "StateSlot", "open_state"]

STATE_STORE = "__agent_state"
"""The internal namespace of every agent's state, keyed by agent address."""


class StateConflict(FameError):
    """An agent's state changed between the read and the write of a ``state()`` block.

    Another writer (a second instance of the agent on a node sharing the
    storage) stored a new version: nothing was written, the block's changes
    are discarded. Running the operation again reads the new state.
    ``expected`` is the version the block read (0: there was none),
    ``actual`` the version found (0: the state was deleted).
    """

    def __init__(self, address: str, expected: int, actual: int) -> None:
        super().__init__(
            f"the state of agent {quoted(address)} was changed by another writer while a"
            f" state() block ran (read version {expected}, found {actual}); nothing was"
            " written: run the operation again to work on the new state"
        )
        self.address = address
        self.expected = expected
        self.actual = actual


class StateSlot:
    """Per agent instance: the lock its blocks take and its state store, once opened."""

    __slots__ = ("lock", "store")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.store: KeyValueStoreLike[Any] | None = None


def _fresh(model: type[Any], owner: str) -> Any:
    try:
        return model()
    except TypeError as exc:
        raise TypeError(
            f"{owner}.state_model {getattr(model, '__qualname__', model)!r} must be"
            f" constructible without arguments (give every field a default): {exc}"
        ) from None


@asynccontextmanager
async def open_state(
    slot: StateSlot, provider: StorageProvider, model: type[Any], address: str, owner: str
) -> AsyncIterator[Any]:
    """Yield the agent's state; write it back if the block exits normally and changed it."""
    if slot.lock.statistics().owner is trio.lowlevel.current_task():
        raise RuntimeError(
            f"{owner}.state() is already open in this task: a nested block would wait for"
            " itself; change the state in the outer block"
        )
    async with slot.lock:
        if slot.store is None:
            slot.store = await provider.get_internal_kv_store(model, STATE_STORE)
        store = slot.store
        found = await store.get_versioned(address)
        if found is None:
            value, version = _fresh(model, owner), 0
        else:
            value, version = found.value, found.version
        before = msgspec.msgpack.encode(value)
        yield value
        if msgspec.msgpack.encode(value) == before:
            return
        try:
            await store.set(address, value, if_version=version)
        except Exception as exc:
            # Any provider's conflict, told by the version alone: the built-in one
            # raises VersionConflict, which this layer cannot name.
            current = await store.get_versioned(address)
            actual = 0 if current is None else current.version
            if actual != version:
                raise StateConflict(address, version, actual) from exc
            raise
