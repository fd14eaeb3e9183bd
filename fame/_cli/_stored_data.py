"""Where a project keeps encrypted data, and what ``fame clean`` may remove.

The master key in ``conf/secrets.env`` is the only way into the encrypted
files. ``fame init`` and ``fame up`` write a new key when that file is
missing, which is right for a new project and wrong for one whose data is
still there: the new key cannot open it, and an operator who then follows
the next hint may lose the data for good. So both ask :func:`encrypted_data`
first, and refuse (:func:`lost_key_message`) when it finds any.

The project's own data lies under ``data/`` (which ``fame clean`` removes);
a ``FAME_STORAGE_DB_DIRECTORY`` in ``conf/*.env`` (or the environment) may
name a directory elsewhere, which no ``fame`` command ever deletes, so hints
about it say to move it aside, never to clean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from fame.storage import namespace_files

from ._settings import CONF_DIR, SECRETS_FILE, ConfigFileError, read_env_file

__all__ = [
    "DATA_DIR",
    "StoredData",
    "encrypted_data",
    "is_own",
    "lost_key_message",
    "move_aside",
]

DATA_DIR = Path("data")
"""The project's own storage root (relative to the project directory); ``fame clean`` removes it."""

DIRECTORY_VARIABLE = "FAME_STORAGE_DB_DIRECTORY"


@attrs.frozen
class StoredData:
    """The encrypted store files found in one storage directory."""

    directory: Path
    files: tuple[Path, ...]


def is_own(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` lies under the project's ``data/`` (the working directory's)."""
    try:
        Path(directory).resolve().relative_to(DATA_DIR.resolve())
    except ValueError:
        return False
    return True


def _configured_directories(env: Mapping[str, str] | None) -> list[Path]:
    """Every ``FAME_STORAGE_DB_DIRECTORY`` in ``conf/*.env``, and the environment's.

    Both the files' values and the environment's are looked at: the
    environment overrides a file for one run, and the data of the other
    runs is still there.
    """
    texts = []
    for conf in sorted(CONF_DIR.glob("*.env")):
        try:
            texts.append(read_env_file(conf).get(DIRECTORY_VARIABLE, ""))
        except ConfigFileError:
            continue  # an unreadable file is reported by the command that needs it
    texts.append((os.environ if env is None else env).get(DIRECTORY_VARIABLE, ""))
    return [Path(text.strip()) for text in texts if text.strip()]


def _encrypted_files(directory: Path) -> tuple[Path, ...]:
    try:
        return tuple(path for _, path in namespace_files(directory, encrypted=True))
    except OSError:  # missing, not a directory, or unreadable: no data to protect here
        return ()


def encrypted_data(env: Mapping[str, str] | None = None) -> list[StoredData]:
    """Every directory of the project holding encrypted store files, with the files.

    Looked at: every directory under ``data/`` and every
    ``FAME_STORAGE_DB_DIRECTORY`` that ``conf/*.env`` or the environment
    (``env``, by default ``os.environ``) names. Paths are as configured,
    relative to the project directory; each directory is listed once.
    """
    candidates = _configured_directories(env)
    if DATA_DIR.is_dir():
        candidates += sorted(path for path in DATA_DIR.rglob("*") if path.is_dir())
    seen: set[Path] = set()
    result = []
    for directory in candidates:
        key = directory.resolve()
        if key in seen:
            continue
        seen.add(key)
        files = _encrypted_files(directory)
        if files:
            result.append(StoredData(directory, files))
    return sorted(result, key=lambda data: str(data.directory))


def move_aside(found: list[StoredData]) -> list[Path]:
    """The directories to move aside to start afresh: ``data`` itself, then any outside it."""
    own = [data for data in found if is_own(data.directory)]
    return ([DATA_DIR] if own else []) + [data.directory for data in found if data not in own]


def lost_key_message(command: str, found: list[StoredData]) -> str:
    """The one line ``fame init``/``fame up`` print when the key of ``found`` is missing."""
    directories = ", ".join(str(data.directory) for data in found)
    count = sum(len(data.files) for data in found)
    aside = " and ".join(f"mv {path} {path}.old" for path in move_aside(found))
    verb = "holds" if len(found) == 1 else "hold"
    return (
        f"fame {command}: {SECRETS_FILE} is missing, but {directories} {verb}"
        f" {count} encrypted store file{'s' if count != 1 else ''} that only its master key opens;"
        " no new key was written and no file was changed. Restore"
        f" {SECRETS_FILE} from your backup (or write the key back into it as"
        f" FAME_STORAGE_MASTER_KEY=...), then run fame {command} again. Only to start afresh"
        f" without that data: move it aside first ({aside}), then run fame {command}"
    )
