"""Copy an encrypted database file into a new file under another key (SQL side of ``_rekey``).

The source is opened with its key and exclusive locking (no ``-shm``, and
no other process can open it meanwhile), its ``-wal`` is checkpointed into
it first, so the file alone holds every committed transaction, and
``sqlcipher_export`` then writes schema and rows into the target, attached
with the new key. The source is never written except by that checkpoint,
which SQLite does on every clean close anyway.
"""

from __future__ import annotations

from pathlib import Path

import sqlcipher3

from ._errors import StorageError
from ._sqlcipher_backend import LOCK_WAIT, _database_error

__all__ = ["export_rekeyed"]


def export_rekeyed(source: Path, key: bytes, target: Path, new_key: bytes) -> None:
    """Checkpoint ``source`` (opened with ``key``), then copy it into ``target`` under ``new_key``.

    ``target`` must not exist. Raises :class:`DatabaseInUse` if another
    process holds ``source``, :class:`DamagedDatabase` if it cannot be
    read. Blocking.
    """
    conn = sqlcipher3.connect(str(source), timeout=LOCK_WAIT, isolation_level=None)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy or log != done:
                raise StorageError(
                    f"{source}: its -wal could not be checkpointed ({done} of {log} frames);"
                    " the file was left unchanged"
                )
            conn.execute(f"ATTACH DATABASE ? AS rekeyed KEY \"x'{new_key.hex()}'\"", (str(target),))
            conn.execute("SELECT sqlcipher_export('rekeyed')").fetchone()
            conn.execute("DETACH DATABASE rekeyed")
        except sqlcipher3.DatabaseError as exc:
            raise _database_error(source, exc, "cannot copy it under the new key") from None
    finally:
        conn.close()
