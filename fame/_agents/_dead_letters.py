"""A stopped node's dead letters, administered offline (``fame dlq``).

The node holds its stores exclusively while it runs, so these open them
through a storage provider of the same directory and master key while it
is stopped. Replaying a dead letter puts it back in the outbox with its
attempts reset (the node sends it when it starts); dropping one forgets
it. Nothing here creates a store that does not exist, except the outbox
a replay writes to.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from .._core._errors import DeadLetterNotFound
from .._core._storage_protocol import StorageProvider
from ._delivery_policy import (
    DLQ_STORE,
    NODE_META,
    OUTBOX_MARKER,
    OUTBOX_STORE,
    OutboxEntry,
    entry_key,
)

__all__ = ["DeadLetters"]


class DeadLetters:
    """The dead letters of a node's storage, and the way back to its outbox."""

    def __init__(self, provider: StorageProvider) -> None:
        self._provider = provider

    async def entries(self) -> list[OutboxEntry]:
        """Every dead letter, oldest first (by when it died)."""
        store = await self._provider.get_internal_kv_store(OutboxEntry, DLQ_STORE)
        found = [entry async for _, entry in store.scan()]
        found.sort(key=lambda entry: (entry.dead_at or 0.0, entry.id))
        return found

    async def _chosen(self, ids: Collection[str] | None) -> list[OutboxEntry]:
        held = await self.entries()
        if ids is None:
            return held
        by_id = {entry.id: entry for entry in held}
        missing = sorted(set(ids) - by_id.keys())
        if missing:
            raise DeadLetterNotFound(
                f"no dead letter {', '.join(map(repr, missing))}; nothing was changed"
                " (`fame dlq list` shows the ids)"
            )
        return [by_id[message_id] for message_id in ids]

    async def replay(self, ids: Collection[str] | None, now: float) -> list[OutboxEntry]:
        """Move dead letters (all if ``ids`` is None) back to the outbox, attempts reset.

        Each is written to the outbox before it leaves the dead letters:
        an interruption leaves it in both, never in neither.
        """
        chosen = await self._chosen(ids)
        if not chosen:
            return []
        meta = await self._provider.get_internal_kv_store(bytes, NODE_META)
        await meta.set(OUTBOX_MARKER, b"1")
        outbox = await self._provider.get_internal_kv_store(OutboxEntry, OUTBOX_STORE)
        dlq = await self._provider.get_internal_kv_store(OutboxEntry, DLQ_STORE)
        for entry in chosen:
            fresh = msgspec.structs.replace(
                entry, attempts=0, next_attempt=now, dead_at=None, last_error=entry.last_error
            )
            await outbox.set(entry_key(entry.id), fresh)
            await dlq.delete(entry_key(entry.id))
        return chosen

    async def drop(self, ids: Collection[str] | None) -> list[OutboxEntry]:
        """Forget dead letters (all if ``ids`` is None)."""
        chosen = await self._chosen(ids)
        dlq = await self._provider.get_internal_kv_store(OutboxEntry, DLQ_STORE)
        for entry in chosen:
            await dlq.delete(entry_key(entry.id))
        return chosen
