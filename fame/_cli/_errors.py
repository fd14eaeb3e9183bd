"""Turn failures into the one line a user reads, instead of a traceback.

Both programs catch everything at the top and print ``<program>: <line>``
on stderr with a non-zero exit; the helpers here find the cause worth
naming inside exception groups and wrapped errors.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import fame
from fame._storage import (
    WrongMasterKey,
)

from ._settings import ConfigFileError

__all__ = ["describe", "leaf", "shown_path"]


def leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside ``exc`` (Trio wraps errors in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies below it."""
    absolute = Path(path).resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def describe(exc: BaseException) -> str | None:
    """The user-facing line for a configuration or storage error; ``None`` if not one."""
    exc = leaf(exc)
    if isinstance(exc, WrongMasterKey):
        return (
            f"the master key does not match the databases in {shown_path(exc.directory)}"
            f" ({exc.file} cannot be decrypted with FAME_STORAGE_MASTER_KEY); no file was"
            " changed. Use the key these files were created with, or start over with: just clean"
        )
    if isinstance(exc, ConfigFileError | fame.FameError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"address already in use: {exc.strerror or exc}"
    return None
