"""What recording request ids costs: ``set`` with and without ``request_id``.

One encrypted-sqlite store (SQLCipher, WAL, ``synchronous=FULL``, fame's
defaults), the seed's record, in a temporary directory. Each round runs the
same number of ``set`` calls by 1 writer, then by 32 concurrent writers (the
storage actor commits their writes in groups), once without and once with a
request id, the two kinds interleaved round after round in one process so
that disk and CPU noise hits both alike. Request ids are either random
(``uuid4().hex``, the worst case for a b-tree keyed by id, which the table no
longer has) or sequential (``caller:counter``). Figures are the median of
the rounds, in writes/s.

Run: ``python bench/bench_dedupe.py [rounds] [full|normal]`` (about a minute
with 5 rounds; ``normal`` leaves out most of the fsync wait, so it shows the
CPU cost).
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from fame._storage import StorageConfig, open_storage, parse_master_key


class Record(msgspec.Struct):
    value: str
    created: datetime.datetime


RECORD = Record("Hello, World! " * 6, datetime.datetime(2025, 10, 29, 23, 39, 36))
KEYS = 10_000
WRITES = {1: 400, 32: 4000}

_counter = itertools.count()


def random_id() -> str:
    return uuid.uuid4().hex


def sequential_id() -> str:
    return f"bench-caller:{next(_counter)}"


async def run(store: Any, writers: int, total: int, ids: Callable[[], str] | None) -> float:
    """Writes per second of ``total`` sets spread over ``writers`` tasks."""
    keys = [f"key-{secrets.randbelow(KEYS):05d}" for _ in range(total)]

    async def writer(part: list[str]) -> None:
        for key in part:
            await store.set(key, RECORD, request_id=None if ids is None else ids())

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, keys[w::writers])
    return total / (time.perf_counter() - start)


async def main(rounds: int, durability: str) -> None:
    kinds: dict[str, Callable[[], str] | None] = {
        "none": None,
        "random": random_id,
        "sequential": sequential_id,
    }
    figures: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as directory:
        config = StorageConfig(
            profile="encrypted-sqlite",
            directory=Path(directory),
            master_key=parse_master_key(secrets.token_urlsafe(32)),
            durability=durability,
        )
        async with open_storage(config) as provider:
            store = await provider.get_kv_store(Record, "bench")
            await store.set_many({f"key-{i:05d}": RECORD for i in range(KEYS)})
            await run(store, 32, 1000, random_id)  # warm up: the tables hold ids already
            for _round in range(rounds):
                for writers, total in WRITES.items():
                    for kind, ids in kinds.items():
                        rate = await run(store, writers, total, ids)
                        figures.setdefault((writers, kind), []).append(rate)
    print(
        f"set on encrypted-sqlite, durability={durability}, median of {rounds} interleaved rounds"
    )
    for writers in WRITES:
        base = statistics.median(figures[writers, "none"])
        print(f"  {writers:2d} writer(s): without request_id {base:8.0f} writes/s")
        for kind in ("random", "sequential"):
            rate = statistics.median(figures[writers, kind])
            print(
                f"              with {kind:10s} ids {rate:8.0f} writes/s"
                f"  ({(rate / base - 1) * 100:+.1f} %)"
            )


if __name__ == "__main__":
    trio.run(
        main,
        int(sys.argv[1]) if len(sys.argv) > 1 else 5,
        sys.argv[2] if len(sys.argv) > 2 else "full",
    )
