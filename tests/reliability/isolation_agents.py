"""Agents for the isolation scenarios, run by real ``fame node`` processes."""

from __future__ import annotations

from typing import ClassVar

from agents.storage_agent import StorageAgent


class UncappedStorageAgent(StorageAgent):
    """The storage agent letting one caller open any number of streams.

    To hold thousands of streams open in one node (the shutdown scenario)
    from one attacker link, past the default per-caller cap.
    """

    max_streams_per_caller: ClassVar[int] = 1_000_000
