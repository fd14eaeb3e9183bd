"""The postgres profile beside encrypted SQLite, both through fame, interleaved in one run.

Both sides run fame's ``KeyValueStore`` with its defaults (deduplication
on, metrics and tracing off): ``encrypted-sqlite`` with durability
``full`` in a temporary directory, and ``postgres`` on a real server
started here (``tests/storage/postgres_server.py``) with ``fsync`` and
``synchronous_commit`` on, in a temporary directory on the same disk,
over TCP on 127.0.0.1. Values are the seed's record, as in
``bench_storage.py``.

Figures (medians of the rounds, SQLite and postgres one after the other):
sequential writes and reads (one caller), 32 callers writing and reading
at once, and a scan of every record: the first scan after another node
wrote (postgres decrypts and sorts every key: ``cold``) and the next one
(its key index is current: ``warm``).

Run: ``python bench/bench_postgres.py`` (100k-record scan) or ``--quick``
(10k records, fewer rounds).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from fame._storage import StorageConfig, open_storage, parse_master_key


class Record(msgspec.Struct):
    value: str
    created: datetime.datetime


RECORD = Record("Hello, World! " * 6, datetime.datetime(2025, 10, 29, 23, 39, 36))
KEY = parse_master_key(secrets.token_urlsafe(32))
CALLERS = 32


def load_server_class() -> Any:
    path = Path(__file__).resolve().parents[1] / "tests" / "storage" / "postgres_server.py"
    spec = importlib.util.spec_from_file_location("postgres_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PostgresServer


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def sequential_writes(store: Any, n: int) -> float:
    async def run() -> None:
        for i in range(n):
            await store.set(f"seq/{i}", RECORD)

    return n / await timed(run)


async def concurrent_writes(store: Any, n: int) -> float:
    async def caller(c: int) -> None:
        for i in range(n // CALLERS):
            await store.set(f"con/{c}/{i}", RECORD)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for c in range(CALLERS):
                nursery.start_soon(caller, c)

    return (n // CALLERS * CALLERS) / await timed(run)


async def sequential_reads(store: Any, n: int, keys: int) -> float:
    async def run() -> None:
        for i in range(n):
            await store.get(f"bulk/{i * 7919 % keys:08d}")

    return n / await timed(run)


async def concurrent_reads(store: Any, n: int, keys: int) -> float:
    async def caller(c: int) -> None:
        for i in range(n // CALLERS):
            await store.get(f"bulk/{(c * 1000 + i) * 7919 % keys:08d}")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for c in range(CALLERS):
                nursery.start_soon(caller, c)

    return (n // CALLERS * CALLERS) / await timed(run)


async def scan(store: Any, expected: int) -> float:
    async def run() -> None:
        seen = 0
        async for _ in store.scan("bulk/"):
            seen += 1
        assert seen == expected, seen

    return await timed(run)


async def side(config: StorageConfig, other: StorageConfig | None, args: Any) -> dict[str, float]:
    """One round of every figure on one profile; ``other`` is a second node on the same store."""
    out: dict[str, float] = {}
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(Record, "bench")
        out["sequential writes/s"] = await sequential_writes(store, args.writes)
        out[f"{CALLERS}-caller writes/s"] = await concurrent_writes(store, args.writes * 4)
        out["sequential reads/s"] = await sequential_reads(store, args.reads, args.records)
        out[f"{CALLERS}-caller reads/s"] = await concurrent_reads(
            store, args.reads * 4, args.records
        )
        if other is not None:
            # Another node writes: this node's key index is stale.
            async with open_storage(other) as second:
                await (await second.get_kv_store(Record, "bench")).set("touch", RECORD)
            out["scan cold s"] = await scan(store, args.records)
        out["scan warm s"] = await scan(store, args.records)
    return out


async def fill(config: StorageConfig, records: int) -> None:
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(Record, "bench")
        for start in range(0, records, 2000):
            await store.set_many(
                {f"bulk/{i:08d}": RECORD for i in range(start, min(records, start + 2000))}
            )


async def main(args: Any) -> None:
    server = load_server_class()(durable=True)
    work = Path(tempfile.mkdtemp(prefix="fame-bench-pg-"))
    try:
        server.start()
        sqlite = StorageConfig(profile="encrypted-sqlite", directory=work / "db", master_key=KEY)
        postgres = StorageConfig(profile="postgres", postgres_dsn=server.dsn(), master_key=KEY)
        for config in (sqlite, postgres):
            await fill(config, args.records)
        rounds: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
        for _ in range(args.rounds):
            rounds["sqlite"].append(await side(sqlite, None, args))
            rounds["postgres"].append(await side(postgres, postgres, args))
        print(f"records: {args.records}, rounds: {args.rounds}, load: {os.getloadavg()}")
        print(f"{'figure':24} {'encrypted-sqlite':>17} {'postgres':>12} {'pg/sqlite':>10}")
        for name in rounds["postgres"][0]:
            pg = statistics.median(r[name] for r in rounds["postgres"])
            if name in rounds["sqlite"][0]:
                lite = statistics.median(r[name] for r in rounds["sqlite"])
                print(f"{name:24} {lite:17.3f} {pg:12.3f} {pg / lite:10.2f}")
            else:
                print(f"{name:24} {'-':>17} {pg:12.3f} {'-':>10}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parsed = parser.parse_args()
    parsed.records = 10_000 if parsed.quick else 100_000
    parsed.writes = 200 if parsed.quick else 500
    parsed.reads = 500 if parsed.quick else 2000
    parsed.rounds = 2 if parsed.quick else 3
    trio.run(main, parsed)
