"""The outbox: the messages a node was told to deliver and has not delivered yet.

Every message is held in memory (the outbox is bounded, so this is
bounded too) and, on a node whose outbox is durable, also in the internal
store ``__delivery_outbox``, written before ``tell`` returns: a node that
restarts (or was killed) loads what it holds and sends it again. A
message that cannot be delivered moves to ``__delivery_dlq`` (in memory
without a store) with its last error; ``fame dlq`` lists, replays and
drops them offline.

Without a store (a client: ``fame.connect`` has no storage) the outbox
lives as long as the process; it says so once in the log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import trio

from .._core._errors import OutboxFull
from .._core._storage_protocol import KeyValueStoreLike, StorageProvider
from ._delivery_policy import (
    DLQ_STORE,
    NODE_META,
    OUTBOX_MARKER,
    OUTBOX_STORE,
    DeliveryConfig,
    OutboxEntry,
    entry_key,
)

__all__ = ["Outbox"]

log = logging.getLogger("fame.delivery")


class Outbox:
    """A node's outbox and dead letters: in memory, and in its stores when durable."""

    def __init__(self, provider: StorageProvider | None, config: DeliveryConfig) -> None:
        # Durable only through a real provider (tests hand nodes placeholders).
        durable = config.durable and isinstance(provider, StorageProvider)
        self._provider = provider if durable else None
        self.config = config
        self.entries: dict[str, OutboxEntry] = {}
        self.dead: dict[str, OutboxEntry] = {}
        """Dead letters of a node without a store (a durable node keeps them in the store only)."""
        self._bytes = 0
        self._store: KeyValueStoreLike[OutboxEntry] | None = None
        self._dlq: KeyValueStoreLike[OutboxEntry] | None = None
        self._opened = False
        self._lock = trio.Lock()
        self._warned = False

    @property
    def durable(self) -> bool:
        return self._provider is not None

    def __len__(self) -> int:
        return len(self.entries)

    async def load(self) -> int:
        """Load what a previous run of the node left in the outbox; return how many.

        Opens the store only if the node's meta store says it has one (a
        node that never told anything creates no outbox file).
        """
        if self._provider is None:
            return 0
        meta = await self._provider.get_internal_kv_store(bytes, NODE_META)
        if await meta.get(OUTBOX_MARKER) is None:
            return 0
        store = await self._open()
        async for _, entry in store.scan():
            self._hold(entry)
        return len(self.entries)

    async def _open(self) -> KeyValueStoreLike[OutboxEntry]:
        async with self._lock:
            if self._store is None:
                assert self._provider is not None
                meta = await self._provider.get_internal_kv_store(bytes, NODE_META)
                if await meta.get(OUTBOX_MARKER) is None:
                    await meta.set(OUTBOX_MARKER, b"1")
                self._store = await self._provider.get_internal_kv_store(OutboxEntry, OUTBOX_STORE)
            return self._store

    async def _open_dlq(self) -> KeyValueStoreLike[OutboxEntry]:
        if self._dlq is None:
            assert self._provider is not None
            self._dlq = await self._provider.get_internal_kv_store(OutboxEntry, DLQ_STORE)
        return self._dlq

    def _hold(self, entry: OutboxEntry) -> None:
        old = self.entries.get(entry.id)
        if old is not None:
            self._bytes -= old.size
        self.entries[entry.id] = entry
        self._bytes += entry.size

    def _release(self, message_id: str) -> None:
        old = self.entries.pop(message_id, None)
        if old is not None:
            self._bytes -= old.size

    async def add(self, entry: OutboxEntry) -> None:
        """Record a new message (durably when the outbox is); :class:`OutboxFull` past a bound."""
        if entry.id in self.entries:
            return  # told again with the same id: it is already on its way
        config = self.config
        if len(self.entries) >= config.max_messages or self._bytes + entry.size > config.max_bytes:
            raise OutboxFull(
                f"the outbox holds {len(self.entries)} messages ({self._bytes} bytes; at most"
                f" {config.max_messages} messages, {config.max_bytes} bytes): {entry.op}() to"
                f" {entry.to} was not recorded and will not be sent; wait for deliveries (or"
                " dead letters) to make room, or raise DeliveryConfig.max_messages/max_bytes"
            )
        if self._provider is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "this node's outbox is in memory (it has no storage): told messages not"
                    " yet delivered are lost if the process ends"
                )
        else:
            store = await self._open()
            await store.set(entry_key(entry.id), entry)
        self._hold(entry)

    async def update(self, entry: OutboxEntry) -> None:
        """Keep a message's new attempt count, next attempt and last error."""
        if entry.id not in self.entries:
            return
        if self._store is not None:
            await self._store.set(entry_key(entry.id), entry)
        self._hold(entry)

    async def remove(self, message_id: str) -> None:
        """Forget a delivered message."""
        if self._store is not None:
            await self._store.delete(entry_key(message_id))
        self._release(message_id)

    async def dead_letter(self, entry: OutboxEntry) -> None:
        """Move a message to the dead letters (written there before it leaves the outbox).

        A crash between the two leaves it in both: it is sent again and
        its receiver's inbox applies it once.
        """
        log.error(
            "dead letter: %s() to %s (message %s) after %d attempt(s): %s",
            entry.op,
            entry.to,
            entry.id,
            entry.attempts,
            entry.last_error,
        )
        if self._provider is None:
            self._bound_memory_dead()
            self.dead[entry.id] = entry
        else:
            dlq = await self._open_dlq()
            await self._bound_dead(dlq)
            await dlq.set(entry_key(entry.id), entry)
        await self.remove(entry.id)

    def _bound_memory_dead(self) -> None:
        while len(self.dead) >= self.config.max_dead_letters:
            oldest = next(iter(self.dead))
            log.error("dead letters full: dropped the oldest, message %s", oldest)
            del self.dead[oldest]

    async def _bound_dead(self, dlq: KeyValueStoreLike[OutboxEntry]) -> None:
        if await dlq.count() < self.config.max_dead_letters:
            return
        held = [entry async for _, entry in dlq.scan()]
        held.sort(key=lambda entry: entry.dead_at or 0.0)
        excess = len(held) - self.config.max_dead_letters + 1
        for entry in held[:excess]:
            log.error("dead letters full: dropped the oldest, message %s", entry.id)
            await dlq.delete(entry_key(entry.id))

    def due(self, now: float, busy: Iterable[str]) -> list[OutboxEntry]:
        """The messages whose next attempt is due, oldest first, except ``busy`` ones."""
        skip = set(busy)
        ready = [e for e in self.entries.values() if e.id not in skip and e.next_attempt <= now]
        ready.sort(key=lambda entry: (entry.next_attempt, entry.queued_at))
        return ready

    def next_due(self, busy: Iterable[str]) -> float:
        """The time of the earliest next attempt, except ``busy`` ones (inf if none)."""
        skip = set(busy)
        return min(
            (e.next_attempt for e in self.entries.values() if e.id not in skip), default=math.inf
        )

    def stats(self) -> dict[str, Any]:
        return {"messages": len(self.entries), "bytes": self._bytes, "durable": self.durable}
