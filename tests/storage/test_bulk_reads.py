"""Bulk reads (count, get_many, scan pages) run off the event loop in bounded steps.

They must answer exactly what one inline read answered (large namespaces,
chunk boundaries, expired and deleted keys), see one snapshot even while
writes queue up, and leave the event loop to other tasks while they run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator
from pathlib import Path

import msgspec
import pytest
import trio

from fame._storage._keys import file_key
from fame._storage._memory import MemoryBackend
from fame._storage._ops import (
    READ_CHUNK,
    Backend,
    BulkRead,
    Count,
    GetMany,
    PutMany,
    ReadSteps,
    Row,
    Scan,
)
from fame._storage._sqlcipher_backend import SqliteBackend, open_sqlite

from .conftest import PROFILES, FakeClock, make_config

NOW = 1_000_000.0
BIG = 20_000
PAGE_BOUNDARY = 499
"""An index just before the end of the store's first page of 500 rows."""


class Item(msgspec.Struct):
    n: int
    generation: int = 0


def key_of(i: int) -> str:
    # Two prefixes, so prefix scans start and stop inside the namespace.
    return f"{'a' if i % 3 else 'b'}/{i:06}"


# -- the backends on their own: every step bounded, answers unchanged --------


def open_backend(profile: str, directory: Path) -> Backend:
    if profile == "memory":
        return MemoryBackend("bulk")
    key = None
    path = directory / ("bulk_encrypted_value.db" if profile == "encrypted-sqlite" else "bulk.db")
    if profile == "encrypted-sqlite":
        master = make_config(profile, directory).master_key
        assert master is not None
        key = file_key(master, path)
    return open_sqlite(path, "bulk", key)


def drain(steps: ReadSteps) -> tuple[object, int]:
    """Run a bulk read to its end; return its answer and how many steps it took."""
    count = 0
    while True:
        count += 1
        try:
            next(steps)
        except StopIteration as done:
            return done.value, count


def fill(backend: Backend, n: int) -> dict[str, Row]:
    """``n`` keys, one in seven already expired at NOW; return the live rows."""
    live: dict[str, bytes] = {}
    expired: list[tuple[str, bytes]] = []
    for i in range(n):
        value = f"v{i}".encode()
        if i % 7 == 3:
            expired.append((key_of(i), value))
        else:
            live[key_of(i)] = value
    [versions] = backend.write([PutMany(tuple(live.items()))], NOW)
    backend.write([PutMany(tuple(expired), expires_at=NOW - 1)], NOW - 10)
    assert isinstance(versions, list)
    return {
        key: (value, version) for (key, value), version in zip(live.items(), versions, strict=True)
    }


def scan_model(rows: dict[str, Row], op: Scan) -> list[tuple[object, ...]]:
    keys = sorted(k for k in rows if k.startswith(op.prefix))
    if op.after is not None:
        keys = [k for k in keys if k > op.after]
    return [(k, *rows[k]) if op.values else (k,) for k in keys[: op.limit]]


@pytest.mark.parametrize("profile", PROFILES)
def test_bulk_reads_answer_the_same_across_step_boundaries(profile, tmp_path) -> None:
    backend = open_backend(profile, tmp_path)
    try:
        n = 3 * READ_CHUNK + 17
        rows = fill(backend, n)

        # Duplicates, missing and expired keys; the answer keeps the asked order.
        asked = (*(key_of(i) for i in reversed(range(n + 40))), key_of(5), "nope")
        found, steps = drain(backend.read_steps(GetMany(asked), NOW))
        assert list(found.items()) == [(k, rows[k]) for k in dict.fromkeys(asked) if k in rows]
        assert steps >= math.ceil(len(asked) / READ_CHUNK)

        count, steps = drain(backend.read_steps(Count(), NOW))
        assert count == len(rows)
        if profile == "memory":  # SQLite counts in one statement, in C, without the GIL
            assert steps >= math.ceil(n / READ_CHUNK)

        middle = sorted(rows)[READ_CHUNK - 1]  # a key on a step boundary
        for op in [
            Scan("", None, n, values=True),
            Scan("", None, READ_CHUNK, values=True),
            Scan("", None, READ_CHUNK + 1, values=False),
            Scan("a/", None, 2 * READ_CHUNK - 1, values=True),
            Scan("b/", None, n, values=True),
            Scan("", middle, n, values=True),
            Scan("a/", middle, READ_CHUNK * 2, values=False),
            Scan("b/", "a/", n, values=False),  # after sorts before the prefix
            Scan("", None, 0, values=True),
            Scan("zzz", None, n, values=True),
        ]:
            answer, steps = drain(backend.read_steps(op, NOW))
            expected = scan_model(rows, op)
            assert [tuple(row) for row in answer] == expected, op  # type: ignore[attr-defined]
            if len(expected) > READ_CHUNK:
                assert steps >= math.ceil(len(expected) / READ_CHUNK), op
    finally:
        backend.close()


# -- through the store: many records, results and snapshots --------------------


async def test_big_namespace_reads_match_a_model(provider, clock: FakeClock) -> None:
    store = await provider.get_kv_store(Item, "big")
    model = {key_of(i): Item(i) for i in range(BIG)}
    await store.set_many(model)
    short = {key_of(i): Item(-i) for i in range(BIG, BIG + 700)}
    await store.set_many(short, ttl=5)
    removed = [key_of(i) for i in range(0, BIG, 11)]
    assert await store.delete_many(removed) == len(removed)
    for key in removed:
        del model[key]
    clock.advance(10)  # the short-lived ones expired

    assert await store.count() == len(model)
    assert await store.list() == dict(sorted(model.items()))
    assert [k async for k in store.keys("b/")] == sorted(k for k in model if k.startswith("b/"))
    after = sorted(model)[PAGE_BOUNDARY]
    assert [k async for k, _ in store.scan(after=after, limit=1001)] == [
        k for k in sorted(model) if k > after
    ][:1001]

    asked = [key_of(i) for i in range(BIG + 700)] + [key_of(7)]
    found = await store.get_many(reversed(asked))
    assert list(found) == [k for k in dict.fromkeys(reversed(asked)) if k in model]
    assert found == model


async def test_a_bulk_read_sees_one_snapshot_while_writes_wait(provider) -> None:
    store = await provider.get_kv_store(Item, "snapshot")
    keys = [key_of(i) for i in range(BIG)]
    await store.set_many({k: Item(i, 0) for i, k in enumerate(keys)})
    seen: list[set[int]] = []
    counts: list[int] = []

    async def rewrite() -> None:
        for generation in range(1, 4):
            # One transaction rewrites every key and adds a new one.
            batch = {k: Item(i, generation) for i, k in enumerate(keys)}
            batch[f"new/{generation}"] = Item(-1, generation)
            await store.set_many(batch)

    async def read() -> None:
        for _ in range(4):
            found = await store.get_many(keys)
            assert len(found) == BIG
            seen.append({item.generation for item in found.values()})
            counts.append(await store.count())

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rewrite)
            nursery.start_soon(read)
    # Never half of one transaction: each read saw one generation only.
    assert all(len(generations) == 1 for generations in seen), seen
    assert all(BIG <= count <= BIG + 3 for count in counts), counts
    assert await store.count() == BIG + 3


# -- the event loop keeps running ---------------------------------------------

TICKS = 20
"""Checkpoints another task must get through while one bulk read runs."""


@pytest.mark.parametrize("read", ["count", "get_many"])
async def test_other_tasks_run_while_a_bulk_read_runs(provider, profile, monkeypatch, read) -> None:
    """A ticker must pass TICKS checkpoints before the read may finish.

    File profiles: the read's first step, on the worker thread, waits for
    the ticker. Had the step run on the event loop, the ticker could not
    run and the wait would time out. The memory profile has no worker: its
    steps run inline with a checkpoint between two of them, and its reads
    here take many more than TICKS steps.
    """
    store = await provider.get_kv_store(Item, "ticking")
    await store.set_many({key_of(i): Item(i) for i in range(BIG)})
    loop_thread = threading.get_ident()
    enough = threading.Event()
    step_threads: list[int] = []
    waited: list[bool] = []

    if profile != "memory":
        real = SqliteBackend.read_steps

        def gated(self: SqliteBackend, op: BulkRead, now: float) -> Generator[None, None, object]:
            step_threads.append(threading.get_ident())
            waited.append(enough.wait(timeout=30))
            return (yield from real(self, op, now))

        monkeypatch.setattr(SqliteBackend, "read_steps", gated)

    ticks = 0
    reading = True

    async def ticker() -> None:
        nonlocal ticks
        while reading:
            await trio.lowlevel.checkpoint()
            ticks += 1
            if ticks == TICKS:
                enough.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()  # the ticker is running
            before = ticks
            if read == "count":
                assert await store.count() == BIG
            else:
                assert len(await store.get_many(key_of(i) for i in range(BIG))) == BIG
            during = ticks - before
            reading = False

    assert during >= TICKS
    if profile != "memory":
        assert waited == [True]
        assert step_threads and loop_thread not in step_threads


async def test_point_reads_stay_on_the_event_loop(provider, profile, monkeypatch) -> None:
    """``get`` is bounded: answered inline, never a thread hop."""
    store = await provider.get_kv_store(Item, "points")
    await store.set("k", Item(1))
    if profile != "memory":
        threads: list[int] = []
        real = SqliteBackend.get

        def spy(self: SqliteBackend, op: object, now: float) -> object:
            threads.append(threading.get_ident())
            return real(self, op, now)  # type: ignore[arg-type]

        monkeypatch.setattr(SqliteBackend, "get", spy)
    for _ in range(3):
        assert await store.get("k") == Item(1)
    if profile != "memory":
        assert threads == [threading.get_ident()] * 3
