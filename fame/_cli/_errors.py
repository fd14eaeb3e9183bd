"""Turn failures into the one line a user reads, instead of a traceback.

Both programs catch everything at the top and print ``<program>: <line>``
on stderr, one line per error, with a non-zero exit; the helpers here find
the errors inside exception groups (all of them: a group of several is
several failures to report) and phrase the known ones.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import fame
from fame.errors import WrongMasterKey
from fame.lowlevel import collapse, leaves

from ._settings import ConfigFileError

__all__ = ["describe", "errors", "one_line", "shown_path"]


def errors(exc: BaseException) -> list[BaseException]:
    """Every error inside ``exc``, which Trio may have wrapped in (nested) groups."""
    return leaves(exc)


def one_line(error: BaseException) -> str:
    """What to print for one error: its phrasing if known, else its type and text."""
    return describe(error) or f"{type(error).__name__}: {error}"


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies below it."""
    absolute = Path(path).resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def describe(exc: BaseException) -> str | None:
    """The user-facing line for a configuration or storage error; ``None`` if not one."""
    exc = collapse(exc)
    if isinstance(exc, WrongMasterKey):
        return (
            f"the master key does not match the databases in {shown_path(exc.directory)}"
            f" ({exc.file} cannot be decrypted with FAME_STORAGE_MASTER_KEY); no file was"
            " changed. Use the key these files were created with, or start over with: fame clean"
        )
    if isinstance(exc, ConfigFileError | fame.FameError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"address already in use: {exc.strerror or exc}"
    return None
