"""``fame salvage``: copy every readable record of a damaged namespace file.

The source file is never opened by SQLite: it is copied (with its ``-wal``,
which may hold committed transactions) into a private work directory
inside the output directory, and only the copy is read. Records go, as
stored (value, version, expiry), into a new file made by the ordinary
backend with the key :func:`~fame._storage._keys.file_key` gives, so the
result is an ordinary namespace file: ``fame check`` verifies it and a
node opens it.

How it reads around damage: records are read in key order; a read that
meets a damaged page stops at the last key it got (``after``). The first
readable key past the damage is then found by reading the last key of the
table (from its end) and bisecting the key space between the two: a probe
``key > p`` that meets damage means the damage reaches beyond ``p``, one
that succeeds gives a readable key. Every key between ``after`` and that
key is reported as unreadable (they lived on the damaged pages), and the
copy goes on from it. Nothing is skipped without being reported.

Crash safety: the new file is built under the work directory and renamed
to its final name only once complete, closed and synced, so the output
directory holds the complete file or none; a later run removes what a
killed run left. An existing result is never replaced.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs

from ._config import StorageConfig
from ._errors import DamagedDatabase, StorageError, WrongMasterKey
from ._keys import file_key
from ._namespace import check_agent_namespace, check_internal_namespace, database_path
from ._probe import KeyCheck, probe_encrypted, probe_plain
from ._sqlcipher_backend import SqliteBackend, open_sqlite
from ._sqlcipher_salvage import RawRow, SalvageReader

__all__ = ["LostRange", "SalvageReport", "salvage_namespace", "work_directory"]

BATCH = 2000
"""Records read, and committed to the new file, at a time."""
_TOP = b"\xf5"
"""Greater than the UTF-8 form of every key (no UTF-8 byte is 0xF5 or above)."""
_MAX_PROBES = 2000
_EXTRA_BYTES = 8
"""Bytes a probe may have beyond the longer of the keys bisected (finer is pointless)."""


@attrs.frozen
class LostRange:
    """Keys that could not be read: those greater than ``after`` and less than ``before``.

    ``None`` stands for the start (``after``) or the end (``before``) of the key space.
    """

    after: str | None
    before: str | None


@attrs.frozen
class SalvageReport:
    """What ``salvage_namespace`` did.

    ``complete``: every record was copied (``lost`` is empty). ``pages``
    are the source's pages that fail authentication (encrypted files
    only), which may also be pages of no record (the log of request ids,
    which is not copied). ``probes``: reads that met damage.
    """

    namespace: str
    source: Path
    output: Path
    copied: int
    lost: tuple[LostRange, ...]
    pages: tuple[int, ...]
    probes: int

    @property
    def complete(self) -> bool:
        return not self.lost


def work_directory(out_directory: Path, namespace: str) -> Path:
    """Where a salvage of ``namespace`` into ``out_directory`` builds its file."""
    return out_directory / f".fame-salvage-{namespace}"


def salvage_namespace(config: StorageConfig, namespace: str, out_directory: Path) -> SalvageReport:
    """Copy every readable record of ``namespace`` in ``config``'s directory to ``out_directory``.

    Raises :class:`StorageError` (nothing written under the final name)
    when the source is missing, the output exists, the key is wrong or the
    file's first page is damaged. The node owning the directory should be
    stopped: a running node's file may be copied half-written.
    """
    if config.profile not in ("sqlite", "encrypted-sqlite") or config.directory is None:
        raise StorageError(f"profile {config.profile!r} keeps no database files to salvage")
    if namespace.startswith("__"):
        check_internal_namespace(namespace)
    else:
        check_agent_namespace(namespace)
    encrypted = config.profile == "encrypted-sqlite"
    source = database_path(config.directory, namespace, encrypted=encrypted)
    if not source.is_file():
        raise StorageError(f"no file for namespace {namespace!r} in {config.directory}")
    out_directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = database_path(out_directory, namespace, encrypted=encrypted)
    work = work_directory(out_directory, namespace)
    if final.exists():
        # A run killed after its rename may have left its (empty) work directory.
        shutil.rmtree(work, ignore_errors=True)
        raise StorageError(
            f"{final} already exists; salvage never replaces a file: move it away or choose"
            " another output directory (nothing was written)"
        )
    shutil.rmtree(work, ignore_errors=True)  # what a killed run left
    (work / "source").mkdir(mode=0o700, parents=True)
    copy = work / "source" / source.name
    for suffix in ("", "-wal"):
        original = source.with_name(source.name + suffix)
        if original.exists():
            _private_copy(original, copy.with_name(copy.name + suffix))
    key = None
    if encrypted:
        assert config.master_key is not None
        key = file_key(config.master_key, source)
        if probe_encrypted(copy, key) is KeyCheck.NO_PAGE_VERIFIES:
            raise WrongMasterKey(str(config.directory), source.name)
    else:
        probe_plain(copy)
    building = work / final.name
    out_key = None if config.master_key is None else file_key(config.master_key, building)
    report = _copy(copy, key, building, out_key, namespace)
    shutil.rmtree(work / "source")
    _publish(building, final)
    work.rmdir()
    return attrs.evolve(report, source=source, output=final)


def _private_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target`` readable by its owner only."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def _copy(
    copy: Path, key: bytes | None, building: Path, out_key: bytes | None, namespace: str
) -> SalvageReport:
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    reader = SalvageReader(copy, key)
    try:
        backend = open_sqlite(building, namespace, out_key, durability="normal")
        try:
            copied, highest, lost = 0, 0, []
            start: str | None = None
            last_copied: str | None = None
            inclusive = True
            while True:
                rows, damaged = reader.forward(start, inclusive=inclusive, limit=BATCH)
                copied, highest = _store(backend, rows, copied, highest)
                if rows:
                    last_copied = rows[-1][0]
                if damaged:
                    # Bisect past the last key read (or ``start``, which was
                    # readable a moment ago, so the search moves on); report
                    # everything between the keys copied on either side.
                    resume = _next_readable(reader, rows[-1][0] if rows else start)
                    lost.append(LostRange(last_copied, resume))
                    if resume is None:
                        break
                    start, inclusive = resume, True
                    continue
                if len(rows) < BATCH:
                    break
                start, inclusive = rows[-1][0], False
            backend.insert_rows([], max(reader.seq(), highest))
            # Every page is authenticated, also those no read touched (the
            # request log's, say): the report says all that is damaged.
            pages = reader.damaged_pages()
        finally:
            backend.close()
    finally:
        reader.close()
    return SalvageReport(namespace, copy, building, copied, tuple(lost), pages, reader.reopened)


def _store(
    backend: SqliteBackend, rows: list[RawRow], copied: int, highest: int
) -> tuple[int, int]:
    if rows:
        backend.insert_rows(rows, 0)
        highest = max(highest, max(row[2] for row in rows))
    return copied + len(rows), highest


def _next_readable(reader: SalvageReader, after: str | None) -> str | None:
    """The first readable key past the damage that follows ``after``; ``None``: none.

    Bisects the byte strings between ``after`` and the table's last key
    (or the top of the key space if the end of the table is damaged too).
    """
    low = b"" if after is None else after.encode("utf-8")
    found: str | None = None
    last, damaged = reader.last_key()
    if damaged:
        high = _TOP
    elif last is None or (after is not None and last <= after):
        return None
    else:
        found, high = last, last.encode("utf-8")
    finest = max(len(low), len(high)) + _EXTRA_BYTES
    for _ in range(_MAX_PROBES):
        probe = _between(low, high, finest)
        if probe is None:
            break
        key, damaged = reader.first_after(probe)
        if damaged:
            low = probe
            continue
        # Readable past the probe: the damage ends before it. ``None``:
        # nothing is stored past the probe, so nothing readable follows.
        high, found = probe, key
    return found


def _between(low: bytes, high: bytes, finest: int) -> bytes | None:
    """A byte string strictly between ``low`` and ``high``, about halfway.

    ``None`` when none is at most ``finest`` bytes long: the bisection is done.
    """
    width = max(len(low), len(high))
    while width <= finest:
        a = int.from_bytes(low.ljust(width, b"\0"), "big")
        b = int.from_bytes(high.ljust(width, b"\0"), "big")
        if b - a >= 2:
            middle = ((a + b) // 2).to_bytes(width, "big")
            return middle if low < middle < high else None
        width += 1
    return None


def _publish(building: Path, final: Path) -> None:
    """Give the finished file its final name, durably; it has no ``-wal`` left."""
    for leftover in ("-wal", "-shm"):
        if building.with_name(building.name + leftover).exists():
            raise DamagedDatabase(str(building), f"the new file kept a {leftover} file")
    fd = os.open(building, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(building, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
