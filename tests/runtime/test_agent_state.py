"""Agent state: ``async with self.state() as s`` survives crashes and restarts, exactly."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

import fame
from fame.errors import StateConflict
from fame.storage import StorageConfig, open_storage, parse_master_key

STATE_FILE = "__agent_state_encrypted_value.db"


class CounterState(msgspec.Struct):
    count: int = 0
    history: list[str] = msgspec.field(default_factory=list)


class Boom(Exception):
    """Raised on purpose inside a state block."""


class Counter(fame.BaseAgent):
    state_model = CounterState
    max_concurrency = 16

    # Set by the conflict test: the block waits between its read and its write.
    reading: trio.Event | None = None
    proceed: trio.Event | None = None

    @fame.operation
    async def bump(self) -> int:
        async with self.state() as s:
            count = s.count
            await trio.lowlevel.checkpoint()  # another call could run here, without the lock
            s.count = count + 1
            return int(s.count)

    @fame.operation
    async def bump_then_crash(self) -> None:
        async with self.state() as s:
            s.count += 100
            s.history.append("lost")
            raise Boom("the change must be discarded")

    @fame.operation
    async def peek(self) -> int:
        async with self.state() as s:
            return int(s.count)

    @fame.operation
    async def slow_bump(self) -> int:
        async with self.state() as s:
            assert self.reading is not None and self.proceed is not None
            self.reading.set()
            await self.proceed.wait()
            s.count += 1
            return int(s.count)


class SerialCounter(Counter):
    """One call at a time: a crash restarts the agent before its next message."""

    max_concurrency = 1


class Stateless(fame.BaseAgent):
    @fame.operation
    async def touch(self) -> None:
        async with self.state():
            pass


def _config(directory: Path, key: str, profile: str = "encrypted-sqlite") -> StorageConfig:
    master = parse_master_key(key) if profile == "encrypted-sqlite" else None
    return StorageConfig(profile=profile, directory=directory, master_key=master)


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_state_survives_a_crash_and_a_node_restart_on_files(
    tmp_path: Path, profile: str
) -> None:
    key = secrets.token_urlsafe(32)
    state_file = (
        "__agent_state" + ("_encrypted" if profile == "encrypted-sqlite" else "") + ("_value.db")
    )
    policy = fame.RestartPolicy(backoff_initial=0)
    async with (
        open_storage(_config(tmp_path, key, profile)) as provider,
        fame.open_node(storage_provider=provider, restart_policy=policy) as node,
    ):
        counter = await node.spawn(SerialCounter, "counter@local")  # fresh instance per start
        assert not (tmp_path / state_file).exists()  # created by the first state() only
        assert await counter.bump() == 1
        assert await counter.bump() == 2
        with pytest.raises(fame.ActorCrashed):
            await counter.bump_then_crash()
        assert await counter.peek() == 2  # the crashed block's change is gone
        assert node.supervisor.restart_count("counter@local") == 1
        assert await counter.bump() == 3
    assert (tmp_path / state_file).exists()
    async with (
        open_storage(_config(tmp_path, key, profile)) as provider,
        fame.open_node(storage_provider=provider) as node,
    ):
        counter = await node.spawn(Counter(), "counter@local")
        assert await counter.bump() == 4
        other = await node.spawn(Counter(), "other@local")  # its own record, by address
        assert await other.bump() == 1


NODE = """
import os, sys, msgspec, trio, fame
from pathlib import Path
from fame.storage import StorageConfig, open_storage, parse_master_key

class CounterState(msgspec.Struct):
    count: int = 0

class Counter(fame.BaseAgent):
    state_model = CounterState

    @fame.operation
    async def bump(self) -> int:
        async with self.state() as s:
            s.count += 1
            return s.count

async def main(directory, key):
    config = StorageConfig(
        profile="encrypted-sqlite", directory=Path(directory), master_key=parse_master_key(key)
    )
    async with open_storage(config) as provider, fame.open_node(storage_provider=provider) as node:
        counter = await node.spawn(Counter(), "counter@local")
        for _ in range(20):
            print(await counter.bump(), flush=True)  # acknowledged: committed
        os._exit(0)  # as SIGKILL would: nothing closed, nothing checkpointed

trio.run(main, *sys.argv[1:])
"""


async def test_acknowledged_state_survives_a_node_process_that_dies(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    for run in range(2):
        done = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-c", NODE, str(tmp_path), key],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(n) for n in range(20 * run + 1, 20 * run + 21)]
        assert (tmp_path / (STATE_FILE + "-wal")).exists()  # never checkpointed
    async with (
        open_storage(_config(tmp_path, key)) as provider,
        fame.open_node(storage_provider=provider) as node,
    ):
        counter = await node.spawn(Counter(), "counter@local")
        assert await counter.peek() == 40


async def test_concurrent_bumps_from_many_tasks_count_exactly() -> None:
    async with fame.open_node() as node:
        counter = await node.spawn(Counter(), "counter@local")

        async def bump_many() -> None:
            for _ in range(25):
                await counter.bump()

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(bump_many)
        assert await counter.peek() == 500


async def test_an_unchanged_state_is_not_written() -> None:
    async with fame.open_node() as node:
        counter = await node.spawn(Counter(), "counter@local")
        await counter.bump()
        store = await node.storage_provider.get_internal_kv_store(CounterState, "__agent_state")
        before = await store.get_versioned("counter@local")
        assert before is not None and before.value.count == 1
        assert await counter.peek() == 1
        after = await store.get_versioned("counter@local")
        assert after is not None and after.version == before.version


async def test_a_concurrent_writer_is_detected_and_nothing_is_written() -> None:
    async with (
        open_storage(StorageConfig()) as provider,
        fame.open_node(storage_provider=provider) as first,
        fame.open_node(storage_provider=provider) as second,
    ):
        # Two instances of one agent sharing one store, as two nodes on shared storage.
        slow = Counter()
        slow.reading, slow.proceed = trio.Event(), trio.Event()
        a = await first.spawn(slow, "counter@local")
        b = await second.spawn(Counter(), "counter@local")
        assert await b.bump() == 1
        result: dict[str, Any] = {}

        async def run_slow() -> None:
            try:
                result["value"] = await a.slow_bump()
            except fame.ActorCrashed as exc:
                result["error"] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_slow)
            await slow.reading.wait()
            assert await b.bump() == 2  # lands between the slow block's read and write
            slow.proceed.set()
        error = result["error"]
        assert error.exc_type == "StateConflict"
        assert await b.peek() == 2  # the slow block wrote nothing


async def test_the_conflict_error_names_the_agent_and_versions() -> None:
    async with fame.open_node() as node:
        agent = Counter()
        agent.reading, agent.proceed = trio.Event(), trio.Event()
        await node.spawn(agent, "counter@local")
        store = await node.storage_provider.get_internal_kv_store(CounterState, "__agent_state")
        raised: list[BaseException] = []

        async def slow() -> None:
            try:
                async with agent.state() as s:
                    agent.reading.set()  # type: ignore[union-attr]
                    await agent.proceed.wait()  # type: ignore[union-attr]
                    s.count += 1
            except StateConflict as exc:
                raised.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await agent.reading.wait()
            version = await store.set("counter@local", CounterState(count=7))
            agent.proceed.set()
        [conflict] = raised
        assert isinstance(conflict, StateConflict)
        assert (conflict.address, conflict.expected, conflict.actual) == (
            "counter@local",
            0,
            version,
        )
        stored = await store.get("counter@local")
        assert stored is not None and stored.count == 7


async def test_a_nested_block_and_a_missing_model_are_refused() -> None:
    async with fame.open_node() as node:
        agent = Counter()
        await node.spawn(agent, "counter@local")
        async with agent.state():
            with pytest.raises(RuntimeError, match="already open"):
                async with agent.state():
                    pass
        stateless = Stateless()
        await node.spawn(stateless, "stateless@local")
        with pytest.raises(TypeError, match="state_model"):
            stateless.state()
