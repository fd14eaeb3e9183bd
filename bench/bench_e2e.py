"""End-to-end figures of the storage example: start-up time and resident memory.

In a temporary project root with a free port (never the checkout's data/ or
port 8000), this measures, with real processes:

* cold start: ``fame up`` on an empty root (init, both nodes start, the
  storage agent answers through the sentinel), wall-clock seconds;
* warm start: ``fame up`` again after ``fame stop``, with the stores on disk;
* resident memory (VmRSS) of the sentinel and of the agent node, idle and
  after 10,000 records stored through the client (32 concurrent callers);
* the rate of those 10,000 stores, and of streaming them all back.

Run it with ``just bench`` or ``python bench/bench_e2e.py [--records N]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_project import (  # noqa: E402
    client_credentials,
    fame_cli,
    new_project,
    service_rss_mib,
)

import fame  # noqa: E402
from agents.storage_agent import STORAGE_AGENT_ADDRESS, StorageAgent  # noqa: E402


async def _load(
    url: str, token: str, keys: list[bytes], records: int, callers: int
) -> tuple[float, float, int]:
    async with fame.connect(url, token=token, sentinel_keys=keys) as node:
        agent = node.proxy(STORAGE_AGENT_ADDRESS, StorageAgent)
        next_index = iter(range(records))

        async def caller() -> None:
            for i in next_index:
                await agent.store_value(key=f"bench_{i:06d}", value=f"value number {i}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller)
        store_seconds = time.perf_counter() - start
        start = time.perf_counter()
        count = 0
        async for _pair in agent.retrieve_all_values():
            count += 1
        stream_seconds = time.perf_counter() - start
    return store_seconds, stream_seconds, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--callers", type=int, default=32)
    args = parser.parse_args()

    root, env, port = new_project("fame-bench-e2e-")
    try:
        cold = fame_cli(root, env, "up")
        idle = {name: service_rss_mib(root, name) for name in ("sentinel", "agent")}
        token, keys = client_credentials(root)
        url = f"ws://127.0.0.1:{port}"
        store_s, stream_s, count = trio.run(_load, url, token, keys, args.records, args.callers)
        loaded = {name: service_rss_mib(root, name) for name in ("sentinel", "agent")}
        stop = fame_cli(root, env, "stop")
        warm = fame_cli(root, env, "up")
        after_restart = {name: service_rss_mib(root, name) for name in ("sentinel", "agent")}
        fame_cli(root, env, "stop")
        size = sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file())
    finally:
        fame_cli(root, env, "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)

    print("storage example, end to end (real processes, encrypted-sqlite, 127.0.0.1)")
    print(f"  cold start, fame up on an empty root until the agent answers: {cold:.2f} s")
    print(f"  warm start, fame up with {count} records on disk:              {warm:.2f} s")
    print(f"  graceful stop of both nodes (stores closed):                  {stop:.2f} s")
    print(f"  store {args.records} records, {args.callers} concurrent callers: {store_s:.2f} s"
          f" ({args.records / store_s:,.0f} stores/s)")  # fmt: skip
    print(
        f"  stream all {count} records back: {stream_s:.3f} s ({count / stream_s:,.0f} records/s)"
    )
    print(f"  data/ on disk after stop: {size / 1024:.0f} KiB")
    print("  resident memory (VmRSS, MiB)      sentinel    agent")
    print(f"    idle after start               {idle['sentinel']:8.1f} {idle['agent']:8.1f}")
    after = f"after {args.records} records"
    print(f"    {after:<30} {loaded['sentinel']:8.1f} {loaded['agent']:8.1f}")
    print(
        f"    after restart with the records {after_restart['sentinel']:8.1f}"
        f" {after_restart['agent']:8.1f}"
    )


if __name__ == "__main__":
    main()
