"""A stateful property test of supervision.

Hypothesis draws a program of actions against one agent: calls, crashes,
bursts of concurrent calls with crashes among them, and pauses. The
program runs on a node under a ``MockClock`` (backoff and the intensity
window in virtual time) while a model of the OTP restart-intensity rule
predicts, from the observed crash times, which crash makes the supervisor
give up. Checked throughout: every call returns the right value or
``ActorCrashed`` naming the agent and the exception; the restart count
matches the model and never exceeds the intensity in any window; each
restart waits its exponential backoff; escalation out of ``open_node``
happens exactly when the model says, as ``SupervisorGaveUp``; the agent's
``stop`` runs once; no task is left behind.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fame
from fame import ActorCrashed, RestartPolicy
from fame.errors import SupervisorGaveUp

from ._helpers import all_tasks, assert_no_new_tasks

ADDRESS = "counter@local"


@attrs.define
class Log:
    starts: list[float] = attrs.Factory(list)
    stops: int = 0


class Counter(fame.BaseAgent):
    """Keeps a running total, which a restart (a fresh instance) resets."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.total = 0

    async def start(self) -> None:
        self.log.starts.append(trio.current_time())

    async def stop(self) -> None:
        self.log.stops += 1

    @fame.operation
    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    @fame.operation
    async def echo(self, value: int) -> int:
        await trio.lowlevel.checkpoint()
        return value

    @fame.operation
    async def crash(self, why: str) -> None:
        raise RuntimeError(why)


class Model:
    """The restart-intensity rule, fed with the times the crashes were observed."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.window: collections.deque[float] = collections.deque()
        self.restart_times: list[float] = []
        self.expected_waits: list[float] = []
        self.escalated = False
        self.total = 0

    def crashed(self, now: float) -> None:
        assert not self.escalated, "a crash was handled after the supervisor gave up"
        self.total = 0
        while self.window and self.window[0] <= now - self.policy.within:
            self.window.popleft()
        if len(self.window) >= self.policy.max_restarts:
            self.escalated = True
            return
        self.window.append(now)
        self.restart_times.append(now)
        self.expected_waits.append(self.policy.backoff(len(self.window)))


calls = st.tuples(st.just("add"), st.integers(-100, 100))
crashes = st.tuples(st.just("crash"), st.text("abc", max_size=3))
pauses = st.tuples(st.just("sleep"), st.sampled_from([0, 0.25, 1, 2.5, 4, 7, 12]))
bursts = st.tuples(
    st.just("burst"),
    st.lists(st.one_of(crashes, st.tuples(st.just("echo"), st.integers(0, 9))), max_size=6),
)
programs = st.lists(st.one_of(calls, crashes, pauses, bursts), max_size=25)
policies = st.builds(
    RestartPolicy,
    max_restarts=st.integers(0, 4),
    within=st.sampled_from([1.0, 5.0, 10.0, 30.0]),
    backoff_initial=st.sampled_from([0.0, 0.1, 0.5]),
    backoff_factor=st.sampled_from([1.0, 2.0, 3.0]),
    backoff_max=st.sampled_from([0.5, 2.0]),
)


def check_crash(exc: ActorCrashed, why: str) -> None:
    assert exc.actor == ADDRESS
    assert exc.exc_type == "RuntimeError"
    assert exc.message == why


async def run_program(policy: RestartPolicy, program: list[Any]) -> None:
    model = Model(policy)
    log = Log()
    before = all_tasks()

    async def crash(proxy: fame.Proxy, why: str) -> None:
        with pytest.raises(ActorCrashed) as info:
            await proxy.crash(why=why)
        check_crash(info.value, why)
        model.crashed(trio.current_time())

    async def echo(proxy: fame.Proxy, value: int) -> None:
        assert await proxy.echo(value=value) == value

    gave_up: SupervisorGaveUp | None = None
    try:
        async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
            proxy = await node.spawn(lambda: Counter(log), ADDRESS)
            for action, arg in program:
                if action == "add":
                    model.total += arg
                    assert await proxy.add(n=arg) == model.total
                elif action == "crash":
                    await crash(proxy, arg)
                elif action == "sleep":
                    await trio.sleep(arg)
                else:
                    async with trio.open_nursery() as nursery:
                        for kind, value in arg:
                            nursery.start_soon(crash if kind == "crash" else echo, proxy, value)
                    if any(kind == "crash" for kind, _ in arg):
                        model.total = 0
                if model.escalated:
                    with trio.fail_after(10_000):  # virtual time: fails if nothing escalates
                        await trio.sleep_forever()
                assert node.supervisor.restart_count(ADDRESS) == len(model.restart_times)
    except SupervisorGaveUp as exc:
        gave_up = exc
    assert (gave_up is not None) == model.escalated
    event("escalated" if model.escalated else f"{len(model.restart_times)} restarts, no escalation")
    if gave_up is not None:
        assert str(gave_up).startswith(f"{ADDRESS} crashed {policy.max_restarts + 1} times")
        assert isinstance(gave_up.__cause__, RuntimeError)

    # Never more restarts than the intensity allows in any window.
    times = model.restart_times
    for i, t in enumerate(times):
        in_window = [u for u in times[: i + 1] if u > t - policy.within]
        assert len(in_window) <= policy.max_restarts
    # Every restart started after its backoff (the last may have been cut short by the close).
    restarts = log.starts[1:]
    assert len(times) - 1 <= len(restarts) <= len(times)
    for crashed_at, wait, started_at in zip(times, model.expected_waits, restarts, strict=False):
        assert started_at - crashed_at == pytest.approx(wait)
    assert log.stops == 1
    assert_no_new_tasks(before)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(policies, programs)
def test_supervision_under_random_crashes_and_calls(
    policy: RestartPolicy, program: list[Any]
) -> None:
    trio.run(run_program, policy, program, clock=trio.testing.MockClock(autojump_threshold=0))
