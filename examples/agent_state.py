"""Durable agent state: a counter that keeps its count across node restarts.

The agent names its state model and changes its state in
``async with self.state() as s:`` blocks: written back when a block exits
normally, discarded when it raises. The node runs on encrypted files in a
temporary directory, is closed and opened again, and the count goes on.

Run it with ``python examples/agent_state.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import trio

import fame
from fame.storage import MasterKey, StorageConfig, open_storage


class CounterState(msgspec.Struct):
    count: int = 0


class Counter(fame.BaseAgent):
    state_model = CounterState

    @fame.operation
    async def bump(self) -> int:
        async with self.state() as s:
            s.count += 1
            return s.count

    @fame.operation(errors=(ValueError,))
    async def bump_and_fail(self) -> None:
        async with self.state() as s:
            s.count += 1000
            raise ValueError("this change is discarded")


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        config = StorageConfig(
            profile="encrypted-sqlite", directory=Path(directory), master_key=MasterKey.generate()
        )
        for run in (1, 2):
            async with (
                open_storage(config) as provider,
                fame.open_node(storage_provider=provider) as node,
            ):
                counter = await node.spawn(Counter, "counter@local")
                print(f"run {run}: bump -> {await counter.bump()}")
                try:
                    await counter.bump_and_fail()
                except fame.OperationFailed as exc:
                    print(f"run {run}: bump_and_fail failed ({exc}); its change was discarded")
                print(f"run {run}: bump -> {await counter.bump()}")


if __name__ == "__main__":
    trio.run(main)
