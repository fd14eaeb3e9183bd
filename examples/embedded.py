"""Embedding fame in your own Trio program.

A small agent with a plain and a streaming operation, run on a node inside
``trio.run`` and called through a proxy. The node opens an in-memory
storage provider (``open_node(storage_provider=...)`` takes another one) and
hands it to the agent, which keeps its notes there.

Run it with ``python examples/embedded.py`` (or ``just demo``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import trio

import fame


class Note(msgspec.Struct):
    text: str
    stars: int = 0


class NotesAgent(fame.BaseAgent):
    """Stores notes by key and streams them back."""

    store: Any

    async def start(self) -> None:
        # The storage provider is attached by the node before start() runs.
        self.store = await self.storage_provider.get_kv_store(Note, "notes")

    @fame.operation
    async def store_value(self, key: str, value: Note) -> int:
        """Store a note; return its version."""
        version: int = await self.store.set(key, value)
        return version

    @fame.operation(errors=(KeyError,))
    async def star(self, key: str) -> Note:
        """Give a note one more star; a missing key is a declared error."""
        note = await self.store.get(key)
        if note is None:
            raise KeyError(key)
        note.stars += 1
        await self.store.set(key, note)
        return note

    @fame.operation(streaming=True)
    async def retrieve_all_values(self, prefix: str = "") -> AsyncIterator[tuple[str, Note]]:
        """Every note whose key starts with ``prefix``, in key order."""
        async for key, note in self.store.scan(prefix):
            yield key, note


async def main() -> None:
    async with fame.open_node() as node:
        notes = await node.spawn(NotesAgent(), "notes@local")
        print(f"spawned {notes!r}")

        # Plain operations: awaited. Arguments are checked against the annotations,
        # and a dict is converted to the Note it describes.
        for key, text in [("todo/1", "write tests"), ("todo/2", "run the bench"), ("idea", "nap")]:
            version = await notes.store_value(key=key, value={"text": text})
            print(f"stored {key!r} (version {version})")
        starred = await notes.star("todo/2")
        print(f"starred todo/2 -> {starred}")

        # A streaming operation: iterated.
        print("all notes:")
        async for key, note in notes.retrieve_all_values():
            print(f"  {key:8} {note.text:15} {'*' * note.stars}")
        print("todo notes:", [key async for key, _ in notes.retrieve_all_values(prefix="todo/")])

        # Errors are typed, and the agent keeps running.
        try:
            await notes.store_value(key="x", value={"text": 42})
        except fame.InvalidArguments as exc:
            print(f"rejected: {exc}")
        try:
            await notes.star(key="missing")
        except fame.OperationFailed as exc:
            print(f"failed as declared: {exc}")
    print("node closed: the agent stopped and the storage was closed")


if __name__ == "__main__":
    trio.run(main)
