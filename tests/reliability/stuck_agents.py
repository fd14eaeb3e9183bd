"""The storage agent with a window on its streams, for the stuck-peer scenarios.

Run by a real ``fame node --agent tests.reliability.stuck_agents:ObservedStorageAgent@...``
process. :meth:`ObservedStorageAgent.stats` tells a test, from another
process, how many ``retrieve_all_values`` scans are open, how many records
they produced and how many stream producers the node still runs, so that
"the producer was released" is observed, not assumed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import fame
from agents.storage_agent import RecordModel, StorageAgent

FILL_BATCH = 500


class ObservedStorageAgent(StorageAgent):
    """:class:`StorageAgent` that counts its open scans and can fill itself quickly."""

    # Per process (the agent may be restarted): what the scans did.
    open_scans: ClassVar[int] = 0
    closed_scans: ClassVar[int] = 0
    produced: ClassVar[int] = 0

    @fame.operation(streaming=True)
    async def retrieve_all_values(self) -> AsyncIterator[tuple[str, RecordModel]]:
        ObservedStorageAgent.open_scans += 1
        try:
            async for key, record in self._store.scan():
                ObservedStorageAgent.produced += 1
                yield key, record
        finally:
            ObservedStorageAgent.open_scans -= 1
            ObservedStorageAgent.closed_scans += 1

    @fame.operation
    async def stats(self) -> dict[str, int]:
        node = self._fame_node
        return {
            "open_scans": ObservedStorageAgent.open_scans,
            "closed_scans": ObservedStorageAgent.closed_scans,
            "produced": ObservedStorageAgent.produced,
            "producers": len(node._switchboard.producers) if node is not None else -1,
            # Blocked on credit: the event that says "the producer stalls".
            "waiting_for_credit": sum(
                p.credit._changed.statistics().tasks_waiting > 0
                for p in node._switchboard.producers.values()
            )
            if node is not None
            else -1,
        }

    @fame.operation
    async def fill(self, count: int, size: int) -> int:
        """Store ``count`` records of ``size`` characters (keys ``r0000000``...)."""
        value = "v" * size
        for start in range(0, count, FILL_BATCH):
            batch = {
                f"r{i:07d}": RecordModel(value)
                for i in range(start, min(count, start + FILL_BATCH))
            }
            await self._store.set_many(batch)
        return await self._store.count()
