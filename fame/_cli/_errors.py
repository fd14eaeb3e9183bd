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

from ._settings import SECRETS_FILE, ConfigFileError

__all__ = ["describe", "errors", "one_line", "shown_path", "wrong_master_key_hint"]


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


def wrong_master_key_hint(exc: WrongMasterKey) -> str:
    """What to do about a wrong key: get the right one back; start afresh only last.

    The way to start afresh depends on whose directory it is: the project's
    own ``data/`` is what ``fame clean`` removes (after asking); a directory
    elsewhere no ``fame`` command deletes, so the hint never sends its owner
    to ``fame clean``, which would remove the project's data and key instead.
    """
    from ._stored_data import DATA_DIR, is_own  # here: only a wrong key needs them

    shown = shown_path(exc.directory)
    found = (
        f"the master key does not match the databases in {shown} ({exc.file} cannot be"
        " decrypted with FAME_STORAGE_MASTER_KEY); no file was changed."
    )
    if is_own(exc.directory):
        return (
            f"{found} Put back the key these files were created with: restore {SECRETS_FILE}"
            " from your backup (the line FAME_STORAGE_MASTER_KEY=...). Only to start afresh"
            f" without this data: move it aside (mv {DATA_DIR} {DATA_DIR}.old), or delete"
            " it with fame clean (it asks first)"
        )
    return (
        f"{found} Set FAME_STORAGE_MASTER_KEY to the key these files were created with"
        f" (from your backup). {shown} lies outside this project's {DATA_DIR}/; only to start"
        f" afresh without this data: move it aside (mv {shown} {shown}.old)"
    )


def describe(exc: BaseException) -> str | None:
    """The user-facing line for a configuration or storage error; ``None`` if not one."""
    exc = collapse(exc)
    if isinstance(exc, WrongMasterKey):
        return wrong_master_key_hint(exc)
    if isinstance(exc, ConfigFileError | fame.FameError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"address already in use: {exc.strerror or exc}"
    return None
