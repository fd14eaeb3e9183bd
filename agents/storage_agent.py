"""The storage example's agent: records kept in the node's key-value store.

``StorageAgent`` is the Python edition of the seed's ``StorageAgent``: in
:meth:`StorageAgent.start` it opens the namespace ``storage_agent_namespace``
of the node's storage provider, bound to :class:`RecordModel`, and its
operations store, fetch and stream records. With the ``encrypted-sqlite``
profile the namespace is the file
``storage_agent_namespace_encrypted_value.db`` in the node's storage
directory, so the records survive restarts of the node.

Run it behind a sentinel with ``fame up`` (``conf/agent.env`` names it in
``FAME_AGENTS``; ``fame node`` imports it from the project directory), or
embed it::

    async with fame.open_node() as node:
        agent = await node.spawn(StorageAgent, STORAGE_AGENT_ADDRESS)
        print(await agent.store_value(key="k", value="v"))
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

import fame

__all__ = ["NAMESPACE", "STORAGE_AGENT_ADDRESS", "RecordModel", "StorageAgent"]

STORAGE_AGENT_ADDRESS = "storage@fame.fabric"
"""Where ``fame up`` serves the agent and where ``fame-client`` calls it."""

NAMESPACE = "storage_agent_namespace"
"""The agent's key-value namespace (and so the name of its database file)."""


def _now() -> datetime:
    return datetime.now(UTC)


class RecordModel(msgspec.Struct, frozen=True):
    """One stored record: the value and when it was stored (UTC).

    The store validates every record against this model on write and again
    on read, so a record that no longer fits is reported, never skipped.
    """

    value: str
    created: datetime = msgspec.field(default_factory=_now)


class StorageAgent(fame.BaseAgent):
    """Stores, fetches and lists :class:`RecordModel` records by key.

    All state lives in the store, whose storage actor serialises access to
    the file, so several calls may run at once.
    """

    max_concurrency: ClassVar[int] = 16

    _store: Any = None

    async def start(self) -> None:
        """Open the namespaced store; the provider is attached only from here on."""
        provider = self.storage_provider
        self._store = await provider.get_kv_store(RecordModel, NAMESPACE)

    # A bad key is the caller's mistake, not the agent's: declared, so the
    # caller gets OperationFailed and the agent is not restarted. So is a
    # failed commit (StorageFull when the file or disk is full, or a damaged
    # file): restarting the agent would not make room or repair the file.
    #
    # Deduplicated: the write carries the call's request id (scoped by the
    # verified caller) into the same transaction, so a call sent again after
    # a lost answer is applied once and answered with the original record.
    @fame.operation(
        errors=(fame.storage.InvalidKey, fame.storage.StorageWriteFailed), deduplicated=True
    )
    async def store_value(self, key: str, value: str) -> RecordModel:
        """Store ``value`` under ``key`` (replacing any record there) and return the record."""
        stored = await self._store.set_versioned(
            key, RecordModel(value), request_id=fame.security.request_key()
        )
        record: RecordModel = stored.value
        return record

    @fame.operation(
        errors=(fame.storage.InvalidKey, fame.storage.DamagedDatabase, fame.storage.RecordInvalid),
        idempotent=True,
    )
    async def retrieve_value(self, key: str) -> RecordModel | None:
        """The record under ``key``, or ``None`` if there is none."""
        record: RecordModel | None = await self._store.get(key)
        return record

    @fame.operation(
        streaming=True,
        idempotent=True,
        errors=(fame.storage.DamagedDatabase, fame.storage.RecordInvalid),
    )
    async def retrieve_all_values(self) -> AsyncIterator[tuple[str, RecordModel]]:
        """Every ``(key, record)`` pair in key order, streamed page by page.

        A damaged page ends the stream with ``DamagedDatabase`` naming the
        last key sent; the agent keeps running.
        """
        async for key, record in self._store.scan():
            yield key, record
