"""Storage benchmark: fame's key-value store against raw sqlcipher3, interleaved in one run.

Both sides use the same kind of file and settings: SQLCipher 4 with a raw
per-file key, WAL, ``synchronous=FULL`` (fame's default; ``NORMAL`` for the
one ``normal``-durability line), in a temporary directory on the same disk.
Values are the seed's record (a short string and a timestamp) encoded with
msgpack (msgspec). fame runs the quick start's defaults: encrypted-sqlite,
durability full, deduplication on, metrics and tracing off.

Every figure is measured in rounds, the raw baseline and fame one after the
other (raw, fame, raw, fame, ...), and the medians are compared, so both
sides see the same load. The baselines are what a skilled engineer would
write by hand:

* 64 concurrent writers: raw batches 64 upserts per transaction
  (``executemany`` between ``BEGIN IMMEDIATE`` and ``COMMIT``);
* one sequential writer (full and normal durability): raw commits each write;
* point get: a buffered-mailbox round trip (a deque and a parked task woken
  with ``trio.lowlevel.reschedule``, the runtime benchmark's floor for any
  message to an actor) plus a raw point get on the event loop;
* scan: raw ``SELECT key, value, version ... ORDER BY key``, every value
  decoded into the model with a msgspec decoder, as fame's scan does.

Run: ``python bench/bench_storage.py`` (1M-record scan, about a minute) or
``--quick`` (100k records, fewer rounds).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
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
import sqlcipher3
import trio
from bench_runtime import buffered_mailbox_round_trip  # the floor of a message to an actor

from fame._storage import StorageConfig, open_storage, parse_master_key
from fame._storage._keys import file_key


class Record(msgspec.Struct):
    value: str
    created: datetime.datetime


RECORD = Record("Hello, World! " * 6, datetime.datetime(2025, 10, 29, 23, 39, 36))
ENCODED = msgspec.msgpack.encode(RECORD)
KEY_TEXT = secrets.token_urlsafe(32)
WRITERS = 64
BATCH = 64


def raw_connection(path: Path, synchronous: str = "FULL") -> sqlcipher3.Connection:
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA cipher_log_level = NONE")
    key = file_key(parse_master_key(KEY_TEXT), path)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
        " version INTEGER NOT NULL, expires_at REAL) WITHOUT ROWID"
    )
    return conn


UPSERT = (
    "INSERT INTO kv VALUES (?, ?, ?, NULL) ON CONFLICT (key) DO UPDATE"
    " SET value = excluded.value, version = excluded.version"
)
GET = "SELECT value, version FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- raw baselines ------------------------------------------------------------


class Raw:
    """Raw sqlcipher3 connections, one file per measure."""

    def __init__(self, directory: Path, scan_rows: int, get_rows: int) -> None:
        self.batched = raw_connection(directory / "raw_batched.db")
        self.each = raw_connection(directory / "raw_each.db")
        self.normal = raw_connection(directory / "raw_normal.db", "NORMAL")
        self.gets = raw_connection(directory / "raw_gets.db")
        self.gets.execute("BEGIN")
        self.gets.executemany(UPSERT, ((f"k{i}", ENCODED, i) for i in range(get_rows)))
        self.gets.execute("COMMIT")
        self.get_rows = get_rows
        self.scan_conn = raw_connection(directory / "raw_scan.db")
        for base in range(0, scan_rows, 10_000):
            self.scan_conn.execute("BEGIN")
            self.scan_conn.executemany(
                UPSERT, ((f"k{i:07}", ENCODED, i) for i in range(base, base + 10_000))
            )
            self.scan_conn.execute("COMMIT")
        self.scan_rows = scan_rows
        self.decoder = msgspec.msgpack.Decoder(Record)
        self.version = 0

    def batched_writes(self, n: int) -> float:
        """Writes/s, ``BATCH`` upserts per transaction (one per writer)."""
        conn, base = self.batched, self.version

        def run() -> None:
            # The keys fame's writers write: writer w's i-th key is w{w}-{i},
            # and each transaction holds one write of every writer.
            for i in range(n // BATCH):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(UPSERT, ((f"w{w}-{i}", ENCODED, base + w) for w in range(BATCH)))
                conn.execute("COMMIT")

        self.version += n
        return n / seconds(run)

    def commit_each(self, n: int, conn: sqlcipher3.Connection) -> float:
        base = self.version

        def run() -> None:
            for i in range(n):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(UPSERT, (f"k{i}", ENCODED, base + i))
                conn.execute("COMMIT")

        self.version += n
        return n / seconds(run)

    def point_get(self, n: int) -> float:
        """Seconds per inline point get, decoded into the model (what ``store.get`` returns)."""
        conn, rows, now, decode = self.gets, self.get_rows, time.time(), self.decoder.decode

        def run() -> None:
            for i in range(n):
                decode(conn.execute(GET, (f"k{i % rows}", now)).fetchone()[0])

        return seconds(run) / n

    def scan(self) -> float:
        """Rows/s of a full scan in key order, each value decoded into the model."""
        conn, decode = self.scan_conn, self.decoder.decode

        def run() -> None:
            now = time.time()
            cursor = conn.execute(
                "SELECT key, value, version FROM kv WHERE (expires_at IS NULL OR expires_at > ?)"
                " ORDER BY key",
                (now,),
            )
            seen = 0
            for _key, value, _version in cursor:
                decode(value)
                seen += 1
            assert seen == self.scan_rows, seen

        return self.scan_rows / seconds(run)


# -- fame ---------------------------------------------------------------------


class Fame:
    def __init__(self, full: Any, normal: Any, scan_rows: int, get_rows: int) -> None:
        self.full = full
        self.normal = normal
        self.scan_rows = scan_rows
        self.get_rows = get_rows
        self.concurrent_store: Any = None
        self.sequential_store: Any = None
        self.normal_store: Any = None
        self.get_store: Any = None
        self.scan_store: Any = None

    @classmethod
    async def open(cls, full: Any, normal: Any, scan_rows: int, get_rows: int) -> Fame:
        self = cls(full, normal, scan_rows, get_rows)
        self.concurrent_store = await full.get_kv_store(Record, "concurrent")
        self.sequential_store = await full.get_kv_store(Record, "sequential")
        self.normal_store = await normal.get_kv_store(Record, "normal")
        self.get_store = await full.get_kv_store(Record, "gets")
        for base in range(0, get_rows, 1000):
            await self.get_store.set_many(
                {f"k{i}": RECORD for i in range(base, min(get_rows, base + 1000))}
            )
        self.scan_store = await full.get_kv_store(Record, "scan")
        for base in range(0, scan_rows, 10_000):
            await self.scan_store.set_many({f"k{i:07}": RECORD for i in range(base, base + 10_000)})
        return self

    async def concurrent_writes(self, n: int) -> float:
        store, per_writer = self.concurrent_store, n // WRITERS

        async def writer(w: int) -> None:
            for i in range(per_writer):
                await store.set(f"w{w}-{i}", RECORD)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for w in range(WRITERS):
                nursery.start_soon(writer, w)
        return WRITERS * per_writer / (time.perf_counter() - start)

    async def sequential_writes(self, n: int, store: Any) -> float:
        start = time.perf_counter()
        for i in range(n):
            await store.set(f"k{i}", RECORD)
        return n / (time.perf_counter() - start)

    async def point_get(self, n: int) -> float:
        """Seconds per ``get`` (decoded into the model)."""
        store, rows = self.get_store, self.get_rows
        start = time.perf_counter()
        for i in range(n):
            await store.get(f"k{i % rows}")
        return (time.perf_counter() - start) / n

    async def scan(self) -> float:
        seen = 0
        start = time.perf_counter()
        async for _key, _value in self.scan_store.scan():
            seen += 1
        elapsed = time.perf_counter() - start
        assert seen == self.scan_rows, seen
        return self.scan_rows / elapsed


# -- the run ------------------------------------------------------------------


async def run(directory: Path, quick: bool) -> dict[str, tuple[list[float], list[float]]]:
    scan_rows = 100_000 if quick else 1_000_000
    rounds = 5
    sizes = {
        "concurrent": WRITERS * (40 if quick else 60),
        "sequential": 300 if quick else 500,
        "normal": 500 if quick else 1000,
        "gets": 10_000 if quick else 20_000,
    }
    get_rows = 10_000
    raw = Raw(directory, scan_rows, get_rows)

    def config(durability: str, name: str) -> StorageConfig:
        return StorageConfig(
            profile="encrypted-sqlite",
            directory=directory / name,
            master_key=parse_master_key(KEY_TEXT),
            durability=durability,
        )

    out: dict[str, tuple[list[float], list[float]]] = collections.defaultdict(lambda: ([], []))
    # CPU seconds per operation (process_time: every thread), fame and raw, per round.
    cpu: dict[str, tuple[list[float], list[float]]] = collections.defaultdict(lambda: ([], []))

    def measured(name: str, side: int, ops: int, fn: Callable[[], float]) -> None:
        start = time.process_time()
        out[name][side].append(fn())
        cpu[name][side].append((time.process_time() - start) / ops)

    async def ameasured(name: str, ops: int, fn: Callable[[], Awaitable[float]]) -> None:
        start = time.process_time()
        out[name][0].append(await fn())
        cpu[name][0].append((time.process_time() - start) / ops)

    async with (
        open_storage(config("full", "fame")) as full,
        open_storage(config("normal", "fame-normal")) as normal,
    ):
        fame = await Fame.open(full, normal, scan_rows, get_rows)
        for _ in range(rounds):
            n = sizes["concurrent"]
            measured("concurrent", 1, n, functools.partial(raw.batched_writes, n))
            await ameasured("concurrent", n, functools.partial(fame.concurrent_writes, n))

            n = sizes["sequential"]
            measured("sequential", 1, n, functools.partial(raw.commit_each, n, raw.each))
            await ameasured(
                "sequential", n, functools.partial(fame.sequential_writes, n, fame.sequential_store)
            )

            n = sizes["normal"]
            measured("normal", 1, n, functools.partial(raw.commit_each, n, raw.normal))
            normal_writes = functools.partial(fame.sequential_writes, n, fame.normal_store)
            await ameasured("normal", n, normal_writes)

            n = sizes["gets"]
            start = time.process_time()
            floor = await buffered_mailbox_round_trip(n) + raw.point_get(n)
            out["get"][1].append(floor)
            cpu["get"][1].append((time.process_time() - start) / n)
            await ameasured("get", n, functools.partial(fame.point_get, n))

            measured("scan", 1, scan_rows, raw.scan)
            await ameasured("scan", scan_rows, fame.scan)
    for name, (mine, theirs) in cpu.items():
        out[f"cpu {name}"] = (mine, theirs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k-record scan, smaller rounds")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="fame-bench-storage-", dir=os.getcwd()))
    try:
        out = trio.run(run, directory, args.quick)
    finally:
        shutil.rmtree(directory)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    scan_name = "100k" if args.quick else "1M"
    print(
        "fame storage benchmark: encrypted-sqlite, WAL, dedupe on, interleaved rounds"
        f" (medians of {len(out['scan'][0])})"
    )
    print(f"{'measure':<46}{'fame':>12}{'raw':>12}{'ratio':>8}{'target':>9}")
    # (name, key, unit scale, higher is better, target)
    lines: list[tuple[str, str, float, bool, float | None]] = [
        ("64 concurrent writers vs raw 64/txn, writes/s", "concurrent", 1, True, 0.7),
        ("one sequential writer (full), writes/s", "sequential", 1, True, None),
        ("one sequential writer (normal), writes/s", "normal", 1, True, None),
        ("point get vs mailbox + raw get, µs", "get", 1e6, False, 1.3),
        (f"scan of {scan_name} records, decoded, rows/s", "scan", 1, True, 0.8),
    ]
    for name, key, scale, higher, target in lines:
        mine = statistics.median(out[key][0]) * scale
        base = statistics.median(out[key][1]) * scale
        ratio = mine / base
        goal = verdict = ""
        if target is not None:
            goal = f"{'>=' if higher else '<='}{target:g}x"
            ok = ratio >= target if higher else ratio <= target
            verdict = "  PASS" if ok else "  MISS"
        fmt = ",.0f" if scale == 1 else ".1f"
        print(
            f"{name:<46}{format(mine, fmt):>12}{format(base, fmt):>12}{ratio:>7.2f}x{goal:>9}"
            f"{verdict}"
        )
    print()
    print("CPU time per operation (process_time, all threads), medians; ratio = fame / raw")
    for name, key, _scale, _higher, _target in lines:
        mine = statistics.median(out[f"cpu {key}"][0]) * 1e6
        base = statistics.median(out[f"cpu {key}"][1]) * 1e6
        print(f"{name.split(',')[0]:<46}{mine:>10.1f}µs{base:>10.1f}µs{mine / base:>7.2f}x")
    print(f"load average: {load}")


if __name__ == "__main__":
    main()
