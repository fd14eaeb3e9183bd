"""An agent's tasks live in the agent's scope: stopping or restarting it cancels them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame import ActorCrashed
from fame.errors import RequestLost

from ._helpers import all_tasks, assert_no_new_tasks

PROVIDER = object()


class Busy(fame.BaseAgent):
    """Streams forever and runs calls that wait for a release that never comes."""

    max_concurrency = 3

    def __init__(self) -> None:
        self.produced = 0
        self.generator_closed = trio.Event()
        self.call_started = trio.Event()
        self.release = trio.Event()
        self.log: list[str] = []

    async def stop(self) -> None:
        self.log.append("stop")

    @fame.operation(streaming=True)
    async def forever(self) -> AsyncIterator[int]:
        try:
            while True:
                self.produced += 1
                yield self.produced
        finally:
            self.log.append("generator closed")
            self.generator_closed.set()

    @fame.operation
    async def wait(self) -> str:
        self.call_started.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.log.append("call cancelled")
            raise
        self.log.append("call completed")
        return "released"

    @fame.operation
    async def crash(self) -> None:
        raise RuntimeError("boom")


async def test_stopping_an_agent_ends_its_streams_before_stop_agent_returns() -> None:
    agent = Busy()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "busy@local")
        stream = node.open_stream("busy@local", "forever", {}, window=4)
        assert await stream.__anext__() == 1
        await node.stop_agent("busy@local")
        # Gone with the agent, not later: the generator was closed before stop().
        assert agent.generator_closed.is_set()
        assert agent.log == ["generator closed", "stop"]
        produced = agent.produced
        # The reader finds what was already sent, then a clear error: it was cut
        # off mid-run, so its outcome is unknown.
        with pytest.raises(RequestLost, match="busy@local stopped"):
            with trio.fail_after(5):
                async for _ in stream:
                    pass
        await trio.testing.wait_all_tasks_blocked()
        assert agent.produced == produced
        await stream.aclose()


async def test_stopping_an_agent_cancels_its_concurrent_calls(autojump_clock: Any) -> None:
    agent = Busy()
    async with fame.open_node(storage_provider=PROVIDER, stop_timeout=4) as node:
        proxy = await node.spawn(agent, "busy@local")
        errors: list[BaseException] = []

        async def caller() -> None:
            try:
                await proxy.wait()
            except fame.FameError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            with trio.fail_after(5):
                await agent.call_started.wait()
            await node.stop_agent("busy@local")
            # Cancelled before stop(), after the graceful half of the stop timeout.
            assert agent.log == ["call cancelled", "stop"]
            agent.release.set()
        assert len(errors) == 1
        # Cut off while running: it may have had its effect.
        assert isinstance(errors[0], RequestLost)
        assert isinstance(errors[0], fame.errors.OutcomeUnknown)
        assert errors[0].actor == "busy@local"
        assert "busy@local stopped" in str(errors[0])
        await trio.testing.wait_all_tasks_blocked()
        assert "call completed" not in agent.log


async def test_a_restart_cancels_the_tasks_of_the_crashed_agent() -> None:
    agent = Busy()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(agent, "busy@local")
        stream = node.open_stream("busy@local", "forever", {}, window=4)
        assert await stream.__anext__() == 1
        outcome: list[BaseException] = []

        async def caller() -> None:
            try:
                await proxy.wait()
            except fame.FameError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            with trio.fail_after(5):
                await agent.call_started.wait()
            with pytest.raises(ActorCrashed, match="boom"):
                await proxy.crash()
        # The waiting call heard that the agent restarted, not "released": cut
        # off mid-run, its outcome is unknown.
        assert len(outcome) == 1
        assert isinstance(outcome[0], RequestLost)
        assert "restarts after a crash" in str(outcome[0])
        assert agent.generator_closed.is_set()
        with pytest.raises(RequestLost, match="restarts after a crash"):
            with trio.fail_after(5):
                async for _ in stream:
                    pass
        assert node.supervisor.restart_count("busy@local") == 1
        # The restarted agent serves new calls in its new scope.
        agent.release.set()
        assert await proxy.wait() == "released"


async def test_an_agent_whose_start_fails_leaves_no_task_behind() -> None:
    class Broken(fame.BaseAgent):
        async def start(self) -> None:
            raise ValueError("no config")

    async with fame.open_node(storage_provider=PROVIDER) as node:
        before = all_tasks()
        with pytest.raises(ValueError, match="no config"):
            await node.spawn(Broken(), "broken@local")
        assert_no_new_tasks(before)
