"""What deduplication costs on the whole path: ``store_value`` with and without it.

Real processes in a temporary project (``fame up``: a sentinel and a node
with encrypted-sqlite storage, 127.0.0.1), one client. The node serves the
storage agent twice: ``storage@fame.fabric`` as shipped (its write carries
the call's request id into the SQLCipher transaction, which records it) and
``plain@fame.fabric``, the same agent whose ``store_value`` writes without
the id (nothing recorded), in a namespace of its own. Each round stores
the same number of records through each, by 1 caller and by 32 concurrent
callers, the two interleaved round after round (which goes first
alternates) so that disk and CPU noise hits both alike. Figures are the
median of the rounds, in stores/s, and the ratio deduplicated / plain.

Run: ``python bench/bench_delivery.py [--rounds N]`` (``just bench``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_project import client_credentials, fame_cli, new_project  # noqa: E402

import fame  # noqa: E402
from agents.storage_agent import STORAGE_AGENT_ADDRESS, StorageAgent  # noqa: E402

PLAIN_ADDRESS = "plain@fame.fabric"
STORES = {1: 600, 32: 4000}

PLAIN_AGENT = '''"""The storage agent writing without the request id (bench_delivery's baseline)."""

import fame
from agents.storage_agent import RecordModel, StorageAgent


class PlainStorageAgent(StorageAgent):
    async def start(self) -> None:
        self._store = await self.storage_provider.get_kv_store(RecordModel, "plain_namespace")

    @fame.operation(errors=(fame.storage.InvalidKey, fame.storage.StorageWriteFailed))
    async def store_value(self, key: str, value: str) -> RecordModel:
        record = RecordModel(value)
        await self._store.set(key, record)
        return record
'''

POLICY = """
[[bind]]
who = ["node:agent"]
addresses = ["plain@fame.fabric"]

[[call]]
who = ["role:client"]
addresses = ["plain@fame.fabric"]
operations = ["*"]
"""


async def _stores(agent: fame.Proxy[StorageAgent], prefix: str, count: int, callers: int) -> float:
    """Store ``count`` records by ``callers`` concurrent callers; stores per second."""
    numbers = iter(range(count))

    async def caller() -> None:
        for i in numbers:
            await agent.store_value(key=f"{prefix}-{i:06d}", value=f"value number {i}")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return count / (time.perf_counter() - start)


async def _measure(
    url: str, token: str, keys: list[bytes], rounds: int
) -> dict[int, dict[str, list[float]]]:
    figures: dict[int, dict[str, list[float]]] = {c: {"dedup": [], "plain": []} for c in STORES}
    async with fame.connect(url, token=token, sentinel_keys=keys) as client:
        agents = {
            "dedup": client.proxy(STORAGE_AGENT_ADDRESS, StorageAgent),
            "plain": client.proxy(PLAIN_ADDRESS, StorageAgent),
        }
        for kind, agent in agents.items():  # warm up: files open, caches filled
            await _stores(agent, f"warm-{kind}", 200, 8)
        for round_ in range(rounds):
            order = ["dedup", "plain"] if round_ % 2 == 0 else ["plain", "dedup"]
            for callers, count in STORES.items():
                for kind in order:
                    prefix = f"r{round_}-c{callers}-{kind}"
                    figures[callers][kind].append(
                        await _stores(agents[kind], prefix, count, callers)
                    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root, env, port = new_project("fame-bench-delivery-")
    (root / "plain_storage.py").write_text(PLAIN_AGENT)
    with (root / "conf" / "policy.toml").open("a") as policy:
        policy.write(POLICY)
    agent_env = root / "conf" / "agent.env"
    lines = agent_env.read_text().splitlines()
    agent_env.write_text(
        "\n".join(
            f"{line} plain_storage:PlainStorageAgent@{PLAIN_ADDRESS}"
            if line.startswith("FAME_AGENTS=")
            else line
            for line in lines
        )
        + "\n"
    )
    try:
        fame_cli(root, env, "up")
        token, keys = client_credentials(root)
        figures = trio.run(_measure, f"ws://127.0.0.1:{port}", token, keys, args.rounds)
    finally:
        fame_cli(root, env, "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
    print("deduplication on the whole path: store_value through the sentinel, encrypted-sqlite")
    print(f"  median of {args.rounds} interleaved rounds, stores/s")
    print("  callers   deduplicated      plain   ratio")
    for callers, kinds in figures.items():
        dedup, plain = statistics.median(kinds["dedup"]), statistics.median(kinds["plain"])
        print(f"  {callers:7d} {dedup:14,.0f} {plain:10,.0f}   {dedup / plain:5.2f}")


if __name__ == "__main__":
    main()
