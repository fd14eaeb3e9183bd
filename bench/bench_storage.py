"""Storage benchmark: fame's key-value store against raw sqlcipher3, in one run.

Both sides use the same kind of file and settings: SQLCipher 4 with a raw
per-file key, WAL, ``synchronous=FULL`` (fame's default), in a temporary
directory on the same disk. Values are the seed's record (a short string
and a timestamp) encoded with msgpack; the raw side writes the encoded
bytes, so it pays no validation or encoding.

(a) 64 concurrent writers through one store  vs raw commit-per-write  (target >= 3x)
(b) one sequential writer through one store  vs raw commit-per-write  (target >= 0.5x)
(c) sequential ``get``                       vs raw inline point gets (target >= 0.1x)
(d) ``scan`` of 100k records, rows/s         vs a raw full-table read

It also measures the costs behind where the storage actor runs its work:
a raw point get and a raw commit each wrapped in its own
``trio.to_thread.run_sync`` hop.

Run: ``python bench/bench_storage.py`` (about 30 s).
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import sqlcipher3
import trio

from fame._storage import StorageConfig, open_storage, parse_master_key
from fame._storage._keys import file_key
from fame._storage._worker import Worker


class Record(msgspec.Struct):
    value: str
    created: datetime.datetime


RECORD = Record("Hello, World! " * 6, datetime.datetime(2025, 10, 29, 23, 39, 36))
ENCODED = msgspec.msgpack.encode(RECORD)
KEY_TEXT = secrets.token_urlsafe(32)


def raw_connection(path: Path) -> sqlcipher3.Connection:
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA cipher_log_level = NONE")
    key = file_key(parse_master_key(KEY_TEXT), path)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
        " version INTEGER NOT NULL, expires_at REAL) WITHOUT ROWID"
    )
    return conn


UPSERT = (
    "INSERT INTO kv VALUES (?, ?, ?, NULL) ON CONFLICT (key) DO UPDATE"
    " SET value = excluded.value, version = excluded.version"
)


def rate(n: int, seconds: float) -> float:
    return n / seconds


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- raw baselines ----------------------------------------------------------


def raw_commit_each(directory: Path, n: int) -> float:
    conn = raw_connection(directory / "raw_commit_encrypted_value.db")

    def run() -> None:
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(UPSERT, (f"k{i}", ENCODED, i))
            conn.execute("COMMIT")

    seconds = timed(run)
    conn.close()
    return rate(n, seconds)


def raw_point_gets(directory: Path, rows: int, n: int) -> tuple[float, sqlcipher3.Connection]:
    conn = raw_connection(directory / "raw_get_encrypted_value.db")
    conn.execute("BEGIN")
    conn.executemany(UPSERT, ((f"k{i}", ENCODED, i) for i in range(rows)))
    conn.execute("COMMIT")
    get = "SELECT value, version FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
    now = time.time()

    def run() -> None:
        for i in range(n):
            conn.execute(get, (f"k{i % rows}", now)).fetchone()

    return rate(n, timed(run)), conn


def raw_scan(directory: Path, rows: int) -> float:
    conn = raw_connection(directory / "raw_scan_encrypted_value.db")
    conn.execute("BEGIN")
    conn.executemany(UPSERT, ((f"k{i:06}", ENCODED, i) for i in range(rows)))
    conn.execute("COMMIT")
    seconds = timed(
        lambda: conn.execute("SELECT key, value, version FROM kv ORDER BY key").fetchall()
    )
    conn.close()
    return rate(rows, seconds)


async def thread_hop_rates(directory: Path, n: int) -> tuple[float, float, float]:
    """A raw point get and a raw commit, each in its own to_thread hop, and a raw
    commit handed to a dedicated worker thread (what the storage actor does)."""
    conn = raw_connection(directory / "raw_hop_encrypted_value.db")
    conn.execute(UPSERT, ("k", ENCODED, 0))

    def get() -> object:
        return conn.execute("SELECT value FROM kv WHERE key = 'k'").fetchone()

    def commit(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(UPSERT, (f"k{i}", ENCODED, i))
        conn.execute("COMMIT")

    start = time.perf_counter()
    for _ in range(n):
        await trio.to_thread.run_sync(get)
    gets = rate(n, time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n):
        await trio.to_thread.run_sync(commit, i)
    commits = rate(n, time.perf_counter() - start)
    worker = Worker("bench")
    worker.start()
    start = time.perf_counter()
    for i in range(n, 2 * n):
        await worker.run(commit, i)
    worker_commits = rate(n, time.perf_counter() - start)
    worker.stop()
    conn.close()
    return gets, commits, worker_commits


# -- fame ---------------------------------------------------------------------


async def fame_side(directory: Path, sizes: dict[str, int]) -> dict[str, float]:
    config = StorageConfig(
        profile="encrypted-sqlite", directory=directory, master_key=parse_master_key(KEY_TEXT)
    )
    out: dict[str, float] = {}
    async with open_storage(config) as provider:
        # (a) concurrent writers
        store = await provider.get_kv_store(Record, "concurrent")
        writers, per_writer = 64, sizes["concurrent"] // 64

        async def writer(w: int) -> None:
            for i in range(per_writer):
                await store.set(f"w{w}-{i}", RECORD)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for w in range(writers):
                nursery.start_soon(writer, w)
        out["concurrent"] = rate(writers * per_writer, time.perf_counter() - start)

        # (b) one sequential writer
        store = await provider.get_kv_store(Record, "sequential")
        n = sizes["sequential"]
        start = time.perf_counter()
        for i in range(n):
            await store.set(f"k{i}", RECORD)
        out["sequential"] = rate(n, time.perf_counter() - start)

        # (c) sequential gets
        rows, n = sizes["get_rows"], sizes["gets"]
        store = await provider.get_kv_store(Record, "gets")
        for base in range(0, rows, 1000):
            await store.set_many({f"k{i}": RECORD for i in range(base, min(rows, base + 1000))})
        start = time.perf_counter()
        for i in range(n):
            await store.get(f"k{i % rows}")
        out["get"] = rate(n, time.perf_counter() - start)

        # (d) scan
        rows = sizes["scan"]
        store = await provider.get_kv_store(Record, "scan")
        start = time.perf_counter()
        for base in range(0, rows, 1000):
            await store.set_many({f"k{i:06}": RECORD for i in range(base, base + 1000)})
        out["bulk_insert"] = rate(rows, time.perf_counter() - start)
        start = time.perf_counter()
        seen = 0
        async for _key, _value in store.scan():
            seen += 1
        assert seen == rows, seen
        out["scan"] = rate(rows, time.perf_counter() - start)
    return out


def main() -> None:
    sizes = {
        "concurrent": 64 * 100,
        "sequential": 2000,
        "gets": 50_000,
        "get_rows": 10_000,
        "scan": 100_000,
    }
    directory = Path(tempfile.mkdtemp(prefix="fame-bench-storage-", dir=os.getcwd()))
    try:
        raw_commit = raw_commit_each(directory, 2000)
        raw_get, conn = raw_point_gets(directory, sizes["get_rows"], sizes["gets"])
        conn.close()
        raw_rows = raw_scan(directory, sizes["scan"])
        hop_get, hop_commit, worker_commit = trio.run(thread_hop_rates, directory, 2000)
        ours = trio.run(fame_side, directory / "fame", sizes)
    finally:
        shutil.rmtree(directory)

    print("fame storage benchmark: encrypted-sqlite, WAL, synchronous=FULL, same run")
    print(f"{'measure':<44}{'fame':>12}{'raw':>12}{'ratio':>8}{'target':>9}")
    lines = [
        ("(a) 64 concurrent writers, writes/s", ours["concurrent"], raw_commit, 3.0),
        ("(b) one sequential writer, writes/s", ours["sequential"], raw_commit, 0.5),
        ("(c) sequential get, gets/s", ours["get"], raw_get, 0.1),
        ("(d) scan of 100k records, rows/s", ours["scan"], raw_rows, None),
        ("    bulk set_many x1000, rows/s", ours["bulk_insert"], None, None),
    ]
    for name, mine, raw, target in lines:
        raw_text = f"{raw:>12,.0f}" if raw else f"{'':>12}"
        ratio = f"{mine / raw:>7.2f}x" if raw else f"{'':>8}"
        goal = f"{'>=' + format(target, 'g') + 'x':>9}" if target else ""
        verdict = "" if not (raw and target) else ("  ok" if mine / raw >= target else "  MISSED")
        print(f"{name:<44}{mine:>12,.0f}{raw_text}{ratio}{goal}{verdict}")
    print()
    print("where the storage actor runs its work (raw sqlcipher3, per operation):")
    print(f"    point get inline            {raw_get:>10,.0f}/s")
    print(f"    point get in a to_thread hop {hop_get:>9,.0f}/s  -> reads stay on the event loop")
    print(f"    commit inline               {raw_commit:>10,.0f}/s")
    print(f"    commit in a to_thread hop   {hop_commit:>10,.0f}/s")
    print(
        f"    commit on a dedicated worker {worker_commit:>9,.0f}/s  -> one hop per batch of writes"
    )


if __name__ == "__main__":
    main()
