"""An agent whose writes leave one trace per *application*, so a test can count them.

``Ledger.record(entry)`` is not idempotent: each run stores a new key
``<entry>/<random suffix>``, so running it twice would leave two keys. It is
declared ``deduplicated`` and passes :func:`fame.security.request_key` to
its store, as the storage agent does: a call sent again with the same
request id (by the runtime after a lost answer, or by the program) applies
once and answers the original key. ``applications`` counts the keys of an
entry: 1 means applied once, 2 applied twice.

Served by the crash loops' node as ``ledger@fame.fabric``
(:data:`LEDGER_AGENT`), with the node's ``encrypted-sqlite`` storage.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec

import fame
from fame.security import request_key

__all__ = ["LEDGER_ADDRESS", "LEDGER_AGENT", "Entry", "Ledger"]

LEDGER_ADDRESS = "ledger@fame.fabric"
LEDGER_AGENT = f"tests.reliability.ledger_agent:Ledger@{LEDGER_ADDRESS}"


class Entry(msgspec.Struct, frozen=True):
    """One application of a ``record`` call: the entry and the key it was stored under."""

    entry: str
    key: str


class Ledger(fame.BaseAgent):
    """Records entries, one new key per application."""

    max_concurrency = 16
    _store: Any = None

    async def start(self) -> None:
        self._store = await self.storage_provider.get_kv_store(Entry, "ledger")

    @fame.operation(deduplicated=True, errors=(fame.storage.StorageWriteFailed,))
    async def record(self, entry: str) -> str:
        """Apply ``entry`` once per request id; return the key its application used."""
        key = f"{entry}/{secrets.token_hex(6)}"
        stored = await self._store.set_versioned(key, Entry(entry, key), request_id=request_key())
        original: Entry = stored.value
        return original.key

    @fame.operation(streaming=True, idempotent=True)
    async def applications(self) -> AsyncIterator[str]:
        """Every application's entry, in key order."""
        async for _, stored in self._store.scan():
            yield stored.entry
