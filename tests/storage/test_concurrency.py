"""Many tasks on one store: every acknowledged write is read back, also after reopening."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from fame._storage import VersionConflict, open_storage
from fame._storage._sqlcipher_backend import SqliteBackend
from fame._storage._storage_actor import StorageActor

from .conftest import make_config


@attrs.frozen
class Entry:
    writer: int
    n: int


async def test_many_writers_and_readers(opener, profile) -> None:
    acked_shared: list[tuple[int, Entry]] = []
    own: dict[str, Entry] = {}
    counter_wins = 0

    async with opener() as provider:
        store = await provider.get_kv_store(Entry, "busy")
        await store.set("counter", Entry(-1, 0))

        async def worker(w: int) -> None:
            nonlocal counter_wins
            rng = random.Random(w)
            for n in range(25):
                key = f"w{w}-{n % 5}"
                await store.set(key, Entry(w, n))
                own[key] = Entry(w, n)
                # Read-your-writes: the acknowledged value is visible at once.
                assert await store.get(key) == Entry(w, n)
                acked_shared.append((await store.set("shared", Entry(w, n)), Entry(w, n)))
                if rng.random() < 0.3:
                    await store.delete(f"w{w}-{(n + 1) % 5}")
                    own.pop(f"w{w}-{(n + 1) % 5}", None)
                # Optimistic increments: a lost race is a conflict, never a lost update.
                current = await store.get_versioned("counter")
                assert current is not None
                try:
                    await store.set(
                        "counter", Entry(w, current.value.n + 1), if_version=current.version
                    )
                    counter_wins += 1
                except VersionConflict:
                    pass

        async with trio.open_nursery() as nursery:
            for w in range(64):
                nursery.start_soon(worker, w)
        expected = dict(own)
        await check(store, expected, acked_shared, counter_wins)

    if profile != "memory":  # the memory profile keeps nothing past the provider
        async with opener() as provider:
            await check(
                await provider.get_kv_store(Entry, "busy"), expected, acked_shared, counter_wins
            )


async def check(store, expected, acked_shared, counter_wins) -> None:
    everything = await store.list()
    assert {k: v for k, v in everything.items() if k.startswith("w")} == expected
    last_version, last_value = max(acked_shared, key=lambda pair: pair[0])
    shared = await store.get_versioned("shared")
    assert shared is not None and (shared.version, shared.value) == (last_version, last_value)
    counter = await store.get("counter")
    assert counter is not None and counter.n == counter_wins


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_concurrent_writes_share_a_transaction(opener, monkeypatch) -> None:
    batches: list[int] = []
    real_write = SqliteBackend.write

    def counting_write(self, ops, now):  # type: ignore[no-untyped-def]
        batches.append(len(ops))
        return real_write(self, ops, now)

    monkeypatch.setattr(SqliteBackend, "write", counting_write)
    async with opener() as provider:
        store = await provider.get_kv_store(Entry, "grouped")
        async with trio.open_nursery() as nursery:
            for w in range(64):
                nursery.start_soon(store.set, f"k{w}", Entry(w, 0))
        assert await store.count() == 64
    # All 64 writers were queued before the actor ran: fewer commits than writes.
    assert sum(batches) == 64
    assert len(batches) < 64 and max(batches) > 1


async def test_point_reads_are_messages_and_wait_for_a_commit_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every get is a message to the storage actor, which owns the connection:
    a get sent while a commit runs waits for it and never touches the connection
    meanwhile."""
    writing, release = threading.Event(), threading.Event()
    overlapping: list[bool] = []
    handled: list[str] = []
    real_write, real_get, real_batch = (
        SqliteBackend.write,
        SqliteBackend.get,
        StorageActor.handle_batch,
    )

    def held_write(self, ops, now):  # type: ignore[no-untyped-def]
        writing.set()
        assert release.wait(30)
        try:
            return real_write(self, ops, now)
        finally:
            writing.clear()

    def checked_get(self, op, now):  # type: ignore[no-untyped-def]
        overlapping.append(writing.is_set())
        return real_get(self, op, now)

    async def recorded_batch(self, deliveries):  # type: ignore[no-untyped-def]
        handled.extend(type(delivery.message).__name__ for delivery in deliveries)
        await real_batch(self, deliveries)

    monkeypatch.setattr(SqliteBackend, "get", checked_get)
    monkeypatch.setattr(StorageActor, "handle_batch", recorded_batch)
    async with open_storage(make_config("encrypted-sqlite", tmp_path / "db")) as provider:
        store = await provider.get_kv_store(Entry, "reads")
        await store.set("k", Entry(0, 0))
        handled.clear()
        assert await store.get("k") == Entry(0, 0)
        assert handled == ["Get"]  # a message to the actor, even when it is idle
        handled.clear()

        monkeypatch.setattr(SqliteBackend, "write", held_write)
        got: list[Entry | None] = []

        async def read() -> None:
            got.append(await store.get("k"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.set, "k", Entry(0, 1))
            assert await trio.to_thread.run_sync(writing.wait, 30)
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # the read waits for the commit in progress
            release.set()
        assert got == [Entry(0, 1)]
        assert handled == ["Put", "Get"]
    assert overlapping and not any(overlapping)


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_a_batch_of_large_writes_is_cut_into_transactions(opener, monkeypatch) -> None:
    batches: list[int] = []
    real_write = SqliteBackend.write

    def counting_write(self, ops, now, **kw):  # type: ignore[no-untyped-def]
        batches.append(len(ops))
        return real_write(self, ops, now, **kw)

    monkeypatch.setattr(SqliteBackend, "write", counting_write)
    monkeypatch.setattr("fame._storage._storage_actor.COMMIT_BYTES", 1000)
    async with opener() as provider:
        store = await provider.get_kv_store(str, "large")
        async with trio.open_nursery() as nursery:
            for w in range(20):
                nursery.start_soon(store.set, f"k{w:02}", "x" * 300)
        # Every writer was answered after its own transaction committed.
        assert await store.get_many([f"k{w:02}" for w in range(20)]) == {
            f"k{w:02}": "x" * 300 for w in range(20)
        }
    # About 300 bytes each: at most three per transaction, none left out.
    assert sum(batches) == 20
    assert max(batches) <= 3 and len(batches) >= 7
