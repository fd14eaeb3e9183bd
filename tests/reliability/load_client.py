"""One load process: many concurrent callers storing values through the sentinel.

usage: load_client.py URL CALLERS CALLS TAG DEADLINE

Token from FAME_ADMISSION_TOKEN. Attaches, prints ``READY``, waits for a
line on stdin (so that every load process starts at once), then runs
CALLERS callers, each storing CALLS values one after another with a
DEADLINE (seconds) per call, and prints one JSON line: ``ok``, ``errors``
(by error class), ``seconds``. No attack: the load of issue 12's last row.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter

import trio

import fame
from agents.storage_agent import StorageAgent


async def main(url: str, callers: int, calls: int, tag: str, deadline: float) -> None:
    errors: Counter[str] = Counter()
    ok = 0
    async with fame.connect(
        url, token=os.environ["FAME_ADMISSION_TOKEN"], default_timeout=deadline
    ) as client:
        storage = client.proxy("storage@fame.fabric", StorageAgent)
        print("READY", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        start = time.perf_counter()

        async def caller(c: int) -> None:
            nonlocal ok
            for n in range(calls):
                try:
                    await storage.store_value(key=f"{tag}-{c}-{n}", value="v")
                except fame.FameError as exc:
                    errors[type(exc).__name__] += 1
                else:
                    ok += 1

        async with trio.open_nursery() as nursery:
            for c in range(callers):
                nursery.start_soon(caller, c)
        seconds = time.perf_counter() - start
    print(json.dumps({"ok": ok, "errors": dict(errors), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
