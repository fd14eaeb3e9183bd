"""Supervision: restart intensity, exponential backoff and escalation, under a MockClock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame import ActorCrashed, RestartPolicy
from fame.errors import SupervisorGaveUp

from ._helpers import all_tasks, assert_no_new_tasks


class Crashy(fame.BaseAgent):
    """An agent that records when it starts and stops, and crashes on request."""

    starts: list[float]
    stops: list[float]

    def __init__(self) -> None:
        self.starts = []
        self.stops = []

    async def start(self) -> None:
        self.starts.append(trio.current_time())

    async def stop(self) -> None:
        self.stops.append(trio.current_time())

    @fame.operation
    async def crash(self) -> None:
        raise RuntimeError("crash requested")

    @fame.operation
    async def ping(self) -> str:
        return "pong"


def test_backoff_is_exponential_and_capped() -> None:
    policy = RestartPolicy(backoff_initial=0.5, backoff_factor=3, backoff_max=10)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError):
        RestartPolicy(within=0)
    with pytest.raises(ValueError):
        RestartPolicy(backoff_factor=0.5)


async def test_restarts_wait_an_exponential_backoff(autojump_clock: Any) -> None:
    agent = Crashy()
    policy = RestartPolicy(
        max_restarts=10, within=1000, backoff_initial=1, backoff_factor=2, backoff_max=5
    )
    async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
        proxy = await node.spawn(agent, "crashy@local")
        crashes = []
        for _ in range(5):
            with pytest.raises(ActorCrashed):
                await proxy.crash()
            crashes.append(trio.current_time())
            assert await proxy.ping() == "pong"  # waits in the mailbox during the backoff
        assert node.supervisor.restart_count("crashy@local") == 5
    waits = [start - crash for crash, start in zip(crashes, agent.starts[1:], strict=True)]
    assert waits == pytest.approx([1, 2, 4, 5, 5])
    assert len(agent.stops) == 1


async def test_too_many_crashes_escalate_out_of_open_node(autojump_clock: Any) -> None:
    crashy, bystander = Crashy(), Crashy()
    policy = RestartPolicy(max_restarts=2, within=10, backoff_initial=1)
    before = all_tasks()
    with pytest.raises(SupervisorGaveUp) as info:
        async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
            proxy = await node.spawn(crashy, "crashy@local")
            await node.spawn(bystander, "bystander@local")
            for _ in range(3):
                with pytest.raises(ActorCrashed, match="crashy@local crashed: RuntimeError"):
                    await proxy.crash()
            await trio.sleep_forever()  # the escalation cancels the block
    error = info.value
    assert type(error) is SupervisorGaveUp  # not an ExceptionGroup around it
    assert str(error) == (
        "crashy@local crashed 3 times within 10 s (limit 2 restarts);"
        " last error: RuntimeError: crash requested"
    )
    assert isinstance(error.__cause__, RuntimeError)
    assert len(crashy.starts) == 3
    assert len(crashy.stops) == 1
    assert len(bystander.stops) == 1  # the siblings were stopped, their hooks ran
    assert_no_new_tasks(before)


async def test_crashes_spread_beyond_the_window_never_escalate(autojump_clock: Any) -> None:
    agent = Crashy()
    policy = RestartPolicy(max_restarts=2, within=10, backoff_initial=0)
    async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
        proxy = await node.spawn(agent, "crashy@local")
        for _ in range(6):
            for _ in range(2):
                with pytest.raises(ActorCrashed):
                    await proxy.crash()
            await trio.sleep(10)
        assert await proxy.ping() == "pong"
        assert node.supervisor.restart_count("crashy@local") == 12


async def test_zero_restarts_escalates_on_the_first_crash(autojump_clock: Any) -> None:
    policy = RestartPolicy(max_restarts=0)
    with pytest.raises(SupervisorGaveUp, match="crashed 1 times"):
        async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
            proxy = await node.spawn(Crashy(), "crashy@local")
            with pytest.raises(ActorCrashed):
                await proxy.crash()
            await trio.sleep_forever()


async def test_per_agent_policy_overrides_the_node_policy(autojump_clock: Any) -> None:
    strict = RestartPolicy(max_restarts=1, within=100, backoff_initial=0)
    with pytest.raises(SupervisorGaveUp, match="strict@local"):
        async with fame.open_node(storage_provider=object()) as node:
            lenient = await node.spawn(Crashy(), "lenient@local")
            for _ in range(3):
                with pytest.raises(ActorCrashed):
                    await lenient.crash()
            proxy = await node.spawn(Crashy(), "strict@local", restart_policy=strict)
            for _ in range(2):
                with pytest.raises(ActorCrashed):
                    await proxy.crash()
            await trio.sleep_forever()


async def test_a_failing_restart_counts_as_a_crash(autojump_clock: Any) -> None:
    attempts: list[float] = []

    class FailsToRestart(Crashy):
        async def start(self) -> None:
            attempts.append(trio.current_time())
            if len(attempts) > 1:
                raise OSError("cannot reopen")

    policy = RestartPolicy(max_restarts=3, within=100, backoff_initial=1)
    with pytest.raises(SupervisorGaveUp, match="last error: OSError: cannot reopen"):
        async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
            proxy = await node.spawn(FailsToRestart(), "f@local")
            with pytest.raises(ActorCrashed):
                await proxy.crash()
            await trio.sleep_forever()
    # First start, then three restarts that failed, after backoffs of 1, 2 and 4 s.
    gaps = [b - a for a, b in itertools.pairwise(attempts[1:])]
    assert len(attempts) == 4
    assert gaps == pytest.approx([2, 4])


async def test_a_body_error_comes_out_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with fame.open_node(storage_provider=object()) as node:
            await node.spawn(Crashy(), "crashy@local")
            raise KeyError("mine")
