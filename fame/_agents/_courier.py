"""The courier: the task of a node that delivers its outbox.

``node.tell`` records a message in the :class:`~._outbox.Outbox` and
returns its id; the courier sends each message as a request carrying
``request_id=<message id>`` and ``once=True`` (the receiver deduplicates
it through its inbox), waits for the answer (the acknowledgement), and
forgets the message on success. After a failure it asks
:func:`~._delivery_policy.after_failure` whether to try again later (a
jittered backoff) or move the message to the dead letters.

Messages to every destination go through one loop, up to
``DeliveryConfig.concurrency`` at once: nothing is promised about their
order, per destination either. A message to an address on this node goes
the same way (through the switchboard, with the same inbox), so local and
remote messages share one guarantee.

Attempt times are wall-clock seconds (they are stored and outlive the
process); the loop waits for them with trio's clock. Under a test's
virtual clock (``autojump_clock``) a message that waits for a later
attempt would make the loop spin through virtual time: such tests give
their nodes nothing to retry.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from .._core._address import Address
from .._core._errors import WireError
from .._wire._schema import check_request_id
from ._delivery_policy import DeliveryConfig, Next, OutboxEntry, after_failure
from ._outbox import Outbox
from ._switchboard import Switchboard, new_request_id

__all__ = ["Courier"]

log = logging.getLogger("fame.delivery")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class Courier:
    """Sends a node's outbox until each message is delivered or dead-lettered."""

    def __init__(
        self,
        switchboard: Switchboard,
        outbox: Outbox,
        config: DeliveryConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._switchboard = switchboard
        self.outbox = outbox
        self.config = config
        self._clock = clock
        self._busy: set[str] = set()
        self._wakeup = trio.Event()
        self._changed = trio.Event()
        self._cancel = trio.CancelScope()

    async def tell(
        self, address: str, op: str, args: dict[str, Any], request_id: str | None
    ) -> str:
        """Record a message to ``op`` of ``address``; return its id (see ``Node.tell``)."""
        to = str(Address.parse(address))
        if not isinstance(op, str) or not op:
            raise ValueError(f"an operation name is a non-empty str, got {op!r:.100}")
        if not isinstance(args, dict):
            raise TypeError(f"tell() arguments are a dict, got {type(args).__name__}")
        message_id = new_request_id() if request_id is None else check_request_id(request_id)
        if "\x00" in message_id:
            raise ValueError("a message id may not contain NUL")
        try:
            encoded = _encoder.encode(args)
        except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
            raise WireError(
                f"{op}() arguments cannot be sent: {exc}; nothing was recorded", code="unencodable"
            ) from None
        now = self._clock()
        entry = OutboxEntry(id=message_id, to=to, op=op, args=encoded, queued_at=now)
        await self.outbox.add(entry)
        self._wakeup.set()
        return message_id

    def stop(self) -> None:
        """Stop sending (what is in flight is cancelled and stays in the outbox)."""
        self._cancel.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the outbox a previous run left, then deliver for ever (until :meth:`stop`)."""
        with self._cancel:
            try:
                loaded = await self.outbox.load()
            except Exception as exc:
                # A damaged outbox file fails the outbox, not the node: its other
                # stores and agents work, and a tell says what is wrong.
                log.error("outbox not loaded; its messages are not sent: %s", exc)
            else:
                if loaded:
                    log.info("outbox: %d message(s) from a previous run to deliver", loaded)
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    self._wakeup = trio.Event()
                    now = self._clock()
                    free = self.config.concurrency - len(self._busy)
                    for entry in self.outbox.due(now, self._busy)[: max(0, free)]:
                        self._busy.add(entry.id)
                        nursery.start_soon(self._attempt, entry)
                    wait = self.outbox.next_due(self._busy) - self._clock()
                    if len(self._busy) >= self.config.concurrency:
                        wait = math.inf  # a finishing attempt wakes the loop
                    with trio.move_on_after(max(0.0, wait)):
                        await self._wakeup.wait()

    async def wait_empty(self) -> None:
        """Return once the outbox holds nothing (every message delivered or dead)."""
        while len(self.outbox):
            await self._changed.wait()

    async def _attempt(self, entry: OutboxEntry) -> None:
        try:
            await self._settle(entry, await self._send(entry))
        except Exception as exc:
            # The store refused the bookkeeping (full, damaged): the message stays
            # where it was and is sent again later; its receiver's inbox applies it once.
            log.error("outbox: message %s to %s not updated: %s", entry.id, entry.to, exc)
            if entry.id in self.outbox.entries:
                self.outbox.entries[entry.id] = msgspec.structs.replace(
                    entry, next_attempt=self._clock() + self.config.backoff.delay(1)
                )
        finally:
            self._busy.discard(entry.id)
            self._wakeup.set()
            self._changed.set()
            self._changed = trio.Event()

    async def _send(self, entry: OutboxEntry) -> Exception | None:
        """One attempt: ``None`` when the receiver acknowledged, else why not."""
        try:
            args = _decoder.decode(entry.args)
            await self._switchboard.call(
                entry.to,
                entry.op,
                args,
                self.config.attempt_timeout,
                request_id=entry.id,
                retry_safe=True,  # the receiver's inbox applies a resend once
                once=True,
            )
        except Exception as exc:
            return exc
        return None

    async def _settle(self, entry: OutboxEntry, error: Exception | None) -> None:
        if error is None:
            await self.outbox.remove(entry.id)
            return
        verdict, updated = after_failure(entry, error, self._clock(), self.config)
        if verdict is Next.DEAD:
            await self.outbox.dead_letter(updated)
        else:
            log.debug("message %s to %s: attempt %d failed", entry.id, entry.to, updated.attempts)
            await self.outbox.update(updated)
