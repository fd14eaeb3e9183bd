"""What :func:`fame.open_node` opens when it is given no storage provider.

The agents layer cannot import the storage layer (they are side by side),
so the public package wires them: ``import fame`` registers an opener here
that imports the built-in in-memory provider only when a node first needs
it. The hook lives in the core, in a module that imports nothing, so the
registration costs a process nothing at start (``fame up`` imports fame
before it spawns the services) and holds however the node is reached:
``fame.open_node``, ``fame.open_sentinel``, or a private path. No
environment is read either way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._storage_protocol import StorageProvider

__all__ = ["StorageOpener", "default_storage", "set_default_storage"]

StorageOpener = Callable[[], "AbstractAsyncContextManager[StorageProvider]"]
"""Opens a storage provider for the duration of an ``async with`` block."""

_opener: StorageOpener | None = None


def set_default_storage(opener: StorageOpener) -> None:
    """Set what :func:`fame.open_node` opens when it is given no provider."""
    global _opener
    _opener = opener


def default_storage() -> StorageOpener | None:
    """The opener :func:`set_default_storage` set, or None."""
    return _opener
