"""Live storage administration of a running node: ``fame backup`` of its directory.

A running node holds every file of its storage directory with an exclusive
lock, so a backup must be written by the node itself. It serves this agent
at ``admin@<node name>.fame`` (``FAME_NODE_ADMIN_ADDRESS``), answering only
a client holding the admin credential, like the sentinel's administration;
the default policy lets that client call it and the node bind it.
"""

from __future__ import annotations

from typing import Any

from .._agents._agent import BaseAgent
from .._agents._operation import operation
from .sentinel._admin_agent import _ERRORS, _admin_only, backup_summary

__all__ = ["NodeAdmin"]


class NodeAdmin(BaseAgent):
    """Backs up the node's storage on request of the admin."""

    def __init__(self, storage: object) -> None:
        super().__init__()
        self._storage = storage

    @operation(errors=_ERRORS)
    async def backup(self, destination: str) -> dict[str, Any]:
        """Back up the node's storage into the new directory ``destination`` (absolute)."""
        _admin_only()
        return await backup_summary(self._storage, destination)
