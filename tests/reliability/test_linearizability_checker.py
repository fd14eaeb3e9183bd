"""The linearizability checker of the fault runs, checked on its own.

Textbook histories with known verdicts; a brute-force oracle (every order of
every subset of the optional writes) on tiny random histories; histories of
a real register that must pass, and the same with one read's answer forged
that must fail; the :class:`Recorder` driven by concurrent trio tasks; and
the timing of a 2,000-call history of 8 clients.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Hashable, Sequence

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Report
from .linearizability import (
    Kind,
    Operation,
    Outcome,
    Recorder,
    SearchBudgetExceeded,
    check_per_key,
    check_register,
    read_op,
    split_by_key,
    write_op,
)
from .register_histories import Fate, Step, history_from_plan, random_plan

OK, UNKNOWN, NOT_APPLIED = Outcome.OK, Outcome.UNKNOWN, Outcome.FAILED_NOT_APPLIED


def verdict(history: Sequence[Operation], initial: Hashable = None) -> bool:
    return check_register(history, initial=initial).linearizable


# --- textbook cases -------------------------------------------------------------------


def test_an_empty_history_and_a_sequential_one_are_linearizable() -> None:
    assert verdict([])
    result = check_register([read_op(1, None, 0, 1), write_op(1, "a", 2, 3), read_op(2, "a", 4, 5)])
    assert result.linearizable, result.explanation
    assert [op.value for op in result.linearization] == [None, "a", "a"]
    assert result.state == "a"
    assert result.unplaceable == ()


def test_a_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    assert not verdict([write_op(1, "a", 0, 1), read_op(2, None, 2, 3)])
    stale = read_op(3, "a", 6, 7)
    result = check_register([write_op(1, "a", 0, 1), write_op(2, "b", 2, 3), stale])
    assert not result.linearizable
    assert result.unplaceable == (stale,)
    assert [op.value for op in result.linearization] == ["a", "b"]
    assert result.state == "b"
    assert "not linearizable" in result.explanation


@pytest.mark.parametrize("seen", [None, "a"])
def test_a_read_concurrent_with_a_write_may_see_it_or_not(seen: str | None) -> None:
    assert verdict([write_op(1, "a", 0, 3), read_op(2, seen, 1, 2)])
    # Touching intervals count as concurrent too.
    assert verdict([write_op(1, "a", 0, 3), read_op(2, seen, 3, 4)])


def test_a_write_of_unknown_outcome_may_be_seen_or_not_but_once_seen_stays() -> None:
    lost = write_op(1, "a", 0, None, UNKNOWN)
    assert verdict([lost, read_op(2, "a", 5, 6)])
    assert verdict([lost, read_op(2, None, 5, 6)])
    assert verdict([lost, read_op(2, None, 5, 6), read_op(2, "a", 7, 8)])
    assert not verdict([lost, read_op(2, "a", 5, 6), read_op(2, None, 7, 8)])
    # An error reply that leaves the outcome open is the same as no reply.
    assert verdict([write_op(1, "a", 0, 1, UNKNOWN), read_op(2, "a", 50, 51)])
    # But it cannot apply before it was invoked.
    assert not verdict([read_op(2, "a", 0, 1), write_op(1, "a", 2, None, UNKNOWN)])


def test_a_write_seen_then_unseen_after_its_completion_is_not_linearizable() -> None:
    assert not verdict([write_op(1, "a", 0, 1), read_op(2, "a", 0.5, 0.8), read_op(2, None, 2, 3)])
    # Even while the write is still running: once seen, it cannot be unseen.
    assert not verdict([write_op(1, "a", 0, 10), read_op(2, "a", 1, 2), read_op(3, None, 3, 4)])


def test_a_write_applied_twice_is_caught() -> None:
    a, b = write_op(1, "a", 0, 10), write_op(2, "b", 0, 10)
    reads = [read_op(3, "a", 1, 2), read_op(3, "b", 3, 4), read_op(3, "a", 5, 6)]
    assert not verdict([a, b, *reads])
    assert not verdict([write_op(1, "a", 0, None, UNKNOWN), b, *reads])
    # A retry that wrote "a" again explains it.
    retry = write_op(1, "a", 0, 10)
    assert verdict([write_op(1, "a", 0, None, UNKNOWN), retry, b, *reads])


def test_a_write_that_failed_without_effect_is_dropped() -> None:
    assert not verdict([write_op(1, "a", 0, 1, NOT_APPLIED), read_op(2, "a", 2, 3)])
    assert verdict([write_op(1, "a", 0, 1, NOT_APPLIED), read_op(2, None, 2, 3)])


def test_a_read_of_unknown_outcome_is_dropped() -> None:
    history = [write_op(1, "a", 0, 1), read_op(2, "never written", 2, None, UNKNOWN)]
    result = check_register(history)
    assert result.linearizable, result.explanation
    assert result.linearization == (history[0],)


def test_the_initial_value_is_configurable() -> None:
    assert verdict([read_op(1, 0, 0, 1)], initial=0)
    assert not verdict([read_op(1, 0, 0, 1)])
    # An unknown write of the initial value need not explain a read of it.
    history = [
        read_op(1, 0, 0, 1),
        write_op(2, 5, 2, 3),
        write_op(3, 0, 4, None, UNKNOWN),
        read_op(1, 5, 5, 6),
    ]
    assert verdict(history, initial=0)


def test_the_operation_refuses_malformed_calls() -> None:
    with pytest.raises(ValueError):
        read_op(1, "a", 0, None)  # ok needs a completion
    with pytest.raises(ValueError):
        write_op(1, "a", 2, 1)  # completed before invoked
    with pytest.raises(ValueError):
        write_op(1, ["unhashable"], 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        write_op(1, "a", math.nan, 1)
    with pytest.raises(ValueError):
        Operation(1, "delete", None, 0, 1)  # type: ignore[arg-type]
    op = Operation(1, "write", "a", 0, None, "unknown")  # type: ignore[arg-type]
    assert op.kind is Kind.WRITE and op.outcome is Outcome.UNKNOWN


def test_keys_are_independent_registers() -> None:
    history = [
        write_op(1, "a", 0, 1, key="x"),
        read_op(2, None, 2, 3, key="y"),
        read_op(2, "a", 4, 5, key="x"),
    ]
    assert not verdict(history)  # one register: the read of None is stale
    assert split_by_key(history) == {"x": [history[0], history[2]], "y": [history[1]]}
    results = check_per_key(history)
    assert {key: r.linearizable for key, r in results.items()} == {"x": True, "y": True}
    results = check_per_key([*history, read_op(3, None, 6, 7, key="x")])
    assert not results["x"].linearizable and results["y"].linearizable


def test_the_search_budget_is_enforced() -> None:
    # Many overlapping writes and one impossible read: a real search.
    writes = [write_op(c, c, 0, 10) for c in range(10)]
    history = [*writes, read_op(99, "never", 20, 21)]
    with pytest.raises(SearchBudgetExceeded) as caught:
        check_register(history, max_steps=50)
    assert caught.value.steps == 50
    assert not verdict(history)


# --- a brute-force oracle on tiny histories ---------------------------------------------


def brute_force(history: Sequence[Operation], initial: Hashable = None) -> bool:
    """Every order of the effective calls, with every subset of the unknown writes."""
    ops = [
        op
        for op in history
        if op.outcome is not NOT_APPLIED and not (op.kind is Kind.READ and op.outcome is UNKNOWN)
    ]
    required = [op for op in ops if op.outcome is OK or op.kind is Kind.READ]
    maybe = [op for op in ops if op.outcome is UNKNOWN and op.kind is Kind.WRITE]

    def end(op: Operation) -> float:
        return math.inf if op.outcome is UNKNOWN or op.completed is None else op.completed

    for size in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, size):
            for order in itertools.permutations([*required, *chosen]):
                if any(
                    end(later) < earlier.invoked
                    for k, earlier in enumerate(order)
                    for later in order[k + 1 :]
                ):
                    continue
                state = initial
                for op in order:
                    if op.kind is Kind.WRITE:
                        state = op.value
                    elif op.value != state:
                        break
                else:
                    return True
    return False


@st.composite
def tiny_histories(draw: st.DrawFn) -> list[Operation]:
    history: list[Operation] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(Kind))
        invoked = draw(st.integers(0, 6))
        outcome = draw(st.sampled_from([OK, OK, OK, UNKNOWN, NOT_APPLIED]))
        width = draw(st.integers(0, 4))
        replied = outcome is not UNKNOWN or draw(st.booleans())
        history.append(
            Operation(
                client=len(history),
                kind=kind,
                value=draw(st.sampled_from([None, "a", "b"])),
                invoked=invoked,
                completed=invoked + width if replied else None,
                outcome=outcome,
            )
        )
    return history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_histories(), st.sampled_from([None, "a"]))
def test_the_checker_agrees_with_brute_force(history: list[Operation], initial: str | None) -> None:
    result = check_register(history, initial=initial)
    assert result.linearizable == brute_force(history, initial), result.explanation


# --- histories of a real register ---------------------------------------------------------

stretches = st.integers(0, 30).map(lambda tenths: tenths / 10)


@st.composite
def plans(draw: st.DrawFn, *, duplicates: bool) -> list[Step]:
    clients = draw(st.integers(1, 8))
    plan = []
    for _ in range(draw(st.integers(2, 30))):
        kind = draw(st.sampled_from(Kind))
        fates = [Fate.OK] * 6 + [Fate.UNKNOWN_APPLIED]
        if kind is Kind.WRITE:
            fates += [Fate.LOST, Fate.NOT_APPLIED]
        value = draw(st.sampled_from([None, None, "x", "y"])) if duplicates else None
        plan.append(
            Step(
                client=draw(st.integers(0, clients - 1)),
                kind=kind,
                fate=draw(st.sampled_from(fates)),
                before=draw(stretches),
                after=draw(stretches),
                replied=draw(st.booleans()),
                value=value,
            )
        )
    return plan


PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(plans(duplicates=False))
def test_a_real_registers_history_is_linearizable(plan: list[Step]) -> None:
    result = check_register(history_from_plan(plan))
    assert result.linearizable, result.explanation


@PROPERTY
@given(plans(duplicates=True))
def test_a_real_registers_history_with_repeated_values_is_linearizable(plan: list[Step]) -> None:
    result = check_register(history_from_plan(plan))
    assert result.linearizable, result.explanation


def ok_reads(history: list[Operation]) -> list[int]:
    return [i for i, op in enumerate(history) if op.kind is Kind.READ and op.outcome is OK]


def forge(history: list[Operation], i: int, answer: Hashable) -> list[Operation]:
    op = history[i]
    return [*history[:i], read_op(op.client, answer, op.invoked, op.completed), *history[i + 1 :]]


@PROPERTY
@given(plans(duplicates=False), st.data())
def test_a_read_of_a_value_never_written_is_caught(plan: list[Step], data: st.DataObject) -> None:
    history = history_from_plan(plan)
    reads = ok_reads(history)
    if not reads:  # no read to forge: make one at the end
        history.append(read_op("reader", None, len(plan) + 1, len(plan) + 2))
        reads = [len(history) - 1]
    i = data.draw(st.sampled_from(reads))
    result = check_register(forge(history, i, "never written"))
    assert not result.linearizable


def overwritten_values(history: list[Operation], read: Operation) -> list[Hashable]:
    """Values certainly overwritten before ``read`` was invoked.

    The initial value once any write completed before it; a completed write's
    value once another write, invoked after it completed, completed before it.
    """
    done = [
        op
        for op in history
        if op.kind is Kind.WRITE
        and op.outcome is OK
        and op.completed is not None
        and op.completed < read.invoked
    ]
    stale: list[Hashable] = [None] if done else []
    for old in history:
        written = old.kind is Kind.WRITE and old.outcome is OK and old.completed is not None
        if written and any(new.invoked > old.completed for new in done):  # type: ignore[operator]
            stale.append(old.value)
    return stale


@PROPERTY
@given(plans(duplicates=False), st.data())
def test_a_read_of_an_overwritten_value_is_caught(plan: list[Step], data: st.DataObject) -> None:
    history = history_from_plan(plan)
    # Three calls in a row that make a stale read possible, if the plan has none.
    end = len(plan) + 10
    history += [
        write_op("old", "w-old", end, end + 1),
        write_op("new", "w-new", end + 2, end + 3),
        read_op("reader", "w-new", end + 4, end + 5),
    ]
    candidates = [
        (i, v) for i in ok_reads(history) for v in overwritten_values(history, history[i])
    ]
    i, stale = data.draw(st.sampled_from(candidates))
    result = check_register(forge(history, i, stale))
    assert not result.linearizable
    assert result.unplaceable, result.explanation


# --- recording from trio tasks -------------------------------------------------------------


class MemoryRegister:
    """A register with a checkpoint inside each call, so calls interleave.

    With ``stale_reads`` its reads come from a copy refreshed only every
    other write: the bug the checker is for.
    """

    def __init__(self, *, stale_reads: bool = False) -> None:
        self.value: Hashable = None
        self.replica: Hashable = None
        self.writes = 0
        self.stale_reads = stale_reads

    async def write(self, value: Hashable) -> None:
        await trio.lowlevel.checkpoint()
        self.value = value
        self.writes += 1
        if not self.stale_reads or self.writes % 2 == 0:
            self.replica = value
        await trio.lowlevel.checkpoint()

    async def read(self) -> Hashable:
        await trio.lowlevel.checkpoint()
        answer = self.replica if self.stale_reads else self.value
        await trio.lowlevel.checkpoint()
        return answer


async def run_clients(register: MemoryRegister, recorder: Recorder, clients: int) -> None:
    async def client(c: int) -> None:
        for n in range(20):
            if (c + n) % 3 == 0:
                with recorder.invoke(c, "write", f"{c}-{n}") as call:
                    await register.write(f"{c}-{n}")
                    call.ok()
            else:
                with recorder.invoke(c, "read") as call:
                    call.ok(await register.read())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for c in range(clients):
                nursery.start_soon(client, c)


async def test_a_recorded_history_of_concurrent_tasks_is_linearizable() -> None:
    recorder = Recorder(clock=trio.current_time)
    await run_clients(MemoryRegister(), recorder, clients=6)
    history = recorder.history()
    assert len(history) == 120 and recorder.in_flight == 0
    assert all(op.outcome is OK and op.completed is not None for op in history)
    result = check_register(history)
    assert result.linearizable, result.explanation


async def test_a_register_with_stale_reads_is_caught() -> None:
    recorder = Recorder()
    register = MemoryRegister(stale_reads=True)
    with recorder.invoke("w", "write", "first") as call:
        await register.write("first")  # the replica is not refreshed
        call.ok()
    with recorder.invoke("r", "read") as call:
        call.ok(await register.read())
    result = check_register(recorder.history())
    assert not result.linearizable
    assert [op.client for op in result.unplaceable] == ["r"]


def test_a_call_is_resolved_once_and_unresolved_calls_are_unknown() -> None:
    ticks = itertools.count()
    recorder = Recorder(clock=lambda: float(next(ticks)))
    write = recorder.invoke("a", Kind.WRITE, 1, key="k")
    read = recorder.invoke("b", "read")
    failed = recorder.invoke("c", "write", 2)
    with pytest.raises(ValueError):
        write.ok("a write takes no answer")
    write.ok()
    with pytest.raises(RuntimeError):
        write.unknown()
    failed.not_applied()
    assert recorder.in_flight == 1
    with pytest.raises(ValueError), recorder.invoke("d", "write", 3):
        raise ValueError("the call failed in flight")
    with pytest.raises(ValueError):
        recorder.invoke("e", "read", "a read has no value")
    history = recorder.history()
    assert history == [
        Operation("a", Kind.WRITE, 1, 0.0, 3.0, OK, "k"),
        Operation("b", Kind.READ, None, 1.0, None, UNKNOWN),
        Operation("c", Kind.WRITE, 2, 2.0, 4.0, NOT_APPLIED),
        Operation("d", Kind.WRITE, 3, 5.0, 6.0, UNKNOWN),
    ]
    assert read.outcome is None and read.completed is None


# --- timing --------------------------------------------------------------------------------


def test_two_thousand_calls_of_eight_clients_check_in_seconds(reliability_report: Report) -> None:
    history = history_from_plan(random_plan(random.Random(13), 2000, 8))
    started = time.perf_counter()
    result = check_register(history)
    passing = time.perf_counter() - started
    assert result.linearizable, result.explanation

    last_read = ok_reads(history)[-1]  # a forged answer near the end: the longest refutation
    started = time.perf_counter()
    refuted = check_register(forge(history, last_read, "never written"))
    failing = time.perf_counter() - started
    assert not refuted.linearizable

    reliability_report(
        calls=len(history),
        clients=8,
        linearizable_s=round(passing, 3),
        refuted_s=round(failing, 3),
        refuted_steps=refuted.steps,
    )
    assert passing < 10 and failing < 10
