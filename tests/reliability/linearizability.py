"""Is a recorded history of a single-key register linearizable?

Test support for the delivery-guarantee runs: clients record each call's
invocation and completion (:class:`Recorder`), and :func:`check_register`
decides whether some order of the calls, each placed at one instant inside
its interval, explains every answer with a plain register (one value, reads
return the last write, ``initial`` before any write). Pure: no I/O, no
clocks other than the one a :class:`Recorder` is given.

The search is Wing & Gong's (try each call that may come next, backtrack on a
dead end) with Lowe's memo: a configuration (set of calls linearized, register
value) reached once is never explored again, so short windows of concurrency
keep thousands of calls cheap. Real-time order is strict: a call precedes
another only if it completed strictly before the other was invoked; equal
times count as concurrent (the lenient reading, so a tie never fails a run).

Outcomes (:class:`Outcome`): ``ok`` calls took effect inside their interval;
``failed_not_applied`` calls certainly had no effect and are dropped;
``unknown`` calls (no reply, or an error that leaves the outcome open) may
take effect at any instant after their invocation, or never: a write of
unknown outcome is pending forever, a read of unknown outcome is dropped (it
has no effect and its answer is not known).

Give every write its own value: then each write of unknown outcome is either
dropped (nobody read its value) or due before the first read of it, and the
search stays linear in the history's length. Writes of unknown outcome that
share a value stay pending forever, and refuting such a history can take
time exponential in their number: ``max_steps`` bounds it.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "Call",
    "CheckResult",
    "Kind",
    "Operation",
    "Outcome",
    "Recorder",
    "SearchBudgetExceeded",
    "check_per_key",
    "check_register",
    "read_op",
    "split_by_key",
    "write_op",
]


class Kind(enum.StrEnum):
    """What a call does to the register."""

    WRITE = "write"
    READ = "read"


class Outcome(enum.StrEnum):
    """How a call ended, as far as its client knows."""

    OK = "ok"
    """Completed with its answer: it took effect inside its interval."""
    FAILED_NOT_APPLIED = "failed_not_applied"
    """Completed with an error that certainly had no effect: dropped from the history."""
    UNKNOWN = "unknown"
    """No answer, or an error leaving the outcome open: it may apply after invocation, or never."""


@dataclass(frozen=True)
class Operation:
    """One call of one client on one register (``key``).

    ``value`` is what a write wrote, or what a read returned (``None``: no
    value yet, i.e. the initial value when that is ``None``; ignored for a
    read of unknown outcome). ``completed`` is ``None`` when no reply came;
    an ``ok`` call needs one. Times come from one monotonic clock.
    """

    client: Hashable
    kind: Kind
    value: Hashable
    invoked: float
    completed: float | None
    outcome: Outcome = Outcome.OK
    key: Hashable = None

    def __post_init__(self) -> None:
        # Accept the plain strings too ("write", "ok"): a bad one raises ValueError.
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        if not isinstance(self.invoked, int | float) or not math.isfinite(self.invoked):
            raise ValueError(f"invoked must be a finite number, got {self.invoked!r}")
        if self.completed is None:
            if self.outcome is not Outcome.UNKNOWN:
                raise ValueError(
                    f"an {self.outcome.value!r} call needs its completion time; "
                    "a call with no reply has outcome 'unknown'"
                )
        elif not isinstance(self.completed, int | float) or not math.isfinite(self.completed):
            raise ValueError(f"completed must be a finite number or None, got {self.completed!r}")
        elif self.completed < self.invoked:
            raise ValueError(f"completed ({self.completed}) is before invoked ({self.invoked})")
        try:
            hash(self.value)
            hash(self.key)
        except TypeError as exc:
            raise ValueError(f"value and key must be hashable: {exc}") from None

    def describe(self) -> str:
        """``client 3 read -> 'a' [1.000, 2.000] ok``: one line for explanations."""
        arrow = "<-" if self.kind is Kind.WRITE else "->"
        end = "..." if self.completed is None else f"{self.completed:.6g}"
        return (
            f"client {self.client!r} {self.kind.value} {arrow} {self.value!r} "
            f"[{self.invoked:.6g}, {end}] {self.outcome.value}"
        )


def write_op(
    client: Hashable,
    value: Hashable,
    invoked: float,
    completed: float | None,
    outcome: Outcome | str = Outcome.OK,
    *,
    key: Hashable = None,
) -> Operation:
    """A write of ``value`` (shorthand for :class:`Operation`)."""
    return Operation(client, Kind.WRITE, value, invoked, completed, Outcome(outcome), key)


def read_op(
    client: Hashable,
    value: Hashable,
    invoked: float,
    completed: float | None,
    outcome: Outcome | str = Outcome.OK,
    *,
    key: Hashable = None,
) -> Operation:
    """A read that returned ``value`` (shorthand for :class:`Operation`)."""
    return Operation(client, Kind.READ, value, invoked, completed, Outcome(outcome), key)


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one register's history.

    ``linearization`` is an order that explains every answer when
    ``linearizable``; otherwise the longest linearizable prefix the search
    found. Writes of unknown outcome missing from it are taken as never
    applied. ``state`` is the register's value after it. ``unplaceable``
    (empty when linearizable) holds the calls that could not come next
    after that prefix, though one of them had to: each read there disagrees
    with ``state``. ``steps`` counts the search's moves.
    """

    linearizable: bool
    linearization: tuple[Operation, ...]
    state: Hashable
    unplaceable: tuple[Operation, ...]
    steps: int
    explanation: str


class SearchBudgetExceeded(Exception):
    """The search made ``max_steps`` moves without a verdict.

    Nothing is decided: check a shorter history, or raise ``max_steps``.
    """

    def __init__(self, steps: int, linearized: int, total: int) -> None:
        super().__init__(
            f"no verdict after {steps} search steps (best prefix: {linearized} of {total} calls); "
            "check a shorter history or raise max_steps"
        )
        self.steps = steps
        self.linearized = linearized
        self.total = total


@dataclass(frozen=True)
class _Call:
    """A call the search must (``required``) or may place, before ``deadline``."""

    op: Operation
    is_write: bool
    deadline: float  # the completion time, or +inf for a write of unknown outcome
    required: bool


def _prepare(history: Iterable[Operation], initial: Hashable) -> list[_Call]:
    """Drop what has no effect and give each remaining call its deadline.

    Two exact simplifications keep writes of unknown outcome from widening
    the search: one whose value no ``ok`` read returned is dropped (placing it
    last, i.e. never, explains as much as placing it anywhere), and one that
    is the only writer of a value some ``ok`` read returned must precede that
    read, so it gets the earliest completion of those reads as its deadline
    (unless the value is ``initial``: such a read may have seen no write).
    """
    kept = [
        op
        for op in history
        if op.outcome is not Outcome.FAILED_NOT_APPLIED
        and not (op.kind is Kind.READ and op.outcome is Outcome.UNKNOWN)
    ]
    first_read_done: dict[Hashable, float] = {}
    writers: dict[Hashable, int] = {}
    for op in kept:
        if op.kind is Kind.READ:
            assert op.completed is not None  # an ok read: Operation checks it
            done = first_read_done.get(op.value, math.inf)
            first_read_done[op.value] = min(done, op.completed)
        else:
            writers[op.value] = writers.get(op.value, 0) + 1
    calls = []
    for op in kept:
        if op.kind is Kind.READ or op.outcome is Outcome.OK:
            assert op.completed is not None
            calls.append(_Call(op, op.kind is Kind.WRITE, op.completed, required=True))
        elif op.value not in first_read_done:
            continue  # an unknown write nobody saw: "never applied" explains it
        elif writers[op.value] == 1 and op.value != initial:
            deadline = max(first_read_done[op.value], op.invoked)
            calls.append(_Call(op, True, deadline, required=True))
        else:
            calls.append(_Call(op, True, math.inf, required=False))
    return calls


def check_register(
    history: Iterable[Operation], *, initial: Hashable = None, max_steps: int | None = None
) -> CheckResult:
    """Decide whether ``history`` (one register's calls) is linearizable.

    ``initial`` is the register's value before any write. ``max_steps``
    bounds the search: past it, :class:`SearchBudgetExceeded` is raised.
    The keys of the operations are not looked at: split a history over
    several registers with :func:`split_by_key` (or :func:`check_per_key`).
    """
    calls = _prepare(history, initial)
    found, frames, best, steps = _search(calls, initial, max_steps)
    if not found:
        return _refuted(calls, best, initial, steps)
    order = tuple(calls[i].op for i in _placed(frames))
    state = frames[-1][3] if frames else initial
    return CheckResult(
        linearizable=True,
        linearization=order,
        state=state,
        unplaceable=(),
        steps=steps,
        explanation=f"linearizable: {len(order)} calls placed in {steps} steps",
    )


_Frame = tuple[int, Hashable, int, Hashable]
"""A move of the search: (call placed, register before, write placed just before it or -1,
register after)."""


def _placed(frames: list[_Frame]) -> list[int]:
    """The calls the moves placed, in order."""
    order = []
    for i, _, partner, _ in frames:
        if partner >= 0:
            order.append(partner)
        order.append(i)
    return order


def _search(
    calls: list[_Call], initial: Hashable, max_steps: int | None
) -> tuple[bool, list[_Frame], list[_Frame], int]:
    """Wing & Gong's search with Lowe's memo: (found, moves, longest moves, steps).

    The required calls sit in a doubly linked list of their 2n events in
    time order (call ``i``'s invocation is entry ``2i``, its completion
    ``2i+1``; invocations first at equal times, so ties are concurrent).
    A call may be placed next if its invocation comes before the first
    completion still in the list; reaching a completion means its call should
    have been placed already, so the last move is undone.

    A write that may never apply (optional) is not in the list: placing it
    matters only right before a read of its value that the register does not
    hold (anywhere else it is overwritten unseen, and dropping it leaves a
    valid order valid). So it is placed only together with such a read, and
    of the optional writes of one value, all alike once invoked, only the
    earliest unplaced one is tried.
    """
    n = len(calls)
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    events = sorted(
        (t, kind, 2 * i + kind)
        for i, c in enumerate(calls)
        if c.required
        for t, kind in ((c.op.invoked, 0), (c.deadline, 1))
    )
    last = head
    for _, _, entry in events:
        nxt[last] = entry
        prv[entry] = last
        last = entry

    def lift(i: int) -> None:
        for e in (2 * i, 2 * i + 1):
            p, q = prv[e], nxt[e]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(i: int) -> None:
        for e in (2 * i + 1, 2 * i):
            p, q = prv[e], nxt[e]
            nxt[p] = e
            if q != -1:
                prv[q] = e

    is_write = [c.is_write for c in calls]
    values = [c.op.value for c in calls]
    deadlines = [c.deadline for c in calls]
    optional: dict[Hashable, list[int]] = {}
    for i in sorted(range(n), key=lambda i: calls[i].op.invoked):
        if not calls[i].required:
            optional.setdefault(values[i], []).append(i)
    n_required = sum(1 for c in calls if c.required)

    state: Hashable = initial
    linearized = 0  # bitset of the required calls placed so far
    used = 0  # bitset of the optional writes placed so far
    stack: list[_Frame] = []
    # Lowe's memo, with dominance: a configuration is (required calls placed,
    # register) plus the optional writes used up; one seen with a subset of
    # them used had every option this one has, and failed.
    seen: dict[tuple[int, Hashable], list[int]] = {}
    best: list[_Frame] = []
    best_count = 0
    placed = 0  # required calls placed
    steps = 0
    entry = nxt[head]
    while placed < n_required:
        steps += 1
        if max_steps is not None and steps > max_steps:
            raise SearchBudgetExceeded(steps - 1, best_count, n)
        if entry & 1 == 0:  # an invocation: try to place this call next
            i = entry >> 1
            partner = -1
            if is_write[i] or values[i] == state:
                after: Hashable = values[i]
            else:
                partner = _optional_writer(
                    optional.get(values[i], ()), entry, nxt, deadlines, calls, used
                )
                if partner < 0:
                    entry = nxt[entry]
                    continue
                after = values[i]
            config = linearized | (1 << i)
            using = used | (1 << partner) if partner >= 0 else used
            earlier = seen.setdefault((config, after), [])
            if any(u & using == u for u in earlier):
                entry = nxt[entry]
                continue
            earlier.append(using)
            stack.append((i, state, partner, after))
            state = after
            linearized, used = config, using
            placed += 1
            lift(i)  # an optional partner is not in the list
            if placed > best_count:
                best, best_count = stack.copy(), placed
            entry = nxt[head]
        else:  # a completion: its call should have been placed by now; backtrack
            if not stack:
                return False, stack, best, steps
            i, state, partner, _ = stack.pop()
            linearized ^= 1 << i
            placed -= 1
            unlift(i)
            if partner >= 0:
                used ^= 1 << partner
            entry = nxt[2 * i]
    return True, stack, best, steps


def _optional_writer(
    pool: Sequence[int],
    entry: int,
    nxt: list[int],
    deadlines: list[float],
    calls: list[_Call],
    used: int,
) -> int:
    """The earliest unplaced optional write in ``pool`` invoked by now, or -1.

    "By now" is before the first completion still in the list, which
    follows ``entry`` (a call's own completion comes after its invocation).
    """
    if not pool:
        return -1
    e = entry
    while e & 1 == 0:
        e = nxt[e]
    frontier = deadlines[e >> 1]
    for w in pool:
        if calls[w].op.invoked > frontier:
            return -1
        if not (used >> w) & 1:
            return w
    return -1


def _refuted(calls: list[_Call], best: list[_Frame], initial: Hashable, steps: int) -> CheckResult:
    """The verdict "not linearizable", explained from the longest prefix found."""
    order = _placed(best)
    prefix = [calls[i] for i in order]
    state = best[-1][3] if best else initial
    placed = set(order)
    rest = [c for i, c in enumerate(calls) if i not in placed and c.required]
    due = min(rest, key=lambda c: c.deadline)  # it had to come next, or before another
    unplaceable = tuple(c.op for c in rest if c.op.invoked <= due.deadline and not c.is_write)
    lines = [
        f"not linearizable: at best {len(prefix)} of {len(calls)} calls placed "
        f"({steps} steps); then the register holds {state!r}",
    ]
    if prefix:
        lines.append(f"  last placed: {prefix[-1].op.describe()}")
    lines.append(f"  due next (deadline {due.deadline:.6g}): {due.op.describe()}")
    lines.extend(f"  cannot be placed: {op.describe()}" for op in unplaceable)
    return CheckResult(
        linearizable=False,
        linearization=tuple(c.op for c in prefix),
        state=state,
        unplaceable=unplaceable,
        steps=steps,
        explanation="\n".join(lines),
    )


def split_by_key(history: Iterable[Operation]) -> dict[Hashable, list[Operation]]:
    """The history of each register (``Operation.key``), in the order given."""
    per_key: dict[Hashable, list[Operation]] = {}
    for op in history:
        per_key.setdefault(op.key, []).append(op)
    return per_key


def check_per_key(
    history: Iterable[Operation], *, initial: Hashable = None, max_steps: int | None = None
) -> dict[Hashable, CheckResult]:
    """:func:`check_register` on each key's history (independent registers).

    Linearizability is local: the whole is linearizable if and only if every
    register is. ``initial`` and ``max_steps`` apply to each key.
    """
    return {
        key: check_register(ops, initial=initial, max_steps=max_steps)
        for key, ops in split_by_key(history).items()
    }


class Call:
    """One recorded call in flight; resolve it once with :meth:`ok`,
    :meth:`unknown` or :meth:`not_applied`.

    As a context manager, a call still unresolved at exit (an exception
    escaped, say) is recorded as :meth:`unknown`: the request may have
    reached the register.
    """

    def __init__(
        self, recorder: Recorder, client: Hashable, kind: Kind, value: Hashable, key: Hashable
    ) -> None:
        self._recorder = recorder
        self.client = client
        self.kind = kind
        self.value = value
        self.key = key
        self.invoked = recorder.clock()
        self.completed: float | None = None
        self.outcome: Outcome | None = None

    def ok(self, answer: Hashable = None) -> None:
        """It completed: a read returned ``answer``; a write takes none."""
        if self.kind is Kind.WRITE and answer is not None:
            raise ValueError(f"a write's ok() takes no answer, got {answer!r}")
        self._resolve(Outcome.OK, answer if self.kind is Kind.READ else self.value)

    def unknown(self) -> None:
        """It ended in an error that leaves open whether it took effect."""
        self._resolve(Outcome.UNKNOWN, self.value)

    def not_applied(self) -> None:
        """It ended in an error that certainly had no effect."""
        self._resolve(Outcome.FAILED_NOT_APPLIED, self.value)

    def _resolve(self, outcome: Outcome, value: Hashable) -> None:
        if self.outcome is not None:
            raise RuntimeError(f"call already resolved as {self.outcome.value!r}")
        hash(value)  # an unhashable answer fails here, in the client that got it
        self.completed = self._recorder.clock()
        self.outcome = outcome
        self.value = value

    def operation(self) -> Operation:
        """The call as an :class:`Operation`; unresolved: unknown, no completion."""
        if self.outcome is None:
            return Operation(
                self.client, self.kind, self.value, self.invoked, None, Outcome.UNKNOWN, self.key
            )
        return Operation(
            self.client, self.kind, self.value, self.invoked, self.completed, self.outcome, self.key
        )

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.outcome is None:
            self.unknown()


class Recorder:
    """Records the calls of concurrent clients (trio tasks) on one clock.

    Call :meth:`invoke` right before sending a request and resolve the
    returned :class:`Call` right after its reply, with no checkpoint in
    between, so each interval holds the call's real effect. Trio runs one
    task at a time, so no lock is needed. ``clock`` defaults to
    ``time.monotonic``; pass ``trio.current_time`` to follow a trio clock
    (an autojump clock, say). Do not mix clocks in one recorder.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._calls: list[Call] = []

    def invoke(
        self, client: Hashable, kind: Kind | str, value: Hashable = None, *, key: Hashable = None
    ) -> Call:
        """Start recording a call: a write of ``value``, or a read (no value)."""
        kind = Kind(kind)
        if kind is Kind.READ and value is not None:
            raise ValueError("a read is invoked without a value; give its answer to ok()")
        hash(value)
        hash(key)
        call = Call(self, client, kind, value, key)
        self._calls.append(call)
        return call

    def history(self) -> list[Operation]:
        """Every call so far, in invocation order; unresolved ones as unknown."""
        return [call.operation() for call in self._calls]

    @property
    def in_flight(self) -> int:
        """How many calls are not resolved yet."""
        return sum(1 for call in self._calls if call.outcome is None)
