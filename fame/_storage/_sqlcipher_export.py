"""The raw rows of a namespace's file, read and written as they are (``_export``).

Export and import move records between directories exactly: the encoded
value bytes, the version and the expiry, not the typed values a store
decodes. So they bypass the write rules of ``_ops`` (which hand out new
versions) and work on the open file's connection, offline, with the file
held by this process alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._sqlcipher_backend import SqliteBackend

__all__ = ["RawRow", "count_rows", "read_rows", "write_rows"]

RawRow = tuple[str, bytes, int, float | None]
"""key, encoded value, version, expires_at (wall-clock seconds or None)."""

_READ = "SELECT key, value, version, expires_at FROM kv WHERE key > ? ORDER BY key LIMIT ?"
_UPSERT = (
    "INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,"
    " expires_at = excluded.expires_at"
)
# The counter must stay above every version in the file, imported ones too,
# or a later write could reuse a version (see _ops).
_RAISE_SEQ = "UPDATE fame_meta SET value = max(value, ?) WHERE name = 'seq'"


def count_rows(backend: SqliteBackend) -> int:
    """Every row of the file, expired ones included (they are exported too)."""
    return int(backend._conn.execute("SELECT count(*) FROM kv").fetchone()[0])


def read_rows(backend: SqliteBackend, after: str, limit: int) -> list[RawRow]:
    """Up to ``limit`` rows in key order with keys after ``after`` ("" for the first)."""
    rows: list[RawRow] = backend._conn.execute(_READ, (after, limit)).fetchall()
    return rows


def write_rows(backend: SqliteBackend, rows: Sequence[RawRow]) -> None:
    """Write ``rows`` as they are, in one transaction; a row replaces the same key."""
    if not rows:
        return
    conn = backend._conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_UPSERT, rows)
        conn.execute(_RAISE_SEQ, (max(row[2] for row in rows),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
