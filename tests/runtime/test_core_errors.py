"""Errors keep their story: groups, crash tracebacks, and an actor given up on.

- One helper decides how exception groups are shown: a group of one error
  (at any depth) becomes that error, a group of several stays whole, and the
  CLI prints one line per error.
- ``ActorCrashed`` carries the crash's traceback as text (on the wire too),
  its ``__cause__`` is the crash itself for a local caller, and the crash is
  logged with its traceback.
- Once the supervisor gave up on an actor, calls to it fail at a checkpoint
  with ``NodeClosed`` saying so and naming the last error.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame import ActorCrashed, RestartPolicy
from fame._core._actor import Actor
from fame._core._errors import NodeClosed, SupervisorGaveUp, remote_error
from fame._core._groups import collapse, leaves, unwrap_exception_group
from fame._core._supervisor import open_supervisor
from fame._fabric.sentinel._server import open_sentinel
from fame._wire._schema import Codec, Envelope, Error


def broken_handler(message: Any) -> None:
    raise ValueError(f"cannot handle {message!r}")


class Crashy(Actor):
    async def handle(self, message: Any) -> Any:
        if message == "boom":
            broken_handler(message)
        return message


# --- one helper for exception groups ------------------------------------------------


def test_a_group_of_one_error_at_any_depth_collapses_to_it() -> None:
    error = KeyError("k")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert collapse(nested) is error
    assert leaves(nested) == [error]
    assert collapse(error) is error


async def test_an_error_beside_cancellations_is_raised_alone() -> None:
    """A nursery fails while an outer scope cancels it: the caller sees the error."""
    error = fame.NoRoute("x")
    with trio.CancelScope() as outer:
        with pytest.raises(fame.NoRoute) as raised:
            async with unwrap_exception_group(), trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.testing.wait_all_tasks_blocked()
                outer.cancel()  # the sleeper gets Cancelled: it belongs to the outer scope

                async def fail() -> None:
                    raise error

                nursery.start_soon(fail)
                await trio.sleep_forever()
        assert raised.value is error


def test_a_group_of_several_errors_stays_whole() -> None:
    first, second = KeyError("a"), OSError("b")
    group = ExceptionGroup("two", [ExceptionGroup("one", [first]), second])
    assert collapse(group) is group
    assert leaves(group) == [first, second]


async def test_a_nursery_failing_once_raises_the_error_itself_with_its_cause() -> None:
    async def fail() -> None:
        try:
            raise OSError("disk")
        except OSError as exc:
            raise fame.FameError("could not save") from exc

    with pytest.raises(fame.FameError) as info:
        async with unwrap_exception_group(), trio.open_nursery() as nursery:
            nursery.start_soon(fail)
    assert type(info.value) is fame.FameError
    assert isinstance(info.value.__cause__, OSError)


async def test_a_nursery_failing_twice_raises_both_errors() -> None:
    both = trio.Event()
    arrived = 0

    async def fail(error: Exception) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        with trio.CancelScope(shield=True):
            await both.wait()  # both raise: neither is cancelled by the other first
        raise error

    with pytest.raises(ExceptionGroup) as info:
        async with unwrap_exception_group(), trio.open_nursery() as nursery:
            nursery.start_soon(fail, KeyError("a"))
            nursery.start_soon(fail, OSError("b"))
    assert sorted(type(e).__name__ for e in leaves(info.value)) == ["KeyError", "OSError"]


def test_the_cli_prints_one_line_per_error_of_a_group(capsys: pytest.CaptureFixture[str]) -> None:
    from fame._cli._runner import _run

    async def main() -> None:
        raise ExceptionGroup(
            "two", [fame.NoRoute("no route to a@x"), ExceptionGroup("one", [KeyError("k")])]
        )

    assert _run("node", main) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["fame node: no route to a@x", "fame node: KeyError: 'k'"]


def test_the_cli_prints_the_error_of_a_group_of_one(capsys: pytest.CaptureFixture[str]) -> None:
    from fame._cli._runner import _run

    async def main() -> None:
        raise ExceptionGroup("one", [ExceptionGroup("inner", [fame.NoRoute("no route to a@x")])])

    assert _run("node", main) == 1
    assert capsys.readouterr().err.splitlines() == ["fame node: no route to a@x"]


# --- ActorCrashed tells where the bug is ----------------------------------------------


async def test_a_local_crash_is_the_cause_and_its_traceback_is_carried() -> None:
    async with open_supervisor(RestartPolicy(backoff_initial=0)) as sup:
        ref = await sup.spawn(Crashy(), "crashy@local")
        with pytest.raises(ActorCrashed) as info:
            await ref.ask("boom")
    crash = info.value
    assert isinstance(crash.__cause__, ValueError)
    assert crash.exc_type == "ValueError"
    assert crash.traceback is not None
    assert "broken_handler" in crash.traceback  # the frame that raised
    assert "ValueError: cannot handle 'boom'" in crash.traceback


async def test_the_crash_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fame.supervisor")
    async with open_supervisor(RestartPolicy(backoff_initial=0)) as sup:
        ref = await sup.spawn(Crashy(), "crashy@local")
        with pytest.raises(ActorCrashed):
            await ref.ask("boom")
        assert await ref.ask("fine") == "fine"  # restarted
    crashes = [r for r in caplog.records if r.name == "fame.supervisor"]
    assert len(crashes) == 1
    assert crashes[0].levelno == logging.ERROR
    assert crashes[0].exc_info is not None
    assert isinstance(crashes[0].exc_info[1], ValueError)
    assert "broken_handler" in caplog.text


def test_the_traceback_crosses_the_wire_in_the_error_frame() -> None:
    codec = Codec()
    text = 'Traceback (most recent call last):\n  File "agent.py", line 3\nValueError: x\n'
    frame = Error("actor_crashed", "x", "crashy@local", "ValueError", text)
    decoded = codec.decode(codec.encode(Envelope(0, "_reply@n", 1, frame)))
    assert isinstance(decoded, Envelope)
    assert isinstance(decoded.frame, Error)
    error = remote_error(
        decoded.frame.kind,
        decoded.frame.message,
        actor=decoded.frame.actor,
        exc_type=decoded.frame.exc_type,
        traceback=decoded.frame.traceback,
    )
    assert isinstance(error, ActorCrashed)
    assert error.traceback == text


async def test_a_long_traceback_is_cut_to_its_innermost_frames() -> None:
    from fame._core._actor import MAX_TRACEBACK_LENGTH, crash_error

    def recurse(n: int) -> None:
        if n == 0:
            raise RecursionError("deep bug")
        recurse(n - 1)

    try:
        recurse(300)
    except RecursionError as exc:
        crash = crash_error("deep@local", exc)
    assert crash.traceback is not None
    assert len(crash.traceback) <= MAX_TRACEBACK_LENGTH + 10
    assert crash.traceback.endswith("RecursionError: deep bug\n")


class Buggy(fame.BaseAgent):
    @fame.operation
    async def crash(self) -> None:
        broken_handler("crash")

    @fame.operation(streaming=True)
    async def count(self) -> AsyncIterator[int]:
        yield 1
        broken_handler("count")


async def test_an_agent_crash_reaches_a_local_caller_with_cause_and_traceback() -> None:
    policy = RestartPolicy(backoff_initial=0)
    async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
        proxy = await node.spawn(Buggy, "buggy@local")
        with pytest.raises(ActorCrashed) as info:
            await proxy.crash()
        with pytest.raises(ActorCrashed) as streamed:
            async for _ in proxy.count():
                pass
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.traceback is not None
    assert "broken_handler" in info.value.traceback
    assert streamed.value.traceback is not None
    assert "cannot handle 'count'" in streamed.value.traceback


async def test_an_agent_crash_reaches_a_remote_caller_with_its_traceback() -> None:
    token = secrets.token_urlsafe(16)
    policy = RestartPolicy(backoff_initial=0)
    with trio.fail_after(30):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token) as sentinel,
            fame.open_node(restart_policy=policy) as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            async with fame.attach(node, url, token=token) as uplink:
                await node.spawn(Buggy, "buggy@fame.fabric")
                await uplink.wait_bound()
                async with fame.connect(url, token=token) as client:
                    with pytest.raises(ActorCrashed) as info:
                        await client.proxy("buggy@fame.fabric").crash()
    crash = info.value
    assert crash.actor == "buggy@fame.fabric"
    assert crash.traceback is not None
    assert "broken_handler" in crash.traceback
    assert "ValueError: cannot handle 'crash'" in crash.traceback
    assert crash.__cause__ is None  # the exception itself stayed on the other node


# --- after SupervisorGaveUp ---------------------------------------------------------


async def test_after_giving_up_calls_fail_at_a_checkpoint_naming_the_last_error() -> None:
    with pytest.raises(SupervisorGaveUp):
        async with open_supervisor(RestartPolicy(max_restarts=0)) as sup:
            ref = await sup.spawn(Crashy(), "crashy@local")
            with pytest.raises(ActorCrashed):
                await ref.ask("boom")
            await trio.sleep_forever()  # the escalation ends the block
    with trio.testing.assert_checkpoints(), pytest.raises(NodeClosed) as info:
        await ref.ask("hello")
    assert "gave up on crashy@local" in str(info.value)
    assert "ValueError: cannot handle 'boom'" in str(info.value)
    with trio.testing.assert_checkpoints(), pytest.raises(NodeClosed, match="gave up"):
        await ref.tell("hello")


class Flaky(fame.BaseAgent):
    @fame.operation
    async def crash(self) -> None:
        broken_handler("crash")

    @fame.operation
    async def echo(self, value: int) -> int:
        return value


async def test_calls_through_a_proxy_to_an_agent_given_up_on_fail_with_the_reason() -> None:
    policy = RestartPolicy(max_restarts=0)
    with pytest.raises(SupervisorGaveUp):
        async with fame.open_node(storage_provider=object(), restart_policy=policy) as node:
            proxy = await node.spawn(Flaky, "flaky@local")
            with pytest.raises(ActorCrashed):
                await proxy.crash()
            # The escalation cancels this block; shielded, it sees what any
            # caller would: each call fails at once, and soon with the reason.
            with trio.CancelScope(shield=True), trio.fail_after(5):
                while True:
                    try:
                        await proxy.echo(value=1)
                    except ActorCrashed:
                        continue  # queued before the supervisor gave up
                    except NodeClosed as exc:
                        assert "gave up on flaky@local" in str(exc)
                        break
