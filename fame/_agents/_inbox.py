"""The inbox: the told messages a node already applied, so a resent one runs once.

A request with ``once=True`` (a message from a sender's outbox) is keyed
by its request id scoped by the verified caller, as
:func:`fame.security.request_key` scopes it, so no principal can mark
another's messages as done. Before the operation runs the inbox is
asked; a message it holds is acknowledged without running again. The
record is written after the operation completed successfully, before
the acknowledgement leaves: a crash between the operation's effect and
the record lets the resent message run again, which an operation closes
by deduplicating its own writes with ``request_key()``.

A message being applied right now is also known (in memory): a resend
that arrives meanwhile is answered ``overloaded`` (it did not run) and
its sender tries again later.

Bounded by time (``inbox_window``: records expire) and count
(``inbox_max``: the oldest are forgotten first). Durable in the internal
store ``__delivery_inbox`` on a node with storage, opened on the first
told message (a node that never received one has no such file); in
memory otherwise.
"""

from __future__ import annotations

import hashlib
import logging

import msgspec
import trio

from .._core._storage_protocol import KeyValueStoreLike, StorageProvider
from ._delivery_policy import INBOX_STORE, DeliveryConfig

__all__ = ["Inbox", "InboxRecord"]

log = logging.getLogger("fame.delivery")


class InboxRecord(msgspec.Struct, frozen=True):
    """One applied message: its scoped request key and when it was applied."""

    key: str
    at: float


def _store_key(key: str) -> str:
    # A scoped key holds a principal of any length; its digest is a short, safe store key.
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class Inbox:
    """A node's window of applied told messages."""

    def __init__(self, provider: StorageProvider | None, config: DeliveryConfig) -> None:
        # Durable only through a real provider (tests hand nodes placeholders).
        durable = config.durable and isinstance(provider, StorageProvider)
        self._provider = provider if durable else None
        self.config = config
        self._applied: dict[str, float] = {}
        """Scoped key -> when applied, oldest first."""
        self._running: set[str] = set()
        self._store: KeyValueStoreLike[InboxRecord] | None = None
        self._loaded = False
        self._lock = trio.Lock()

    async def _load(self, now: float) -> None:
        async with self._lock:
            if self._loaded:
                return
            if self._provider is not None:
                try:
                    store = await self._provider.get_internal_kv_store(InboxRecord, INBOX_STORE)
                    found = [record async for _, record in store.scan()]
                except Exception as exc:
                    # A damaged inbox file must not crash every agent that gets a told
                    # message: the inbox works in memory, and says what that costs.
                    log.error(
                        "inbox not opened, kept in memory: a message resent after this node"
                        " restarts may run twice: %s",
                        exc,
                    )
                else:
                    found.sort(key=lambda record: record.at)
                    for record in found:
                        self._applied[record.key] = record.at
                    self._store = store
            self._loaded = True
        self._expire(now)

    def _expire(self, now: float) -> list[str]:
        """Forget records past the window or the count; return the forgotten keys."""
        gone: list[str] = []
        horizon = now - self.config.inbox_window
        for key, at in self._applied.items():
            if at > horizon and len(self._applied) - len(gone) <= self.config.inbox_max:
                break
            gone.append(key)
        for key in gone:
            del self._applied[key]
        return gone

    async def applied(self, key: str, now: float) -> bool:
        """Whether the message of scoped key ``key`` was applied within the window."""
        await self._load(now)
        at = self._applied.get(key)
        return at is not None and at > now - self.config.inbox_window

    def running(self, key: str) -> bool:
        return key in self._running

    def begin(self, key: str) -> None:
        self._running.add(key)

    def end(self, key: str) -> None:
        self._running.discard(key)

    async def record(self, key: str, now: float) -> None:
        """Remember that the message of ``key`` was applied (durably when the inbox is)."""
        await self._load(now)
        self._applied.pop(key, None)
        self._applied[key] = now
        gone = self._expire(now)
        if self._store is None:
            return
        try:
            await self._store.set(
                _store_key(key), InboxRecord(key, now), ttl=self.config.inbox_window
            )
            for old in gone:
                await self._store.delete(_store_key(old))
        except Exception as exc:
            # The operation applied and its caller will hear so; only a resend after a
            # restart of this node could run it again. Say so, do not fail the call.
            log.warning("inbox record for a told message not stored (%s): %s", key, exc)
