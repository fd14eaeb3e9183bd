"""The memory all connections may hold in unfinished websocket messages, as one budget (sans-IO).

Each connection holds what its :class:`~fame._fabric._frame_meter.FrameMeter`
counts: the payload of the data message it has not finished. Up to
``allowance`` bytes of that are free (an attach, an ordinary envelope);
beyond it, a connection borrows from one ``budget`` shared by all, and
gives it back when the message ends or the connection closes. A
connection that needs more than the budget has left is refused: the
door closes it. A borrower may be held to a lower ``ceiling`` of the
total: the door lets connections that have not attached (unauthenticated
peers) borrow only while less than half the budget is lent, so strangers
never take the half that attached peers can count on. The bytes held in
partial messages never exceed ``connections x allowance + budget``,
whatever the peers send; a large message still goes through whenever the
budget has room for it.

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

    def hold(self, key: K, held: int, now: float, *, ceiling: int | None = None) -> bool:
        """Connection ``key`` now holds ``held`` bytes of an unfinished message: allowed?

        A loan may grow while the total lent stays within ``ceiling`` (the
        whole budget by default). False if it cannot; the loan is then
        returned (the caller closes the connection).
        """
        need = max(0, held - self.allowance)
        loan = self._loans.get(key, 0)
        if need == loan:
            return True
        top = self.budget if ceiling is None else min(ceiling, self.budget)
        if need > loan and self.borrowed + need - loan > top:
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

    @property
    def borrowers(self) -> int:
        """Connections borrowing now."""
        return len(self._loans)

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
