"""``fame clean``: stop the services, then remove the project's data, secrets and run files.

What it removes cannot be brought back (the master key in
``conf/secrets.env`` is the only way into ``data/``), so it first lists
exactly what will go, with sizes, and asks: on a terminal it waits for
``y``; ``--yes`` answers for scripts; without a terminal and without
``--yes`` it refuses and removes nothing.

It never removes ``conf/secrets.env`` while a storage directory outside
``data/`` (a ``FAME_STORAGE_DB_DIRECTORY`` elsewhere, which ``fame clean``
does not touch) holds encrypted files: that data would be left without its
key.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from ._processes import RUN_DIR
from ._settings import SECRETS_FILE
from ._stored_data import DATA_DIR, encrypted_data, is_own

__all__ = ["clean"]


@attrs.frozen
class _Target:
    """One path ``fame clean`` removes, and how to describe it."""

    path: Path
    what: str

    def remove(self) -> None:
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        else:
            self.path.unlink()

    @property
    def shown(self) -> str:
        return f"{self.path}/" if self.path != SECRETS_FILE else str(self.path)


def _size(nbytes: int) -> str:
    """``nbytes`` for a person: bytes, KiB, MiB or GiB."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    size = float(nbytes)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def _tree(path: Path) -> tuple[int, int]:
    """(files, bytes) below ``path``."""
    files = total = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            files += 1
            total += item.stat().st_size
    return files, total


def _targets() -> tuple[list[_Target], list[Path]]:
    """What will be removed, and the outside directories whose key is kept."""
    targets = []
    if DATA_DIR.exists():
        files, total = _tree(DATA_DIR)
        stores = sum(len(data.files) for data in encrypted_data() if is_own(data.directory))
        targets.append(
            _Target(
                DATA_DIR,
                f"{files} file{'s' if files != 1 else ''}, {_size(total)}, {stores} encrypted store"
                f"{'s' if stores != 1 else ''}: ALL the project's stored data",
            )
        )
    outside = [data.directory for data in encrypted_data() if not is_own(data.directory)]
    if SECRETS_FILE.exists() and not outside:
        targets.append(_Target(SECRETS_FILE, "the master key, admission token, admin credential"))
    if RUN_DIR.exists():
        files, total = _tree(RUN_DIR)
        targets.append(_Target(RUN_DIR, f"{files} files, {_size(total)}: pids, ready files, logs"))
    return targets, outside


def _ask(prompt: str) -> bool:
    """Ask on the terminal; only ``y`` or ``yes`` is a yes (end of input is a no)."""
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def clean(yes: bool, stop: Callable[[], int], say: Callable[[str], None]) -> int:
    """Remove ``data/``, ``conf/secrets.env`` and ``run/`` once confirmed; stop the services first.

    ``stop`` always ends with the services gone (it kills what does not stop
    in time), so nothing is removed from under a running node; it runs only
    once the removal is confirmed, so a "no" leaves the services running.
    """
    targets, outside = _targets()
    kept = (
        f"{SECRETS_FILE} is kept: {', '.join(map(str, outside))} (not managed by fame clean)"
        " holds encrypted data under its master key"
        if outside and SECRETS_FILE.exists()
        else None
    )
    if not targets:
        stop()
        say("fame clean: nothing to remove" + (f" ({kept})" if kept else ""))
        return 0
    if not yes:
        listing = "; ".join(f"{target.shown} ({target.what})" for target in targets)
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            print(
                f"fame clean: would stop the services and remove {listing}; nothing was removed:"
                " not asked on a terminal (run: fame clean --yes, or just clean --yes)",
                file=sys.stderr,
                flush=True,
            )
            return 1
        say("fame clean: this stops the services and removes, for good:")
        for target in targets:
            say(f"  {target.shown}  ({target.what})")
        if kept:
            say(f"  ({kept})")
        if not _ask("Remove them? [y/N] "):
            say("fame clean: nothing was removed")
            return 1
    stop()
    for target in targets:
        if target.path.exists() or target.path.is_symlink():
            target.remove()
            say(f"fame clean: removed {target.shown}")
    if kept:
        say(f"fame clean: {kept}")
    return 0
