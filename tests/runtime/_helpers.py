"""Shared helpers of the runtime tests."""

from __future__ import annotations

import trio


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current run, found from the root task down."""
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


def assert_no_new_tasks(before: set[trio.lowlevel.Task]) -> None:
    """Fail, naming them, if tasks exist now that did not exist at ``before``."""
    left = all_tasks() - before
    assert not left, f"tasks left behind: {sorted(task.name for task in left)}"
