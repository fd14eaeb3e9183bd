"""The door's decisions (sans-IO): whom to shed for a newcomer, what partial messages may hold."""

from __future__ import annotations

from fame._fabric.sentinel._partial_budget import PartialBudget
from fame._fabric.sentinel._unattached import UnattachedLedger


def test_a_newcomer_sheds_the_oldest_of_its_own_address_first() -> None:
    ledger: UnattachedLedger[str] = UnattachedLedger(limit=6, per_address=3)
    for i in range(3):
        assert ledger.admit(f"a{i}", "10.0.0.1", now=i) == []
    assert ledger.admit("b0", "10.0.0.2", now=3) == []
    # The address is at its cap: its own oldest goes, the other address keeps its own.
    assert ledger.admit("a3", "10.0.0.1", now=4) == ["a0"]
    assert ledger.count("10.0.0.1") == 3 and "b0" in ledger and "a0" not in ledger


def test_a_full_ledger_refuses_flooders_at_once_and_lets_a_fresh_peer_in() -> None:
    ledger: UnattachedLedger[str] = UnattachedLedger(limit=8, per_address=8)
    for i in range(8):  # four flooding addresses, two connections each
        ledger.admit(f"f{i}", f"10.0.0.{i % 4}", now=10.0 + i * 0.01)
    # Full: a flooder holding its fair share (8 / 4) is refused at accept...
    assert ledger.refuses("10.0.0.1")
    # ...a fresh address is not: it gets in and sheds a flooder.
    assert not ledger.refuses("10.0.0.9")
    assert ledger.admit("fresh", "10.0.0.9", now=10.2) == ["f0"]
    # Not full: nobody is refused.
    ledger.forget("f1")
    assert not ledger.refuses("10.0.0.2")


def test_a_flood_from_one_address_is_never_refused_only_shed() -> None:
    # Its per-address cap keeps the ledger from filling: a fresh peer from the
    # same address (a legitimate client behind the same IP) still gets in.
    ledger: UnattachedLedger[int] = UnattachedLedger(limit=8, per_address=4)
    for i in range(100):
        assert not ledger.refuses("10.0.0.1")
        ledger.admit(i, "10.0.0.1", now=float(i))
    assert len(ledger) == 4


def test_a_full_ledger_sheds_the_oldest_of_the_address_holding_the_most() -> None:
    ledger: UnattachedLedger[str] = UnattachedLedger(limit=4, per_address=4)
    ledger.admit("b0", "10.0.0.2", now=0)  # the oldest of all, but from a small holder
    for i in range(3):
        ledger.admit(f"a{i}", "10.0.0.1", now=1 + i)
    assert ledger.admit("c0", "10.0.0.3", now=5) == ["a0"]
    assert len(ledger) == 4 and "b0" in ledger


def test_a_flood_from_one_address_never_locks_out_a_newcomer_from_it() -> None:
    ledger: UnattachedLedger[int] = UnattachedLedger(limit=128, per_address=32)
    shed: list[int] = []
    for i in range(3000):
        shed += ledger.admit(i, "127.0.0.1", now=i / 1000)
    assert len(ledger) == 32 and len(shed) == 3000 - 32
    # The newest one is in (it attaches before 32 more arrive), and then leaves the ledger.
    assert ledger.admit(3000, "127.0.0.1", now=3.0) == [3000 - 32]
    assert ledger.forget(3000) and not ledger.forget(3000)
    assert len(ledger) == 31


def test_deadlines_expire_the_oldest_first() -> None:
    ledger: UnattachedLedger[str] = UnattachedLedger(limit=10, per_address=10)
    assert ledger.next_expiry(5.0) is None
    for i, key in enumerate("abcd"):
        ledger.admit(key, f"10.0.0.{i}", now=float(i))
    ledger.forget("b")
    assert ledger.next_expiry(5.0) == 5.0
    assert ledger.expired(before=2.5) == ["a", "c"]
    assert ledger.oldest() == "d" and ledger.next_expiry(5.0) == 8.0
    assert ledger.count("10.0.0.0") == 0


def test_partial_messages_borrow_beyond_the_allowance_and_give_back() -> None:
    budget: PartialBudget[str] = PartialBudget(allowance=100, budget=1000)
    assert budget.hold("a", 100, now=0)  # within the allowance: free
    assert budget.borrowed == 0 and budget.next_due(10) is None
    assert budget.hold("a", 700, now=1)
    assert budget.hold("b", 400, now=2)
    assert budget.borrowed == 900 and budget.peak == 900
    # No room for 200 more: refused, and what it had borrowed is returned.
    assert not budget.hold("b", 600, now=3)
    assert budget.borrowed == 600 and budget.loan("b") == 0
    # The message ends: everything goes back.
    assert budget.hold("a", 0, now=4)
    assert budget.borrowed == 0 and budget.peak == 900


def test_a_ceiling_keeps_part_of_the_budget_for_other_borrowers() -> None:
    budget: PartialBudget[str] = PartialBudget(allowance=100, budget=1000)
    assert budget.hold("stranger", 600, now=0, ceiling=500)  # borrows 500
    assert not budget.hold("another", 200, now=0, ceiling=500)
    # Without a ceiling, the rest is there.
    assert budget.hold("member", 600, now=0)
    assert budget.borrowed == 1000


def test_slow_messages_that_borrow_become_overdue_oldest_first() -> None:
    budget: PartialBudget[str] = PartialBudget(allowance=10, budget=1000)
    budget.hold("a", 50, now=0)
    budget.hold("b", 50, now=5)
    budget.hold("a", 60, now=6)  # growing does not restart its clock
    assert budget.next_due(10) == 10
    assert budget.overdue(before=3) == ["a"]
    budget.release("a")
    assert budget.overdue(before=3) == [] and budget.next_due(10) == 15
