"""Agents: validated operations, declared errors, storage_provider, proxies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import fame
from fame import ActorCrashed, InvalidArguments, NoRoute, OperationFailed, UnknownOperation
from fame.errors import AgentNotStarted

PROVIDER = object()


class Point(msgspec.Struct):
    x: int
    y: int


class Calculator(fame.BaseAgent):
    def __init__(self) -> None:
        self.starts = 0
        self.provider_at_start: Any = None

    async def start(self) -> None:
        self.starts += 1
        self.provider_at_start = self.storage_provider

    @fame.operation
    async def add(self, a: int, b: int = 10) -> int:
        return a + b

    @fame.operation
    async def total(self, items: list[int]) -> int:
        return sum(items)

    @fame.operation
    async def point(self, x: int, y: int) -> Point:
        return Point(x, y)

    @fame.operation
    async def raw_point(self) -> Any:
        return {"x": 1, "y": 2}

    @fame.operation(errors=(KeyError,))
    async def lookup(self, key: str) -> str:
        table = {"a": "alpha"}
        return table[key]

    @fame.operation(name="renamed")
    async def original_name(self) -> str:
        return "renamed works"

    @fame.operation(streaming=True)
    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


async def spawn_calculator(node: fame.Node) -> tuple[Calculator, fame.Proxy]:
    agent = Calculator()
    return agent, await node.spawn(agent, "calc@local")


async def test_operations_are_called_through_a_proxy() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, calc = await spawn_calculator(node)
        assert await calc.add(a=1, b=2) == 3
        assert await calc.add(a=1) == 11  # default
        assert await calc.add(5, 6) == 11  # positional, bound by the signature
        assert await calc.add(5, b=1) == 6
        assert await calc.add(a="7") == 17  # converted by msgspec
        assert await calc.point(x=1, y=2) == Point(1, 2)
        assert await calc.renamed() == "renamed works"
        assert [i async for i in calc.count(n=3)] == [0, 1, 2]
        assert repr(calc) == "<Proxy Calculator at calc@local>"
        assert calc.address == "calc@local"
        assert agent.address == "calc@local"
        assert agent.node is node
        assert node._local_addresses() == ["calc@local"]


async def test_bad_arguments_name_the_parameter_and_the_agent_keeps_running() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, calc = await spawn_calculator(node)
        cases: dict[str, dict[str, Any]] = {
            "add(): invalid argument 'a': expected int, got str": {"a": "seven"},
            "add(): missing required argument 'a'": {"b": 1},
            "add(): unexpected argument 'c'": {"a": 1, "c": 2},
        }
        for message, kwargs in cases.items():
            with pytest.raises(InvalidArguments) as info:
                await calc.add(**kwargs)
            assert info.value.message == message
            assert info.value.actor == "calc@local"
        with pytest.raises(InvalidArguments, match=r"total\(\): invalid argument 'items'"):
            await calc.total(items=[1, "x"])
        assert await calc.total(items=[1, 2, 3]) == 6
        assert agent.starts == 1
        assert node.supervisor.restart_count("calc@local") == 0


async def test_declared_errors_fail_the_call_without_a_restart() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, calc = await spawn_calculator(node)
        assert await calc.lookup(key="a") == "alpha"
        with pytest.raises(OperationFailed) as info:
            await calc.lookup(key="zz")
        assert info.value.exc_type == "KeyError"
        assert info.value.actor == "calc@local"
        assert info.value.message == "'zz'"
        assert not isinstance(info.value, ActorCrashed)
        assert await calc.add(a=1) == 11
        assert agent.starts == 1
        assert node.supervisor.restart_count("calc@local") == 0


async def test_undeclared_errors_crash_and_restart_the_agent() -> None:
    class Fragile(fame.BaseAgent):
        starts = 0

        async def start(self) -> None:
            type(self).starts += 1

        @fame.operation(errors=(KeyError,))
        async def divide(self, a: int, b: int) -> float:
            return a / b

    policy = fame.RestartPolicy(backoff_initial=0)
    async with fame.open_node(storage_provider=PROVIDER, restart_policy=policy) as node:
        proxy = await node.spawn(Fragile, "fragile@local")  # a factory: fresh instance per start
        with pytest.raises(ActorCrashed) as info:
            await proxy.divide(a=1, b=0)
        assert str(info.value) == "fragile@local crashed: ZeroDivisionError: division by zero"
        assert await proxy.divide(a=1, b=4) == 0.25
        assert Fragile.starts == 2
        assert node.supervisor.restart_count("fragile@local") == 1


async def test_storage_provider_is_attached_at_start() -> None:
    agent = Calculator()
    with pytest.raises(AgentNotStarted) as info:
        agent.storage_provider  # noqa: B018
    assert str(info.value) == (
        "Calculator.storage_provider is attached when a node starts the agent:"
        " use it in start() or later, not in __init__"
    )
    with pytest.raises(AgentNotStarted, match="Calculator has not been spawned on a node"):
        agent.address  # noqa: B018
    with pytest.raises(AgentNotStarted, match="has not been spawned"):
        agent.node  # noqa: B018
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "calc@local")
        assert agent.provider_at_start is PROVIDER
        assert agent.storage_provider is PROVIDER


def test_reading_storage_provider_in_init_says_so() -> None:
    class Eager(fame.BaseAgent):
        def __init__(self) -> None:
            self.store = self.storage_provider

    with pytest.raises(AgentNotStarted, match="not in __init__"):
        Eager()


async def test_typed_proxy_knows_the_operations() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        _, calc = await spawn_calculator(node)
        with pytest.raises(AttributeError, match="Calculator at calc@local has no operation 'sub'"):
            calc.sub  # noqa: B018
        with pytest.raises(TypeError, match=r"add\(\) takes 2 arguments but 3 were given"):
            calc.add(1, 2, 3)
        with pytest.raises(TypeError, match=r"add\(\) got multiple values for argument 'a'"):
            calc.add(1, a=2)
        with pytest.raises(AttributeError):
            calc._private  # noqa: B018
        # node.proxy finds the type of a local agent.
        assert await node.proxy("calc@local").add(a=2) == 12


async def test_typed_proxy_converts_results_to_the_annotation() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await spawn_calculator(node)
        untyped = fame.Proxy(node, "calc@local")
        assert await untyped.raw_point() == {"x": 1, "y": 2}

        # A proxy typed by a class whose annotation is Point, as a remote caller would
        # have: the plain dict is converted.
        class PointClient(fame.BaseAgent):
            @fame.operation
            async def raw_point(self) -> Point:
                raise NotImplementedError

        typed = node.proxy("calc@local", PointClient)
        assert await typed.raw_point() == Point(1, 2)


async def test_untyped_proxy_sends_any_name() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await spawn_calculator(node)
        untyped = fame.Proxy(node, "calc@local")
        assert repr(untyped) == "<Proxy agent at calc@local>"
        assert await untyped.add(a=1, b=1) == 2
        assert [i async for i in untyped.count(n=2)] == [0, 1]
        with pytest.raises(UnknownOperation) as info:
            await untyped.sub(a=1)
        assert info.value.message == (
            "Calculator has no operation 'sub' (it has: add, count, lookup, point, raw_point,"
            " renamed, total)"
        )
        with pytest.raises(UnknownOperation, match="count is a streaming operation: iterate"):
            await untyped.count(n=2)
        with pytest.raises(UnknownOperation, match="add is a plain operation: await it"):
            async for _ in untyped.add(a=1):
                pass
        with pytest.raises(TypeError, match="pass keyword arguments"):
            untyped.add(1)
        assert await untyped.add(a=3) == 13  # still running


async def test_calls_to_unknown_addresses_have_no_route() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        with pytest.raises(NoRoute, match="no route to ghost@local"):
            await node.proxy("ghost@local").anything()
        with pytest.raises(NoRoute, match="no actor at ghost@local"):
            node.ref("ghost@local")
        with pytest.raises(fame.errors.AddressError):
            node.proxy("not an address")


async def test_call_deadline_and_late_reply(autojump_clock: Any) -> None:
    release = trio.Event()

    class Slow(fame.BaseAgent):
        @fame.operation
        async def wait(self, tag: str) -> str:
            if tag == "slow":
                await release.wait()
            return tag

    async with fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(Slow(), "slow@local")
        start = trio.current_time()
        with pytest.raises(fame.DeadlineExceeded, match=r"slow@local did not answer wait\(\)"):
            await proxy.with_timeout(2).wait(tag="slow")
        assert trio.current_time() - start == pytest.approx(2)
        async with trio.open_nursery() as nursery:
            answers: list[str] = []

            async def call() -> None:
                answers.append(await proxy.wait(tag="fast"))

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert answers == ["fast"]
        assert node._switchboard.pending == {}


async def test_concurrent_agents_run_calls_at_once(autojump_clock: Any) -> None:
    class Parallel(fame.BaseAgent):
        max_concurrency = 3

        def __init__(self) -> None:
            self.running = 0
            self.peak = 0

        @fame.operation
        async def work(self, n: int) -> int:
            self.running += 1
            self.peak = max(self.peak, self.running)
            await trio.sleep(1)
            self.running -= 1
            if n < 0:
                raise ValueError("negative")
            return n

    agent = Parallel()
    policy = fame.RestartPolicy(backoff_initial=0)
    async with fame.open_node(storage_provider=PROVIDER, restart_policy=policy) as node:
        proxy = await node.spawn(agent, "par@local")
        results: list[int] = []
        async with trio.open_nursery() as nursery:

            async def call(n: int) -> None:
                results.append(await proxy.work(n=n))

            for n in range(7):
                nursery.start_soon(call, n)
        assert sorted(results) == list(range(7))
        assert agent.peak == 3
        with pytest.raises(ActorCrashed, match="ValueError: negative"):
            await proxy.work(n=-1)
        assert await proxy.work(n=5) == 5
        assert node.supervisor.restart_count("par@local") == 1

    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):

        class Broken(fame.BaseAgent):
            max_concurrency = 0


def test_operation_decorator_rejects_misuse() -> None:
    with pytest.raises(TypeError, match="is not async"):

        class NotAsync(fame.BaseAgent):
            @fame.operation
            def op(self) -> None:
                pass

    with pytest.raises(TypeError, match=r"use @operation\(streaming=True\)"):

        class GeneratorWithoutStreaming(fame.BaseAgent):
            @fame.operation
            async def op(self) -> AsyncIterator[int]:
                yield 1

    with pytest.raises(TypeError, match="needs an async generator"):

        class StreamingWithoutGenerator(fame.BaseAgent):
            @fame.operation(streaming=True)
            async def op(self) -> int:
                return 1

    with pytest.raises(TypeError, match=r"may not take \*args or \*\*kwargs"):

        class VarArgs(fame.BaseAgent):
            @fame.operation
            async def op(self, *args: int) -> None:
                pass


async def test_spawning_a_plain_actor_gives_a_ref() -> None:
    class Echo(fame.lowlevel.Actor):
        async def handle(self, message: Any) -> Any:
            return message

    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(Echo(), "echo@local")
        assert await node.ref("echo@local").ask("hi") == "hi"
        await node.spawn(Echo, "echo2@local")
        assert await node.ref("echo2@local").ask("factory") == "factory"
        with pytest.raises(TypeError, match="cannot spawn"):
            await node.spawn(42, "x@local")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not a BaseAgent or Actor"):
            await node.spawn(lambda: 42, "x@local")  # type: ignore[arg-type, return-value]
        await node.stop_agent("echo@local")
        with pytest.raises(NoRoute):
            node.ref("echo@local")


async def test_a_default_node_opens_memory_storage_and_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Settings that would fail if anything read them: the library must not.
    monkeypatch.setenv("FAME_STORAGE_PROFILE", "no-such-profile")
    monkeypatch.setenv("FAME_STORAGE_DB_DIRECTORY", "/nonexistent/fame")
    monkeypatch.setenv("FAME_STREAM_IDLE_TIMEOUT", "not a number")

    class Keeper(fame.BaseAgent):
        async def start(self) -> None:
            self.store = await self.storage_provider.get_kv_store(int, "numbers")

        @fame.operation
        async def keep(self, key: str, value: int) -> int | None:
            await self.store.set(key, value)
            result: int | None = await self.store.get(key)
            return result

    async with fame.open_node() as node:
        keeper = await node.spawn(Keeper(), "keeper@local")
        assert await keeper.keep(key="answer", value=42) == 42
        provider = node.storage_provider
    # The node opened the provider, so it closed it too.
    with pytest.raises(fame.errors.NodeClosed, match="storage provider is closed"):
        await provider.get_kv_store(int, "numbers")


async def test_graceful_close_lets_concurrent_calls_finish_before_stop(
    autojump_clock: Any,
) -> None:
    class Parallel(fame.BaseAgent):
        max_concurrency = 2

        def __init__(self) -> None:
            self.log: list[str] = []

        async def stop(self) -> None:
            self.log.append("stop")

        @fame.operation
        async def work(self, n: int) -> int:
            await trio.sleep(1)
            self.log.append(f"done {n}")
            if n < 0:
                raise ValueError("negative")
            return n

    agent = Parallel()
    results: dict[int, Any] = {}

    async def call(proxy: fame.Proxy, n: int) -> None:
        try:
            results[n] = await proxy.work(n=n)
        except ActorCrashed as exc:
            results[n] = exc

    # The callers' nursery encloses the node: they wait for replies while it closes.
    async with trio.open_nursery() as callers, fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(agent, "par@local")
        callers.start_soon(call, proxy, 1)
        callers.start_soon(call, proxy, -1)
        await trio.testing.wait_all_tasks_blocked()
    assert results[1] == 1
    assert isinstance(results[-1], ActorCrashed)
    assert sorted(agent.log[:2]) == ["done -1", "done 1"]
    assert agent.log[2:] == ["stop"]
    assert trio.current_time() == pytest.approx(1)


class Typed(fame.BaseAgent):
    @fame.operation
    async def op(self, count: int, label: str, flags: list[bool], ratio: float = 1.0) -> None:
        pass


GOOD: dict[str, Any] = {"count": 1, "label": "x", "flags": [True], "ratio": 0.5}
TYPES: dict[str, Any] = {"count": int, "label": str, "flags": list, "ratio": float}
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=5,
)


@settings(max_examples=300)
@given(st.sampled_from(sorted(GOOD)), anything)
def test_a_bad_argument_is_named_or_converted(param: str, value: Any) -> None:
    spec = Typed.operations["op"]
    args = {**GOOD, param: value}
    try:
        converted = spec.convert_args(args)
    except InvalidArguments as exc:
        assert exc.message.startswith(f"op(): invalid argument {param!r}: ")
    else:
        assert isinstance(converted[param], TYPES[param])
        assert {k: v for k, v in converted.items() if k != param} == {
            k: v for k, v in GOOD.items() if k != param
        }


async def test_a_concurrent_call_that_never_ends_does_not_skip_stop(autojump_clock: Any) -> None:
    class Hanging(fame.BaseAgent):
        max_concurrency = 2

        def __init__(self) -> None:
            self.log: list[str] = []

        async def stop(self) -> None:
            self.log.append(f"stop at {trio.current_time():g}")

        @fame.operation
        async def hang(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                self.log.append(f"cancelled at {trio.current_time():g}")

    agent = Hanging()
    async with fame.open_node(storage_provider=PROVIDER, stop_timeout=4) as node:
        await node.spawn(agent, "hanging@local")
        await node.ref("hanging@local").tell(  # a request nobody waits for
            fame._wire._schema.Envelope(
                0, "hanging@local", 1, fame._wire._schema.Request("hang", {})
            )
        )
        await trio.testing.wait_all_tasks_blocked()
    # Half the stop timeout for the call to finish; then it is cancelled, as a task in
    # the agent's own scope, before stop() runs: nothing of the agent outlives stop().
    assert agent.log == ["cancelled at 2", "stop at 2"]


async def test_a_caller_outside_a_closing_node_gets_node_closed_not_a_hang() -> None:
    class Sleeper(fame.BaseAgent):
        @fame.operation
        async def sleep(self) -> None:
            await trio.sleep_forever()

    outcome: list[BaseException] = []

    async def call(proxy: fame.Proxy) -> None:
        try:
            await proxy.with_timeout(3600).sleep()
        except fame.errors.NodeClosed as exc:
            outcome.append(exc)

    async with trio.open_nursery() as callers:
        with trio.CancelScope() as node_scope:
            async with fame.open_node(storage_provider=PROVIDER, stop_timeout=1) as node:
                proxy = await node.spawn(Sleeper(), "sleeper@local")
                callers.start_soon(call, proxy)
                await trio.testing.wait_all_tasks_blocked()
                node_scope.cancel()
    assert len(outcome) == 1
    assert "node closed" in str(outcome[0])
