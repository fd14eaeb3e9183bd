"""Supervision: run actors in a nursery and restart the ones that crash.

A :class:`Supervisor` owns one Trio nursery and a task per actor. The
strategy is one-for-one (a crash restarts only the actor that crashed)
with an OTP-style restart intensity: at most ``max_restarts`` restarts
within ``within`` seconds, each after an exponential backoff. One crash
more and the supervisor gives up on that actor and escalates
:class:`fame.SupervisorGaveUp` to its parent, which cancels its siblings
(whose ``on_stop`` hooks run) and leaves the ``async with`` block.

Closing a supervisor is graceful: every mailbox stops taking messages,
each actor handles what is already queued, then its ``on_stop`` runs.
Past ``stop_timeout`` the remaining actors are cancelled; their
``on_stop`` still runs, shielded and bounded by the same timeout.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from ._actor import DEFAULT_MAILBOX_SIZE, Actor, ActorRef, Delivery, crash_error
from ._backoff import Backoff
from ._deadlines import Deadlines
from ._errors import NodeClosed, SupervisorGaveUp
from ._groups import unwrap_exception_group
from ._mailbox import Mailbox
from ._metrics import Sample

__all__ = ["RestartPolicy", "Supervisor", "open_supervisor"]

log = logging.getLogger("fame.supervisor")

_HANDLE_BATCH = Actor.handle_batch

ActorFactory = Callable[[], Actor]


@attrs.frozen
class RestartPolicy:
    """How a supervisor restarts a crashed actor.

    ``max_restarts`` restarts are allowed within any ``within`` seconds;
    the n-th consecutive restart in that window waits
    ``min(backoff_initial * backoff_factor ** (n - 1), backoff_max)``.
    """

    max_restarts: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    within: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    backoff_initial: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    backoff_factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    backoff_max: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    _backoff: Backoff = attrs.field(init=False, repr=False, eq=False)

    @_backoff.default
    def _make_backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max, self.backoff_factor)

    def backoff(self, attempt: int) -> float:
        """The wait before the ``attempt``-th restart in the window (1 for the first)."""
        return self._backoff.delay(attempt)


class _Cell:
    """One supervised actor: its mailbox, its current instance, its crash record."""

    def __init__(
        self,
        address: str,
        make: ActorFactory,
        mailbox_size: int,
        policy: RestartPolicy,
        stop_timeout: float,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.address = address
        self.make = make
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.mailbox: Mailbox[Delivery] = Mailbox(mailbox_size)
        self.ref = ActorRef(address, self.mailbox, deadlines)
        self.restarts: collections.deque[float] = collections.deque()
        self.inflight: Sequence[Delivery] = ()
        self.stopped = trio.Event()
        self.restart_count = 0
        self.gave_up = False
        self.scope = trio.CancelScope()

    async def run(
        self, ended: Callable[[_Cell], None], *, task_status: trio.TaskStatus[ActorRef]
    ) -> None:
        """Run the actor in the cell's scope until it stops; then ``ended(cell)``, always.

        One frame holds the cell's scope, its restarts and the message loop
        of an actor that handles one message at a time: the actor's task
        resumes and parks through every frame around the loop, once for
        each message, so the loop has none around it.
        """
        try:
            with self.scope:
                actor = self._new_actor()
                try:
                    await actor.on_start()
                except BaseException:
                    # Never started, so nothing to stop: on_stop only undoes a completed
                    # on_start.
                    self._close()
                    self._fail_queued(NodeClosed(f"{self.address} failed to start"))
                    self.stopped.set()
                    raise
                try:
                    task_status.started(self.ref)
                    receive = self.mailbox.receive
                    while True:
                        try:
                            if actor.max_batch > 1 or type(actor).handle_batch is not _HANDLE_BATCH:
                                await self._batch_loop(actor)
                                return
                            handle = actor.handle
                            while True:
                                try:
                                    delivery = await receive()
                                except trio.EndOfChannel:
                                    return
                                self.inflight = (delivery,)
                                result = await handle(delivery.message)
                                slot = delivery.slot  # Delivery.reply, written out
                                if slot is not None:
                                    slot.set(result)
                                self.inflight = ()
                        except Exception as exc:
                            crash = exc
                        # Restarted outside the handler: a restart that fails again is not
                        # "during handling" of this crash, so its log does not repeat this
                        # traceback.
                        actor = await self._restart(actor, crash)
                finally:
                    self._close()
                    self._fail_queued(NodeClosed(f"{self.address} stopped"))
                    with trio.CancelScope(shield=True), trio.move_on_after(self.stop_timeout):
                        try:
                            await actor.on_stop()
                        except Exception:
                            log.exception("on_stop of %s failed", self.address)
                    self.stopped.set()
        finally:
            ended(self)

    def _new_actor(self) -> Actor:
        actor = self.make()
        actor.address = self.address
        return actor

    async def _restart(self, actor: Actor, exc: Exception) -> Actor:
        """Answer the victims of a crash, then start a fresh actor after a backoff."""
        error = crash_error(self.address, exc)
        for delivery in self.inflight:
            delivery.fail(error)
        self.inflight = ()
        while True:
            now = trio.current_time()
            while self.restarts and self.restarts[0] <= now - self.policy.within:
                self.restarts.popleft()
            if len(self.restarts) >= self.policy.max_restarts:
                gave_up = SupervisorGaveUp(
                    f"{self.address} crashed {len(self.restarts) + 1} times within"
                    f" {self.policy.within} s (limit {self.policy.max_restarts} restarts);"
                    f" last error: {type(exc).__name__}: {exc}"
                )
                log.error(
                    "%s crashed (%s: %s); the supervisor gives up on it",
                    self.address,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
                # Whoever still holds the ref learns why its calls fail from here on.
                self.ref.stop_reason = f"the supervisor gave up on {self.address}: {gave_up}"
                self.gave_up = True
                self._close()
                self._fail_queued(crash_error(self.address, exc))
                raise gave_up from exc
            self.restarts.append(now)
            self.restart_count += 1
            log.error(
                "%s crashed (%s: %s); restart %d",
                self.address,
                type(exc).__name__,
                exc,
                len(self.restarts),
                exc_info=exc,
            )
            await trio.sleep(self.policy.backoff(len(self.restarts)))
            actor = self._new_actor()
            try:
                await actor.on_start()
            except Exception as start_exc:
                exc = start_exc
            else:
                log.info("%s restarted (restart %d)", self.address, len(self.restarts))
                return actor

    async def _batch_loop(self, actor: Actor) -> None:
        """The message loop of an actor that handles batches (``max_batch``, ``handle_batch``)."""
        mailbox = self.mailbox
        receive = mailbox.receive
        limit = actor.max_batch
        while True:
            try:
                first = await receive()
            except trio.EndOfChannel:
                return
            batch = [first]
            # Asking first, not catching WouldBlock: a raise per batch costs
            # about a microsecond, much of a lone point read's budget.
            while len(batch) < limit and mailbox.ready:
                batch.append(mailbox.receive_nowait())
            self.inflight = batch
            await actor.handle_batch(batch)
            for delivery in batch:
                if not delivery.answered:
                    delivery.fail(RuntimeError(f"{self.address} left a message unanswered"))
            self.inflight = ()

    def _close(self) -> None:
        self.mailbox.close_sending()

    def _fail_queued(self, error: BaseException) -> None:
        for delivery in self.inflight:
            delivery.fail(error)
        self.inflight = ()
        while True:
            try:
                self.mailbox.receive_nowait().fail(error)
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        self.mailbox.close()


class Supervisor:
    """Runs actors one-for-one in a nursery. Make one with :func:`open_supervisor`."""

    def __init__(self, nursery: trio.Nursery, policy: RestartPolicy, stop_timeout: float) -> None:
        self._nursery = nursery
        self.policy = policy
        self.stop_timeout = stop_timeout
        self._cells: dict[str, _Cell] = {}
        # Refs of the actors given up on: calls through them fail at once with
        # the reason, where a vanished address would only say "no such actor".
        self._given_up: dict[str, ActorRef] = {}
        self._closing = False
        self.deadlines = Deadlines(nursery)
        """Keeps the deadlines of waits for the answers of these actors."""

    def __contains__(self, address: str) -> bool:
        return address in self._cells

    def ref(self, address: str) -> ActorRef | None:
        """The ref of the actor at ``address``, or of the one given up on there."""
        cell = self._cells.get(address)
        return cell.ref if cell is not None else self._given_up.get(address)

    def restart_count(self, address: str) -> int:
        """How many times the actor at ``address`` has been restarted so far."""
        return self._cells[address].restart_count

    def samples(self) -> Iterator[Sample]:
        """Each actor's mailbox depth and restarts so far: a metrics source (read on scrape)."""
        for address, cell in list(self._cells.items()):
            depth = len(cell.mailbox)
            yield ("fame_mailbox_depth", (address,), depth)
            yield ("fame_actor_restarts", (address,), cell.restart_count)

    async def spawn(
        self,
        actor: Actor | ActorFactory,
        address: str,
        *,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        policy: RestartPolicy | None = None,
    ) -> ActorRef:
        """Start an actor and return its ref once ``on_start`` completed.

        ``actor`` is an instance (restarted in place: ``on_start`` runs again
        on the same object) or a zero-argument factory (each restart gets a
        fresh instance, the OTP way). If the first ``on_start`` raises, the
        error propagates here and nothing is left running.
        """
        if self._closing:
            raise NodeClosed("the supervisor is shutting down")
        if address in self._cells:
            raise ValueError(f"an actor is already spawned at {address}")
        if mailbox_size < 1:
            raise ValueError("mailbox_size must be at least 1")
        make: ActorFactory = (lambda: actor) if isinstance(actor, Actor) else actor
        cell = _Cell(
            address, make, mailbox_size, policy or self.policy, self.stop_timeout, self.deadlines
        )
        self._given_up.pop(address, None)
        self._cells[address] = cell
        try:
            ref: ActorRef = await self._nursery.start(cell.run, self._cell_ended)
        except BaseException:
            self._cells.pop(address, None)
            raise
        return ref

    def _cell_ended(self, cell: _Cell) -> None:
        """Forget a cell whose actor stopped (keep its ref if the supervisor gave up on it)."""
        if self._cells.get(cell.address) is cell:
            del self._cells[cell.address]
            if cell.gave_up:
                self._given_up[cell.address] = cell.ref
        if self._closing and not self._cells:
            self.deadlines.close()  # the last actor stopped: nobody waits for answers

    async def stop(self, address: str) -> None:
        """Stop one actor gracefully: it handles what is queued, then ``on_stop`` runs."""
        cell = self._cells.get(address)
        if cell is None:
            await trio.lowlevel.checkpoint()
            return
        cell.mailbox.close_sending()
        with trio.move_on_after(self.stop_timeout):
            await cell.stopped.wait()
            return
        # Past the timeout: cancel it; its on_stop still runs (shielded, bounded).
        cell.scope.cancel()
        await cell.stopped.wait()

    def close(self) -> None:
        """Stop taking messages everywhere; actors drain their mailboxes and stop."""
        self._closing = True
        for cell in list(self._cells.values()):
            cell.mailbox.close_sending()
        if not self._cells:
            self.deadlines.close()


@asynccontextmanager
async def open_supervisor(
    policy: RestartPolicy | None = None, *, stop_timeout: float = 10.0
) -> AsyncIterator[Supervisor]:
    """Run a :class:`Supervisor` for the duration of the block."""
    async with unwrap_exception_group(), trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, policy or RestartPolicy(), stop_timeout)
        yield supervisor
        supervisor.close()
        nursery.cancel_scope.deadline = min(
            nursery.cancel_scope.deadline, trio.current_time() + stop_timeout
        )
