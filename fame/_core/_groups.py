"""Exception groups, seen as the errors they hold.

Trio wraps whatever escapes a nursery in a ``BaseExceptionGroup``, often
around one error and sometimes around groups of one. A caller of
``async with open_node()`` wants that one error (the ``ValueError`` its own
block raised, the ``SupervisorGaveUp`` that stopped the node), not a group
around it. A group that holds several errors is a story of several
failures, and stays whole: dropping all but one would hide the others.

This module is the one place that decides it: :func:`collapse` and
:func:`unwrap_exception_group` remove single-leaf groups only, at any
depth; :func:`leaves` lists what a group holds, for a program that reports
each error on its own line.

``trio.Cancelled`` leaves do not count beside an error: when a scope
outside is cancelled while a nursery inside fails (a client whose attach
fails just as its caller gives up), the group holds the error and the
Cancelled of the tasks it stopped. Raising the error alone is what trio
allows (cancellation is level-triggered: the next checkpoint of the
cancelled scope raises Cancelled again), and it is what the caller can
handle; a group that holds only Cancelled is left alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["collapse", "leaves", "unwrap_exception_group"]


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception inside ``exc`` that is not a group, depth first; ``[exc]`` if not one."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(leaves(inner))
    return found


def collapse(exc: BaseException) -> BaseException:
    """The one error inside ``exc`` if it holds exactly one, else ``exc`` itself.

    Nested groups of one (``ExceptionGroup([ExceptionGroup([e])])``) give
    ``e``, and so does a group of ``e`` beside ``trio.Cancelled`` leaves; a
    group with two or more errors anywhere inside is returned as is.
    """
    found = leaves(exc)
    if len(found) == 1:
        return found[0]
    errors = [leaf for leaf in found if not isinstance(leaf, trio.Cancelled)]
    return errors[0] if len(errors) == 1 else exc


@asynccontextmanager
async def unwrap_exception_group() -> AsyncIterator[None]:
    """Re-raise an exception group that holds one error as that error.

    Put it around a nursery whose errors the caller should see as they
    are. The error keeps its own ``__cause__`` (``SupervisorGaveUp`` from
    the crash) and traceback; a group of several errors propagates
    unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error = collapse(group)
        if error is group:
            raise
        raise error from error.__cause__
