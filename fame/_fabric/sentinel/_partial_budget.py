"""The memory all connections may hold in unfinished websocket messages, as one budget (sans-IO).

Each connection holds what its :class:`~fame._fabric._frame_meter.FrameMeter`
counts: the payload of the data message it has not finished. Up to
``allowance`` bytes of that are free (an attach, an ordinary envelope);
beyond it, a connection borrows from one ``budget`` shared by all, and
gives it back when the message ends or the connection closes. A
connection that needs more than the budget has left, or that may not
borrow at all (it has not attached: an unauthenticated peer holds at most
its allowance), is refused: the door closes it. So the bytes held in
partial messages never exceed ``connections x allowance + budget``,
whatever the peers send; a large message from an attached peer still
goes through whenever the budget has room for it.

A message that borrows is expected to finish: :meth:`PartialBudget.overdue`
names the borrowers whose message has been growing for longer than a
deadline (a peer that sends the first megabyte and then a byte a minute),
so the budget is not held hostage. Keys identify connections; times are
the caller's clock. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["PartialBudget"]

K = TypeVar("K", bound=Hashable)


class PartialBudget(Generic[K]):
    """Bytes borrowed beyond the free allowance, per connection and in all."""

    def __init__(self, allowance: int, budget: int) -> None:
        if allowance < 0 or budget < 0:
            raise ValueError("the partial message allowance and budget cannot be negative")
        self.allowance = allowance
        self.budget = budget
        self.borrowed = 0  # in all, now
        self.peak = 0  # the most ever borrowed at once
        self._loans: dict[K, int] = {}
        self._since: dict[K, float] = {}  # when each loan began

    def hold(self, key: K, held: int, now: float, *, may_borrow: bool = True) -> bool:
        """Connection ``key`` now holds ``held`` bytes of an unfinished message: allowed?

        False if that needs more than the budget has left or than ``key`` may
        borrow; its loan is then returned (the caller closes the connection).
        """
        need = max(0, held - self.allowance)
        loan = self._loans.get(key, 0)
        if need == loan:
            return True
        if need > loan and (not may_borrow or self.borrowed + need - loan > self.budget):
            self.release(key)
            return False
        self.borrowed += need - loan
        self.peak = max(self.peak, self.borrowed)
        if need:
            self._loans[key] = need
            self._since.setdefault(key, now)
        else:
            del self._loans[key]
            del self._since[key]
        return True

    def release(self, key: K) -> None:
        """Connection ``key`` finished its message or closed: give its loan back."""
        self.borrowed -= self._loans.pop(key, 0)
        self._since.pop(key, None)

    def loan(self, key: K) -> int:
        return self._loans.get(key, 0)

    def overdue(self, before: float) -> list[K]:
        """The borrowers whose loan began before ``before`` (their message is too slow)."""
        late = []
        for key, since in self._since.items():  # in the order the loans began
            if since >= before:
                break
            late.append(key)
        return late

    def next_due(self, deadline: float) -> float | None:
        """When the oldest loan's ``deadline`` (seconds) ends, or None without loans."""
        first = next(iter(self._since.values()), None)
        return None if first is None else first + deadline
