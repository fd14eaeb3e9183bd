"""Export a namespace to JSON lines and import it back, exactly (``fame export|import``).

One record per line: ``{"key": ..., "value": <base64 of the encoded bytes>,
"version": ..., "expires_at": ...}``. The value is the bytes the store
keeps (msgpack of the typed value), so a record moves without being
decoded, whatever its model; versions and expiries move as they are.
Import writes in batches of :data:`IMPORT_BATCH` lines, one transaction
each, replacing records of the same key: running it twice, or again after
it was interrupted, gives the same file.

Both work offline, on a stopped node's directory, with its master key: the
file is opened as the node opens it (probed first, so a wrong key is named
as such), and a running node's lock makes them fail with
:class:`DatabaseInUse`. ``progress(done, total)`` is called as the work
goes: records for an export, bytes of the input for an import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from ._builtin import _create_private
from ._config import StorageConfig, prepare_directory
from ._errors import StorageError, WrongMasterKey
from ._keys import file_key
from ._namespace import check_agent_namespace, check_internal_namespace, database_path
from ._probe import KeyCheck, probe_encrypted, probe_plain
from ._sqlcipher_backend import SqliteBackend, open_sqlite
from ._sqlcipher_export import RawRow, count_rows, read_rows, write_rows

__all__ = ["EXPORT_CHUNK", "IMPORT_BATCH", "ExportedRecord", "export_namespace", "import_namespace"]

EXPORT_CHUNK = 1000
IMPORT_BATCH = 1000

Progress = Callable[[int, int], None]


class ExportedRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One line of an export; ``value`` is written as base64."""

    key: str
    value: bytes
    version: int
    expires_at: float | None = None


def _ignore(done: int, total: int) -> None:
    pass


@contextlib.contextmanager
def _opened(config: StorageConfig, namespace: str, *, create: bool) -> Iterator[SqliteBackend]:
    if config.profile not in ("sqlite", "encrypted-sqlite") or config.directory is None:
        raise StorageError(f"profile {config.profile!r} keeps no files to export or import")
    if namespace.startswith("__"):
        check_internal_namespace(namespace)
    else:
        check_agent_namespace(namespace)
    encrypted = config.profile == "encrypted-sqlite"
    directory = prepare_directory(config.directory) if create else config.directory
    path = database_path(directory, namespace, encrypted=encrypted)
    if not path.exists() and not create:
        raise StorageError(f"there is no namespace {namespace!r} in {directory}")
    key = None
    if encrypted:
        assert config.master_key is not None
        key = file_key(config.master_key, path)
        if path.exists() and probe_encrypted(path, key) is KeyCheck.NO_PAGE_VERIFIES:
            raise WrongMasterKey(str(directory), path.name)
    else:
        probe_plain(path)
    _create_private(path)
    backend = open_sqlite(path, namespace, key, durability=config.durability)
    try:
        yield backend
    finally:
        backend.close()


def export_namespace(
    config: StorageConfig, namespace: str, out: BinaryIO, progress: Progress = _ignore
) -> int:
    """Write every record of ``namespace`` to ``out`` as JSON lines; return how many."""
    encoder = msgspec.json.Encoder()
    with _opened(config, namespace, create=False) as backend:
        total = count_rows(backend)
        done, after = 0, ""
        progress(0, total)
        while rows := read_rows(backend, after, EXPORT_CHUNK):
            for key, value, version, expires_at in rows:
                record = ExportedRecord(key, value, version, expires_at)
                out.write(encoder.encode(record) + b"\n")
            done += len(rows)
            after = rows[-1][0]
            progress(done, max(done, total))
    out.flush()
    return done


def import_namespace(
    config: StorageConfig, namespace: str, source: Path, progress: Progress = _ignore
) -> int:
    """Write every record of the JSON lines file ``source`` into ``namespace``; return how many.

    Every line is checked before it is written: a bad line raises
    ``ValueError`` naming its number, and the batches before it stay
    written (run again after fixing it: import is idempotent).
    """
    decoder = msgspec.json.Decoder(ExportedRecord)
    total = source.stat().st_size
    done = count = 0
    with _opened(config, namespace, create=True) as backend, source.open("rb") as lines:
        progress(0, total)
        batch: list[RawRow] = []
        for number, line in enumerate(lines, 1):
            done += len(line)
            if not line.strip():
                continue
            try:
                record = decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise ValueError(
                    f"{source}, line {number}: not an exported record: {exc}"
                ) from None
            batch.append((record.key, record.value, record.version, record.expires_at))
            if len(batch) >= IMPORT_BATCH:
                write_rows(backend, batch)
                count += len(batch)
                batch = []
                progress(done, total)
        write_rows(backend, batch)
        count += len(batch)
        progress(total, total)
    return count
